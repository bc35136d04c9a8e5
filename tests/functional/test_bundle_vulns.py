"""A vulns bundle updates the vulnerability database as an online sync would: the receiving server ends
with the same advisories, the same links (and statuses) as the server that synced the real feeds online,
including the name mapping and curation; an incremental vulns bundle follows a later sync."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from condavault.airgap.export import export_bundle
from condavault.airgap.importer import Importer
from tests.functional.test_bundle import two_servers
from tests.support.server import Server

ITEMS = [
    ("openssl", "1.1.1t"),
    ("openssl", "3.0.8"),
    ("openssl", "3.1.1"),
    ("protobuf", "4.25.7"),
    ("curl", "7.61.0"),
    ("flask", "0.12"),
    ("django", "2.0"),
    ("aiohttp", "3.8.0"),
]


@pytest.fixture
def pair(tmp_path: Path, db_backend: str) -> Iterator[tuple[Server, Server, list[str]]]:
    yield from two_servers(tmp_path, db_backend)


def _import_records(server: Server, channel: str, items: list[tuple[str, str]]) -> None:
    with server.client() as c:
        if c.get(f"/api/channels/{channel}").status_code == 404:
            server.channel(channel)
        packages = {
            f"{n}-{v}-0.tar.bz2": {"name": n, "version": v, "build": "0", "build_number": 0, "depends": []}
            for n, v in items
        }
        r = c.post(f"/api/channels/{channel}/subdirs/noarch/import", json={"packages": packages})
        assert r.status_code == 200, r.text
        assert c.post("/api/cves/sweep").status_code == 200


def _sync(server: Server, *paths: Path) -> dict[str, Any]:
    with server.client() as c:
        r = c.post("/api/cves/sync", json={"sources": [str(p) for p in paths]})
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def _links(server: Server, channel: str) -> set[tuple[str, str, str, str]]:
    with server.client() as c:
        assert c.post("/api/cves/sweep").status_code == 200
        r = c.get(f"/api/channels/{channel}/cves", params={"risk": False})
        assert r.status_code == 200, r.text
        return {(row["advisory"], row["filename"], row["status"], row.get("match_kind", "")) for row in r.json()}


def _advisories(server: Server) -> dict[str, str]:
    """Each advisory as the API lists it (ids, aliases, scores, names ...), without its timestamps."""
    with server.client() as c:
        rows = c.get("/api/cves", params={"limit": 1000}).json()
    assert rows
    return {
        a["id"]: json.dumps(
            {k: v for k, v in a.items() if not k.endswith(("_at", "updated", "created"))}, sort_keys=True
        )
        for a in rows
    }


def test_vulns_bundle_gives_the_links_of_an_online_sync(pair, testdata: Path, tmp_path: Path) -> None:
    origin, inside, _trusted = pair
    v = testdata / "vulns"
    _import_records(origin, "v", ITEMS)
    _sync(
        origin,
        v / "cve5" / "openssl",
        v / "nvd" / "api-2.0-multi",
        v / "cve5" / "osv.dev-cve5",
        v / "osv-pypi" / "flask",
        v / "osv-pypi" / "django",
        testdata / "mappings" / "parselmouth" / "v0" / "conda-forge" / "compressed_mapping.json",
    )
    online = _links(origin, "v")
    assert len(online) >= 5, online
    # curation on the connected side travels too: one link decision and one version-range rule
    adv, fn = sorted((a, f) for a, f, _s, _k in online if f.startswith("openssl-3.0.8"))[0]
    with origin.client() as c:
        r = c.post(
            f"/api/cves/{adv}/curate",
            json={
                "status": "mitigated",
                "reason": "patched build",
                "files": [{"channel": "v", "subdir": "noarch", "filename": fn}],
            },
        )
        assert r.status_code == 200, r.text
        django_adv = sorted(a for a, f, _s, _k in online if f.startswith("django"))[0]
        r = c.post(
            f"/api/cves/{django_adv}/curate",
            json={"status": "cleared", "reason": "not used", "package": "django", "versions": "2.0"},
        )
        assert r.status_code == 200, r.text
    curated = _links(origin, "v")
    assert curated != online

    full = export_bundle(origin.ctx, tmp_path / "full", channels=["v"], vulns=True)
    rep = Importer(inside.ctx).run(tmp_path / "full")
    assert rep.status == "imported" and rep.vulns is not None and rep.vulns["records"] > 0, rep
    assert _links(inside, "v") == curated
    assert _advisories(inside) == _advisories(origin)

    # a later online sync on the connected side, carried by an incremental bundle
    _import_records(origin, "v", [("aiohttp", "3.8.1")])
    _sync(origin, v / "osv-pypi" / "aiohttp")
    later = _links(origin, "v")
    assert any(f.startswith("aiohttp") for _a, f, _s, _k in later) and later != curated
    export_bundle(origin.ctx, tmp_path / "inc", channels=["v"], vulns=True, since=full.bundle_id)
    rep2 = Importer(inside.ctx).run(tmp_path / "inc")
    assert rep2.status == "imported" and rep2.parent_id == full.bundle_id
    assert _links(inside, "v") == later
    assert _advisories(inside) == _advisories(origin)
