"""Web UI test helpers: form logins over plain HTTP, and a real headless Chromium (Debian's ``chromium``
driven by Playwright).

No browser is downloaded: Playwright starts the system's Chromium (``CONDAVAULT_CHROMIUM``, else
``/usr/bin/chromium``), which ``scripts/install-test-services`` installs. Missing, it FAILS the test with a
message saying what to install; the browser tests are never skipped silently.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.server import Server

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')  # the hidden field of every UI form


def chromium_path() -> str:
    configured = os.environ.get("CONDAVAULT_CHROMIUM")
    for candidate in (configured, "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail(
        "the web UI browser tests need Chromium: run scripts/install-test-services (apt-get install "
        "chromium) or set CONDAVAULT_CHROMIUM to a Chromium binary",
        pytrace=False,
    )


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless browser (``playwright.sync_api.Browser``)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the web UI browser tests need the 'playwright' package: pip install -e '.[test]'", pytrace=False)
    path = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()


# -- plain HTTP, like a browser without JavaScript ------------------------------------------------


def web_client(server: Server) -> httpx.Client:
    """A client that drops idle connections before the server's keep-alive timeout (5 s) can close them
    under a request (a race that shows as "server disconnected" on a busy machine)."""
    return httpx.Client(
        base_url=server.url, timeout=60, follow_redirects=False, limits=httpx.Limits(keepalive_expiry=2.0)
    )


def web_login(server: Server, username: str, password: str) -> httpx.Client:
    """A browser-like client that logged in through the login form."""
    c = web_client(server)
    page = c.get("/login")
    assert page.status_code == 200, page.text
    token = CSRF.search(page.text)
    assert token is not None
    r = c.post(
        "/login", data={"username": username, "password": password, "csrf_token": token.group(1), "next": "/channels"}
    )
    assert r.status_code == 303 and r.headers["location"] == "/channels", r.text
    return c


def csrf_of(c: httpx.Client, path: str = "/tokens") -> str:
    m = CSRF.search(c.get(path).text)
    assert m is not None, f"no form with a CSRF token on {path}"
    return m.group(1)
