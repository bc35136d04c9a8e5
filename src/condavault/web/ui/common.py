"""What every page of the web UI shares: templates, the caller's identity, CSRF, error pages.

Pages call the same service functions (often the API route functions themselves) as the JSON API, with
the same identity, so every page applies exactly the API's permission checks. A channel the caller may not
read answers 404, as if it did not exist.

CSRF: state-changing forms carry ``csrf_token``, compared (constant time) with the token stored with the
web session (session-bound); the login form, which has no session yet, uses a double-submit cookie.
Cookie-authenticated forms only: a POST to the UI with a bearer token is refused.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import anyio
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import ValidationError
from starlette.responses import HTMLResponse, RedirectResponse, Response

from condavault import __version__
from condavault.auth.deps import credential_from_headers, get_identity
from condavault.auth.identity import ANONYMOUS, Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import allowed
from condavault.auth.sessions import SESSION_COOKIE
from condavault.context import Context
from condavault.errors import CondavaultError, InvalidRequest, PermissionDenied, Unauthenticated

HERE = Path(__file__).parent
LOGIN_CSRF_COOKIE = "condavault_login_csrf"
MAX_FORM_BYTES = 64 * 1024
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

env = Environment(
    loader=FileSystemLoader(str(HERE / "templates")),
    autoescape=select_autoescape(["html", "svg"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


env.filters["size"] = _size
env.filters["urlq"] = lambda v: quote(str(v), safe="")
env.globals["version"] = __version__


def ctx_of(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


def identity_of(request: Request) -> Identity:
    """The caller of a GET page: a session cookie (or a token header, like the API)."""
    return get_identity(request)


def base_url(request: Request) -> str:
    ctx = ctx_of(request)
    return (ctx.settings.public_url or str(request.base_url)).rstrip("/")


def page_url(path: str, **params: Any) -> str:
    clean = {k: v for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(clean) if clean else "")


def render(request: Request, template: str, status: int = 200, **data: Any) -> HTMLResponse:
    identity: Identity = request.scope.get("condavault.identity") or ANONYMOUS
    csrf = request.scope.get("condavault.csrf")
    nav = {
        "admin": allowed(identity, Permission.USER_MANAGE) or allowed(identity, Permission.AUDIT_READ),
    }
    html = env.get_template(template).render(
        request=request, me=identity, csrf_token=csrf, nav=nav, page_url=page_url, **data
    )
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def session_csrf(request: Request) -> str | None:
    """The CSRF token of the caller's web session (None without a live session)."""
    ctx = ctx_of(request)
    sessions = ctx.domains.auth.sessions
    digest = sessions.sid_hash(request.cookies.get(SESSION_COOKIE))
    if digest is None:
        return None
    hit = ctx.auth.identify_session(digest)
    return hit[1] if hit is not None else None


def page_identity(request: Request) -> Identity:
    """Identity for a GET page, also noting the session's CSRF token for the page's forms."""
    identity = identity_of(request)
    if identity.authenticated and identity.token_id is None:
        request.scope["condavault.csrf"] = session_csrf(request)
    return identity


async def read_form(request: Request) -> dict[str, list[str]]:
    """A small ``application/x-www-form-urlencoded`` body (400 otherwise)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/x-www-form-urlencoded"):
        raise InvalidRequest("this page takes form posts (application/x-www-form-urlencoded)", code="invalid_form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise InvalidRequest("form too large", code="invalid_form")
    try:
        return parse_qs(body.decode(), keep_blank_values=True, max_num_fields=500)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("malformed form", code="invalid_form")


def field(form: dict[str, list[str]], name: str, default: str = "", max_length: int = 2000) -> str:
    value = (form.get(name) or [default])[0]
    if len(value) > max_length:
        raise InvalidRequest(f"field {name!r} is too long (at most {max_length} characters)", code="invalid_form")
    return value


def grant_form(form: dict[str, list[str]]) -> tuple[str, str | None, str | None, bool]:
    """The grant forms' fields: (role, user, group, remove); exactly one of user and group is set."""
    role = field(form, "role", max_length=100)
    who = field(form, "who", max_length=200).strip()
    kind = field(form, "kind", "user", max_length=10)
    if kind not in ("user", "group") or not who or not role:
        raise InvalidRequest("say which role, and which user or group", code="invalid_form")
    user, group = (who, None) if kind == "user" else (None, who)
    return role, user, group, field(form, "remove", max_length=5) == "1"


def form_identity(request: Request, form: dict[str, list[str]]) -> Identity:
    """The identity of a form post: the web session, with its CSRF token in the form (403 otherwise)."""
    if credential_from_headers(request.headers):
        raise PermissionDenied("the web UI takes form posts from web sessions only", code="csrf_failed")
    ctx = ctx_of(request)
    digest = ctx.domains.auth.sessions.sid_hash(request.cookies.get(SESSION_COOKIE))
    hit = ctx.auth.identify_session(digest) if digest else None
    if hit is None:
        raise Unauthenticated("your session has ended: log in again", code="authentication_required")
    identity, csrf = hit
    sent = field(form, "csrf_token", max_length=200)
    if not sent or not hmac.compare_digest(sent.encode(), csrf.encode()):
        raise PermissionDenied("the form's CSRF token does not match your session; reload the page", code="csrf_failed")
    request.scope["condavault.identity"] = identity
    request.scope["condavault.csrf"] = csrf
    return identity


def new_login_csrf() -> str:
    return secrets.token_urlsafe(24)


def run_sync(fn: Callable[..., Any], *args: Any) -> Awaitable[Any]:
    return anyio.to_thread.run_sync(fn, *args)


def _status_page(request: Request, exc: CondavaultError) -> Response:
    status, title = exc.status, "Error"
    hidden_channel = exc.code in ("channel_access_denied", "channel_not_found") or (
        isinstance(exc, Unauthenticated) and "channel" in exc.details
    )
    if hidden_channel or status == 404:
        status, title = 404, "Not found"
    elif isinstance(exc, Unauthenticated):
        if request.method in ("GET", "HEAD"):
            return RedirectResponse(page_url("/login", next=request.url.path), status_code=303)
        title = "Please log in"
    elif status == 403:
        title = "Not allowed"
    elif 400 <= status < 500:
        title = "Cannot do that"
    message = "There is nothing here, or you may not see it." if status == 404 else exc.message
    if status >= 500:
        message = "Something went wrong on the server."
    return render(request, "error.html", status=status, title=title, message=message)


class UIRoute(APIRoute):
    """A route whose errors are HTML pages (the app's handlers answer JSON for the API)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        original = super().get_route_handler()

        async def handler(request: Request) -> Response:
            try:
                return await original(request)
            except CondavaultError as exc:
                error = exc
            except (RequestValidationError, ValidationError) as exc:  # query parameters, or a form's model
                msgs = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
                error = InvalidRequest(f"bad parameters: {msgs}"[:500])
            if "condavault.identity" not in request.scope:  # the page header says who is signed in
                try:
                    await run_sync(page_identity, request)
                except CondavaultError:
                    pass
            return _status_page(request, error)

        return handler


def wants_page(request: Request) -> bool:
    """A browser asking for a path outside the API (an unknown page): answer with the UI's 404 page."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", "")


async def not_found_page(request: Request) -> Response:
    try:
        await run_sync(page_identity, request)
    except CondavaultError:
        pass
    return render(
        request, "error.html", status=404, title="Not found", message="There is nothing here, or you may not see it."
    )
