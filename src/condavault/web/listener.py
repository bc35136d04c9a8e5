"""The HTTP listener: uvicorn's settings for ``condavault serve`` and a protocol that bounds headers.

uvicorn's httptools protocol accepts headers of any size and waits for them forever: a client that
trickles header lines (slowloris) holds a connection, and one that sends endless header lines grows
the server's memory. :func:`protocol_class` adds both bounds: the request line plus headers must
arrive within ``header_timeout`` seconds of the request's first byte (or of the connection, for a
client that sends nothing) and stay under ``max_header_bytes``; otherwise the client gets a 408 or
431 and the connection is closed. Request *bodies* are bounded one layer up (``web.limits``).

Forwarded headers (``X-Forwarded-For``/``-Proto``) are trusted only from ``forwarded_allow_ips``;
with none configured they are ignored, so a local proxy cannot spoof the client address that login
throttling counts.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from condavault.config import Settings, load_settings

log = logging.getLogger(__name__)

try:
    from uvicorn.protocols.http.httptools_impl import STATUS_LINE
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _Base
except ImportError:  # pragma: no cover - uvicorn without httptools: h11 bounds headers itself
    _Base = None  # type: ignore[assignment,misc]

FastAnswer = Callable[[bytes, bytes, list[tuple[bytes, bytes]]], tuple[int, bytes, bytes] | None]


class _Answered:
    """Stands for the request cycle of a request answered from memory (``fast_answer``): complete."""

    response_complete = True
    disconnected = False
    keep_alive = True
    more_body = False

    class message_event:
        @staticmethod
        def set() -> None:
            return None


_ANSWERED = _Answered()
_DEFAULTS: list[Any] = [None, b""]  # uvicorn's default headers (the date) last seen, and their encoded lines


def _fast_answer_of(app: Any) -> FastAnswer | None:
    """The application's ``fast_answer`` (``CondavaultApp``), through the ASGI wrappers uvicorn adds."""
    for _ in range(8):
        found = getattr(app, "fast_answer", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
        app = getattr(app, "app", None)
        if app is None:
            break
    return None


def _status(code: int, reason: str) -> bytes:
    return (
        f"HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(reason)}\r\nconnection: close\r\n\r\n{reason}"
    ).encode()


def protocol_class(header_timeout: float, max_header_bytes: int) -> type[Any] | str:
    """uvicorn's ``http`` protocol with the header bounds (or ``"h11"`` when httptools is missing)."""
    if _Base is None:  # pragma: no cover
        return "h11"

    class BoundedHeaders(_Base):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._header_timer: asyncio.TimerHandle | None = None
            self._header_bytes = 0
            self._refused = False
            self._in_headers = False  # a request's headers have begun but are not complete
            self._fast = _fast_answer_of(self.app)

        def _arm(self) -> None:
            self._disarm()
            self._header_timer = self.loop.call_later(header_timeout, self._headers_too_slow)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _refuse(self, code: int, reason: str) -> None:
            self._refused = True
            self._disarm()
            if not self.transport.is_closing():
                log.info("connection refused while reading headers", extra={"status": code, "client": str(self.client)})
                self.transport.write(_status(code, reason))
                self.transport.close()

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.cycle is None or self.cycle.response_complete:  # idle or mid-headers: not mid-request
                self._refuse(408, "Request Timeout")

        def _count(self, n: int) -> None:
            self._header_bytes += n
            if self._header_bytes > max_header_bytes and not self._refused:
                self._refuse(431, "Request Header Fields Too Large")

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if not self._refused:
                super().data_received(data)
                # headers left incomplete by this chunk: their clock starts (a whole request in one
                # chunk -- nearly every request -- never arms a timer)
                if self._in_headers and self._header_timer is None and not self._refused:
                    self._arm()

        def on_message_begin(self) -> None:
            # uvicorn's per-request state; its ASGI ``scope`` is built only for a request that is not
            # answered from memory (``_begin_scope``)
            self.url = b""
            self.expect_100_continue = False
            self.headers = []
            self._header_bytes = 0
            self._in_headers = True
            self._disarm()  # the idle connection's clock (connection_made): this request's from now on

        def _begin_scope(self) -> None:
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()  # the scope (and uvicorn's reset of the fields kept here)
            self.url, self.expect_100_continue = url, expect
            self.headers = self.scope["headers"] = headers

        def on_url(self, url: bytes) -> None:
            self._count(len(url))
            if not self._refused:
                super().on_url(url)

        def on_header(self, name: bytes, value: bytes) -> None:
            self._header_bytes += len(name) + len(value) + 4
            if self._header_bytes > max_header_bytes and not self._refused:
                self._refuse(431, "Request Header Fields Too Large")
            if self._refused:
                return
            name = name.lower()  # what uvicorn's on_header does, without the extra calls
            if name == b"expect" and value.lower() == b"100-continue":
                self.expect_100_continue = True
            self.headers.append((name, value))

        def on_headers_complete(self) -> None:
            self._in_headers = False
            self._disarm()
            if self._refused:
                return
            if (
                self._fast is not None
                and (self.cycle is None or self.cycle.response_complete)  # nothing pipelined before it
                and not self.flow.write_paused
                and self.parser.should_keep_alive()
                and self.parser.get_http_version() == "1.1"
                and not self.parser.should_upgrade()
            ):
                try:
                    out = self._fast(self.parser.get_method(), self.url, self.headers)
                except Exception:  # a bug: the normal path still answers
                    log.exception("the in-memory answer failed; taking the normal path")
                    out = None
                if out is not None:
                    self._send_answer(*out)
                    return
            self._begin_scope()
            super().on_headers_complete()

        def _send_answer(self, status: int, head: bytes, body: bytes) -> None:
            """Write a whole response (what uvicorn's cycle would send for it) and wait for the next request."""
            self.cycle = _ANSWERED  # type: ignore[assignment]
            defaults = self.server_state.default_headers  # a new list when uvicorn's date ticks (1 s)
            if defaults is not _DEFAULTS[0]:
                _DEFAULTS[:] = [defaults, b"".join(name + b": " + value + b"\r\n" for name, value in defaults)]
            self.transport.write(b"".join((STATUS_LINE[status], _DEFAULTS[1], head, b"\r\n", body)))
            self.server_state.total_requests += 1
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )

        def on_body(self, body: bytes) -> None:
            if not self._refused:
                super().on_body(body)

        def on_message_complete(self) -> None:
            if not self._refused:
                super().on_message_complete()

    return BoundedHeaders


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.Config``/``uvicorn.run`` for this server's settings."""
    trusted = ",".join(settings.forwarded_allow_ips)
    return {
        "host": settings.host,
        "port": settings.port,
        "http": protocol_class(settings.header_timeout, settings.max_header_bytes),
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_keep_alive": settings.keep_alive_timeout,
        "limit_concurrency": settings.limit_concurrency,
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or "",
        "server_header": False,
        "log_level": "warning",
        "access_log": False,
    }


def __getattr__(name: str) -> Any:
    """``condavault.web.listener:WorkerProtocol``: the protocol of a ``serve --workers N`` process,
    whose settings come from the environment the parent prepared (like its app factory's)."""
    if name == "WorkerProtocol":
        settings = load_settings()
        return protocol_class(settings.header_timeout, settings.max_header_bytes)
    raise AttributeError(name)
