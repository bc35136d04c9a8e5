"""Vulnerability data that stays right (issue 9, defects 3 to 6), over real HTTP on SQLite and PostgreSQL.

One server per module and backend; each test uses its own channel and syncs what it needs (sources
accumulate, so every assertion holds whatever the other tests synced).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from condavault.mirror.config import FilterConfig
from condavault.mirror.filters.base import FilterContext
from condavault.mirror.plan import compute_plan
from tests.support.server import Server, start_server, stop_server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

PARSELMOUTH = ("mappings", "parselmouth", "v0", "conda-forge", "compressed_mapping.json")


@pytest.fixture(scope="module")
def vd(tmp_path_factory: pytest.TempPathFactory, db_backend: str) -> Iterator[Server]:
    """Default settings: no name mapping configured, the shipped tables only."""
    handle, pg = start_server(tmp_path_factory.mktemp("vdata"), db_backend)
    try:
        yield handle
    finally:
        stop_server(handle, pg)


def _rec(name: str, version: str, build: str = "0", depends: list[str] | None = None) -> dict[str, Any]:
    return {"name": name, "version": version, "build": build, "build_number": 0, "depends": depends or []}


def _import(server: Server, channel: str, subdir: str, items: list[tuple[str, str]], **extra: Any) -> None:
    with server.client() as c:
        if c.get(f"/api/channels/{channel}").status_code == 404:
            server.channel(channel)
        packages = {f"{n}-{v}-0.tar.bz2": {**_rec(n, v), **extra.get(n, {})} for n, v in items}
        r = c.post(f"/api/channels/{channel}/subdirs/{subdir}/import", json={"packages": packages})
        assert r.status_code == 200, r.text
        assert c.post("/api/cves/sweep").status_code == 200


def _sync(server: Server, *paths: Path, **params: Any) -> dict[str, Any]:
    with server.client() as c:
        r = c.post("/api/cves/sync", json={"sources": [str(p) for p in paths]}, params=params)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def _links(server: Server, channel: str) -> dict[tuple[str, str], dict[str, Any]]:
    with server.client() as c:
        r = c.get(f"/api/channels/{channel}/cves", params={"risk": False})
        assert r.status_code == 200, r.text
        return {(row["advisory"], f"{row['name']}-{row['version']}"): row for row in r.json()}


def test_degenerate_cve5_range_is_read_as_its_release_line(vd: Server, testdata: Path) -> None:
    """OpenSSL's CVE-2023-2650 lists 'version 3.1.1, lessThan 3.1.1': 3.1.0 is affected, 1.1.1w is not."""
    versions = ["1.1.1t", "1.1.1u", "1.1.1w", "3.0.8", "3.0.9", "3.1.0", "3.1.1"]
    _import(vd, "degen", "linux-64", [("openssl", v) for v in versions])
    _sync(vd, testdata / "vulns" / "cve5" / "openssl" / "CVE-2023-2650.json")
    links = _links(vd, "degen")
    assert {v for a, v in links if a == "CVE-2023-2650"} == {"openssl-1.1.1t", "openssl-3.0.8", "openssl-3.1.0"}
    reason = links[("CVE-2023-2650", "openssl-3.1.0")]["reason"]
    assert "version 3.1.1, lessThan 3.1.1' read as >=3.1.0,<3.1.1" in reason, reason


def test_effective_score_by_preference_everywhere(vd: Server, testdata: Path) -> None:
    """CVE-2018-14618: NVD's v3.0 9.8, not its v2 10.0; CVE-2025-4565: NVD's v3.1 5.3, not the CNA's
    v4.0 8.2, which must not cross the 7.0 threshold of filters, check-env, risk and reports."""
    _import(vd, "scores", "noarch", [("protobuf", "4.25.7"), ("curl", "7.61.0")])
    _import(vd, "scores", "noarch", [("app", "1.0")], app={"depends": ["protobuf 4.25.7"]})
    _sync(vd, testdata / "vulns" / "nvd" / "api-2.0-multi", testdata / "vulns" / "cve5" / "osv.dev-cve5")
    with vd.client() as c:
        curl = c.get("/api/cves/CVE-2018-14618").json()
        assert (curl["score"], curl["score_version"], curl["score_source"]) == (9.8, "3.0", "nvd@nist.gov")
        assert {(s["version"], s["score"]) for s in curl["scores"]} >= {("2.0", 10.0), ("3.0", 9.8), ("3.0", 7.5)}
        proto = c.get("/api/cves/CVE-2025-4565").json()
        assert (proto["score"], proto["score_version"], proto["max_score"]) == (5.3, "3.1", 8.2)
        assert any(s["version"] == "4.0" and s["score"] == 8.2 for s in proto["scores"])  # kept, with its source
        assert "CVE-2025-4565" not in {a["id"] for a in c.get("/api/cves", params={"min_score": 7}).json()}
        rows = {r["name"]: r for r in c.get("/api/channels/scores/cves").json() if r["advisory"] == "CVE-2025-4565"}
        assert rows["protobuf"]["score"] == 5.3
        env = c.post(
            "/api/check-env",
            json={"content": "dependencies:\n  - protobuf\n", "channels": ["scores"], "platform": "linux-64"},
        ).json()
        assert env["threshold"] == 7.0 and env["verdict"] == "warn", env
        app = c.get("/api/channels/scores/files/noarch/app-1.0-0.tar.bz2/cves").json()
        assert app["risk"] == 5.3 and "protobuf-4.25.7" in app["risk_via"]
    prov = vd.ctx.domains.vulns.provider
    upstream = {
        "noarch": {
            "info": {"subdir": "noarch"},
            "packages": {
                "protobuf-4.25.7-0.tar.bz2": _rec("protobuf", "4.25.7"),
                "curl-7.61.0-0.tar.bz2": _rec("curl", "7.61.0"),
            },
        }
    }
    plan = compute_plan(upstream, FilterConfig(cve_score_threshold=7), FilterContext(vuln_links=prov.vuln_links))
    assert plan.dropped == {("noarch", "curl-7.61.0-0.tar.bz2")}  # 9.8 > 7; protobuf's 5.3 is not


def test_score_preference_is_a_setting(tmp_path: Path, db_backend: str, testdata: Path) -> None:
    handle, pg = start_server(tmp_path / "pref", db_backend, vulns_score_preference=["cna:4.0", "*:3.x"])
    try:
        _sync(handle, testdata / "vulns" / "nvd" / "api-2.0-multi", testdata / "vulns" / "cve5" / "osv.dev-cve5")
        with handle.client() as c:
            proto = c.get("/api/cves/CVE-2025-4565").json()
            assert (proto["score"], proto["score_version"]) == (8.2, "4.0")
            assert c.get("/api/cves/CVE-2018-14618").json()["score"] == 9.8  # no CNA v4.0: NVD's v3.0
    finally:
        stop_server(handle, pg)


def test_pypi_names_map_by_default_and_bundles_are_labelled(vd: Server, testdata: Path) -> None:
    osv = testdata / "vulns" / "osv-pypi"
    _import(
        vd,
        "names",
        "noarch",
        [("jupyter_server", "1.15.0"), ("pytorch", "1.12.1"), ("redis-py", "4.5.3"), ("redis", "7.0.10"),
         ("lxml", "4.6.4"), ("inkscape", "1.0"), ("nsight-compute", "2023.1.0"), ("pip", "20.0")],
    )  # fmt: skip
    _sync(vd, osv / "jupyter-server", osv / "torch", osv / "redis", osv / "lxml", osv / "pip")
    links = _links(vd, "names")
    names = {v.rsplit("-", 1)[0] for _, v in links}
    # PEP 503 spelling (jupyter-server -> jupyter_server) and the shipped renames, with no configuration
    assert {"jupyter_server", "pytorch", "redis-py", "lxml", "pip"} <= names
    assert "redis" not in names  # the Redis server is not PyPI redis
    assert not {"inkscape", "nsight-compute"} & names  # no mapping says they carry lxml or pip yet
    # the full parselmouth mapping, synced like the advisories: inkscape bundles lxml, it is not lxml
    out = _sync(vd, testdata.joinpath(*PARSELMOUTH))
    assert out["names"] > 30000 and out["sources"][0]["mapping_changed"] is True
    links = _links(vd, "names")
    bundled = {k: row for k, row in links.items() if k[1].startswith(("inkscape", "nsight-compute"))}
    assert {v for _, v in bundled} == {"inkscape-1.0", "nsight-compute-2023.1.0"}
    assert all(row["match_kind"] == "bundled" and not row["counts"] for row in bundled.values())
    assert all(row["matched_by"].startswith("bundled:pypi:") for row in bundled.values())
    some = next(row for k, row in bundled.items() if k[1] == "inkscape-1.0")
    assert "inkscape bundles a copy of PyPI lxml" in some["reason"] and "not tested" in some["reason"]
    assert all(row["match_kind"] == "direct" for k, row in links.items() if k[1].startswith("lxml"))
    with vd.client() as c:
        own = c.get("/api/channels/names/files/noarch/inkscape-1.0-0.tar.bz2/cves").json()
        assert own["advisories"] and own["own_score"] is None  # not the package's own vulnerabilities
        r = c.post(
            f"/api/cves/{some['advisory']}/curate",
            json={"status": "active", "reason": "this build ships the old lxml", "link_ids": [some["link_id"]]},
        )
        assert r.status_code == 200, r.text
        confirmed = {row["link_id"]: row for row in c.get("/api/channels/names/cves").json()}[some["link_id"]]
        assert confirmed["counts"] is True and confirmed["match_kind"] == "bundled"
        # forgetting the mapping source takes its bundled links away
        (source,) = [s for s in c.get("/api/cves/sources").json() if s["location"].endswith("compressed_mapping.json")]
        assert source["names"] > 30000
        assert c.delete(f"/api/cves/sources/{source['id']}").status_code == 200
    assert not any(k[1].startswith(("inkscape", "nsight-compute")) for k in _links(vd, "names"))


def test_reasons_follow_the_current_match(vd: Server, testdata: Path, tmp_path: Path) -> None:
    """A kept link takes the reason of its current match (CVE-2023-45803 kept saying "matched by
    pypi:urllib3" after it became NVD-only); its curation stays."""
    _import(vd, "reasons", "noarch", [("urllib3", "1.26.17")])
    feed = tmp_path / "osv-urllib3"
    feed.mkdir()
    shutil.copy(testdata / "vulns" / "osv-pypi" / "urllib3" / "PYSEC-2023-212.yaml", feed)
    _sync(vd, feed)
    key = ("CVE-2023-45803", "urllib3-1.26.17")
    first = _links(vd, "reasons")[key]
    assert first["matched_by"] == "pypi:urllib3" and "is listed as affected" in first["reason"]
    with vd.client() as c:
        r = c.post(
            "/api/cves/CVE-2023-45803/curate",
            json={"status": "active", "reason": "confirmed", "link_ids": [first["link_id"]]},
        )
        assert r.status_code == 200, r.text
    # the same source, a new version of the record: no explicit list any more, only ranges
    doc = yaml.safe_load((feed / "PYSEC-2023-212.yaml").read_text())
    for affected in doc["affected"]:
        affected.pop("versions", None)
    doc["modified"] = "2030-01-01T00:00:00Z"
    (feed / "PYSEC-2023-212.yaml").write_text(yaml.safe_dump(doc))
    out = _sync(vd, feed)
    assert out["records_changed"] == 1 and out["links_updated"] >= 1
    second = _links(vd, "reasons")[key]
    assert second["link_id"] == first["link_id"] and second["status"] == "active"  # curation kept
    assert "is in affected range <1.26.18" in second["reason"], second["reason"]
    # the advisory becomes NVD-only: forget the OSV source, sync NVD's record
    _sync(vd, testdata / "vulns" / "nvd" / "api-2.0-multi")
    with vd.client() as c:
        (source,) = [s for s in c.get("/api/cves/sources").json() if s["location"] == str(feed)]
        assert c.delete(f"/api/cves/sources/{source['id']}").status_code == 200
    third = _links(vd, "reasons")[key]
    assert third["link_id"] == first["link_id"] and third["status"] == "active"
    assert third["matched_by"] == "cpe:python:urllib3" and "per nvd" in third["reason"], third


def test_sources_api_permissions_and_bounds(vd: Server, testdata: Path) -> None:
    _sync(vd, testdata / "vulns" / "nvd" / "fkie-cad")
    with vd.client(None) as c:
        assert c.get("/api/cves/sources").status_code == 401
        assert c.delete("/api/cves/sources/1").status_code == 401
        records = c.get("/api/cves/CVE-2022-37434").json()["records"]  # the advisory itself is public ...
        assert records and all("source" not in r for r in records)  # ... where it came from is not
    with vd.client() as c:
        assert any(r["source"].endswith("fkie-cad") for r in c.get("/api/cves/CVE-2022-37434").json()["records"])
    with vd.client() as c:
        assert c.delete("/api/cves/sources/999999").json()["error"]["code"] == "vuln_source_not_found"
        assert c.delete(f"/api/cves/sources/{2**40}").status_code == 422
        assert c.delete("/api/cves/sources/x").status_code == 422
        bad = c.post(
            "/api/cves/sync", params={"name": "../x"}, content=b"{}", headers={"Content-Type": "application/zip"}
        )
        assert bad.status_code == 422


def test_upload_keeps_its_name_and_a_mapping_file_is_a_source(vd: Server, testdata: Path, tmp_path: Path) -> None:
    table = tmp_path / "names.yaml"
    table.write_text(yaml.safe_dump({"is": {"some-pypi-project": ["renamed-in-conda"]}}))
    proc = vd.cli("cve", "sync", "--from", str(table), "--name", "our-names")
    assert "1 name mapping entries" in proc.stdout, proc.stdout
    listed = json.loads(vd.cli("cve", "sources", "--json").stdout)
    assert any(s["location"] == "upload:our-names" and s["names"] == 1 for s in listed)
