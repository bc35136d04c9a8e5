"""The durable job system across processes, on SQLite and PostgreSQL: real ``condavault worker``
subprocesses and ``condavault serve --workers 2`` sharing one database."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import delete, func, select, update

from condavault.db.session import Database
from condavault.errors import InvalidRequest
from condavault.jobs import queue as queue_mod
from condavault.jobs.holders import new_holder
from condavault.jobs.models import Job, JobSchedule
from condavault.jobs.queue import JobQueue
from condavault.jobs.registry import JobKind, JobRun
from condavault.jobs.schedule import Schedules, ScheduleSpec
from tests.support.server import Server, free_port, start_server, stop_server

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

ZLIB_NVD = ("vulns", "nvd", "fkie-cad", "CVE-2022", "CVE-2022-374xx", "CVE-2022-37434.json")
ZLIB = ("packages", "osx-64", "zlib-1.2.11-h1de35cc_3.tar.bz2")


@pytest.fixture
def idle_server(tmp_path: Path, db_backend: str) -> Iterator[Server]:
    """A server that runs no jobs itself: only the worker processes a test starts do."""
    handle, pg = start_server(tmp_path / "data", db_backend, worker=False)
    try:
        yield handle
    finally:
        stop_server(handle, pg)


def wait_until(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def start_worker(server: Server, threads: int = 4) -> subprocess.Popen[bytes]:
    env = server.env()
    env.update(
        CONDAVAULT_DATA_DIR=str(server.settings.data_dir),
        CONDAVAULT_DATABASE_URL=server.settings.db_url,
        CONDAVAULT_LOG_LEVEL="WARNING",
    )
    # stderr to a file: a pipe nobody reads blocks a worker that logs more than its buffer
    log_file = tempfile.NamedTemporaryFile(prefix="worker-", suffix=".log", dir=server.settings.data_dir, delete=False)  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, "-m", "condavault", "worker", "--threads", str(threads)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file,
    )


def worker_logs(server: Server) -> str:
    """The tail of every worker's stderr and the jobs table: what a timed-out wait shows."""
    out = [f"{p.name}: {p.read_text()[-2000:]}" for p in sorted(server.settings.data_dir.glob("worker-*.log"))]
    with server.ctx.db.session() as s:
        out += [str(row) for row in s.execute(select(Job.id, Job.kind, Job.state, Job.worker).order_by(Job.id))]
    return "\n".join(out)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def states(server: Server, ids: list[int]) -> Counter[str]:
    with server.ctx.db.session() as s:
        return Counter(s.scalars(select(Job.state).where(Job.id.in_(ids))))


def noop_log(server: Server) -> list[tuple[int, str, int]]:
    path = server.settings.data_dir / "jobs-noop.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        job_id, holder, attempt = line.split()
        out.append((int(job_id), holder, int(attempt)))
    return out


def test_two_worker_processes_run_every_job_once(idle_server: Server) -> None:
    """120 jobs, two ``condavault worker`` processes: every job runs, none runs twice, both work."""
    server = idle_server
    jobs = server.ctx.jobs

    def enqueue(s: Any) -> list[int]:
        return [jobs.enqueue("jobs.noop", {"sleep": 0.03, "log": True}, session=s) for _ in range(120)]

    def warm_up(s: Any) -> list[int]:
        return [jobs.enqueue("jobs.noop", {"sleep": 30}, session=s) for _ in range(4)]

    def runners(job_ids: list[int]) -> set[str | None]:
        with server.ctx.db.session() as s:
            return set(s.scalars(select(Job.worker).where(Job.id.in_(job_ids), Job.state == "running")))

    # Both processes must be up before the 120 jobs exist (a loaded machine can take seconds to start
    # one): each worker runs at most two jobs at once, so four long jobs keep both busy until cancelled.
    warm = server.ctx.db.run_write(warm_up)
    workers = [start_worker(server, threads=2), start_worker(server, threads=2)]
    try:
        try:
            wait_until(lambda: len(runners(warm)) == 2, timeout=120, what="both workers to start")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{worker_logs(server)}") from None
        ids = server.ctx.db.run_write(enqueue)
        for job_id in warm:
            jobs.cancel(job_id)
        wait_until(lambda: states(server, ids)["succeeded"] == 120, timeout=180, what="120 jobs to succeed")
    finally:
        for w in workers:
            stop(w)
    runs = noop_log(server)
    assert sorted(r[0] for r in runs) == sorted(ids), "a job was lost or ran twice"
    holders = Counter(r[1] for r in runs)
    assert len(holders) == 2, f"both workers should have run jobs: {holders}"
    assert all(r[2] == 1 for r in runs)


def test_a_killed_worker_s_job_is_taken_back_and_run_once(server: Server) -> None:
    """``kill -9`` of the worker running a job: the server's worker sees the dead holder at its next
    heartbeat, queues the job again and runs it to its end (at least once, and here exactly once)."""
    server.ctx.worker.stop()  # the test's own worker process claims first
    job_id = server.ctx.jobs.enqueue("jobs.noop", {"sleep": 2.0, "log": True})
    w = start_worker(server)
    try:
        wait_until(lambda: server.ctx.jobs.get(job_id)["state"] == "running", what="the worker to claim the job")
        w.kill()
        w.wait(timeout=30)
    finally:
        stop(w)
    server.ctx.worker.start()
    job = server.ctx.jobs.wait(job_id, timeout=60)
    assert job["state"] == "succeeded" and job["attempts"] == 2, job
    assert [(r[0], r[2]) for r in noop_log(server)] == [(job_id, 2)]


def test_cancel_a_queued_and_a_running_job(server: Server) -> None:
    queued = server.ctx.jobs.enqueue("jobs.noop", {}, delay=3600)
    running = server.ctx.jobs.enqueue("jobs.noop", {"sleep": 60})
    wait_until(lambda: server.ctx.jobs.get(running)["state"] == "running", what="the job to start")
    with server.client() as c:
        r = c.post(f"/api/jobs/{queued}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
        r = c.post(f"/api/jobs/{running}/cancel")
        assert r.status_code == 200 and r.json()["cancel_requested"] is True, r.text
    job = server.ctx.jobs.wait(running, timeout=30)
    assert job["state"] == "cancelled", job
    out = server.cli("jobs", "list", "--state", "cancelled", "--json").stdout
    assert {queued, running} <= {j["id"] for j in json.loads(out)}


def test_retries_with_back_off_and_no_retry_for_a_request_error(server: Server, monkeypatch: Any) -> None:
    monkeypatch.setattr(queue_mod, "RETRY_BASE_SECONDS", 0.05)
    calls: Counter[str] = Counter()

    def flaky(run: JobRun) -> dict[str, Any]:
        calls["flaky"] += 1
        if run.attempt == 1:
            raise RuntimeError("upstream hiccup")
        return {"attempt": run.attempt}

    def refused(run: JobRun) -> None:
        calls["refused"] += 1
        raise InvalidRequest("bad parameters", code="bad_params")

    server.ctx.kinds.register(JobKind("test.flaky", flaky, max_attempts=3))
    server.ctx.kinds.register(JobKind("test.refused", refused, max_attempts=3))
    a = server.ctx.jobs.enqueue("test.flaky", {})
    b = server.ctx.jobs.enqueue("test.refused", {})
    ja, jb = server.ctx.jobs.wait(a, timeout=30), server.ctx.jobs.wait(b, timeout=30)
    assert (ja["state"], ja["attempts"], ja["result"]) == ("succeeded", 2, {"attempt": 2}), ja
    assert (jb["state"], jb["attempts"]) == ("failed", 1) and "bad_params" in jb["error"], jb
    assert calls == {"flaky": 2, "refused": 1}


def test_a_schedule_fires_once_however_many_processes_tick(server: Server) -> None:
    """Eight schedulers (each with its own engine, as separate processes have) tick the same due
    schedule at the same moment, five times: it fires five times, not forty."""
    server.ctx.worker.stop()  # its housekeeping thread ticks too
    dbs = [Database(server.settings.db_url) for _ in range(8)]
    schedulers = [Schedules(db, JobQueue(db, server.ctx.kinds, new_holder())) for db in dbs]
    with server.ctx.db.session() as s:
        s.add(
            JobSchedule(
                name="test.race", kind="jobs.noop", params="{}", every_seconds=3600.0, next_at=0.0, owner="test"
            )
        )
    try:
        fired: list[int] = []
        for _ in range(5):
            barrier = threading.Barrier(len(schedulers))

            def tick(sch: Schedules, barrier: threading.Barrier) -> None:
                barrier.wait()
                fired.extend(sch.tick())

            threads = [threading.Thread(target=tick, args=(sch, barrier)) for sch in schedulers]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            with server.ctx.db.session() as s:  # due again
                s.execute(update(JobSchedule).where(JobSchedule.name == "test.race").values(next_at=0.0))
    finally:
        for db in dbs:
            db.dispose()
    assert len(fired) == 5, fired
    with server.ctx.db.session() as s:  # the job it fired waited (no worker): the later firings found it
        jobs = s.scalar(select(func.count()).select_from(Job).where(Job.schedule == "test.race"))
    assert jobs == 1 and len(set(fired)) == 1


def test_processes_starting_together_declare_the_schedules_once(server: Server) -> None:
    """Eight processes start at the same moment (``serve --workers`` plus ``worker``): each declares the
    built-in schedules; none fails on the others' rows, and each schedule exists once."""
    server.ctx.worker.stop()
    with server.ctx.db.session() as s:
        s.execute(delete(JobSchedule))
    specs = [ScheduleSpec(name=f"test.start{i}", kind="jobs.noop", params={}, every=60.0 * (i + 1)) for i in range(6)]
    dbs = [Database(server.settings.db_url) for _ in range(8)]
    schedulers = [Schedules(db, JobQueue(db, server.ctx.kinds, new_holder())) for db in dbs]
    barrier = threading.Barrier(len(schedulers))
    errors: list[BaseException] = []

    def declare(sch: Schedules) -> None:
        barrier.wait()
        try:
            sch.declare(specs, owner="test")
        except BaseException as exc:  # pragma: no cover - what the assertion shows
            errors.append(exc)

    threads = [threading.Thread(target=declare, args=(sch,)) for sch in schedulers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for db in dbs:
            db.dispose()
    assert errors == []
    with server.ctx.db.session() as s:
        names = sorted(s.scalars(select(JobSchedule.name)))
    assert names == sorted(spec.name for spec in specs)
    # and a due schedule of theirs fires through the (dedupe-keyed) enqueue on this database
    with server.ctx.db.session() as s:
        s.execute(update(JobSchedule).where(JobSchedule.name == "test.start0").values(next_at=0.0))
    fired = Schedules(server.ctx.db, server.ctx.jobs).tick()
    assert len(fired) == 1 and server.ctx.jobs.get(fired[0])["kind"] == "jobs.noop"


def test_durable_follow_up_work_waits_for_a_worker_process(idle_server: Server, testdata: Path) -> None:
    """CVE matching of uploaded packages is a job committed with the upload: with no worker running it
    waits in the queue (visible in /api/jobs), and a worker started later does it."""
    server = idle_server
    with server.client() as c:
        r = c.post("/api/cves/sync", json={"sources": [str(testdata.joinpath(*ZLIB_NVD))]})
        assert r.status_code == 200, r.text
        server.channel("later")
        batch = c.post("/api/channels/later/uploads").json()["id"]
        pkg = testdata.joinpath(*ZLIB)
        r = c.post(f"/api/channels/later/uploads/{batch}/files", files=[("file", (pkg.name, pkg.read_bytes()))])
        assert r.status_code == 200 and r.json()["files"][0]["status"] == "created", r.text
        assert c.post(f"/api/channels/later/uploads/{batch}/commit").json()["indexed"] is True
        (job,) = c.get("/api/jobs", params={"kind": "event.vulns.match_ingested"}).json()
        assert job["state"] == "queued" and job["params"]["files"][0][1] == ZLIB[-1]
    time.sleep(1.0)  # nothing in this process runs it
    assert server.ctx.jobs.get(job["id"])["state"] == "queued"
    w = start_worker(server)
    try:
        done = server.ctx.jobs.wait(job["id"], timeout=60)
    finally:
        stop(w)
    assert done["state"] == "succeeded" and done["worker"].split(":")[1] == str(w.pid), done
    with server.client() as c:
        links = c.get("/api/channels/later/cves").json()
    assert [(x["advisory"], x["filename"]) for x in links] == [("CVE-2022-37434", ZLIB[-1])]


def test_serve_with_two_workers_answers_every_job_poll(tmp_path: Path, db_backend: str, testdata: Path) -> None:
    """The issue's finding: with ``serve --workers 2`` a job started in one process must be visible
    from the other: every poll answers 200, through to the result."""
    from tests.support.server import database_url, drop_pg_database

    data = tmp_path / "data"
    url, pg_name = database_url(db_backend, data)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    env.update(CONDAVAULT_DATABASE_URL=url, CONDAVAULT_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "condavault", "serve", "--data-dir", str(data), "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        token = wait_until(
            lambda: (data / "admin-token").exists() and (data / "admin-token").read_text().strip(),
            what="the admin token",
        )

        def up() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(up, what="the server")
        sources = [str(testdata / "vulns" / "osv-pypi" / "flask"), str(testdata.joinpath(*ZLIB_NVD))]
        polls = []
        headers = {"Authorization": f"Bearer {token}"}
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            started = c.post("/api/cves/sync", json={"sources": sources, "wait": False})
            assert started.status_code == 202, started.text
            job_id = started.json()["id"]
            for _ in range(20):
                for path in (f"/api/cves/sync/jobs/{job_id}", f"/api/jobs/{job_id}"):
                    polls.append(c.get(path))  # a new connection now and then: both processes answer
                c.headers["Connection"] = "close"
            assert [r.status_code for r in polls] == [200] * 40, [r.text for r in polls if r.status_code != 200]
            final = wait_until(
                lambda: (j := c.get(f"/api/jobs/{job_id}").json())["state"] == "succeeded" and j, what="the sync job"
            )
            assert final["kind"] == "vulns.sync" and final["result"]["advisories"] > 0
            kinds = {j["kind"] for j in c.get("/api/jobs").json()}
            assert "vulns.sync" in kinds
            schedules = {s["name"] for s in c.get("/api/jobs/schedules").json()}
            assert {"jobs.purge", "audit.purge", "auth.purge", "vulns.sweep"} <= schedules
    finally:
        stop(proc)
        if pg_name:
            drop_pg_database(pg_name)


def test_follow_up_work_of_a_batch_writer_joins_the_job_still_queued(server: Server) -> None:
    """``EventBus.record(..., coalesce=...)``: the follow-up job of each group of an upload batch takes the
    next groups in while it is queued; once claimed, the next group gets a job of its own; another channel
    or actor never shares a job; every file is in exactly one job."""
    from condavault.channels.events import IngestedFile, PackagesIngested

    ctx = server.ctx
    kind = "event.vulns.match_ingested"

    def ingested(channel_id: int, actor: str, *names: str) -> PackagesIngested:
        files = tuple(IngestedFile("c", "linux-64", f"{n}-1.0-0.conda", "created") for n in names)
        return PackagesIngested(channel_id, "c", files, actor)

    def record(event: PackagesIngested) -> int:
        (job_id,) = ctx.db.run_write(lambda s: ctx.events.record(s, event, coalesce=3600.0))
        return job_id

    first = record(ingested(1, "alice", "a", "b"))
    assert record(ingested(1, "alice", "c")) == first
    assert record(ingested(1, "bob", "d")) != first
    assert record(ingested(2, "alice", "e")) != first
    assert [f[1] for f in ctx.jobs.get(first)["params"]["files"]] == ["a-1.0-0.conda", "b-1.0-0.conda", "c-1.0-0.conda"]
    assert ctx.jobs.get(first)["state"] == "queued"  # runnable an hour from now: waits for the next groups
    with ctx.db.write_session() as s:  # a worker takes it
        s.execute(update(Job).where(Job.id == first).values(state="running"))
    later = record(ingested(1, "alice", "f"))
    assert later != first
    assert [f[1] for f in ctx.jobs.get(later)["params"]["files"]] == ["f-1.0-0.conda"]
    # without ``coalesce`` (an upload somebody waits for), a job of its own, runnable at once
    (alone,) = ctx.db.run_write(lambda s: ctx.events.record(s, ingested(1, "alice", "g")))
    assert alone not in (first, later)
    with ctx.db.session() as s:
        rows = s.scalars(select(Job.params).where(Job.kind == kind, Job.id.in_([first, later, alone]))).all()
    files = Counter(f[1] for p in rows for f in json.loads(p)["files"])
    assert set(files.values()) == {1} and len(files) == 5


def test_a_job_its_caller_runs_wakes_no_worker_and_is_not_lost(server: Server, testdata: Path) -> None:
    """An upload answers once its follow-up work (CVE matching) is done, running the job itself: enqueued
    with ``wake=False``, so the worker threads of the process are not woken to race it for the job (they
    were, at every upload: four claims, all but one lost). A job of that kind that its caller does not
    run (the request was killed) is still found by the workers' poll and run."""
    from condavault.channels.events import IngestedFile, PackagesIngested

    ctx = server.ctx
    with server.client() as c:
        assert c.post("/api/cves/sync", json={"sources": [str(testdata.joinpath(*ZLIB_NVD))]}).status_code == 200
    server.channel("nowake")
    pkg = testdata.joinpath(*ZLIB)
    # through the API: the answer carries the job's effect
    r = server.upload("nowake", pkg)
    assert r.status_code == 200 and r.json()["status"] == "created", r.text
    with server.client() as c:
        links = c.get("/api/channels/nowake/cves").json()
    assert [(x["advisory"], x["filename"]) for x in links] == [("CVE-2022-37434", ZLIB[-1])]
    # a job recorded for a caller that then never runs it
    cid = ctx.channels.lookup("nowake").id
    event = PackagesIngested(cid, "nowake", (IngestedFile("nowake", "osx-64", ZLIB[-1], "replaced"),), "admin")
    ctx.jobs._wake.clear()
    (job_id,) = ctx.db.run_write(lambda s: ctx.events.record(s, event, wake=False))
    assert not ctx.jobs._wake.is_set()
    done = ctx.jobs.wait(job_id, timeout=30)  # the poll (every second) finds it
    assert done["state"] == "succeeded", done
