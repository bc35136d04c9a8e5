"""Vulnerability sources: incremental re-sync, URL sources with validators, the CLI upload path, the
ingest listener with ``info/security.json`` evidence and the sweep over metadata-only imports."""

from __future__ import annotations

import functools
import http.server
import io
import json
import tarfile
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from condavault.cli.main import app as cli_app
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

ZLIB_NVD = ("vulns", "nvd", "fkie-cad", "CVE-2022", "CVE-2022-374xx", "CVE-2022-37434.json")
ZLIB_OSX = ("packages", "osx-64", "zlib-1.2.11-h1de35cc_3.tar.bz2")


def _sync(server: Server, *sources: str) -> dict:
    with server.client() as c:
        r = c.post("/api/cves/sync", json={"sources": list(sources)})
        assert r.status_code == 200, r.text
        return r.json()


def _linked(server: Server, channel: str) -> set[tuple[str, str]]:
    with server.client() as c:
        r = c.get(f"/api/channels/{channel}/cves")
        assert r.status_code == 200, r.text
        return {(row["advisory"], row["filename"]) for row in r.json()}


def test_incremental_resync_restores_only_changed_advisories(server: Server, testdata: Path, tmp_path: Path) -> None:
    feed = tmp_path / "feed"
    feed.mkdir()
    doc = json.loads(testdata.joinpath(*ZLIB_NVD).read_text())
    (feed / "CVE-2022-37434.json").write_text(json.dumps(doc))
    first = _sync(server, str(feed))
    assert (first["created"], first["links_added"]) == (1, 0)
    server.channel("inc")
    r = server.upload("inc", testdata.joinpath(*ZLIB_OSX))
    assert r.status_code == 200, r.text
    # the ingest listener matched the new record against the advisories indexed under "zlib"
    assert _linked(server, "inc") == {("CVE-2022-37434", "zlib-1.2.11-h1de35cc_3.tar.bz2")}
    again = _sync(server, str(feed))
    assert (again["records_unchanged"], again["updated"], again["records_checked"]) == (1, 0, 0)
    # the advisory changes (fixed earlier): only it is re-stored and re-matched, only zlib records checked
    (feed / "CVE-2022-37434.json").write_text(json.dumps(doc).replace("1.2.12", "1.2.10"))
    changed = _sync(server, str(feed))
    assert (changed["updated"], changed["unchanged"], changed["links_removed"]) == (1, 0, 1)
    assert changed["records_checked"] == 1
    assert _linked(server, "inc") == set()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_dir(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()


def test_url_sources_with_validators_and_cli_upload(server: Server, testdata: Path, http_dir: tuple[Path, str]) -> None:
    root, base = http_dir
    (root / "zlib.json").write_bytes(testdata.joinpath(*ZLIB_NVD).read_bytes())
    with zipfile.ZipFile(root / "flask-osv.zip", "w") as zf:
        for p in sorted((testdata / "vulns" / "osv-pypi" / "flask").glob("*")):
            zf.write(p, f"flask/{p.name}")
    first = _sync(server, f"{base}/zlib.json", f"{base}/flask-osv.zip")
    assert [s["status"] for s in first["sources"]] == ["downloaded", "downloaded"]
    assert first["created"] == 4
    second = _sync(server, f"{base}/zlib.json", f"{base}/flask-osv.zip")
    assert [s["status"] for s in second["sources"]] == ["not-modified", "not-modified"]
    assert second["records_unchanged"] == 4 and second["updated"] == 0
    with server.client() as c:
        assert c.get("/api/cves/PYSEC-2018-66").json()["id"] == "CVE-2018-1000656"
        bad = c.post("/api/cves/sync", json={"sources": [f"{base}/missing.zip"]})
        assert bad.status_code == 502 and bad.json()["error"]["code"] == "vuln_source_failed"
    # the CLI zips a local folder, uploads it and follows the sync job
    env = {"CONDAVAULT_URL": server.url, "CONDAVAULT_TOKEN": server.admin_token, "COLUMNS": "200"}
    result = CliRunner().invoke(
        cli_app, ["cve", "sync", "--from", str(testdata / "vulns" / "cve5" / "openssl")], env=env
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "67 records (67 new, 0 changed, 0 unchanged); advisories: 67 new" in result.output, result.output
    with server.client() as c:
        assert "openssl" in c.get("/api/cves/CVE-2014-0160").json()["conda_names"]
        assert c.get("/api/cves/CVE-2014-0160/history").json() == []


def test_sweep_and_security_json_evidence(server: Server, testdata: Path, tmp_path: Path) -> None:
    # an upload's info/security.json is kept, and becomes evidence on links made by a later advisory
    server.channel("sec")
    pkg = _package_with_security(tmp_path, {"mitigated": [{"id": "CVE-2022-37434", "patch": "inflate-extra.patch"}]})
    r = server.upload("sec", pkg)
    assert r.status_code == 200, r.text
    _sync(server, str(testdata.joinpath(*ZLIB_NVD)))
    with server.client() as c:
        (row,) = c.get("/api/channels/sec/cves").json()
    assert row["advisory"] == "CVE-2022-37434" and row["status"] == "reported"
    assert row["evidence"]["source"] == "info/security.json"
    assert row["evidence"]["declared"]["CVE-2022-37434"]["patch"] == "inflate-extra.patch"
    # a metadata-only import fires no ingest event: the periodic sweep matches it
    server.channel("imp")
    with server.client() as c:
        rec = {"name": "zlib", "version": "1.2.12", "build": "h0_0", "build_number": 0, "depends": []}
        r = c.post("/api/channels/imp/subdirs/linux-64/import", json={"packages": {"zlib-1.2.12-h0_0.tar.bz2": rec}})
        assert r.status_code == 200, r.text
    deadline = time.monotonic() + 30  # every 5 s by default
    while time.monotonic() < deadline and not _linked(server, "imp"):
        time.sleep(0.5)
    assert _linked(server, "imp") == {("CVE-2022-37434", "zlib-1.2.12-h0_0.tar.bz2")}


def _package_with_security(path: Path, security: dict) -> Path:
    index = {
        "name": "zlib",
        "version": "1.2.11",
        "build": "sec_0",
        "build_number": 0,
        "depends": [],
        "subdir": "linux-64",
        "arch": "x86_64",
        "platform": "linux",
        "license": "Zlib",
    }
    files = {
        "info/index.json": json.dumps(index).encode(),
        "info/paths.json": json.dumps({"paths": [], "paths_version": 1}).encode(),
        "info/security.json": json.dumps(security).encode(),
    }
    target = path / "zlib-1.2.11-sec_0.tar.bz2"
    with tarfile.open(target, "w:bz2") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return target


def test_advisories_a_killed_sync_left_unmatched_are_matched_by_the_sweep(server: Server, testdata: Path) -> None:
    """A sync commits records and merged advisories (marked pending) before matching them in small
    transactions: killed in between, the next sweep matches what was left."""
    from sqlalchemy import delete, update

    from condavault.vulns.models import VulnAdvisory, VulnLinkRow

    server.channel("crash")
    with server.client() as c:
        rec = {"name": "zlib", "version": "1.2.11", "build": "c_0", "build_number": 0, "depends": []}
        r = c.post("/api/channels/crash/subdirs/linux-64/import", json={"packages": {"zlib-1.2.11-c_0.tar.bz2": rec}})
        assert r.status_code == 200, r.text
    _sync(server, str(testdata.joinpath(*ZLIB_NVD)))
    with server.client() as c:
        c.post("/api/cves/sweep")
    assert _linked(server, "crash") == {("CVE-2022-37434", "zlib-1.2.11-c_0.tar.bz2")}
    with server.ctx.db.write_session() as s:  # the state a kill -9 after the merge, before matching, leaves
        s.execute(delete(VulnLinkRow))
        s.execute(update(VulnAdvisory).values(match_pending=True))
    assert _linked(server, "crash") == set()
    with server.client() as c:
        assert c.post("/api/cves/sweep").status_code == 200
    assert _linked(server, "crash") == {("CVE-2022-37434", "zlib-1.2.11-c_0.tar.bz2")}
