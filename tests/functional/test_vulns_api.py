"""Vulnerability database end to end, over real HTTP on SQLite and PostgreSQL.

One server per module (per backend): a ``pk`` channel holding the real zlib and flask
builds from testdata, and the NVD, OSV (flask, torch) and OpenSSL CVE 5 feeds of ``testdata/vulns``
synced once (the benchmark syncs all of them). Tests that add data use
their own channel and package versions so they do not depend on each other.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conda_package_streaming.package_streaming import stream_conda_info
from typer.testing import CliRunner

from condavault.cli.main import app as cli_app
from condavault.events import AdminChange
from condavault.mirror.config import FilterConfig
from condavault.mirror.filters.base import FilterContext
from condavault.mirror.plan import compute_plan
from condavault.vulns import sbom
from tests.support.server import Server, start_server, stop_server

MAPPING = ("mappings", "parselmouth", "v0", "conda-forge", "compressed_mapping.json")
UPLOADED = ("zlib-", "flask-")
FEEDS = ("nvd/fkie-cad", "osv-pypi/flask", "osv-pypi/torch", "cve5/openssl")  # all of testdata/vulns: benchmark
ZLIB_FILES = {
    ("linux-64", "zlib-1.2.11-h7b6447c_3.conda"),
    ("linux-64", "zlib-1.2.11-h7b6447c_3.tar.bz2"),
    ("osx-64", "zlib-1.2.11-h1de35cc_3.conda"),
    ("osx-64", "zlib-1.2.11-h1de35cc_3.tar.bz2"),
    ("win-32", "zlib-1.2.11-h62dcd97_3.conda"),
    ("win-32", "zlib-1.2.11-h62dcd97_3.tar.bz2"),
    ("win-64", "zlib-1.2.11-h62dcd97_3.conda"),
    ("win-64", "zlib-1.2.11-h62dcd97_3.tar.bz2"),
}


@pytest.fixture(scope="module")
def vs(tmp_path_factory: pytest.TempPathFactory, db_backend: str, testdata: Path) -> Iterator[Server]:
    """A server with the parselmouth mapping configured, the ``pk`` channel and all advisories synced."""
    handle, pg = start_server(
        tmp_path_factory.mktemp("vulns"), db_backend, vulns_mapping_file=str(testdata.joinpath(*MAPPING))
    )
    try:
        handle.channel("pk")
        for path in sorted((testdata / "packages").glob("*/*")):
            if path.name.startswith(UPLOADED):
                r = handle.upload("pk", path)
                assert r.status_code == 200, r.text
        with handle.client() as c:
            r = c.post("/api/cves/sync", json={"sources": [str(testdata / "vulns" / s) for s in FEEDS]})
            assert r.status_code == 200, r.text
            assert r.json()["created"] > 70
        yield handle
    finally:
        stop_server(handle, pg)


def _import(server: Server, channel: str, subdir: str, records: dict[str, dict[str, Any]]) -> None:
    with server.client() as c:
        if c.get(f"/api/channels/{channel}").status_code != 200:
            server.channel(channel)
        r = c.post(f"/api/channels/{channel}/subdirs/{subdir}/import", json={"packages": records})
        assert r.status_code == 200, r.text
        r = c.post("/api/cves/sweep")
        assert r.status_code == 200, r.text


def _rec(name: str, version: str, build: str = "0", depends: list[str] | None = None, subdir: str = "linux-64") -> dict:
    return {
        "name": name,
        "version": version,
        "build": build,
        "build_number": 0,
        "depends": depends or [],
        "subdir": subdir,
    }


def _files(server: Server, advisory: str, token: str | None = "admin") -> set[tuple[str, str, str]]:
    with server.client(token) as c:
        r = c.get(f"/api/cves/{advisory}/files")
        assert r.status_code == 200, r.text
        return {(f["channel"], f["subdir"], f["filename"]) for f in r.json()}


def test_zlib_cve_flags_every_zlib_build(vs: Server) -> None:
    assert {(sd, fn) for ch, sd, fn in _files(vs, "CVE-2022-37434") if ch == "pk"} == ZLIB_FILES
    with vs.client() as c:
        out = c.get("/api/cves/CVE-2022-37434").json()
        assert out["max_score"] == 9.8 and "zlib" in out["conda_names"]
        assert {s["version"] for s in out["scores"]} >= {"3.1"}
        assert all(f["status"] == "reported" for f in out["affected_files"])
        listed = c.get("/api/cves", params={"package": "zlib"}).json()
        assert [a["id"] for a in listed] == ["CVE-2022-37434"] and listed[0]["files"] == 8
        assert c.get("/api/cves", params={"q": "37434"}).json()[0]["id"] == "CVE-2022-37434"


def test_flask_pysec_advisories_flag_flask(vs: Server) -> None:
    flask = ("pk", "noarch", "flask-0.11.1-py_0.tar.bz2")
    assert flask in _files(vs, "PYSEC-2018-66")  # found by alias
    with vs.client() as c:
        shown = c.get("/api/cves/PYSEC-2018-66").json()
        assert shown["id"] == "CVE-2018-1000656" and "PYSEC-2018-66" in shown["aliases"]
        ids = {a["id"] for a in c.get("/api/cves", params={"package": "flask"}).json()}
    assert {"CVE-2018-1000656", "CVE-2019-1010083", "CVE-2023-30861"} <= ids


OPENSSL_VERSIONS = [
    "1.0.1f",
    "1.0.1g",
    "1.0.2k",
    "1.0.2zc",
    "1.0.2zd",
    "1.1.1",
    "1.1.1m",
    "1.1.1n",
    "1.1.1w",
    "3.0.0",
    "3.0.1",
    "3.0.2",
    "3.0.6",
    "3.0.7",
    "3.1.0",
]
OPENSSL_EXPECTED = {
    # Heartbleed: 1.0.1 <= v < 1.0.1g
    "CVE-2014-0160": {"1.0.1f"},
    # BN_mod_sqrt loop: 1.0.2 <= v < 1.0.2zd, 1.1.1 <= v < 1.1.1n, 3.0.0 <= v < 3.0.2
    "CVE-2022-0778": {"1.0.2k", "1.0.2zc", "1.1.1", "1.1.1m", "3.0.0", "3.0.1"},
    # punycode overflow: 3.0.0 <= v < 3.0.7
    "CVE-2022-3602": {"3.0.0", "3.0.1", "3.0.2", "3.0.6"},
}


def test_openssl_cve5_records_against_metadata_only_versions(vs: Server) -> None:
    recs = {f"openssl-{v}-h0_0.tar.bz2": _rec("openssl", v, "h0_0") for v in OPENSSL_VERSIONS}
    _import(vs, "ossl", "linux-64", recs)
    with vs.client() as c:
        rows = c.get("/api/channels/ossl/cves").json()
    linked: dict[str, set[str]] = {}
    for row in rows:
        linked.setdefault(row["advisory"], set()).add(row["version"])
    for cve, versions in OPENSSL_EXPECTED.items():
        assert linked.get(cve, set()) == versions, cve
    assert not any(v in ("3.1.0",) for cve in ("CVE-2022-0778", "CVE-2022-3602") for v in linked.get(cve, ()))


def test_pypi_advisory_reaches_renamed_conda_package(vs: Server) -> None:
    recs = {
        "pytorch-1.12.1-py310_0.tar.bz2": _rec("pytorch", "1.12.1", "py310_0"),
        "pytorch-1.13.1-py310_0.tar.bz2": _rec("pytorch", "1.13.1", "py310_0"),
    }
    _import(vs, "torchy", "linux-64", recs)
    files = {fn for ch, _, fn in _files(vs, "PYSEC-2022-43015") if ch == "torchy"}
    assert files == {"pytorch-1.12.1-py310_0.tar.bz2"}  # PyPI "torch" -> conda "pytorch" (parselmouth)


def test_curation_per_link_and_rule_with_history(vs: Server) -> None:
    recs = {
        "zlib-1.2.8-cur_0.tar.bz2": _rec("zlib", "1.2.8", "cur_0", subdir="osx-64"),
        "zlib-1.2.9-cur_0.tar.bz2": _rec("zlib", "1.2.9", "cur_0", subdir="osx-64"),
    }
    _import(vs, "cur", "osx-64", recs)
    prov = vs.ctx.domains.vulns.provider
    audited: list[tuple[str, str]] = []
    vs.ctx.events.on_commit(AdminChange, lambda e: audited.append((e.action, e.target)))
    link = prov.vuln_links("osx-64", "zlib-1.2.9-cur_0.tar.bz2", {"name": "zlib", "version": "1.2.9"})
    assert [(x.advisory_id, x.status, x.score) for x in link] == [("CVE-2022-37434", "reported", 9.8)]
    with vs.client() as c:
        r = c.post(
            "/api/cves/CVE-2022-37434/curate",
            json={
                "status": "cleared",
                "reason": "patched build",
                "files": [{"channel": "cur", "subdir": "osx-64", "filename": "zlib-1.2.9-cur_0.tar.bz2"}],
            },
        )
        assert r.status_code == 200, r.text
        assert r.json()["changes"][0]["before"] == "reported"
        r = c.post(
            "/api/cves/CVE-2022-37434/curate",
            json={"status": "mitigated", "reason": "backport", "package": "zlib", "versions": "1.2.8"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["rule"]["versions"] == "1.2.8" and len(r.json()["changes"]) == 1
        bad = c.post("/api/cves/CVE-2022-37434/curate", json={"status": "bogus", "package": "zlib"})
        assert bad.status_code == 422
        rows = {r["filename"]: r for r in c.get("/api/channels/cur/cves").json()}
        assert rows["zlib-1.2.9-cur_0.tar.bz2"]["status"] == "cleared"
        assert rows["zlib-1.2.8-cur_0.tar.bz2"]["status"] == "mitigated"
        assert rows["zlib-1.2.8-cur_0.tar.bz2"]["curated_by"] == "rule"
        hist = c.get("/api/cves/CVE-2022-37434/history").json()
        assert {(h["after"], h["actor"], h["reason"]) for h in hist} >= {
            ("cleared", "admin", "patched build"),
            ("mitigated", "admin", "backport"),
        }
    assert ("cve:curate", "CVE-2022-37434:cur/osx-64/zlib-1.2.9-cur_0.tar.bz2") in audited
    assert ("cve:curate-range", "CVE-2022-37434:zlib 1.2.8") in audited
    # the rule also covers future links (a new metadata-only 1.2.8 build)
    _import(vs, "cur", "osx-64", {"zlib-1.2.8-cur_1.tar.bz2": _rec("zlib", "1.2.8", "cur_1", subdir="osx-64")})
    with vs.client() as c:
        rows = {r["filename"]: r for r in c.get("/api/channels/cur/cves").json()}
        assert rows["zlib-1.2.8-cur_1.tar.bz2"]["status"] == "mitigated"
    # cleared / mitigated links leave the threshold filter's view
    upstream = {"osx-64": {"info": {"subdir": "osx-64"}, "packages": {fn: dict(r) for fn, r in recs.items()}}}
    plan = compute_plan(upstream, FilterConfig(cve_score_threshold=7), FilterContext(vuln_links=prov.vuln_links))
    assert all(d.kept for d in plan.decisions.values()), plan.decisions
    upstream["osx-64"]["packages"]["zlib-1.2.10-up_0.tar.bz2"] = _rec("zlib", "1.2.10", "up_0", subdir="osx-64")
    plan = compute_plan(upstream, FilterConfig(cve_score_threshold=7), FilterContext(vuln_links=prov.vuln_links))
    assert plan.dropped == {("osx-64", "zlib-1.2.10-up_0.tar.bz2")}


def test_bulk_curation(vs: Server) -> None:
    _import(vs, "bulk", "linux-64", {"openssl-1.0.1e-b_0.tar.bz2": _rec("openssl", "1.0.1e", "b_0")})
    with vs.client() as c:
        files = [f for f in c.get("/api/channels/bulk/cves").json()]
        assert len(files) >= 2
        items = [
            {"advisory": f["advisory"], "status": "active", "reason": "triaged", "link_ids": [f["link_id"]]}
            for f in files[:2]
        ]
        r = c.post("/api/cves/curate/bulk", json={"items": items})
        assert r.status_code == 200, r.text
        assert r.json()["changed"] == 2
        statuses = [f["status"] for f in c.get("/api/channels/bulk/cves").json()]
        assert statuses.count("active") == 2


def _package_universe(packages: Path) -> dict[str, dict[str, Any]]:
    channel: dict[str, dict[str, Any]] = {}
    for path in sorted(packages.glob("*/*")):
        if not path.name.endswith((".conda", ".tar.bz2")):
            continue
        for tar, member in stream_conda_info(str(path)):
            if member.name == "info/index.json":
                fh = tar.extractfile(member)
                assert fh is not None
                index = json.load(fh)
                break
        subdir = path.parent.name
        index.setdefault("subdir", subdir)
        section = "packages.conda" if path.name.endswith(".conda") else "packages"
        rd = channel.setdefault(subdir, {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}})
        rd[section][path.name] = index
    return channel


def test_mirror_plan_drops_zlib_with_threshold(vs: Server, packages_dir: Path) -> None:
    upstream = _package_universe(packages_dir)
    records = {
        (sd, fn): rec
        for sd, rd in upstream.items()
        for key in ("packages", "packages.conda")
        for fn, rec in rd[key].items()
    }
    prov = vs.ctx.domains.vulns.provider
    fctx = FilterContext(vuln_links=prov.vuln_links, dependency_risk=prov.dependency_risk_for(records))
    plan = compute_plan(upstream, FilterConfig(cve_score_threshold=7), fctx)
    assert plan.dropped >= ZLIB_FILES
    assert {k for k in plan.dropped if k[1].startswith("zlib")} == ZLIB_FILES
    assert ("noarch", "flask-0.11.1-py_0.tar.bz2") in plan.kept  # PYSEC records here carry no score
    explained = plan.explain("zlib")
    assert explained and any("CVE-2022-37434" in d.value for d in explained if not d.kept)
    risk = fctx.dependency_risk
    assert risk is not None and risk("osx-64", "zlib-1.2.11-h1de35cc_3.tar.bz2") == 9.8
    plan = compute_plan(upstream, FilterConfig(max_dependency_risk=7), fctx)
    assert {k for k in plan.dropped if k[1].startswith("zlib")} == ZLIB_FILES


def test_mirror_max_dependency_risk_follows_the_solve(vs: Server) -> None:
    sd = "linux-64"
    recs = {
        "zlib-1.2.11-0.tar.bz2": _rec("zlib", "1.2.11"),
        "zlib-1.2.13-0.tar.bz2": _rec("zlib", "1.2.13"),
        "app-1.0-0.tar.bz2": _rec("app", "1.0", "0", ["zlib >=1.2"]),
        "pinned-1.0-0.tar.bz2": _rec("pinned", "1.0", "0", ["zlib 1.2.11"]),
    }
    upstream = {sd: {"info": {"subdir": sd}, "packages": recs, "packages.conda": {}}}
    prov = vs.ctx.domains.vulns.provider
    fctx = FilterContext(dependency_risk=prov.dependency_risk_for({(sd, fn): r for fn, r in recs.items()}))
    plan = compute_plan(upstream, FilterConfig(max_dependency_risk=7), fctx)
    assert {fn for _, fn in plan.dropped} == {"zlib-1.2.11-0.tar.bz2", "pinned-1.0-0.tar.bz2"}
    assert (sd, "app-1.0-0.tar.bz2") in plan.kept  # the solver installs zlib 1.2.13 with it
    assert any("risk=9.8" in d.value for d in plan.explain("pinned") if not d.kept)


def test_dependency_tree_risk_inherits_zlib_score(vs: Server) -> None:
    recs = {
        "zlib-1.2.11-r_0.tar.bz2": _rec("zlib", "1.2.11", "r_0", subdir="osx-64"),
        "libapp-1.0-0.tar.bz2": _rec("libapp", "1.0", "0", ["zlib >=1.2,<1.3"], subdir="osx-64"),
        "tool-2.0-0.tar.bz2": _rec("tool", "2.0", "0", ["libapp"], subdir="osx-64"),
        "safe-1.0-0.tar.bz2": _rec("safe", "1.0", "0", ["zlib >=1.3"], subdir="osx-64"),
    }
    _import(vs, "risky", "osx-64", recs)
    with vs.client() as c:
        out = c.get("/api/channels/risky/files/osx-64/tool-2.0-0.tar.bz2/cves").json()
        assert out["advisories"] == [] and out["own_score"] is None
        assert out["risk"] == 9.8 and "zlib-1.2.11" in out["risk_via"]
        assert c.get("/api/channels/risky/files/osx-64/safe-1.0-0.tar.bz2/cves").json()["risk"] is None
        # the cache is invalidated by curation: clearing zlib's link removes the inherited risk
        r = c.post(
            "/api/cves/CVE-2022-37434/curate",
            json={
                "status": "cleared",
                "reason": "not built with inflateGetHeader",
                "files": [{"channel": "risky", "subdir": "osx-64", "filename": "zlib-1.2.11-r_0.tar.bz2"}],
            },
        )
        assert r.status_code == 200, r.text
        assert c.get("/api/channels/risky/files/osx-64/tool-2.0-0.tar.bz2/cves").json()["risk"] is None


def test_dependency_tree_risk_is_what_the_solver_installs(vs: Server) -> None:
    """The risk follows a py-rattler solve, not every version a spec could match."""
    recs = {
        "zlib-1.2.11-r_0.tar.bz2": _rec("zlib", "1.2.11", "r_0", subdir="osx-64"),
        "zlib-1.2.13-r_0.tar.bz2": _rec("zlib", "1.2.13", "r_0", subdir="osx-64"),
        # any zlib >= 1.2 would do: the solver takes 1.2.13, which CVE-2022-37434 does not affect
        "app-1.0-0.tar.bz2": _rec("app", "1.0", "0", ["zlib >=1.2"], subdir="osx-64"),
        "pinned-1.0-0.tar.bz2": _rec("pinned", "1.0", "0", ["zlib 1.2.11"], subdir="osx-64"),
        # cannot be installed until missing-lib exists
        "broken-1.0-0.tar.bz2": _rec("broken", "1.0", "0", ["zlib 1.2.11", "missing-lib"], subdir="osx-64"),
    }
    _import(vs, "solved", "osx-64", recs)

    def risk(fn: str) -> dict[str, Any]:
        with vs.client() as c:
            r = c.get(f"/api/channels/solved/files/osx-64/{fn}/cves")
            assert r.status_code == 200, r.text
            return r.json()

    assert risk("app-1.0-0.tar.bz2")["risk"] is None
    pinned = risk("pinned-1.0-0.tar.bz2")
    assert pinned["risk"] == 9.8 and "zlib-1.2.11" in pinned["risk_via"]
    broken = risk("broken-1.0-0.tar.bz2")
    assert broken["risk"] is None and "not solvable" in broken["risk_via"] and "missing-lib" in broken["risk_via"]
    # a new record changes the solve: the cache is invalidated by the channel's change, not only by advisories
    _import(vs, "solved", "noarch", {"missing-lib-1.0-0.tar.bz2": _rec("missing-lib", "1.0", "0", subdir="noarch")})
    broken = risk("broken-1.0-0.tar.bz2")
    assert broken["risk"] == 9.8 and "zlib-1.2.11" in broken["risk_via"]
    # the package SBOM lists the solved tree: zlib 1.2.13 for app, not 1.2.11
    with vs.client() as c:
        bom = c.get("/api/channels/solved/files/osx-64/app-1.0-0.tar.bz2/sbom").json()
    versions = {comp["name"]: comp["version"] for comp in bom["components"]}
    assert versions.get("zlib") == "1.2.13", bom["components"]


def test_channel_report_csv_and_json(vs: Server) -> None:
    with vs.client() as c:
        r = c.get("/api/channels/pk/cves", params={"format": "csv"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(r.text)))
        zlib = [row for row in rows if row["name"] == "zlib"]
        assert len(zlib) == 8 and {row["advisory"] for row in zlib} == {"CVE-2022-37434"}
        assert all(row["risk"] == "9.8" for row in zlib)
        js = c.get("/api/channels/pk/cves", params={"format": "json"}).json()
        assert len(js) == len(rows)
        assert c.get("/api/cves/report", params={"format": "csv"}).status_code == 200


def test_cyclonedx_sbom_for_file_and_environment(vs: Server) -> None:
    with vs.client() as c:
        r = c.get("/api/channels/pk/files/osx-64/zlib-1.2.11-h1de35cc_3.tar.bz2/sbom")
        assert r.status_code == 200, r.text
        bom = r.json()
        assert sbom.validate(bom) == []
        root = bom["metadata"]["component"]
        assert root["name"] == "zlib" and root["purl"].startswith("pkg:conda/zlib@1.2.11")
        (vuln,) = bom["vulnerabilities"]
        assert vuln["id"] == "CVE-2022-37434" and vuln["affects"] == [{"ref": root["bom-ref"]}]
        assert vuln["ratings"] and vuln["analysis"]["state"] == "in_triage"
        env = c.post(
            "/api/check-env",
            json={
                "content": "dependencies:\n  - zlib\n",
                "channels": ["pk"],
                "platform": "osx-64",
                "format": "cyclonedx",
            },
        ).json()
        assert sbom.validate(env) == [] and [v["id"] for v in env["vulnerabilities"]] == ["CVE-2022-37434"]


def test_check_env_reports_zlib(vs: Server, tmp_path: Path) -> None:
    with vs.client() as c:
        r = c.post(
            "/api/check-env", json={"content": "channels: [pk]\ndependencies:\n  - zlib 1.2.*\n", "platform": "osx-64"}
        )
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["verdict"] == "fail" and out["kind"] == "environment"
        (pkg,) = out["packages"]
        assert (pkg["name"], pkg["version"], pkg["channel"]) == ("zlib", "1.2.11", "pk")
        assert [(a["advisory"], a["score"], a["status"]) for a in pkg["advisories"]] == [
            ("CVE-2022-37434", 9.8, "reported")
        ]
        lock = {
            "version": 1,
            "metadata": {"channels": [{"url": "conda-forge"}], "platforms": ["linux-64"]},
            "package": [
                {
                    "name": "zlib",
                    "version": "1.2.11",
                    "manager": "conda",
                    "platform": "linux-64",
                    "url": "https://conda.anaconda.org/conda-forge/linux-64/zlib-1.2.11-h166bdaf_1014.tar.bz2",
                },
                {
                    "name": "flask",
                    "version": "3.0.3",
                    "manager": "conda",
                    "platform": "linux-64",
                    "url": "https://conda.anaconda.org/conda-forge/noarch/flask-3.0.3-pyhd8ed1ab_0.conda",
                },
            ],
        }
        r = c.post("/api/check-env", json={"content": json.dumps(lock), "kind": "conda-lock"})
        assert r.status_code == 200, r.text
        by_name = {p["name"]: p for p in r.json()["packages"]}
        assert [a["advisory"] for a in by_name["zlib"]["advisories"]] == ["CVE-2022-37434"]
        assert by_name["flask"]["advisories"] == [] and by_name["flask"]["verdict"] == "pass"
        pixi = (
            "version: 6\nenvironments:\n  default:\n    channels:\n    - url: https://conda.anaconda.org/conda-forge/\n"
            "    packages:\n      osx-64:\n      - conda: https://conda.anaconda.org/conda-forge/osx-64/"
            "zlib-1.2.12-h5a1b5d6_0.conda\npackages:\n- conda: https://conda.anaconda.org/conda-forge/osx-64/"
            "zlib-1.2.12-h5a1b5d6_0.conda\n  sha256: 00\n"
        )
        out = c.post("/api/check-env", json={"content": pixi}).json()
        assert out["kind"] == "pixi-lock" and out["packages"][0]["in_server"] is False
        assert [a["advisory"] for a in out["packages"][0]["advisories"]] == ["CVE-2022-37434"]
        explicit = f"@EXPLICIT\n{vs.repo}/pk/osx-64/zlib-1.2.11-h1de35cc_3.tar.bz2\n"
        out = c.post("/api/check-env", json={"content": explicit, "channels": ["pk"]}).json()
        assert out["kind"] == "explicit" and out["packages"][0]["in_server"] is True
        assert out["packages"][0]["advisories"][0]["advisory"] == "CVE-2022-37434"
    env = tmp_path / "environment.yml"
    env.write_text("channels: [pk]\ndependencies:\n  - zlib\n")
    proc = vs.cli("check-env", str(env), "--platform", "osx-64", check=False)
    assert proc.returncode == 3, proc.stderr
    assert "CVE-2022-37434" in proc.stdout and "fail" in proc.stdout


def test_access_private_channel_and_permissions(vs: Server) -> None:
    vs.channel("secret", privacy="private")
    _import(vs, "secret", "linux-64", {"zlib-1.2.11-s_0.tar.bz2": _rec("zlib", "1.2.11", "s_0")})
    assert ("secret", "linux-64", "zlib-1.2.11-s_0.tar.bz2") in _files(vs, "CVE-2022-37434")
    anon = _files(vs, "CVE-2022-37434", token=None)
    assert anon and not any(ch == "secret" for ch, _, _ in anon)
    with vs.client(None) as c:
        shown = c.get("/api/cves/CVE-2022-37434").json()
        assert not any(f["channel"] == "secret" for f in shown["affected_files"])
        assert not any(r["channel"] == "secret" for r in c.get("/api/cves/report").json())
        assert c.get("/api/channels/secret/cves").status_code == 401
        assert c.get("/api/channels/secret/files/linux-64/zlib-1.2.11-s_0.tar.bz2/sbom").status_code == 401
        assert c.get("/api/cves", params={"channel": "secret"}).status_code == 401
        r = c.post("/api/cves/CVE-2022-37434/curate", json={"status": "cleared", "package": "zlib"})
        assert r.status_code == 401
        assert c.post("/api/cves/sync", json={"sources": []}).status_code == 401
        assert c.post("/api/cves/sweep").status_code == 401


def _cli(server: Server, *args: str) -> str:
    """The ``condavault`` CLI in-process (the subprocess path is covered by the check-env test)."""
    result = CliRunner().invoke(
        cli_app,
        list(args),
        env={"CONDAVAULT_URL": server.url, "CONDAVAULT_TOKEN": server.admin_token, "COLUMNS": "200"},
    )
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_cli_list_show_files_curate_report(vs: Server) -> None:
    _import(vs, "clich", "linux-64", {"zlib-1.2.11-c_0.tar.bz2": _rec("zlib", "1.2.11", "c_0")})
    assert "CVE-2022-37434" in _cli(vs, "cve", "list", "--package", "zlib", "--channel", "clich")
    out = _cli(vs, "cve", "show", "CVE-2022-37434")
    assert "score 9.8 (CVSS 3.1, nvd@nist.gov)" in out and "zlib" in out
    assert any(f["channel"] == "clich" for f in json.loads(_cli(vs, "cve", "files", "CVE-2022-37434", "--json")))
    _cli(
        vs,
        "cve",
        "curate",
        "CVE-2022-37434",
        "--status",
        "disputed",
        "--reason",
        "upstream disputes it",
        "--file",
        "clich/linux-64/zlib-1.2.11-c_0.tar.bz2",
    )
    report = _cli(vs, "cve", "report", "--channel", "clich", "--format", "csv")
    assert "disputed" in report and "zlib-1.2.11-c_0.tar.bz2" in report
    hist = json.loads(_cli(vs, "cve", "history", "CVE-2022-37434", "--json"))
    assert any(h["reason"] == "upstream disputes it" and h["after"] == "disputed" for h in hist)
    helptext = _cli(vs, "cve", "--help")
    assert all(cmd in helptext for cmd in ("sync", "list", "show", "files", "curate", "report", "history"))
