"""A passive mirror of a (small) synthetic conda-forge spread over two ``condavault worker`` processes
(issue 16): one ``mirror.subdir`` job per subdir; one worker is killed with SIGKILL while it imports a
subdir; the other takes its jobs over and finishes them without redoing the batches already committed
(their records keep their ids; the jobs' created counts add up to the total). Every subdir's published
repodata lists every upstream record, and a re-run answers from the upstream's ETags (nothing to do).
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import zstandard
from sqlalchemy import create_engine, text

from tests.support.cluster import Cluster, start_cluster
from tests.support.static_channel import StaticChannel

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

SUBDIRS = ["linux-64", "osx-64", "osx-arm64", "win-64", "linux-aarch64", "linux-ppc64le", "noarch"]
PER_SUBDIR = 600
TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata"))


def _shapes() -> list[dict[str, Any]]:
    doc = json.loads((TESTDATA / "repodata" / "defaults-r" / "linux-64" / "repodata.json").read_text())
    out = []
    for section in ("packages", "packages.conda"):
        for rec in (doc.get(section) or {}).values():
            out.append({k: v for k, v in rec.items() if k not in ("subdir", "noarch", "fn", "url")})
    return out


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticChannel]:
    """7 subdirs x 600 records of real shapes (defaults-r), each made unique, as repodata.json.zst."""
    import hashlib

    root = tmp_path_factory.mktemp("cf-upstream")
    shapes = _shapes()
    for sd in SUBDIRS:
        packages: dict[str, Any] = {}
        conda: dict[str, Any] = {}
        for i in range(PER_SUBDIR):
            rec = dict(shapes[i % len(shapes)])
            name = f"{rec['name']}-cf{i % 97}"
            rec.update(name=name, version=f"{i // 97 + 1}.0", build=f"h{i:06x}_0", build_number=0, subdir=sd)
            if sd == "noarch":
                rec["noarch"] = "generic"
            fn = f"{name}-{rec['version']}-{rec['build']}" + (".tar.bz2" if i % 4 == 0 else ".conda")
            rec["sha256"] = hashlib.sha256(f"{sd}/{fn}".encode()).hexdigest()
            rec["md5"] = rec["sha256"][:32]
            (packages if fn.endswith(".tar.bz2") else conda)[fn] = rec
        body = {"info": {"subdir": sd}, "packages": packages, "packages.conda": conda, "repodata_version": 1}
        (root / sd).mkdir()
        (root / sd / "repodata.json.zst").write_bytes(zstandard.ZstdCompressor().compress(json.dumps(body).encode()))
    with StaticChannel(root) as chan:
        yield chan


@pytest.fixture
def cluster(tmp_path: Path, db_backend: str) -> Iterator[Cluster]:
    c = start_cluster(tmp_path / "cluster", db_backend, webs=1, workers=2, mirror_batch_records=100)
    try:
        yield c
    finally:
        c.stop()


def _jobs(c: httpx.Client) -> list[dict[str, Any]]:
    r = c.get("/api/jobs", params={"kind": "mirror.subdir", "limit": 100})
    assert r.status_code == 200, r.text
    return r.json()


def _record_ids(cluster: Cluster) -> dict[tuple[str, str], int]:
    url = cluster.db_url or f"sqlite:///{cluster.data_dir / 'condavault.db'}"
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {(sd, fn): rid for rid, sd, fn in conn.execute(text("SELECT id, subdir, filename FROM records"))}
    finally:
        engine.dispose()


def _count(c: httpx.Client, sd: str) -> int:
    r = c.get(f"/api/repo/cf/{sd}/repodata.json")
    assert r.status_code == 200, r.text
    body = r.json()
    return len(body.get("packages") or {}) + len(body.get("packages.conda") or {})


@pytest.mark.timeout(1200)
def test_two_workers_share_the_mirror_and_one_killed_is_finished_by_the_other(
    cluster: Cluster, upstream: StaticChannel
) -> None:
    total = PER_SUBDIR * len(SUBDIRS)
    with cluster.client() as c:
        assert c.post("/api/channels", json={"name": "cf", "privacy": "public"}).status_code == 201
        cfg = {"name": "cf", "upstream": upstream.url, "channel": "cf", "subdirs": SUBDIRS, "mode": "passive"}
        # the streamed path is asked for, and refused with the reason where it cannot run
        for bad in ({"mode": "active"}, {"filters": {"only_signed": True}}):
            r = c.post("/api/mirrors", json={**cfg, "streamed": True, **bad})
            assert r.status_code in (400, 422) and "streamed: true needs" in r.text, r.text
        assert c.post("/api/mirrors", json={**cfg, "use_shards": False, "streamed": True}).status_code == 201, cfg
        run = c.post("/api/mirrors/cf/runs").json()

        # kill -9 the worker of a subdir job that has committed at least one batch (and not finished)
        pids = {w.proc.pid: w for w in cluster.workers}
        victim, victim_subdirs = None, set()
        deadline = time.monotonic() + 600
        while victim is None and time.monotonic() < deadline:
            for job in _jobs(c):
                pid = int(str(job.get("worker") or "::").split(":")[1] or 0)
                if job["state"] == "running" and (job["done"] or 0) >= 100 and pid in pids:
                    victim = pids[pid]
                    break
            time.sleep(0.05)
        assert victim is not None, "no subdir job was seen importing"
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()
        holder_pid = str(victim.proc.pid)
        killed_jobs = {
            j["id"]: j["params"]["subdir"]
            for j in _jobs(c)
            if j["state"] == "running" and str(j.get("worker") or "").split(":")[1:2] == [holder_pid]
        }
        victim_subdirs = set(killed_jobs.values())
        before = _record_ids(cluster)  # what the killed worker's jobs had committed (nobody took over yet)
        committed = sum(1 for sd, _ in before if sd in victim_subdirs)
        assert committed > 0

        # the other worker finishes the run (its lease expires first when the run's own job was the victim's)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            runs = c.get("/api/mirrors/cf/runs", params={"limit": 5}).json()
            if runs[0]["status"] == "completed" and runs[0]["id"] >= run["id"]:
                break
            time.sleep(0.5)
        runs = c.get("/api/mirrors/cf/runs", params={"limit": 5}).json()
        assert runs[0]["status"] == "completed", runs

        after = _record_ids(cluster)
        assert len(after) == total
        assert all(after.get(k) == rid for k, rid in before.items())  # nothing committed was redone
        jobs = [j for j in _jobs(c) if j["state"] == "succeeded"]
        assert {j["result"]["subdir"] for j in jobs} >= set(SUBDIRS)
        created = sum(j["result"]["indexed_passive"] for j in jobs)
        assert created == total - committed  # the taken-over jobs created only what was missing
        resumed = [j for j in jobs if j["id"] in killed_jobs]
        assert resumed and all(j["attempts"] >= 2 for j in resumed)
        assert sum(j["result"]["present"] for j in resumed) >= committed
        for sd in SUBDIRS:
            assert _count(c, sd) == PER_SUBDIR

        # nothing changed upstream: the next run asks with the ETags and does nothing
        again = c.post("/api/mirrors/cf/runs", params={"wait": True}).json()
        assert again["status"] == "completed" and again["counts"].get("unchanged") is True
