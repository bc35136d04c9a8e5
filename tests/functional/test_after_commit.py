"""Work registered with ``after_commit`` runs once the outermost transaction commits, after its data is
visible to other connections, savepoints or not; a rolled-back savepoint drops only its own work.

Uploads settle unique-constraint races in a savepoint (``channels.records._settle_races``), and SQLAlchemy
reports a released savepoint as a commit and a rolled-back one as a rollback: the work of an upload's
events once ran before its records were visible, and a savepoint lost to a race dropped the work of the
whole transaction."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from condavault.db.session import Database, after_commit
from tests.support.server import create_pg_database, drop_pg_database

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'x.db'}")
        name = None
    else:
        url, name = create_pg_database()
        database = Database(url)
    with database.write_session() as s:
        s.execute(text("CREATE TABLE t (x INTEGER PRIMARY KEY)"))
    try:
        yield database
    finally:
        database.dispose()
        if name is not None:
            drop_pg_database(name)


def test_work_waits_for_the_outermost_commit_and_a_lost_savepoint_drops_only_its_own(db: Database) -> None:
    ran: list[tuple[str, int]] = []

    def note(label: str) -> None:
        with db.engine.connect() as other:  # what another connection sees when the work runs
            ran.append((label, int(other.execute(text("SELECT count(*) FROM t")).scalar_one())))

    with db.write_session() as s:
        s.execute(text("INSERT INTO t VALUES (1)"))
        after_commit(s, lambda: note("outer"))
        with s.begin_nested():
            s.execute(text("INSERT INTO t VALUES (2)"))
            after_commit(s, lambda: note("released savepoint"))
        assert ran == []  # not at the savepoint's release
        try:
            with s.begin_nested():
                after_commit(s, lambda: note("lost savepoint"))
                s.execute(text("INSERT INTO t VALUES (1)"))  # a unique-constraint race lost
        except IntegrityError:
            pass
        s.execute(text("INSERT INTO t VALUES (3)"))
        assert ran == []
    assert ran == [("outer", 3), ("released savepoint", 3)]

    ran.clear()
    with pytest.raises(RuntimeError), db.write_session() as s:
        s.execute(text("INSERT INTO t VALUES (4)"))
        with s.begin_nested():
            after_commit(s, lambda: note("inner"))
        after_commit(s, lambda: note("outer"))
        raise RuntimeError("the transaction fails")
    assert ran == []
    with db.write_session() as s:  # nothing left over for the session's next transaction either
        s.execute(text("INSERT INTO t VALUES (5)"))
    assert ran == []
