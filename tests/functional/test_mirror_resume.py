"""A mirror run killed with SIGKILL in the middle of its downloads resumes from its persisted plan, and no
partial file is ever served. The run executes in a separate worker process (``mirror run --local``)
sharing the server's database and blob store; the upstream is slowed down so the kill lands mid-way."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import Server
from tests.support.static_channel import StaticChannel, build_channel, check_served_files, create_mirror, run_mirror

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


@pytest.fixture(scope="module")
def upstream(packages_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticChannel]:
    root = build_channel(packages_dir, tmp_path_factory.mktemp("upstream"), subdirs=("linux-64", "noarch"))
    with StaticChannel(root) as chan:
        yield chan


def _files(server: Server, channel: str) -> list[dict[str, object]]:
    with server.client() as c:
        r = c.get(f"/api/channels/{channel}/files")
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]


def test_kill_9_mid_download_then_rerun_completes(shared_server: Server, upstream: StaticChannel) -> None:
    server = shared_server
    create_mirror(server, "killme", upstream.url, filters={"only_specs": ["clobber*"]})
    env = server.env()
    env.update(
        CONDAVAULT_DATA_DIR=str(server.settings.data_dir),
        CONDAVAULT_DATABASE_URL=server.settings.db_url,
        CONDAVAULT_MIRROR_CONCURRENCY="2",
        CONDAVAULT_LOG_LEVEL="ERROR",
        CONDAVAULT_UPSTREAM_ALLOW_LOOPBACK="true",  # the test upstream listens on loopback
    )
    upstream.default_delay = 0.3
    before = dict(upstream.hits)  # the upstream serves every test of the module
    proc = subprocess.Popen(
        [sys.executable, "-m", "condavault", "mirror", "run", "killme", "--local"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"worker ended early: {proc.stderr.read().decode() if proc.stderr else ''}")
            if len(_files(server, "killme")) >= 3:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the worker made no progress")
        proc.kill()  # SIGKILL: no cleanup of any kind
        proc.wait(timeout=30)
    finally:
        upstream.default_delay = 0.0
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    partial = _files(server, "killme")
    assert 3 <= len(partial) < 29
    # whatever got in is complete: every stored record serves exactly its sha256
    with server.client(None) as c:
        import hashlib

        for f in partial:
            r = c.get(f"/api/repo/killme/{f['subdir']}/{f['filename']}")
            assert r.status_code == 200 and hashlib.sha256(r.content).hexdigest() == f["sha256"]
    with server.client() as c:
        killed = c.get("/api/mirrors/killme/runs").json()[-1]  # the server may have taken it over already
        assert killed["status"] in ("running", "failed") and killed["trigger"] == "worker"

    # the worker is gone: the server's own job worker takes its job back at once and a new run resumes the
    # killed one, skipping what is already there (verified before it was ingested: never fetched again)
    deadline = time.monotonic() + 120
    with server.client() as c:
        while time.monotonic() < deadline:
            runs = c.get("/api/mirrors/killme/runs").json()
            if len(runs) == 2 and runs[0]["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.2)
    assert [r["status"] for r in runs] == ["completed", "failed"], runs
    assert "interrupted" in runs[1]["error"] and f"resumed by run {runs[0]['id']}" in runs[1]["error"]
    run = runs[0]
    assert run["counts"]["present"] >= len(partial)
    stored = {f["filename"] for f in partial}
    fetched = {p.rsplit("/", 1)[-1]: n - before.get(p, 0) for p, n in upstream.hits.items()}
    assert all(fetched[name] == 1 for name in stored), fetched
    assert check_served_files(server, "killme") == 29
    # a manual run afterwards has nothing left to do (once the taken-over job has ended, just after its run)
    with server.client() as c:
        while c.get("/api/jobs", params={"kind": "mirror.run", "state": "running"}).json():
            assert time.monotonic() < deadline + 30
            time.sleep(0.1)
    assert run_mirror(server, "killme")["status"] == "completed"
    assert not os.environ.get("CONDAVAULT_DATABASE_URL")  # the worker's settings did not leak into ours
