"""Migration ``0005_vuln_sources`` on SQLite and PostgreSQL: the models match the migrated schema, and
advisories stored by ``0004_vulns`` become legacy records that keep being served until real records of the
same advisory arrive (then they no longer count), with their links and curation kept."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

import condavault.app  # noqa: F401  (every domain's models on Base.metadata)
from condavault.db import migrate
from condavault.db.base import Base
from condavault.db.session import Database
from condavault.vulns import catalog, store
from condavault.vulns.advisory import Advisory, Affected, Range
from condavault.vulns.mapping import NameMapping
from condavault.vulns.merge import SourceRecord
from condavault.vulns.models import VulnAdvisory, VulnSourceRecord
from tests.support.server import create_pg_database, drop_pg_database

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture
def db_url(db_backend: str, tmp_path: Path) -> Iterator[str]:
    if db_backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    url, name = create_pg_database()
    try:
        yield url
    finally:
        drop_pg_database(name)


def test_models_match_the_migrated_schema(db_url: str) -> None:
    migrate.upgrade(db_url)
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert [d for d in diffs if "vuln_" in repr(d)] == []


def test_0004_advisories_become_legacy_records(db_url: str) -> None:
    migrate.upgrade(db_url, "0004_vulns")
    old = Advisory(
        "CVE-2022-37434",
        aliases=("GHSA-OLD-ALIAS",),
        summary="stored by 0004",
        affected=(Affected("cpe", "zlib", "zlib", ranges=(Range(last_affected="1.2.12"),)),),
        sources=("nvd",),
    )
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO vuln_advisories (advisory_id, summary, max_score, withdrawn, content_hash, data, origin, "
                "created_at, updated_at) VALUES (:aid, :summary, 9.8, :w, 'h0', :data, 'x', :now, :now)"
            ),
            {"aid": old.id, "summary": old.summary, "w": False, "data": old.to_json(), "now": "2024-01-01 00:00:00"},
        )
    engine.dispose()
    migrate.upgrade(db_url)
    db = Database(db_url)
    try:
        mapping = NameMapping.default()
        with db.session() as s:
            (rec,) = s.scalars(sa.select(VulnSourceRecord)).all()
            row = s.scalar(sa.select(VulnAdvisory))
            assert row is not None and (rec.feed, rec.record_id, rec.group_pk) == ("legacy", old.id, row.id)
            assert json.loads(rec.data)["affected"][0]["source"] == "legacy"
            assert store.find_advisory(s, "CVE-2022-37434") is not None
        # a real NVD record of the same advisory arrives: it replaces the legacy content in the merged view
        real = Advisory(
            "CVE-2022-37434",
            summary="from nvd",
            affected=(Affected("cpe", "zlib", "zlib", ranges=(Range(last_affected="1.2.12"),), source="nvd"),),
            sources=("nvd",),
        )
        with db.write_session() as s:
            src = catalog.source_pk(s, "nvd-test")
            stored = catalog.store_records(s, src, [SourceRecord.of(real).advisory])
            merged = catalog.remerge(s, stored.touched, mapping)
            assert (merged.created, merged.updated, merged.removed) == (0, 1, 0)
        with db.session() as s:
            row = s.scalar(sa.select(VulnAdvisory))
            assert row is not None and row.summary == "from nvd" and row.match_pending
            adv = Advisory.from_json(row.data)
            assert adv.sources == ("nvd",) and "GHSA-OLD-ALIAS" in adv.aliases  # the old alias stays findable
    finally:
        db.dispose()
