"""A real OpenID provider for tests, and a tiny form-submitting "browser" to drive it.

``OidcProvider.start()`` runs ``tests/support/oidc/provider.js`` (panva/oidc-provider, pinned in
its package.json/package-lock.json) with the machine's Node.js on a free loopback port that the
node process picks itself and reports on stdout, then waits until discovery answers.
``Browser`` follows real redirects and submits the provider's real HTML forms with httpx.
Needs ``node`` and ``npm ci`` in tests/support/oidc (``scripts/install-test-services``).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import httpx

OIDC_DIR = Path(__file__).parent / "oidc"
INSTALL_HINT = "run `sudo scripts/install-test-services` (installs slapd, ldap-utils and the OIDC provider)"
CLIENT_ID = "condavault"
CLIENT_SECRET = "condavault-test-secret"
REDIRECT_URI = "http://127.0.0.1:9/auth/oidc/callback"  # never contacted: the test stops at it

ACCOUNTS: dict[str, dict[str, object]] = {
    "alice": {
        "preferred_username": "alice",
        "email": "alice@example.org",
        "name": "Alice Liddell",
        "groups": ["/developers", "admins"],
    },
    "bob": {"preferred_username": "bob", "email": "bob@example.org", "name": "Bob Builder", "groups": []},
}


def missing_requirements() -> str | None:
    """Why the provider cannot run here, or None."""
    if shutil.which("node") is None:
        return "`node` is not installed"
    if not (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").is_file():
        return f"npm packages are not installed in {OIDC_DIR}"
    return None


@dataclass
class OidcProvider:
    issuer: str
    process: subprocess.Popen[str]
    log_path: Path
    client_id: str = CLIENT_ID
    client_secret: str = CLIENT_SECRET
    redirect_uri: str = REDIRECT_URI

    @classmethod
    def start(cls, workdir: Path, accounts: Mapping[str, object] = ACCOUNTS, timeout: float = 20.0) -> OidcProvider:
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / "provider.log"
        env = {
            **os.environ,
            "OIDC_CLIENT_ID": CLIENT_ID,
            "OIDC_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_REDIRECT_URIS": REDIRECT_URI,
            "OIDC_ACCOUNTS": json.dumps(accounts),
            "NODE_ENV": "test",
        }
        with log_path.open("w") as log:
            process = subprocess.Popen(
                [shutil.which("node") or "node", "provider.js"],
                cwd=OIDC_DIR,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
            )
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        try:
            issuer = json.loads(lines.get(timeout=timeout))["issuer"]
        except (queue.Empty, ValueError, KeyError):
            process.kill()
            raise RuntimeError(f"OIDC provider did not start; log:\n{log_path.read_text()}")
        provider = cls(issuer=issuer, process=process, log_path=log_path)
        provider._wait_for_discovery(timeout)
        return provider

    def _wait_for_discovery(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"OIDC discovery never answered; log:\n{self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout:
            self.process.stdout.close()


# -- a minimal browser -----------------------------------------------------------------------------


@dataclass
class Form:
    id: str | None
    action: str
    method: str
    fields: dict[str, str] = field(default_factory=dict)


class _FormParser(HTMLParser):
    """Collects <form>s and their named <input>s (hidden, text, password)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[Form] = []
        self._current: Form | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._current = Form(a.get("id"), a.get("action", ""), a.get("method", "get").lower())
            self.forms.append(self._current)
        elif tag == "input" and self._current is not None and a.get("name"):
            self._current.fields[a["name"]] = a.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._current = None


def parse_forms(html: str) -> list[Form]:
    parser = _FormParser()
    parser.feed(html)
    return parser.forms


class Browser:
    """Follows redirects by hand and submits the first form of each page, like a patient user.

    ``fill`` gives values for fields the page has (``login``, ``password``, ``user_code``);
    ``extra`` adds fields (``abort=yes`` to press the device page's abort button).
    """

    def __init__(self) -> None:
        self.client = httpx.Client(follow_redirects=False, timeout=10)
        self.pages: list[httpx.Response] = []

    def close(self) -> None:
        self.client.close()

    def submit(
        self, page: httpx.Response, *, fill: Mapping[str, str] = {}, extra: Mapping[str, str] = {}
    ) -> httpx.Response:
        """Submit the first form of ``page``; return the (unfollowed) response."""
        self.pages.append(page)
        form = parse_forms(page.text)[0]
        data = {**form.fields, **{k: v for k, v in fill.items() if k in form.fields}, **extra}
        action = urljoin(str(page.url), form.action or str(page.url))
        if form.method == "post":
            return self.client.post(action, data=data)
        return self.client.get(action, params=data)

    def walk(
        self,
        url: str,
        *,
        fill: Mapping[str, str] = {},
        extra: Mapping[str, str] = {},
        stop_at: str | None = None,
        max_steps: int = 20,
    ) -> str | httpx.Response:
        """Go to ``url`` and keep going. Returns the redirect URL that starts with ``stop_at``,
        or the first page that has no form."""
        response = self.client.get(url)
        for _ in range(max_steps):
            if response.is_redirect:
                self.pages.append(response)
                target = urljoin(str(response.url), response.headers["location"])
                if stop_at and target.startswith(stop_at):
                    return target
                response = self.client.get(target)
                continue
            if not parse_forms(response.text):
                return response
            response = self.submit(response, fill=fill, extra=extra)
        raise AssertionError(f"no end after {max_steps} steps; last page {response.url}: {response.text[:500]}")
