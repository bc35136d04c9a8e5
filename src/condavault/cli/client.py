"""The HTTP client the CLI uses to talk to a condavault server."""

from __future__ import annotations

import json
import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import typer

DEFAULT_URL = "http://127.0.0.1:8080"


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details or {}

    def __str__(self) -> str:
        return f"{self.message} [{self.code}, HTTP {self.status}]"


def resolve_token(token: str | None, data_dir: Path | None, url: str = DEFAULT_URL) -> tuple[str | None, str]:
    """The token the CLI sends, and where it came from, first match wins:

    1. ``--token``;
    2. the ``CONDAVAULT_TOKEN`` environment variable;
    3. the token ``condavault login`` saved for this server URL;
    4. a server data folder's ``admin-token`` (``--data-dir``, ``CONDAVAULT_DATA_DIR``, else
       ``./condavault-data`` when it exists): the first-start convenience on the server's own machine.

    A login to one server is therefore never overridden by a data folder that happens to be nearby.
    """
    if token:
        return token, "--token"
    if os.environ.get("CONDAVAULT_TOKEN"):
        return os.environ["CONDAVAULT_TOKEN"], "CONDAVAULT_TOKEN"
    saved = stored_token(url)
    if saved:
        return saved, f"condavault login ({credentials_path()})"
    d = data_dir or (Path(os.environ["CONDAVAULT_DATA_DIR"]) if os.environ.get("CONDAVAULT_DATA_DIR") else None)
    d = d or Path("condavault-data")
    if (d / "admin-token").is_file():
        return (d / "admin-token").read_text().strip(), f"admin token of the data folder {d.resolve()}"
    return None, "none (anonymous)"


def credentials_path() -> Path:
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "condavault" / "credentials.json"


def stored_token(url: str) -> str | None:
    try:
        data = json.loads(credentials_path().read_text())
    except (OSError, ValueError):
        return None
    entry = data.get(url.rstrip("/")) if isinstance(data, dict) else None
    return entry.get("token") if isinstance(entry, dict) else None


def store_token(url: str, username: str, token: str) -> Path:
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    data[url.rstrip("/")] = {"username": username, "token": token}
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
    os.replace(tmp, path)
    return path


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        verify: ssl.SSLContext | bool = True
        if self.url.startswith("http://"):
            # a plain-HTTP server never needs the CA bundle (loading it costs ~40 ms of every command); the
            # client follows no redirects, and should TLS ever be asked of it, a context that trusts
            # nothing refuses every certificate
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, verify=verify)

    def request(self, method: str, path: str, *, buffered: bool = False, **kw: Any) -> Any:
        """``buffered``: the body is encoded into memory before it is sent (a multipart body of many
        small files then goes in a few large writes, not four small ones per file); for bodies of a
        bounded size only."""
        try:
            req = self.http.build_request(method, path, **kw)
            if buffered:
                req.read()
            resp = self.http.send(req)
        except httpx.HTTPError as exc:
            raise ApiError(0, "connection_error", f"cannot reach {self.url}: {exc}") from exc
        if resp.status_code >= 400:
            try:
                err = resp.json()["error"]
                raise ApiError(resp.status_code, err.get("code", "error"), err.get("message", ""), err.get("details"))
            except (ValueError, KeyError, TypeError):
                raise ApiError(resp.status_code, "http_error", resp.text[:500] or resp.reason_phrase)
        if resp.status_code == 204 or not resp.content:
            return None
        return resp.json()

    def get(self, path: str, **kw: Any) -> Any:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Any:
        return self.request("POST", path, **kw)


def client_from(ctx: typer.Context) -> Client:
    obj = ctx.ensure_object(dict)
    if "token" not in obj:  # resolved on first use (a command that never talks to a server reads no files)
        obj["token"], obj["token_source"] = resolve_token(obj.get("flag_token"), obj.get("data_dir"), obj["url"])
    return Client(obj.get("url") or DEFAULT_URL, obj.get("token"))
