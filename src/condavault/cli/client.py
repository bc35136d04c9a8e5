"""The HTTP client the CLI uses to talk to a condavault server."""

from __future__ import annotations

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


def resolve_token(token: str | None, data_dir: Path | None) -> str | None:
    if token:
        return token
    if os.environ.get("CONDAVAULT_TOKEN"):
        return os.environ["CONDAVAULT_TOKEN"]
    d = data_dir or (Path(os.environ["CONDAVAULT_DATA_DIR"]) if os.environ.get("CONDAVAULT_DATA_DIR") else None)
    if d is not None and (d / "admin-token").is_file():
        return (d / "admin-token").read_text().strip()
    return None


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
