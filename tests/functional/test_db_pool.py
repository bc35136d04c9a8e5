"""Pooled PostgreSQL connections: no ping round trip on every checkout, yet a connection the server
closed (a restart, a terminated backend) is never handed out (``db.session._ping_when_idle``)."""

from __future__ import annotations

import time

import psycopg
import pytest
from sqlalchemy import text

from condavault.db.session import Database
from tests.support.server import PG_ADMIN, create_pg_database, drop_pg_database

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def _backend_pid(db: Database) -> int:
    with db.session() as s:
        return int(s.execute(text("SELECT pg_backend_pid()")).scalar_one())


def test_a_pooled_connection_the_server_closed_is_replaced_at_checkout() -> None:
    url, name = create_pg_database()
    db = Database(url)
    try:
        pid = _backend_pid(db)
        assert _backend_pid(db) == pid  # the pool hands the same connection out again
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
            for _ in range(600):  # until the backend is gone (its socket then reads end of file)
                if admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone() is None:
                    break
                time.sleep(0.01)
        # used a moment ago (no idle ping is due): the closed socket is what tells the pool
        new_pid = _backend_pid(db)
        assert new_pid != pid
        with db.session() as s:
            assert s.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        db.dispose()
        drop_pg_database(name)


def test_sqlites_write_ahead_log_stays_small_while_readers_never_stop(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With a reader always active, SQLite never starts its log over by itself and the log grows with every
    write (4.8 GB in a 3.8 M-record mirror run, every read slower); writes checkpoint and truncate it."""
    import threading

    from condavault.db import session as db_session

    monkeypatch.setattr(db_session, "WAL_LIMIT", 2**20)
    monkeypatch.setattr(db_session, "WAL_CHECK_SECONDS", 0.0)
    monkeypatch.setattr(db_session, "WAL_BACKOFF_SECONDS", 0.0)
    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    wal = tmp_path / "x.db-wal"
    with db.write_session() as s:
        s.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    stop = threading.Event()

    def read() -> None:  # overlapping readers: at any moment one holds a snapshot
        while not stop.is_set():
            with db.session() as s:
                s.execute(text("SELECT count(*) FROM t")).scalar()

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    biggest = 0
    try:
        for _ in range(300):  # ~30 MB of pages
            with db.write_session() as s:
                s.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "x" * 500} for _ in range(200)])
            biggest = max(biggest, wal.stat().st_size)
    finally:
        stop.set()
        for t in readers:
            t.join()
    with db.session() as s:
        assert s.execute(text("SELECT count(*) FROM t")).scalar() == 60_000
    assert biggest < 8 * 2**20, biggest
    db.dispose()
