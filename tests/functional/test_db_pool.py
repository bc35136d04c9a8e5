"""Pooled PostgreSQL connections: no ping round trip on every checkout, yet a connection the server
closed (a restart, a terminated backend) is never handed out (``db.session._ping_when_idle``)."""

from __future__ import annotations

import time

import psycopg
from sqlalchemy import text

from condavault.db.session import Database
from tests.support.server import PG_ADMIN, create_pg_database, drop_pg_database


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
