"""The HTTP client the CLI uses to talk to a condavault server."""

from __future__ import annotations

from typing import Any

import httpx
import typer

from condavault.cli.credentials import (
    DEFAULT_URL,
    ApiError,
    credentials_path,
    resolve_token,
    store_token,
    stored_token,
)

__all__ = [
    "DEFAULT_URL",
    "ApiError",
    "Client",
    "client_from",
    "credentials_path",
    "resolve_token",
    "store_token",
    "stored_token",
]


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
    if "token" not in obj:  # resolved on first use (a command that never talks to a server reads no files)
        obj["token"], obj["token_source"] = resolve_token(obj.get("flag_token"), obj.get("data_dir"), obj["url"])
    return Client(obj.get("url") or DEFAULT_URL, obj.get("token"))
