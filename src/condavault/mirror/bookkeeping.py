"""A mirror run's bookkeeping: what it is (:class:`RunInfo`) and how far it got (:class:`RunBook`).

The book keeps the counts, the failures, the progress figures and the plan items' state changes (written
in batches), and its :meth:`RunBook.tick` -- every half second while the run lasts -- writes the progress
to the run row, reads the cancel flag and renews the mirror's lease.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from condavault.db.base import table, utcnow
from condavault.mirror import services as svc
from condavault.mirror.config import MirrorConfig
from condavault.mirror.models import MirrorItem, MirrorRun

if TYPE_CHECKING:
    from condavault.context import Context
    from condavault.jobs.registry import JobRun

log = logging.getLogger(__name__)

FAILURES_KEPT = 200
LEASE_RENEW_SECONDS = 5.0


@dataclass(frozen=True)
class RunInfo:
    """What a run works on; fixed once the run has read its mirror."""

    ctx: Context
    mirror_id: int
    run_id: int
    holder: str
    mirror_name: str
    channel_id: int
    channel_name: str
    cfg: MirrorConfig
    config_hash: str
    dry_run: bool
    full: bool


class RunBook:
    """Counts, failures, progress and item states of one run (thread-safe where threads meet)."""

    def __init__(
        self,
        ctx: Context,
        mirror_id: int,
        run_id: int,
        holder: str,
        on_progress: Callable[[dict[str, Any]], None] | None,
        *,
        job: JobRun | None = None,
    ) -> None:
        self.ctx = ctx
        self.job = job  # the durable job running this run: its cancel flag and progress
        self.mirror_id = mirror_id
        self.run_id = run_id
        self.holder = holder
        self.on_progress = on_progress
        self.counts: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}
        self.failures: list[dict[str, Any]] = []
        self.cancelled = False
        self.lost_lease = False
        self.phase = "starting"
        self.status = "planning"
        self.total_items = 0
        self.total_bytes = 0
        self.done_items = 0
        self.done_bytes = 0
        self.touched: set[str] = set()  # subdirs whose records the run changed (or must publish)
        self.plan_seconds: float | None = None
        self.apply_seconds: float | None = None
        self._updates: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._last_renew = time.monotonic()

    def all_counts(self) -> dict[str, Any]:
        return {**dict(self.counts), **self.extra}

    # -- files ---------------------------------------------------------------------------------------
    def done(self, key: tuple[str, str], size: int) -> None:
        with self._lock:
            self.counts["downloaded"] += 1
            self.counts["bytes"] += size
            self.done_items += 1
            self.done_bytes += size
        self.mark(key, "done")

    def fail(self, key: tuple[str, str], code: str, message: str) -> None:
        with self._lock:
            self.counts["failed"] += 1
            if code == "checksum_mismatch":
                self.counts["rejected_checksum"] += 1
            self.done_items += 1
            self.failures.append({"file": f"{key[0]}/{key[1]}", "code": code, "message": message})
        self.mark(key, "failed", f"{message} [{code}]")
        log.warning(
            "mirror file failed", extra={"mirror_id": self.mirror_id, "file": f"{key[0]}/{key[1]}", "code": code}
        )

    # -- item state updates (batched) ----------------------------------------------------------------
    def mark(self, key: tuple[str, str], state: str, error: str | None = None) -> None:
        with self._lock:
            self._updates.append({"b_sd": key[0], "b_fn": key[1], "b_state": state, "b_error": error})

    def flush_updates(self) -> None:
        with self._flush_lock:  # in order: a later state of an item never lands before an earlier one
            with self._lock:
                batch, self._updates = self._updates, []
            if not batch:
                return
            t = table(MirrorItem)
            stmt = (
                update(t)
                .where(
                    t.c.mirror_id == self.mirror_id, t.c.subdir == bindparam("b_sd"), t.c.filename == bindparam("b_fn")
                )
                .values(state=bindparam("b_state"), error=bindparam("b_error"), run_id=self.run_id)
            )

            def write(s: Session) -> None:
                s.connection().execute(stmt, batch)

            self.ctx.db.run_write(write)

    # -- the heartbeat -------------------------------------------------------------------------------
    def tick(self) -> None:
        """Write the progress, read the cancel flag, renew the lease (called twice a second)."""
        self.flush_updates()

        def progress(s: Session) -> bool:
            s.execute(update(MirrorRun).where(MirrorRun.id == self.run_id).values(**self._progress_values()))
            return bool(s.scalar(select(MirrorRun.cancel_requested).where(MirrorRun.id == self.run_id)))

        try:
            if self.ctx.db.run_write(progress) or (self.job is not None and self.job.cancelled):
                self.cancelled = True
            if time.monotonic() - self._last_renew > min(LEASE_RENEW_SECONDS, self.ctx.settings.job_lease_seconds / 4):
                self._last_renew = time.monotonic()
                if not svc.renew_lease(self.ctx.db, self.mirror_id, self.holder, self.ctx.settings.job_lease_seconds):
                    self.lost_lease = self.cancelled = True
        except Exception:  # pragma: no cover - a DB hiccup must not kill the run
            log.exception("mirror heartbeat failed")
        self.report()

    def _progress_values(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "phase": self.phase,
            "total_items": self.total_items,
            "done_items": self.done_items,
            "total_bytes": self.total_bytes,
            "done_bytes": self.done_bytes,
            "counts": json.dumps(self.all_counts(), default=str),
        }

    def finish(self, status: str, error: str | None) -> None:
        self.status = status
        self.phase = "done"
        values = {
            **self._progress_values(),
            "finished_at": utcnow(),
            "error": error,
            "failures": json.dumps(self.failures[:FAILURES_KEPT]),
            "plan_seconds": self.plan_seconds,
            "apply_seconds": self.apply_seconds,
        }

        def fin(s: Session) -> None:
            s.execute(update(MirrorRun).where(MirrorRun.id == self.run_id).values(**values))

        self.ctx.db.run_write(fin)
        self.report()

    def report(self) -> None:
        if self.job is not None:
            self.job.progress(phase=f"{self.status}: {self.phase}", done=self.done_items, total=self.total_items)
        if self.on_progress is None:
            return
        try:
            self.on_progress(
                {
                    "status": self.status,
                    "phase": self.phase,
                    "progress": {
                        "total_items": self.total_items,
                        "done_items": self.done_items,
                        "total_bytes": self.total_bytes,
                        "done_bytes": self.done_bytes,
                    },
                    "counts": self.all_counts(),
                }
            )
        except Exception:  # pragma: no cover
            log.exception("progress callback failed")
