"""PostgreSQL plans lookups with the statistics ANALYZE gathered. A bulk import grows the records table far
past them (the CI server runs with autovacuum off, as some production servers do), and a lookup of a
batch of filenames was then planned on the (channel, subdir, name) index with a filter: every batch read
the whole subdir (a 3.8 M-record mirror ran at ~600 records/s). The server analyses what it grew."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.support.server import start_server, stop_server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def _records(n: int, start: int) -> dict[str, dict[str, object]]:
    return {
        f"bulk{i % 300}-1.{i}-0.conda": {
            "name": f"bulk{i % 300}",
            "version": f"1.{i}",
            "build": "0",
            "build_number": 0,
            "depends": [f"dep{i % 7} >=1"],
            "subdir": "linux-64",
            "sha256": f"{i:064x}",
            "md5": f"{i:032x}",
            "size": 100 + i,
        }
        for i in range(start, start + n)
    }


def test_a_bulk_import_refreshes_the_statistics_its_lookups_are_planned_with(tmp_path: Path) -> None:
    srv, pg = start_server(tmp_path / "srv", "postgresql")
    try:
        srv.channel("bulk")
        url = "/api/channels/bulk/subdirs/linux-64/import"

        def counted(table: str) -> float:
            with srv.ctx.db.session() as s:
                q = text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)")
                return float(s.execute(q, {"t": table}).scalar_one())

        with srv.client() as c:
            assert c.post(url, content=json.dumps({"packages.conda": _records(4000, 0)})).json()["created"] == 4000
            assert counted("records") < 1000  # under MIN_ROWS grown: not analysed yet
            for start in (4000, 8000):
                body = json.dumps({"packages.conda": _records(4000, start)})
                assert c.post(url, content=body).json()["created"] == 4000
        assert counted("records") >= 11_000
        assert counted("record_depends") >= 11_000
        with srv.ctx.db.session() as s:
            cid = s.execute(text("SELECT id FROM channels WHERE name = 'bulk'")).scalar_one()
            lookup = text(
                "EXPLAIN SELECT filename, sha256 FROM records WHERE channel_id = :c AND subdir = 'linux-64' "
                "AND filename IN ('bulk1-1.1-0.conda', 'bulk2-1.2-0.conda')"
            )
            plan = "\n".join(s.execute(lookup, {"c": cid}).scalars())
        assert "uq_records_channel_subdir_filename" in plan, plan
    finally:
        stop_server(srv, pg)
