"""Bulk uploads: upload batches (several files per request, several requests at once, one index publish
per batch), ``condavault upload`` of many files, and hostile batch requests."""

from __future__ import annotations

import hashlib
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import update

from condavault.channels import uploads
from condavault.channels.models import UploadBatch
from tests.support.packages import make_conda
from tests.support.server import Server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


def _repodata(server: Server, channel: str, subdir: str) -> dict[str, dict]:  # type: ignore[type-arg]
    with server.client(None) as c:
        r = c.get(f"/api/repo/{channel}/{subdir}/repodata.json")
        if r.status_code == 404 and subdir != "noarch":
            return {}  # a subdir not published yet
        assert r.status_code == 200, r.text
        body = r.json()
        return {**body["packages"], **body["packages.conda"]}


def _publishes(server: Server, channel: str, subdir: str) -> int:
    ref = server.ctx.channels.lookup(channel)
    assert ref is not None
    return server.ctx.indexer.publishes[(ref.id, subdir)]


def test_cli_uploads_a_folder_as_one_batch_with_one_index_publish(shared_server: Server, packages_dir: Path) -> None:
    server = shared_server
    server.channel("bulk-cli")
    folder = packages_dir / "linux-64"
    files = sorted(p for p in folder.iterdir() if p.name.endswith((".conda", ".tar.bz2")))
    before = _publishes(server, "bulk-cli", "linux-64")
    out = server.cli("upload", "bulk-cli", str(folder), "--batch-files", "7", "--parallel", "4")
    assert f"{len(files)} created" in out.stdout, out.stdout + out.stderr
    listed = _repodata(server, "bulk-cli", "linux-64")
    assert set(listed) == {p.name for p in files}
    for p in files:  # the index has each file's real hashes
        assert listed[p.name]["sha256"] == hashlib.sha256(p.read_bytes()).hexdigest()
    assert _publishes(server, "bulk-cli", "linux-64") - before == 1, "one index publish for the whole batch"
    again = server.cli("upload", "bulk-cli", str(folder), "--skip-existing")
    assert f"{len(files)} skipped" in again.stdout
    # a path that is not there: a usage error naming it, before anything is sent
    gone = folder / "no-such-1.0-0.conda"
    refused = server.cli("upload", "bulk-cli", str(files[0]), str(gone), check=False)
    assert refused.returncode == 2 and "does not exist" in refused.stderr and gone.name in refused.stderr
    assert _publishes(server, "bulk-cli", "linux-64") - before == 1


def test_parallel_requests_into_one_batch_and_a_bad_file(shared_server: Server, tmp_path: Path) -> None:
    server = shared_server
    server.channel("bulk-par")
    good = [make_conda(tmp_path, f"par{i}", "1.0", "0", "linux-64") for i in range(24)]
    bad = tmp_path / "broken-1.0-0.conda"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with server.client() as c:
        opened = c.post("/api/channels/bulk-par/uploads")
        assert opened.status_code == 201, opened.text
        batch = opened.json()["id"]

        def send(group: list[Path]) -> dict:  # type: ignore[type-arg]
            r = c.post(
                f"/api/channels/bulk-par/uploads/{batch}/files",
                files=[("file", (p.name, p.read_bytes())) for p in group],
            )
            assert r.status_code == 200, r.text
            return r.json()  # type: ignore[no-any-return]

        groups = [good[i : i + 5] for i in range(0, 24, 5)] + [[bad, *good[:1]]]
        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(send, groups))
        statuses = [f["status"] for a in answers for f in a["files"]]
        # good[0] twice, in two requests at once: created by one, unchanged for the other (PostgreSQL: the
        # second insert meets a unique violation and is retried on its own)
        assert statuses.count("created") == 24 and statuses.count("unchanged") == 1, statuses
        (failed,) = [f for a in answers for f in a["files"] if f["status"] == "failed"]
        assert failed["filename"] == bad.name and failed["error"]["code"] in ("not_a_conda_archive", "corrupt_archive")
        # nothing published until the commit
        assert _repodata(server, "bulk-par", "linux-64") == {}
        done = c.post(f"/api/channels/bulk-par/uploads/{batch}/commit")
        assert done.status_code == 200 and done.json()["indexed"] is True, done.text
        assert done.json()["counts"] == {"created": 24, "failed": 1, "unchanged": 1}
        assert set(_repodata(server, "bulk-par", "linux-64")) == {p.name for p in good}
        # a committed batch takes nothing more, and commits once
        again = c.post(f"/api/channels/bulk-par/uploads/{batch}/commit")
        assert again.status_code == 409 and again.json()["error"]["code"] == "batch_closed"
        late = c.post(f"/api/channels/bulk-par/uploads/{batch}/files", files=[("file", (bad.name, b"x"))])
        assert late.status_code == 409


def test_parallel_batches_of_one_channel_share_one_index_publish(
    shared_server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clients, each with its own batch in the same channel: the first commit leaves the publish to
    the batch still being filled, and waits for it; one publish lists both (the windows are widened so
    the outcome does not depend on how fast this machine is)."""
    monkeypatch.setattr(uploads, "SIBLING_WINDOW", 600.0)
    monkeypatch.setattr(uploads, "SIBLING_WAIT", 600.0)
    server = shared_server
    server.channel("bulk-two")
    first = [make_conda(tmp_path, f"two-a{i}", "1.0", "0", "linux-64") for i in range(3)]
    second = [make_conda(tmp_path, f"two-b{i}", "1.0", "0", "linux-64") for i in range(3)]
    before = _publishes(server, "bulk-two", "linux-64")
    with server.client() as c:
        batches = []
        for group in (first, second):
            batch = c.post("/api/channels/bulk-two/uploads").json()["id"]
            r = c.post(
                f"/api/channels/bulk-two/uploads/{batch}/files",
                files=[("file", (p.name, p.read_bytes())) for p in group],
            )
            assert r.status_code == 200 and all(f["status"] == "created" for f in r.json()["files"]), r.text
            batches.append(batch)

        def commit(batch: str) -> dict:  # type: ignore[type-arg]
            with server.client() as other:
                r = other.post(f"/api/channels/bulk-two/uploads/{batch}/commit")
                assert r.status_code == 200, r.text
                return r.json()  # type: ignore[no-any-return]

        with ThreadPoolExecutor(max_workers=1) as pool:
            waiting = pool.submit(commit, batches[1])  # waits for the first batch, which is still open
            done = commit(batches[0])
            later = waiting.result()
    assert done["indexed"] is True and later["indexed"] is True
    assert set(_repodata(server, "bulk-two", "linux-64")) == {p.name for p in first + second}
    assert _publishes(server, "bulk-two", "linux-64") - before == 1, "one publish for both batches"


def test_hostile_batch_requests_get_clear_errors(shared_server: Server, tmp_path: Path) -> None:
    server = shared_server
    server.channel("bulk-bad")
    pkg = make_conda(tmp_path, "hostile", "1.0", "0", "noarch")
    with server.client() as c:
        batch = c.post("/api/channels/bulk-bad/uploads").json()["id"]
        base = f"/api/channels/bulk-bad/uploads/{batch}/files"
        # a batch of another channel, or an unknown one: 404, nothing stored
        r = c.post("/api/channels/bulk-bad/uploads/nope/files", files=[("file", (pkg.name, b"x"))])
        assert r.status_code == 404
        # no multipart and no filename; a malformed body; a boundary that never ends
        r = c.post(base, content=b"x")
        assert r.status_code == 400 and r.json()["error"]["code"] == "missing_filename"
        r = c.post(base, content=b"garbage", headers={"Content-Type": "multipart/form-data"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_multipart"
        unfinished = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a.conda"\r\n\r\nabc'
        r = c.post(base, content=unfinished, headers={"Content-Type": "multipart/form-data; boundary=xyz"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_multipart"
        # too many files in one request: 413 before any is stored
        many = [("file", (f"f{i}-1.0-0.conda", b"x")) for i in range(1001)]
        r = c.post(base, files=many)
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_files"
        # path tricks in the part's filename are refused like any other bad filename
        r = c.post(base, files=[("file", ("../../etc/passwd.conda", pkg.read_bytes()))])
        assert r.status_code == 200 and r.json()["files"][0]["status"] == "failed"
        assert r.json()["files"][0]["error"]["code"] == "invalid_filename"
        # another user who may write the channel cannot use (or see) this user's batch
        c.post("/api/users", json={"username": "bulk-other", "password": "bulk-other-pw-1"})
        c.post("/api/channels/bulk-bad/grants", json={"role": "contributor", "user": "bulk-other"})
        tok = c.post("/api/tokens", json={"user": "bulk-other", "scopes": [{"scope": "upload"}]}).json()["token"]
    with server.client(tok) as other:
        r = other.post(base, files=[("file", (pkg.name, pkg.read_bytes()))])
        assert r.status_code == 404 and r.json()["error"]["code"] == "batch_not_found"
        assert other.post(f"/api/channels/bulk-bad/uploads/{batch}/commit").status_code == 404
    server.ctx.settle()
    assert _repodata(server, "bulk-bad", "noarch") == {}
    leftovers = list(server.ctx.blobs.tmp.glob("*.part"))
    assert leftovers == [], leftovers


def test_an_abandoned_batch_is_published_after_it_expires(shared_server: Server, tmp_path: Path) -> None:
    server = shared_server
    server.channel("bulk-gone")
    pkg = make_conda(tmp_path, "gone", "1.0", "0", "noarch")
    with server.client() as c:
        batch = c.post("/api/channels/bulk-gone/uploads").json()["id"]
        r = c.post(f"/api/channels/bulk-gone/uploads/{batch}/files", files=[("file", (pkg.name, pkg.read_bytes()))])
        assert r.status_code == 200, r.text
    time.sleep(1.5)  # two sweeps: the open batch holds the channel's index
    assert _repodata(server, "bulk-gone", "noarch") == {}
    with server.ctx.db.session() as s:  # the client went away: its batch expires
        s.execute(update(UploadBatch).where(UploadBatch.id == batch).values(expires_at=time.time() - 1))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pkg.name not in _repodata(server, "bulk-gone", "noarch"):
        time.sleep(0.1)
    assert pkg.name in _repodata(server, "bulk-gone", "noarch")
    with server.client() as c:
        assert c.get(f"/api/channels/bulk-gone/uploads/{batch}").json()["state"] == "expired"
