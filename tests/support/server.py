"""A real condavault server on loopback for tests: real database, real HTTP, real uvicorn."""

from __future__ import annotations

import atexit
import logging
import os
import queue
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import suppress
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


def _pg_admin() -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(PG_ADMIN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # pragma: no cover - environment problem
        raise RuntimeError(
            f"PostgreSQL is not reachable at {PG_ADMIN} ({exc}); start it (.ci/run does) or set CONDAVAULT_TEST_PG"
        ) from exc


def _pg_url(name: str) -> str:
    base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{name}"


# Migrated templates, one per database kind and test process: a test server's fresh database is a copy of
# one (``CREATE DATABASE ... TEMPLATE`` / the SQLite backup API) instead of sixteen migrations run again.
# ``start_server`` still runs ``migrate.upgrade`` on the copy (a no-op at head); the migrations themselves
# are tested from an empty database by tests/functional/test_migrations.py and the upgrade tests.
_TEMPLATES: dict[str, str] = {}
_TEMPLATE_LOCK = threading.Lock()


def _template(backend: str) -> str:
    with _TEMPLATE_LOCK:
        if backend in _TEMPLATES:
            return _TEMPLATES[backend]
        if backend == "sqlite":
            folder = Path(tempfile.mkdtemp(prefix="condavault-template-"))
            path = folder / "condavault.db"
            migrate.upgrade(f"sqlite:///{path}")
            atexit.register(shutil.rmtree, folder, ignore_errors=True)
            _TEMPLATES[backend] = str(path)
        else:
            name = f"cvtpl_{os.getpid()}_{uuid.uuid4().hex[:8]}"
            with _pg_admin() as conn:
                conn.execute(f'CREATE DATABASE "{name}"')
            migrate.upgrade(_pg_url(name))  # its engine is disposed: no session left open on the template
            atexit.register(_drop_now, name)
            _TEMPLATES[backend] = name
        return _TEMPLATES[backend]


def create_pg_database(migrated: bool = False) -> tuple[str, str]:
    """A fresh PostgreSQL database, empty or (``migrated``) a copy of this process's migrated template;
    returns (sqlalchemy url, name)."""
    name = f"cvtest_{uuid.uuid4().hex[:12]}"
    template = f' TEMPLATE "{_template("postgresql")}"' if migrated else ""
    with _pg_admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"{template}')
    return _pg_url(name), name


def _drop_now(name: str) -> None:
    with suppress(psycopg.Error), psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# DROP DATABASE waits for a checkpoint (about a second): test databases are dropped by one background
# thread while the next test runs; the process waits for the last drops when it exits.
_DROPS: queue.Queue[str] = queue.Queue()


def _dropper() -> None:
    while True:
        _drop_now(_DROPS.get())
        _DROPS.task_done()


_DROPPER = threading.Thread(target=_dropper, name="test-db-dropper", daemon=True)
_DROPPER.start()
atexit.register(_DROPS.join)


def drop_pg_database(name: str) -> None:
    _DROPS.put(name)


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


def database_url(backend: str, data_dir: Path, migrated: bool = False) -> tuple[str, str | None]:
    """The database of a test server in ``data_dir``: SQLite there or a fresh PostgreSQL database; empty, or
    (``migrated``) a copy of the migrated template -- unless ``data_dir`` has a SQLite database already (a
    restarted server keeps its data)."""
    if backend == "sqlite":
        path = data_dir / "condavault.db"
        if migrated and not path.exists():
            src, dst = sqlite3.connect(_template("sqlite")), sqlite3.connect(path)
            try:
                src.backup(dst)
            finally:
                src.close()
                dst.close()
        return f"sqlite:///{path}", None
    url, name = create_pg_database(migrated)
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
    url, pg_name = database_url(backend, data_dir, migrated=True)
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
