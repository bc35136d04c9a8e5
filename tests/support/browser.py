"""A real headless Chromium for the web UI tests: Debian's ``chromium`` driven by Playwright.

No browser is downloaded: Playwright starts the system's Chromium (``CONDAVAULT_CHROMIUM``, else
``/usr/bin/chromium``), which ``scripts/install-test-services`` installs. Missing, it FAILS the test with a
message saying what to install; the browser tests are never skipped silently.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


def chromium_path() -> str:
    configured = os.environ.get("CONDAVAULT_CHROMIUM")
    for candidate in (configured, "/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("the web UI browser tests need Chromium: run scripts/install-test-services (apt-get install "
                "chromium) or set CONDAVAULT_CHROMIUM to a Chromium binary", pytrace=False)


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless browser (``playwright.sync_api.Browser``)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the web UI browser tests need the 'playwright' package: pip install -e '.[test]'",
                    pytrace=False)
    path = chromium_path()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=["--no-sandbox"], headless=True)
        try:
            yield browser
        finally:
            browser.close()
