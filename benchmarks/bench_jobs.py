"""Job queue throughput: N no-op jobs enqueued, then run by two ``condavault worker`` processes.

    .venv/bin/python benchmarks/bench_jobs.py [--jobs 1000] [--db sqlite,postgresql] [--threads 4] [--json out.json]

For each database: a fresh data folder (and a fresh PostgreSQL database), N ``jobs.noop`` jobs
enqueued in one transaction, then two worker processes (``--threads`` job threads each) started at
once; the clock runs until every job has succeeded. Each run of a ``jobs.noop`` job appends one line
(``job-id holder attempt``) to ``<data-dir>/jobs-noop.log`` with one ``O_APPEND`` write, so the runs
are counted independently of the queue's own bookkeeping: **lost** = enqueued jobs that never ran,
**run twice** = job ids with more than one line. Reported: jobs/s between the first claim and the last
finish (the queue itself), the wall time including the two workers' start-up, and the split between
the workers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
WORK = HERE / ".work"
PG_ADMIN = os.environ.get("CONDAVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def run(db: str, n: int, threads: int, root: Path) -> dict[str, Any]:
    from sqlalchemy import func, select

    from condavault.config import load_settings
    from condavault.context import Context
    from condavault.db import migrate
    from condavault.jobs.models import Job

    data = root / f"data-{db}"
    pg = None
    url = None
    if db == "postgresql":
        import psycopg

        pg = f"cvjobs_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{pg}"')
        url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + f"/{pg}"
    settings = load_settings(data_dir=data, database_url=url, worker=False, log_level="WARNING")
    migrate.upgrade(settings.db_url)
    ctx = Context.build(settings, start_jobs=False)
    workers: list[subprocess.Popen[bytes]] = []
    try:
        t = time.perf_counter()
        ids = ctx.db.run_write(lambda s: [ctx.jobs.enqueue("jobs.noop", {"log": True}, session=s) for _ in range(n)])
        enqueue = time.perf_counter() - t
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
        env.update(
            CONDAVAULT_DATA_DIR=str(data), CONDAVAULT_DATABASE_URL=settings.db_url, CONDAVAULT_LOG_LEVEL="WARNING"
        )
        t = time.perf_counter()
        workers = [
            subprocess.Popen(
                [sys.executable, "-m", "condavault", "worker", "--threads", str(threads)],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for _ in range(2)
        ]
        deadline = time.monotonic() + 1800
        while time.monotonic() < deadline:
            with ctx.db.session() as s:
                done = s.scalar(select(func.count()).select_from(Job).where(Job.state == "succeeded"))
            if done == n:
                break
            time.sleep(0.05)
        wall = time.perf_counter() - t
        with ctx.db.session() as s:
            first, last = s.execute(select(func.min(Job.started_at), func.max(Job.finished_at))).one()
            states = Counter(s.scalars(select(Job.state)))
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=60)
        ctx.close()
        if pg:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{pg}" WITH (FORCE)')
    lines = [ln.split() for ln in (data / "jobs-noop.log").read_text().splitlines()]
    runs = Counter(int(job_id) for job_id, _holder, _attempt in lines)
    queue_seconds = (last - first).total_seconds()
    return {
        "db": db,
        "jobs": n,
        "enqueue_seconds": enqueue,
        "wall_seconds": wall,
        "queue_seconds": queue_seconds,
        "jobs_per_second": n / queue_seconds if queue_seconds else None,
        "lost": len(set(ids) - set(runs)),
        "run_twice": sum(1 for c in runs.values() if c > 1),
        "states": dict(states),
        "per_worker": sorted(Counter(holder for _job, holder, _att in lines).values(), reverse=True),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="jobs-", dir=WORK))
    results = []
    try:
        for db in [d.strip() for d in args.db.split(",") if d.strip()]:
            r = run(db, args.jobs, args.threads, root)
            log(f"{db}: {r}")
            results.append(r)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.jobs} jobs.noop jobs, 2 condavault worker processes x {args.threads} threads\n")
    print(
        "| database | enqueue (1 transaction) | run: first claim to last finish | jobs/s | wall incl. worker start "
        "| lost | run twice | split between workers | load |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['db']} | {r['enqueue_seconds']:.2f} s | {r['queue_seconds']:.2f} s | {r['jobs_per_second']:.0f} | "
            f"{r['wall_seconds']:.2f} s | {r['lost']} | {r['run_twice']} | {' / '.join(map(str, r['per_worker']))} | "
            f"{r['load']:.1f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
