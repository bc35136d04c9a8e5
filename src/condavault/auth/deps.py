"""FastAPI dependencies: the caller's identity from any accepted credential form."""

from __future__ import annotations

import base64
import binascii

import anyio
from starlette.requests import HTTPConnection

from condavault.auth.identity import ANONYMOUS, Identity
from condavault.errors import Unauthenticated


def credential_from_headers(headers: object) -> str | None:
    """``Authorization: Bearer <t>``, ``Authorization: Basic <user:t>`` (password = token) or ``X-Auth``."""
    get = headers.get  # type: ignore[attr-defined]
    auth = get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        scheme = scheme.lower()
        value = value.strip()
        if scheme in ("bearer", "token") and value:
            return value
        if scheme == "basic" and value:
            try:
                user, _, password = base64.b64decode(value).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError):
                raise Unauthenticated("malformed Basic credentials", code="invalid_credentials")
            # password = token; pip-style ``<token>:x-auth-token`` puts it in the user name
            return user if password.lower() == "x-auth-token" or not password else password
        raise Unauthenticated("unsupported Authorization scheme", code="invalid_credentials")
    return get("x-auth") or get("x-api-key")


def identify(conn: HTTPConnection, path_token: str | None = None) -> Identity:
    ctx = conn.app.state.ctx
    token = path_token or credential_from_headers(conn.headers)
    if token:
        return ctx.auth.identify_token(token)
    session_ident = getattr(conn.app.state, "session_identity", None)
    if session_ident is not None:
        ident = session_ident(conn)
        if ident is not None:
            return ident
    return ANONYMOUS


async def aidentify(conn: HTTPConnection, path_token: str | None = None) -> Identity:
    """:func:`identify` for async code: a cached token costs no database; a cache miss, and a session
    cookie, are looked up on a worker thread, never on the event loop."""
    token = path_token or credential_from_headers(conn.headers)
    if token:
        cached, ident = conn.app.state.ctx.auth.peek_token(token)
        if cached:
            if ident is None:
                raise Unauthenticated("invalid, expired or revoked token", code="invalid_token")
            return ident  # type: ignore[no-any-return]
        return await anyio.to_thread.run_sync(conn.app.state.ctx.auth.identify_token, token)  # type: ignore[no-any-return]
    if not conn.headers.get("cookie"):
        return ANONYMOUS
    return await anyio.to_thread.run_sync(identify, conn)


def get_identity(request: HTTPConnection) -> Identity:
    cached = request.scope.get("condavault.identity")
    if cached is None:
        cached = identify(request)
        request.scope["condavault.identity"] = cached
    return cached
