"""``kill -9`` of the server in the middle of a bulk upload (blobs made durable in batches: one syncfs
barrier per request on Linux): nothing half-written, no record without its bytes, and the upload
completes when run again with ``--skip-existing``."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.packages import make_conda
from tests.support.serve_process import start_serve

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

FILES = 240


def _listed(c: object, channel: str) -> list[dict[str, object]]:
    r = c.get(f"/api/channels/{channel}/files")  # type: ignore[attr-defined]
    assert r.status_code == 200, r.text
    return list(r.json())


def test_kill_9_during_a_bulk_upload_loses_and_half_writes_nothing(tmp_path: Path, db_backend: str) -> None:
    pkgs = tmp_path / "pkgs"
    pkgs.mkdir()
    files = [make_conda(pkgs, f"killme{i:03d}", "1.0", "0", "linux-64") for i in range(FILES)]
    sums = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    first = start_serve(tmp_path / "data", db_backend)
    second = None
    try:
        with first.client() as c:
            assert c.post("/api/channels", json={"name": "kill9"}).status_code == 201
        env = {**first.env, "CONDAVAULT_URL": first.url, "CONDAVAULT_TOKEN": first.token, "COLUMNS": "200"}
        up = subprocess.Popen(
            [sys.executable, "-m", "condavault", "upload", "kill9", str(pkgs), "--batch-files", "8", "--parallel", "2"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        stored = 0
        deadline = time.monotonic() + 120
        with first.client() as c:
            while time.monotonic() < deadline and up.poll() is None:
                stored = len(_listed(c, "kill9"))
                if stored >= 8:
                    break
                time.sleep(0.02)
        os.kill(first.proc.pid, signal.SIGKILL)  # mid-upload: later requests are in flight or not sent yet
        first.proc.wait()
        up.wait(timeout=120)
        assert stored >= 8, "the upload had stored nothing before the kill"
        assert up.returncode != 0, "the upload must notice that its server died"

        second = start_serve(tmp_path / "data", "sqlite", **({"database_url": first.db_url} if first.db_url else {}))
        with second.client() as c:
            after_kill = _listed(c, "kill9")
            assert stored <= len(after_kill) < FILES, "the kill came after the upload: nothing was tested"
            for row in after_kill:  # every record committed before the kill has its complete bytes
                name = str(row["filename"])
                assert row["sha256"] == sums[name]
                blob = c.get(f"/api/repo/kill9/linux-64/{name}")
                assert blob.status_code == 200, (name, blob.status_code)
                assert hashlib.sha256(blob.content).hexdigest() == sums[name], name
        env2 = {**second.env, "CONDAVAULT_URL": second.url, "CONDAVAULT_TOKEN": second.token, "COLUMNS": "200"}
        again = subprocess.run(
            [sys.executable, "-m", "condavault", "upload", "kill9", str(pkgs), "--skip-existing"],
            env=env2,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert f"{len(after_kill)} skipped" in again.stdout or len(after_kill) == FILES, again.stdout
        with second.client(None) as c:
            listed = c.get("/api/repo/kill9/linux-64/repodata.json").json()["packages.conda"]
        assert {fn: r["sha256"] for fn, r in listed.items()} == sums
        check = subprocess.run(
            [sys.executable, "-m", "condavault", "check", "--json", "--data-dir", str(second.data_dir)],
            env={k: v for k, v in second.env.items()},
            capture_output=True,
            text=True,
            timeout=300,
        )
        report = json.loads(check.stdout)
        assert report["problems"] == 0, report
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        if second is not None:
            second.stop()
        first.stop()
