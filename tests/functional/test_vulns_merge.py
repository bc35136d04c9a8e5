"""Sync order does not change the data (issue 9, defects 1 and 2), over real HTTP and the real CLI.

The real ``testdata/vulns`` folders ``cve5``, ``nvd`` and ``osv-pypi`` are synced one at a time in each of
the 6 orders and all in one run, each time into an empty vulnerability database (after the first run its
sources are removed through ``condavault cve sources --remove``, which must leave nothing behind; later
runs empty the vulnerability tables directly, which is quicker). The
advisories (ids, aliases, effective scores) and links (advisory, file, matched_by, reason, kind) must be
the same every time, and the cases seen before the per-source records existed must hold in each run:

* syncing ``cve5`` after ``nvd`` moved CVE-2018-14618's link from curl 7.61.0 to the fixed 7.61.1;
* a ``cve5`` sync wiped CVE-2023-45803's PYSEC/GHSA aliases (``GET /api/cves/PYSEC-2023-212`` gave 404);
* an ``nvd`` sync dropped CVE-2025-4565's protobuf links.

The first run syncs through the ``condavault cve sync`` CLI in a subprocess (it failed every time while
the sync logged a reserved ``LogRecord`` name); the benchmark (``bench_vulns_accuracy.py``) repeats the six
orders on fresh databases.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from condavault.vulns import store
from condavault.vulns.models import VulnAdvisory, VulnSource
from tests.support.server import Server

SOURCES = ("cve5", "nvd", "osv-pypi")


def _rec(name: str, version: str) -> dict[str, Any]:
    return {"name": name, "version": version, "build": "0", "build_number": 0, "depends": []}


RECORDS = {
    "linux-64": [("curl", "7.61.0"), ("curl", "7.61.1"), ("libcurl", "7.61.0"), ("openssl", "1.1.1w"),
                 ("openssl", "3.1.0"), ("openssl", "3.1.1"), ("zlib", "1.2.11"), ("zlib", "1.2.13")],
    "noarch": [("urllib3", "1.26.17"), ("urllib3", "1.26.18"), ("urllib3", "2.0.6"), ("urllib3", "2.0.7"),
               ("protobuf", "4.25.7"), ("protobuf", "4.25.8"), ("protobuf", "5.29.4"), ("protobuf", "6.31.0"),
               ("jupyter_server", "1.15.0"), ("pytorch", "1.12.1"), ("django", "3.2.1")],
}  # fmt: skip


def _snapshot(server: Server) -> tuple[list[Any], list[Any]]:
    with server.client() as c:
        advisories = sorted(
            (a["id"], tuple(sorted(a["aliases"])), a["score"], a["score_version"])
            for a in c.get("/api/cves", params={"limit": 10000}).json()
        )
        r = c.get("/api/channels/ord/cves", params={"risk": False})
        assert r.status_code == 200, r.text
        links = sorted((x["advisory"], x["filename"], x["matched_by"], x["reason"], x["match_kind"]) for x in r.json())
    return advisories, links


def _check_known_cases(server: Server, links: list[Any]) -> None:
    linked = {(a, f) for a, f, *_ in links}
    assert ("CVE-2018-14618", "curl-7.61.0-0.tar.bz2") in linked
    assert ("CVE-2018-14618", "curl-7.61.1-0.tar.bz2") not in linked  # the CNA's "7.61.1 affected" is the fix
    protobuf = {f for a, f in linked if a == "CVE-2025-4565"}
    assert protobuf == {"protobuf-4.25.7-0.tar.bz2", "protobuf-5.29.4-0.tar.bz2", "protobuf-6.31.0-0.tar.bz2"}
    assert {f for a, f in linked if a == "CVE-2023-45803"} == {"urllib3-1.26.17-0.tar.bz2", "urllib3-2.0.6-0.tar.bz2"}
    with server.client() as c:
        r = c.get("/api/cves/PYSEC-2023-212")
        assert r.status_code == 200, r.text
        shown = r.json()
    assert shown["id"] == "CVE-2023-45803"
    assert {"PYSEC-2023-212", "GHSA-g4mx-q9vg-27p4"} <= set(shown["aliases"])
    assert {r["feed"] for r in shown["records"]} == {"cve5", "nvd", "osv"}  # every source's version is kept


def _assert_empty(server: Server) -> None:
    with server.client() as c:
        assert c.get("/api/cves/sources").json() == []
        assert c.get("/api/cves", params={"limit": 10}).json() == []
        assert c.get("/api/channels/ord/cves", params={"risk": False}).json() == []


def _remove_all_sources(server: Server) -> None:
    """Through the product: the CLI forgets every source (records, then advisories and links)."""
    for src in json.loads(server.cli("cve", "sources", "--json").stdout):
        server.cli("cve", "sources", "--remove", str(src["id"]))
    _assert_empty(server)


def _empty_tables(server: Server) -> None:
    """Test isolation only: sources (with their records) and advisories (with links) deleted in the
    database; the generation counter stays, so the server's caches see a change."""
    with server.ctx.db.write_session() as s:
        s.execute(delete(VulnSource))
        s.execute(delete(VulnAdvisory))
        store.bump_generation(s)
    server.ctx.domains.vulns.provider.invalidate()
    _assert_empty(server)


def test_sync_order_does_not_change_the_data(server: Server, testdata: Path) -> None:
    server.channel("ord")
    with server.client() as c:
        for subdir, items in RECORDS.items():
            packages = {f"{n}-{v}-0.tar.bz2": _rec(n, v) for n, v in items}
            r = c.post(f"/api/channels/ord/subdirs/{subdir}/import", json={"packages": packages})
            assert r.status_code == 200, r.text
    runs: list[tuple[str, ...] | None] = [*itertools.permutations(SOURCES), None]
    baseline: tuple[list[Any], list[Any]] | None = None
    for i, order in enumerate(runs):
        if order is None:  # all three in one run
            with server.client() as c:
                r = c.post("/api/cves/sync", json={"sources": [str(testdata / "vulns" / s) for s in SOURCES]})
                assert r.status_code == 200, r.text
        for source in order or ():
            if i == 0:  # the real CLI, uploading the folder (defect 1: every CLI sync failed)
                proc = server.cli("cve", "sync", "--from", str(testdata / "vulns" / source))
                assert "records" in proc.stdout and "advisories:" in proc.stdout, proc.stdout
            else:
                with server.client() as c:
                    r = c.post("/api/cves/sync", json={"sources": [str(testdata / "vulns" / source)]})
                    assert r.status_code == 200, r.text
        with server.client() as c:
            assert c.post("/api/cves/sweep").status_code == 200
        snap = _snapshot(server)
        _check_known_cases(server, snap[1])
        if baseline is None:
            baseline = snap
            assert len(snap[0]) > 1000 and len(snap[1]) > 50
        else:
            differing = set(snap[1]) ^ set(baseline[1])
            assert not differing, (order, sorted(differing)[:10])
            assert snap[0] == baseline[0], order
        if i == 0:
            listed = json.loads(server.cli("cve", "sources", "--json").stdout)
            assert {s["location"] for s in listed} == {"upload:cve5", "upload:nvd", "upload:osv-pypi"}
            assert next(s for s in listed if s["location"] == "upload:nvd")["feeds"]["nvd-1.1"] == 669
            _remove_all_sources(server)
        else:
            _empty_tables(server)
