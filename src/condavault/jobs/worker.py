"""Runs durable jobs in this process: a few runner threads, and one housekeeping thread that renews the
leases of the running jobs (the heartbeat), writes their progress, takes back the jobs of dead workers
and fires due schedules.

Thread 0 runs only ``short`` jobs (after-commit events, purges), so a few long mirror runs or CVE
syncs never hold them up; the other threads run both lanes. ``condavault serve`` starts one worker
(unless ``--no-worker``), ``condavault worker`` runs one without a web server, and any number of them
share the queue.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from condavault.errors import CondavaultError
from condavault.jobs.models import CANCELLED, SUCCEEDED
from condavault.jobs.queue import Claimed, JobQueue
from condavault.jobs.registry import JobCancelled, JobKinds, JobRun
from condavault.jobs.schedule import Schedules

if TYPE_CHECKING:
    from condavault.context import Context

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0
POLL_SECONDS = 1.0  # a job enqueued by this process wakes its workers at once; others' within this
STOP_GRACE_SECONDS = 10.0


class JobWorker:
    def __init__(
        self,
        ctx: Context,
        queue: JobQueue,
        kinds: JobKinds,
        schedules: Schedules,
        *,
        threads: int = 4,
        poll: float = POLL_SECONDS,
        heartbeat: float = HEARTBEAT_SECONDS,
    ) -> None:
        self.ctx = ctx
        self.queue = queue
        self.kinds = kinds
        self.schedules = schedules
        self.threads = max(2, threads)
        self.poll = poll
        self.heartbeat_every = heartbeat
        self._stop = threading.Event()
        self._running: dict[int, JobRun] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.ran = 0  # jobs this worker finished (any outcome)

    # -- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        for i in range(self.threads):
            lanes = ("short",) if i == 0 else ("short", "long")
            t = threading.Thread(target=self._loop, args=(lanes,), name=f"condavault-jobs-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._housekeeping, name="condavault-jobs-heartbeat", daemon=True)
        t.start()
        self._threads.append(t)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop claiming; ask running jobs to stop (they are queued again, their attempt not counted) and
        wait up to ``grace`` seconds. A job still running after that keeps its lease until it expires."""
        self._stop.set()
        self.queue._wake.set()
        with self._lock:
            for run in self._running.values():
                run.stopping = True
        deadline = time.monotonic() + grace
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self._threads = []

    def running(self) -> list[int]:
        with self._lock:
            return list(self._running)

    # -- loops ------------------------------------------------------------------------------------------
    def _loop(self, lanes: tuple[str, ...]) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.queue.claim(lanes)
            except Exception:  # the database is away: try again a little later, without flooding the log
                log.exception("claiming a job failed")
                self._stop.wait(5.0)
                continue
            if claimed is None:
                self.queue._wake.wait(self.poll)
                self.queue._wake.clear()
                continue
            self.execute(claimed)

    def _housekeeping(self) -> None:
        ticks = 0
        while not self._stop.wait(1.0):
            ticks += 1
            try:
                if ticks % max(1, round(self.heartbeat_every)) == 0:
                    self.beat()
                self.queue.reap()
                self.schedules.tick()
            except Exception:
                log.exception("job housekeeping failed")

    def beat(self) -> None:
        """Renew leases, pass cancel requests on, write progress."""
        with self._lock:
            runs = dict(self._running)
        if not runs:
            return
        cancel, lost = self.queue.heartbeat(list(runs))
        for job_id, run in runs.items():
            if job_id in cancel:
                run.cancel_requested = True
            if job_id in lost:
                run.lost = True
            else:
                self._report(run)

    def _report(self, run: JobRun) -> None:
        try:
            self.queue.report(run.id, run.phase, run.done, run.total)
        except Exception:  # progress is best effort
            log.exception("writing job progress failed", extra={"job_id": run.id})

    # -- one job ----------------------------------------------------------------------------------------
    def run_here(self, job_id: int, *, local: dict[str, Any] | None = None) -> JobRun | None:
        """Claim the queued job ``job_id`` and run it in this thread (``mirror run --local``, synchronous
        API calls); ``local`` is handed to the handler as ``run.local``. Its lease is renewed while it
        runs, whether or not this worker was started. None when the job was not queued (a worker took it
        first, or it was cancelled)."""
        claimed = self.queue.claim(("short", "long"), job_id=job_id)
        if claimed is None:
            return None
        return self._run_in_thread(claimed, local)

    def run_claimed(self, job_id: int, *, local: dict[str, Any] | None = None) -> JobRun:
        """Run a job this process enqueued with ``claim=True``, in this thread."""
        claimed = self.queue.claimed(job_id)
        if claimed is None:
            raise RuntimeError(f"job {job_id} is not running on this process")
        return self._run_in_thread(claimed, local)

    def _run_in_thread(self, claimed: Claimed, local: dict[str, Any] | None) -> JobRun:
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.heartbeat_every):
                try:
                    self.beat()
                except Exception:
                    log.exception("job heartbeat failed")

        t = None
        if not self._threads:  # no housekeeping thread of ours renews leases: one for this run
            t = threading.Thread(target=beat, name=f"condavault-job-{claimed.id}-heartbeat", daemon=True)
            t.start()
        try:
            return self.execute(claimed, local=local)
        finally:
            stop.set()
            if t is not None:
                t.join(timeout=5)

    def execute(self, claimed: Claimed, *, local: dict[str, Any] | None = None) -> JobRun:
        kind = self.kinds.get(claimed.kind)
        run = JobRun(
            claimed.id, claimed.kind, claimed.params, claimed.attempt, self.ctx, report=self._report, local=local or {}
        )
        if kind is None:  # pragma: no cover - claim() only takes known kinds
            self.queue.fail(claimed.id, f"unknown job kind {claimed.kind!r}", retry=False)
            return run
        with self._lock:
            self._running[claimed.id] = run
        started = time.monotonic()
        try:
            result = kind.handler(run)
        except JobCancelled as exc:
            run.error = exc
            if run.stopping and not run.cancel_requested:
                self.queue.fail(run.id, "interrupted by a worker shutdown; queued again", retry=True, free_attempt=True)
            else:
                self.queue.fail(run.id, "cancelled", retry=False, state=CANCELLED)
        except CondavaultError as exc:
            run.error = exc
            retry = exc.status >= 500
            self.queue.fail(run.id, f"{exc.message} [{exc.code}]", retry=retry)
            log.warning("job failed", extra={"job_id": run.id, "kind": run.kind, "error_code": exc.code})
        except Exception as exc:
            run.error = exc
            log.exception("job failed", extra={"job_id": run.id, "kind": run.kind})
            self.queue.fail(run.id, f"{type(exc).__name__}: {exc}", retry=True)
        else:
            if run.phase or run.done:
                self._report(run)
            state = CANCELLED if run.cancel_requested else SUCCEEDED
            self.queue.finish(run.id, result, quiet=kind.quiet, state=state)
            if result or not kind.quiet:
                log.info(
                    "job done",
                    extra={
                        "job_id": run.id,
                        "kind": run.kind,
                        "state": state,
                        "seconds": round(time.monotonic() - started, 3),
                    },
                )
        finally:
            with self._lock:
                self._running.pop(claimed.id, None)
                self.ran += 1
        return run
