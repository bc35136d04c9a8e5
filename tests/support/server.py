"""A real condavault server on loopback for tests: real database, real HTTP, real uvicorn."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import uvicorn

from condavault.app import create_app
from condavault.config import Settings, load_settings
from condavault.context import Context
from condavault.db import migrate
from condavault.logging import setup_logging
from condavault.web.listener import uvicorn_options

PG_ADMIN = os.environ.get("CONDAVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def create_pg_database() -> tuple[str, str]:
    """A fresh PostgreSQL database; returns (sqlalchemy url, name)."""
    name = f"cvtest_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:  # pragma: no cover - environment problem
        raise RuntimeError(
            f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); start it (.ci/run does) or set CONDAVAULT_TEST_PG"
        ) from exc
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}", name


def drop_pg_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# Problems with log calls seen by the production logging of the test servers (see ``production_logging``);
# the autouse ``_no_logging_errors`` fixture in tests/conftest.py fails the test that caused one.
LOGGING_ERRORS: list[str] = []


class _LoggingErrorWatch(logging.Filter):
    """Records log calls that failed: a handler error ("--- Logging error ---") or a ``KeyError`` from
    ``makeRecord`` (a reserved name in ``extra=``) that a job runner caught and logged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, KeyError) and "in LogRecord" in str(exc):
            LOGGING_ERRORS.append(f"{record.name}: {record.getMessage()}: {exc}")
        return True


def production_logging(settings: Settings) -> None:
    """The logging ``condavault serve`` sets up (same call: JSON lines at INFO by default), plus a watch
    that records every logging error instead of only printing it."""
    setup_logging(settings.log_format, settings.log_level)
    logging.raiseExceptions = True
    for handler in logging.getLogger().handlers:
        if getattr(handler, "_watched", False):
            continue
        original = handler.handleError

        def handle_error(record: logging.LogRecord, _original=original) -> None:  # type: ignore[no-untyped-def]
            exc = sys.exc_info()[1]
            LOGGING_ERRORS.append(f"{record.name}: {record.msg!r}: {exc!r}")
            _original(record)

        handler.handleError = handle_error  # type: ignore[method-assign]
        handler.addFilter(_LoggingErrorWatch())
        handler._watched = True  # type: ignore[attr-defined]


def database_url(backend: str, data_dir: Path) -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{data_dir / 'condavault.db'}", None
    url, name = create_pg_database()
    return url, name


@dataclass
class Server:
    settings: Settings
    url: str
    ctx: Context
    admin_token: str
    backend: str
    _thread: threading.Thread | None = None
    _server: uvicorn.Server | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, int]] = field(default_factory=list)

    @property
    def repo(self) -> str:
        return f"{self.url}/api/repo"

    def client(self, token: str | None = "admin", **kw: Any) -> httpx.Client:
        tok = self.admin_token if token == "admin" else token
        headers = {"Authorization": f"Bearer {tok}"} if tok else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=120, **kw)

    def env(self, token: str | None = "admin") -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
        env["CONDAVAULT_URL"] = self.url
        env["COLUMNS"] = "200"  # rich wraps error panels at the caller's width (CI sets COLUMNS=80)
        tok = self.admin_token if token == "admin" else token
        if tok:
            env["CONDAVAULT_TOKEN"] = tok
        env.update(self.extra_env)
        return env

    def cli(
        self,
        *args: str,
        token: str | None = "admin",
        check: bool = True,
        timeout: float = 300,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``condavault`` CLI in a subprocess against this server."""
        proc = subprocess.run(
            [sys.executable, "-m", "condavault", *args],
            env={**self.env(token), **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
        )
        if check and proc.returncode != 0:
            cmd = " ".join(args)
            raise AssertionError(f"condavault {cmd} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def channel(self, name: str, privacy: str = "public") -> str:
        with self.client() as c:
            r = c.post("/api/channels", json={"name": name, "privacy": privacy})
            assert r.status_code == 201, r.text
        return name

    def upload(self, channel: str, path: Path, token: str | None = "admin", **params: Any) -> httpx.Response:
        with self.client(token) as c, open(path, "rb") as fh:
            return c.post(f"/api/channels/{channel}/files", params={"filename": path.name, **params}, content=fh.read())

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


def start_server(data_dir: Path, backend: str = "sqlite", **overrides: Any) -> tuple[Server, str | None]:
    """Migrate a fresh database, build the app and run uvicorn on a free loopback port in a thread."""
    data_dir.mkdir(parents=True, exist_ok=True)
    # test upstreams (static channels, CVE feeds) listen on loopback: the administrator's allowance the URL
    # policy needs for that is on in test servers; the tests of the policy itself turn it off
    overrides.setdefault("upstream_allow_loopback", True)
    url, pg_name = database_url(backend, data_dir)
    settings = load_settings(data_dir=data_dir, database_url=url, **overrides)
    production_logging(settings)
    migrate.upgrade(settings.db_url)
    ctx = Context.build(settings)
    app = create_app(settings, ctx=ctx)
    log: list[tuple[str, str, int]] = []

    async def logged(scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] != "http":
            return await app(scope, receive, send)

        async def send_wrapper(message):  # type: ignore[no-untyped-def]
            if message["type"] == "http.response.start":
                log.append((scope["method"], scope["path"], message["status"]))
            await send(message)

        return await app(scope, receive, send_wrapper)

    port = free_port()
    # the listener `condavault serve` uses (header bounds, no forwarded headers trusted, ...)
    config = uvicorn.Config(logged, **{**uvicorn_options(settings), "host": "127.0.0.1", "port": port}, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    base = f"http://127.0.0.1:{port}"
    while time.monotonic() < deadline:
        if server.started:
            break
        if not thread.is_alive():
            raise RuntimeError("test server failed to start")
        time.sleep(0.02)
    token = settings.admin_token_path.read_text().strip()
    handle = Server(
        settings=settings,
        url=base,
        ctx=ctx,
        admin_token=token,
        backend=backend,
        _thread=thread,
        _server=server,
        requests=log,
    )
    return handle, pg_name


def stop_server(handle: Server, pg_name: str | None) -> None:
    handle.stop()
    handle.ctx.close()
    if pg_name:
        drop_pg_database(pg_name)
