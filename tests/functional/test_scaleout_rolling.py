"""Rolling upgrade under a client loop, behind a real nginx: 0 failed requests.

The previous version of condavault (the code just before migration ``0015_rolling`` was added, taken from
the git history) runs two web processes and a worker on SQLite or PostgreSQL. Clients fetch repodata
(200 and 304) and download packages through nginx the whole time. Then, as docs/operations.md ("Rolling
upgrade") says: the new version's ``condavault db upgrade`` (an additive migration: the old processes go
on serving on the new schema), then web 0, web 1 and the worker are replaced one at a time (SIGTERM: the
old process stops accepting and drains; nginx sends what it refuses to the other web process).
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import httpx
import pytest

from tests.support.accounts import ok
from tests.support.cluster import Cluster, start_cluster
from tests.support.serve_process import ServeProcess

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

REPO = Path(__file__).resolve().parents[2]
MIGRATION = "src/condavault/db/migrations/versions/0015_rolling.py"
PACKAGES = [f"noarch/{n}-{v}-0.conda" for n in ("dependency", "dependent", "another_dependent") for v in ("1.0", "2.0")]


def previous_version(dest: Path) -> Path:
    """The ``src`` folder of the previous version: the newest commit of the main line (first parents of
    HEAD) that does not hold ``MIGRATION`` yet."""

    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, check=True).stdout

    try:
        line = git("log", "--first-parent", "--format=%H", "HEAD").decode().split()
        holds = set(git("log", "--first-parent", "--format=%H", "HEAD", "--", MIGRATION).decode().split())
    except (OSError, subprocess.CalledProcessError) as exc:  # pragma: no cover - not a git checkout
        pytest.skip(f"the previous version comes from the git history, which is not available: {exc}")
    if not holds:
        pytest.skip("the migration is not committed yet: no previous version to upgrade from")
    newest_holding = max(line.index(h) for h in holds)  # the commit that brought it onto the main line
    if newest_holding + 1 >= len(line):
        pytest.skip("the history before the migration is not in this clone (shallow clone)")
    tar = git("archive", line[newest_holding + 1], "src")
    with tarfile.open(fileobj=BytesIO(tar)) as tf:
        tf.extractall(dest, filter="data")
    return dest / "src"


class ClientLoop:
    """Threads fetching repodata (plain and conditional) and packages through nginx until stopped."""

    def __init__(self, url: str, files: list[str], threads: int = 3) -> None:
        self.url, self.files = url, files
        self.ok: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> ClientLoop:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def _run(self, i: int) -> None:
        etag = ""
        n = 0
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set():
                n += 1
                if n % 3 == 0:
                    path, headers = f"/api/repo/rolling/{self.files[(n + i) % len(self.files)]}", {}
                else:
                    path = "/api/repo/rolling/noarch/repodata.json"
                    headers = {"If-None-Match": etag} if n % 3 == 1 and etag else {}
                try:
                    r = c.get(path, headers=headers)
                except httpx.HTTPError as exc:
                    self.failures.append(f"{path}: {type(exc).__name__}: {exc}")
                    continue
                if r.status_code not in (200, 304):
                    self.failures.append(f"{path}: {r.status_code} {r.text[:200]}")
                    continue
                if path.endswith("repodata.json") and r.status_code == 200:
                    etag = r.headers.get("etag", "")
                    if "dependency-1.0-0.conda" not in r.text:
                        self.failures.append(f"{path}: incomplete index")
                self.ok[r.status_code] += 1

    def total(self) -> int:
        return sum(self.ok.values())


@pytest.fixture
def old_cluster(tmp_path: Path, db_backend: str) -> Iterator[Cluster]:
    old_src = previous_version(tmp_path / "previous")
    cluster = start_cluster(tmp_path / "cluster", db_backend, python_path=str(old_src))
    try:
        yield cluster
    finally:
        cluster.stop()


def _replace(cluster: Cluster, kind: str, i: int) -> ServeProcess:
    """Stop one old process gracefully (SIGTERM) and start the new version in its place."""
    old = (cluster.webs if kind == "web" else cluster.workers)[i]
    t0 = time.monotonic()
    old.proc.terminate()
    old.proc.wait(timeout=60)
    print(f"{kind} {i}: the old process stopped {time.monotonic() - t0:.2f} s after SIGTERM")
    assert old.proc.returncode in (0, -15), old.log_text()[-2000:]
    cluster.python_path = None  # this checkout: the new version
    if kind == "web":
        return cluster.start_web(i, port=old.port)  # same port: nginx's upstream list stays
    return cluster.start_worker(i)


def _migrate(cluster: Cluster) -> None:
    env = dict(cluster.webs[0].env)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [sys.executable, "-m", "condavault", "db", "upgrade", "--data-dir", str(cluster.data_dir)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_rolling_upgrade_under_a_client_loop(old_cluster: Cluster, packages_dir: Path) -> None:
    cluster = old_cluster
    with cluster.client() as c:
        ok(c.post("/api/channels", json={"name": "rolling", "privacy": "public"}))
        for p in PACKAGES:
            r = c.post(
                "/api/channels/rolling/files",
                params={"filename": Path(p).name},
                content=(packages_dir / p).read_bytes(),
            )
            assert r.status_code in (200, 201), r.text
        assert "heartbeat_at" not in c.get("/api/jobs").text  # the old version's API
    with ClientLoop(cluster.url, PACKAGES) as loop:
        time.sleep(1)
        _migrate(cluster)  # the old processes go on serving on the new schema
        time.sleep(1)
        for kind, i in (("web", 0), ("web", 1), ("worker", 0)):
            before = loop.total()
            _replace(cluster, kind, i)
            deadline = time.monotonic() + 30
            while loop.total() < before + 50 and time.monotonic() < deadline:
                time.sleep(0.05)  # clients keep being served by the other web process meanwhile
        # the new worker runs jobs: a reindex through nginx, run by it, with the new column written
        with cluster.client() as c:
            r = c.post("/api/channels/rolling/reindex", params={"wait": False})
            assert r.status_code == 200, r.text
            job_id = r.json()["job_id"]
            deadline = time.monotonic() + 60
            while (job := c.get(f"/api/jobs/{job_id}").json())["state"] in ("queued", "running"):
                assert time.monotonic() < deadline, job
                time.sleep(0.1)
            assert job["state"] == "succeeded" and job["heartbeat_at"] is not None, job
        time.sleep(1)
    assert loop.failures == [], loop.failures[:20]
    assert loop.total() > 300 and loop.ok[304] > 50 and loop.ok[200] > 100, loop.ok
    assert all(
        p.proc.poll() is None and "previous" not in p.env.get("PYTHONPATH", "") for p in cluster.webs + cluster.workers
    )
