"""The Alembic migrations build exactly the tables the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from condavault.db import migrate
from condavault.db.models import Base
from condavault.db.session import make_engine
from condavault.search.models import UNMANAGED
from tests.support.server import database_url, drop_pg_database

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def test_models_match_the_migrations(tmp_path: Path, db_backend: str) -> None:
    url, pg_name = database_url(db_backend, tmp_path)
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        try:
            with engine.connect() as conn:
                # backend-specific search objects (FTS5 tables, GIN indexes) exist only in the migration
                opts = {"include_name": lambda name, _type, _parents: name not in UNMANAGED}
                diff = compare_metadata(MigrationContext.configure(conn, opts=opts), Base.metadata)
        finally:
            engine.dispose()
        assert diff == [], "models and migrations differ:\n" + "\n".join(map(str, diff))
    finally:
        if pg_name:
            drop_pg_database(pg_name)
