"""Request bodies from hostile or careless clients (the ASGI layer in front of every route).

Every request body gets a limit fitting its route's purpose, enforced while the bytes stream in (a
``Content-Length`` over the limit is refused before anything is read):

- ``auth``: login, SSO and token calls, readable by anyone: ``max_auth_body_bytes`` (64 KiB);
- ``default``: every other JSON/form body: ``max_body_bytes`` (1 MiB);
- ``metadata`` and ``upload``: routes that declare them with ``openapi_extra={BODY_KEY: {...}}``
  (repodata imports, patch instructions; package uploads and CVE feeds): ``max_metadata_body_bytes`` /
  ``max_upload_bytes``. Such a route may also name the ``permission`` its caller needs (on the
  channel in the path when the path has ``{name}``).

More than ``max_anonymous_body_bytes`` (64 KiB) is read only once the caller's credentials were
checked (invalid ones: 401) and the route's permission too: anonymous callers get that small limit
everywhere but on routes declared ``anonymous`` (the environment check: ``max_anonymous_document_bytes``,
256 KiB), so nobody without credentials, or without the permission, can make the server buffer or
spool much: 20 anonymous clients streaming endless bodies cost the server < 50 MB.

Slow clients: a small body must arrive within ``body_timeout`` seconds; a large one may not stall for
``body_timeout`` seconds nor average less than ``min_upload_rate`` bytes/s over any such window.
Refusals are JSON errors (413, 408, 401/403) sent with ``Connection: close``; any response sent while
the request body is still unread carries ``Connection: close`` too, so the server never drains an
endless body it does not want (uvicorn would otherwise keep reading and discarding it).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
from starlette.requests import HTTPConnection
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from condavault import metrics
from condavault.config import Settings
from condavault.errors import CondavaultError, PayloadTooLarge, RequestTimeout
from condavault.web.errors import json_error

log = logging.getLogger(__name__)
BODY_KEY = "x-condavault-body"
AUTH_PREFIXES = ("/api/auth/", "/api/tokens")
_DISCONNECT: Message = {"type": "http.disconnect"}


@dataclass(frozen=True)
class BodyRule:
    """What one route accepts: a limit class and, for large bodies, the permission checked first."""

    kind: str  # auth | default | metadata | upload
    permission: str | None = None
    json_kind: str | None = None  # the class of a JSON body when it differs (CVE sync: options vs a feed)
    anonymous: bool = False  # anonymous callers may send max_anonymous_document_bytes (else ..._body_bytes)


@dataclass(frozen=True)
class _Declared:
    methods: frozenset[str]
    regex: re.Pattern[str]
    rule: BodyRule


def _route_paths(routes: list[Any]) -> list[tuple[str, Any]]:
    """(full path, route) of every route, also inside included routers."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # older FastAPI: included routes are flat
        return [(r.path, r) for r in routes if hasattr(r, "path")]
    return [(rc.path, rc.original_route) for rc in iter_route_contexts(routes) if rc.path]


def declared_rules(routes: list[Any]) -> list[_Declared]:
    """The body rules routes declare in their ``openapi_extra``."""
    out = []
    for path, route in _route_paths(routes):
        spec = (getattr(route, "openapi_extra", None) or {}).get(BODY_KEY)
        if spec:
            regex = compile_path(path)[0]
            out.append(_Declared(frozenset(getattr(route, "methods", None) or ()), regex, BodyRule(**spec)))
    return out


def body_spec(
    kind: str, permission: str | None = None, json_kind: str | None = None, *, anonymous: bool = False
) -> dict[str, Any]:
    """``openapi_extra`` for a route accepting a large body, or a large anonymous one (module docstring)."""
    spec: dict[str, Any] = {"kind": kind}
    if permission:
        spec["permission"] = str(permission)
    if json_kind:
        spec["json_kind"] = json_kind
    if anonymous:
        spec["anonymous"] = True
    return {BODY_KEY: spec}


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope["headers"]:
        if k == name:
            return v  # type: ignore[no-any-return]
    return None


class _Body:
    """Progress of one request body."""

    def __init__(self, limit: int, settings: Settings, large: bool) -> None:
        self.limit = limit
        self.received = 0
        self.complete = False
        self.answered = False  # we sent the response (a refusal); the app's own is dropped
        self.started = False  # a response has started (ours or the app's)
        self.large = large
        self.timeout = settings.body_timeout
        self.min_rate = settings.min_upload_rate
        now = time.monotonic()
        self.deadline = now + settings.body_timeout if not large else math.inf
        self.window_start = now
        self.window_bytes = 0

    def wait_limit(self) -> float:
        return max(0.0, min(self.timeout, self.deadline - time.monotonic()))

    def too_slow(self, now: float) -> bool:
        if not self.large or self.min_rate <= 0:
            return False
        if now - self.window_start < self.timeout:
            return False
        slow = self.window_bytes < self.min_rate * self.timeout
        self.window_start, self.window_bytes = now, 0
        return slow


class BodyGuard:
    """Wraps the application (see the module docstring). ``precheck(conn, rule, path_params)`` runs before
    more than a small body is read: it raises a ``CondavaultError`` for invalid credentials or a missing
    permission (the rule's) and returns whether the caller is authenticated."""

    def __init__(
        self,
        settings: Settings,
        routes: Callable[[], list[Any]],
        precheck: Callable[[HTTPConnection, BodyRule, dict[str, str]], bool],
    ) -> None:
        self.settings = settings
        self._routes = routes
        self._declared: list[_Declared] | None = None
        self._precheck = precheck
        self.limits = {
            "auth": settings.max_auth_body_bytes,
            "default": settings.max_body_bytes,
            "metadata": settings.max_metadata_body_bytes,
            "upload": settings.max_upload_bytes,
        }

    def prepare(self) -> list[_Declared]:
        """The routes' declared rules (read once, at start-up or by the first request with a body)."""
        if self._declared is None:
            self._declared = declared_rules(self._routes())
        return self._declared

    def rule_for(self, method: str, path: str, content_type: bytes) -> tuple[BodyRule, dict[str, str]]:
        for d in self.prepare():
            if method in d.methods:
                m = d.regex.match(path)
                if m:
                    rule = d.rule
                    if rule.json_kind and content_type.startswith(b"application/json"):
                        rule = BodyRule(rule.json_kind)
                    return rule, m.groupdict()
        if path.startswith(AUTH_PREFIXES):
            return BodyRule("auth"), {}
        return BodyRule("default"), {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        length_header = _header(scope, b"content-length")
        chunked = (_header(scope, b"transfer-encoding") or b"").lower().endswith(b"chunked")
        try:
            length = int(length_header) if length_header is not None else None
        except ValueError:
            length = None
        if not chunked and not length:  # no body at all: nothing to guard (the serving hot path)
            await app(scope, receive, send)
            return
        rule, params = self.rule_for(scope["method"], scope["path"], _header(scope, b"content-type") or b"")
        limit = self.limits[rule.kind]
        small = min(limit, self.settings.max_anonymous_body_bytes)
        if length is not None and length > limit:
            await _refuse(scope, send, _too_large(limit))
            return
        if length is None or length > small:  # more than a small body: only from whom may send it
            try:
                authenticated = await anyio.to_thread.run_sync(self._precheck, HTTPConnection(scope), rule, params)
            except CondavaultError as exc:
                await _refuse(scope, send, exc)
                return
            if not authenticated:
                limit = min(limit, self.settings.max_anonymous_document_bytes) if rule.anonymous else small
                if length is not None and length > limit:
                    await _refuse(scope, send, _too_large(limit))
                    return
        body = _Body(limit, self.settings, rule.kind in ("upload", "metadata"))
        await app(scope, self._receive(scope, receive, send, body), self._send(send, body))

    def _receive(self, scope: Scope, receive: Receive, send: Send, body: _Body) -> Callable[[], Awaitable[Message]]:
        async def guarded() -> Message:
            if body.answered or body.complete:
                return _DISCONNECT if body.answered else await receive()
            wait = body.wait_limit()
            message: Message | None = None
            with anyio.move_on_after(wait):
                message = await receive()
            now = time.monotonic()
            if message is None or body.too_slow(now):
                await self._answer(
                    scope,
                    send,
                    body,
                    RequestTimeout(
                        f"the request body did not arrive in time ({body.received} bytes received)",
                        timeout=self.settings.body_timeout,
                    ),
                )
                return _DISCONNECT
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                body.received += chunk
                body.window_bytes += chunk
                if body.received > body.limit:
                    await self._answer(scope, send, body, _too_large(body.limit))
                    return _DISCONNECT
                if not message.get("more_body", False):
                    body.complete = True
            else:  # the client went away
                body.complete = True
            return message

        return guarded

    @staticmethod
    async def _answer(scope: Scope, send: Send, body: _Body, exc: CondavaultError) -> None:
        log.info(
            "request body refused",
            extra={"path": scope["path"], "status": exc.status, "code": exc.code, "bytes_read": body.received},
        )
        if not body.started:
            body.answered = True
            body.started = True
            await _refuse(scope, send, exc, logged=True)
        else:  # the response is under way: all we can do is stop
            body.answered = True

    @staticmethod
    def _send(send: Send, body: _Body) -> Callable[[Message], Awaitable[None]]:
        async def guarded(message: Message) -> None:
            if body.answered:
                return
            if message["type"] == "http.response.start":
                body.started = True
                if not body.complete:  # the body is unread: do not let the server drain it
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        return guarded


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"the request body exceeds the limit of {limit} bytes for this route", limit=limit)


async def _refuse(scope: Scope, send: Send, exc: CondavaultError, *, logged: bool = False) -> None:
    """Answer ``exc`` and close. ``logged``: refused mid-body (the app's own metrics count the request)."""
    if not logged:  # the application never saw this request: count it here
        path = scope["path"]
        kind = "repo" if path.startswith("/api/repo/") else "api" if path.startswith("/api/") else "other"
        metrics.count_request(kind, exc.status)
        log.info(
            "request refused before its body was read",
            extra={"path": scope["path"], "status": exc.status, "code": exc.code},
        )
    response = json_error(exc)
    response.headers["connection"] = "close"

    async def no_body() -> Message:
        return _DISCONNECT

    await response(scope, no_body, send)
