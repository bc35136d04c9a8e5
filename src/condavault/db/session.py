"""Engine and session factory; SQLite runs in WAL mode with a busy timeout."""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import InvalidatePoolError, OperationalError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

T = TypeVar("T")
log = logging.getLogger(__name__)
_AFTER_COMMIT = "condavault.after_commit"
IDLE_PING_SECONDS = 5.0  # a pooled server connection unused this long is pinged before it is handed out
# SQLite's write-ahead log starts over only at a moment no reader holds an older snapshot; a server that
# is read all the time while it writes (a mirror importing millions of records) may never have one, and a
# log that only grows makes every page read slower (4.8 GB after 1.5 M records: most of the CPU went to
# looking pages up in it). After a write, at most every WAL_CHECK_SECONDS, a log larger than WAL_LIMIT is
# checkpointed and truncated, waiting at most WAL_WAIT_MS for older readers (else tried again later).
WAL_LIMIT = 128 * 2**20
WAL_CHECK_SECONDS = 2.0
WAL_WAIT_MS = 1000
WAL_BACKOFF_SECONDS = 10.0


def after_commit(session: Session, fn: Callable[[], None]) -> None:
    """Run ``fn`` once the session's transaction has committed; never if it rolls back (a ``run_write``
    retry registers it again with the attempt that commits). Errors are logged, not raised.

    Registered inside a savepoint (``begin_nested``), ``fn`` waits for the outermost commit too: released,
    the savepoint's work belongs to the transaction around it; rolled back, its ``fn``s are dropped and the
    others kept. (SQLAlchemy sends ``after_commit`` for a released savepoint and ``after_rollback`` for one
    rolled back: taken as they come, work ran before the data was visible to anyone else, and a savepoint
    lost to a unique-constraint race dropped the work of the whole transaction.)"""
    txn = session.get_nested_transaction() or session.get_transaction()
    if txn is None:
        session.connection()  # begins the session's transaction
        txn = session.get_transaction()
    session.info.setdefault(_AFTER_COMMIT, []).append([txn, fn])


@event.listens_for(Session, "after_commit")
def _run_after_commit(session: Session) -> None:
    released = session.get_nested_transaction()  # the savepoint just released, if it was one
    if released is not None:
        for entry in session.info.get(_AFTER_COMMIT, ()):
            if entry[0] is released:
                entry[0] = released.parent
        return
    for _txn, fn in session.info.pop(_AFTER_COMMIT, []):
        try:
            fn()
        except Exception:
            log.exception("after-commit work failed")


@event.listens_for(Session, "after_transaction_end")
def _drop_after_commit(session: Session, transaction: SessionTransaction) -> None:
    """A transaction ended without its work run (rolled back): that work is dropped. A committed one's
    work ran (outermost) or was handed to the transaction around it (savepoint) before this."""
    pending = session.info.get(_AFTER_COMMIT)
    if pending:
        pending[:] = [entry for entry in pending if entry[0] is not transaction]


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # the database holds password hashes and token digests: owner-only (SQLite gives its -wal
            # and -shm files the database file's mode). Never open an existing file here: closing any
            # descriptor of it drops every SQLite (POSIX) lock this process holds on it.
            if not os.path.exists(path):
                try:
                    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
                except FileExistsError:
                    pass
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 60},
            pool_size=20,
            max_overflow=40,
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()
            # let SQLAlchemy issue BEGIN itself (pysqlite's default defers it)
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn):  # type: ignore[no-untyped-def]
            conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.info.get("write") else "BEGIN")

        return engine
    engine = create_engine(url, pool_size=20, max_overflow=40)
    _ping_when_idle(engine)
    return engine


def _ping_when_idle(engine: Engine) -> None:
    """``pool_pre_ping`` without its round trip on every checkout (8 % of a bulk upload's server time on
    PostgreSQL): a pooled connection is pinged before it is handed out only when it sat in the pool
    ``IDLE_PING_SECONDS`` or more, or when its socket has something to read -- an idle connection of the
    pool has nothing to read unless the server closed it or said goodbye (a restart, a terminated
    backend): so a restarted server is noticed at checkout, as with ``pool_pre_ping``. A failed ping
    invalidates the pool, as ``pool_pre_ping`` does, and the pool hands out a new connection."""

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn, record):  # type: ignore[no-untyped-def]
        record.info["idle_from"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn, record, _proxy):  # type: ignore[no-untyped-def]
        since = record.info.get("idle_from")
        if since is None:
            return  # just connected
        if time.monotonic() - since < IDLE_PING_SECONDS and not _readable(dbapi_conn):
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            raise InvalidatePoolError(f"stale pooled connection: {exc}") from exc


def _readable(dbapi_conn: Any) -> bool:
    """Whether the connection's socket has bytes (or an end of file) waiting; True when unknown."""
    try:
        ready, _, _ = select.select([dbapi_conn.fileno()], [], [], 0)
    except (AttributeError, OSError, ValueError):
        return True
    return bool(ready)


class Database:
    """Holds the engine and hands out sessions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time. The threads of this process queue for it here, woken the
        # moment the writer before them commits, instead of in SQLite's busy handler (which sleeps 1, 2,
        # 5 ... 100 ms between looks: under contention most of a write's wall time). Other processes
        # still meet at the database's lock. Re-entrant: a nested write session of the same thread
        # behaves as before (it waits for the database's lock).
        self._write_lock: threading.RLock | None = threading.RLock() if self.is_sqlite else None
        path = self.engine.url.database if self.is_sqlite else None
        self._wal = Path(path + "-wal") if path and path != ":memory:" else None
        self._wal_next = 0.0  # monotonic time of the next look at the log's size
        self._nesting = threading.local()  # write sessions of this thread open (nested ones)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction, committed on success and rolled back on error."""
        with self._factory() as s:
            yield s
            s.commit()

    @contextmanager
    def write_session(self) -> Iterator[Session]:
        """Like ``session`` but takes SQLite's write lock at BEGIN (``BEGIN IMMEDIATE``), so a
        read-then-write transaction never fails half way with "database is locked"."""
        if self._write_lock is None:
            with self._write_session() as s:
                yield s
            return
        with self._write_lock:
            depth = getattr(self._nesting, "depth", 0)
            self._nesting.depth = depth + 1
            try:
                with self._write_session() as s:
                    yield s
            finally:
                self._nesting.depth = depth
            if depth == 0:  # not inside another write of this thread (its transaction would hold the log)
                try:
                    self._keep_wal_small()
                except Exception:  # the write committed: upkeep that failed must not look like it did not
                    log.warning("sqlite write-ahead log checkpoint failed", exc_info=True)

    def _keep_wal_small(self) -> None:
        """See WAL_LIMIT. Called after a write, under this process's write lock."""
        now = time.monotonic()
        if self._wal is None or now < self._wal_next:
            return
        self._wal_next = now + WAL_CHECK_SECONDS
        try:
            size = self._wal.stat().st_size
        except OSError:
            return
        if size <= WAL_LIMIT:
            return
        with self.engine.connect() as conn:
            cur = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cur.execute(f"PRAGMA busy_timeout={WAL_WAIT_MS}")
                busy, frames, done = cur.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                cur.execute("PRAGMA busy_timeout=60000")
                cur.close()
        if busy:
            self._wal_next = now + WAL_BACKOFF_SECONDS
        log.info(
            "sqlite write-ahead log checkpointed",
            extra={"wal_bytes": size, "frames": frames, "checkpointed": done, "truncated": not busy},
        )

    @contextmanager
    def _write_session(self) -> Iterator[Session]:
        with self.engine.connect() as conn:
            conn.info["write"] = self.is_sqlite
            with Session(bind=conn, expire_on_commit=False) as s:
                try:
                    yield s
                    s.commit()
                finally:
                    conn.info["write"] = False

    def run_write(self, fn: Callable[[Session], T], *, retries: int = 8) -> T:
        """Run ``fn`` in a write transaction, retrying on serialization failures and lock timeouts."""
        delay = 0.02
        for attempt in range(retries):
            try:
                with self.write_session() as s:
                    return fn(s)
            except OperationalError as exc:  # pragma: no cover - timing dependent
                msg = str(exc).lower()
                if attempt == retries - 1 or not ("locked" in msg or "deadlock" in msg or "serializ" in msg):
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 1.0)
        raise AssertionError("unreachable")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()
