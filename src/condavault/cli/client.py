"""The HTTP client the CLI uses to talk to a condavault server."""

from __future__ import annotations

import json
import os
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


def resolve_token(token: str | None, data_dir: Path | None, url: str = DEFAULT_URL) -> str | None:
    """``--token``/``CONDAVAULT_TOKEN``, else ``<data-dir>/admin-token``, else the ``condavault login`` token."""
    if token:
        return token
    if os.environ.get("CONDAVAULT_TOKEN"):
        return os.environ["CONDAVAULT_TOKEN"]
    d = data_dir or (Path(os.environ["CONDAVAULT_DATA_DIR"]) if os.environ.get("CONDAVAULT_DATA_DIR") else None)
    if d is not None and (d / "admin-token").is_file():
        return (d / "admin-token").read_text().strip()
    return stored_token(url)


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
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = self.http.request(method, path, **kw)
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
    return Client(obj.get("url") or DEFAULT_URL, obj.get("token"))
