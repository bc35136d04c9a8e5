"""Scanning data by bundle (``bundle export --scanning``): the sha256 block list and the ClamAV database
files travel signed; the import applies the block list as ``blocklist import`` does -- an upload of a
blocked package is then quarantined -- and installs the ClamAV files into ``clamav_database_dir``. A
tampered block list refuses the bundle whole."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from condavault.signing.keys import load_or_create
from tests.functional.test_bundle import LINUX, bundle_cli
from tests.support.server import Server, start_server, stop_server


def export(server: Server, out: Path, *args: str, env: dict[str, str]) -> str:
    return bundle_cli(server, "bundle", "export", "--output", str(out), *args, env=env).stdout.split()[-1]


@pytest.fixture
def clam_pair(tmp_path: Path, db_backend: str) -> Iterator[tuple[Server, Server, list[str], Path, Path]]:
    clam_out, clam_in = tmp_path / "clam-origin", tmp_path / "clam-inside"
    clam_out.mkdir()
    origin, pg1 = start_server(tmp_path / "origin", db_backend, clamav_database_dir=clam_out)
    key = load_or_create(origin.settings).public.text
    inside, pg2 = start_server(tmp_path / "inside", db_backend, trusted_keys=[key], clamav_database_dir=clam_in)
    try:
        yield origin, inside, [key], clam_out, clam_in
    finally:
        stop_server(inside, pg2)
        stop_server(origin, pg1)


def test_blocklist_and_clamav_by_bundle(clam_pair, packages_dir: Path, tmp_path: Path) -> None:
    origin, inside, trusted, clam_out, clam_in = clam_pair
    blocked = (packages_dir / "linux-64" / LINUX[0]).read_bytes()
    other = (packages_dir / "linux-64" / LINUX[1]).read_bytes()
    sha, other_sha = hashlib.sha256(blocked).hexdigest(), hashlib.sha256(other).hexdigest()
    with origin.client() as c:
        r = c.post("/api/scanning/blocklist", params={"source": "ossf"}, content=f"{sha} known bad\n".encode())
        assert r.status_code == 200 and r.json()["added"] == 1, r.text
    signature = b"44d88612fea8a8f36de82e1278abb02f:68:Test.Blocked.Sig\n"
    (clam_out / "local.hdb").write_bytes(signature)
    (clam_out / "notes.txt").write_bytes(b"not a database file: not carried")
    env_out = {"CONDAVAULT_CLAMAV_DATABASE_DIR": str(clam_out)}
    b1 = export(origin, tmp_path / "b1", "--scanning", env=env_out)
    export(origin, tmp_path / "b2", "--scanning", env=env_out)
    bare = bundle_cli(origin, "bundle", "export", "--output", str(tmp_path / "b0"), check=False)
    assert bare.returncode == 2 and "--scanning" in bare.stderr, bare.stderr  # names what can be exported
    m = json.loads((tmp_path / "b1" / "manifest.json").read_text())
    assert m["targets"]["scanning"]["entries"] == 1
    assert sorted(f["path"] for f in m["files"]) == ["scanning/blocklist.jsonl", "scanning/clamav/local.hdb"]

    env_in = {"CONDAVAULT_CLAMAV_DATABASE_DIR": str(clam_in)}
    # a block list altered on the way (another package's sha256, same length): refused whole
    bl = tmp_path / "b2" / "scanning" / "blocklist.jsonl"
    bl.write_text(bl.read_text().replace(sha, other_sha))
    bad = bundle_cli(inside, "bundle", "import", str(tmp_path / "b2"), check=False, trusted=trusted, env=env_in)
    assert bad.returncode == 2 and "bundle_rejected" in bad.stderr, bad.stdout + bad.stderr
    assert not (clam_in / "local.hdb").exists()
    inside.channel("main")
    assert inside.upload("main", packages_dir / "linux-64" / LINUX[1]).status_code == 200  # nothing was blocked

    out = bundle_cli(inside, "bundle", "import", str(tmp_path / "b1"), trusted=trusted, env=env_in)
    assert f"imported bundle {b1}" in out.stdout, out.stdout
    assert "block list: 1 entries (1 new)" in out.stdout and "1 of 1 files installed" in out.stdout, out.stdout
    assert (clam_in / "local.hdb").read_bytes() == signature and not (clam_in / "notes.txt").exists()

    # the blocked package is now quarantined on upload, exactly as after `blocklist import`
    r = inside.upload("main", packages_dir / "linux-64" / LINUX[0])
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "quarantined", r.text
    with inside.client() as c:
        q = c.get("/api/quarantine").json()
    rows = q if isinstance(q, list) else q.get("items", q.get("files", []))
    assert any(row["sha256"] == sha for row in rows), q
    again = bundle_cli(inside, "bundle", "import", str(tmp_path / "b1"), trusted=trusted, env=env_in)
    assert "imported before: nothing to do" in again.stdout
