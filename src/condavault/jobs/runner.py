"""In-process coalesced work: index runs (``Context.request_index``) and the index sweep.

Everything durable -- mirror runs, CVE syncs, reindexing, purges, after-commit events, schedules -- is
a job of the durable queue (``jobs.queue``, ``jobs.worker``). What stays here is work that is cheap to
lose and is re-derived from the database anyway: ``submit_coalesced`` merges requests for the same key
that arrive before the work starts (a burst of uploads becomes one index run), ``every`` runs the index
sweep, the safety net that picks up whatever is left dirty. Index publishing can move onto the durable
queue later (kind ``index.publish``, dedupe key ``index:<channel>:<subdir>``) without a new design.
Exceptions are logged, never lost silently, and never kill the runner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger(__name__)


class JobRunner:
    def __init__(self, threads: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="condavault-job")
        self._pending: set[Hashable] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._timers: list[threading.Thread] = []
        self._running = 0

    def busy(self) -> bool:
        """True while any submitted job is queued or running."""
        with self._lock:
            return bool(self._pending) or self._running > 0

    def submit_coalesced(self, key: Hashable, fn: Callable[..., object]) -> None:
        with self._lock:
            if key in self._pending:
                return
            self._pending.add(key)

        def run() -> None:
            with self._lock:
                self._pending.discard(key)
                self._running += 1
            try:
                fn()
            except Exception:
                log.exception("job failed", extra={"job": repr(key)})
            finally:
                with self._lock:
                    self._running -= 1

        try:
            self._pool.submit(run)
        except RuntimeError:  # shutting down
            with self._lock:
                self._pending.discard(key)

    def every(self, seconds: float, fn: Callable[[], object], name: str) -> None:
        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    fn()
                except Exception:
                    log.exception("periodic job failed", extra={"job": name})

        t = threading.Thread(target=loop, name=f"condavault-{name}", daemon=True)
        t.start()
        self._timers.append(t)

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        deadline = time.monotonic() + 5
        for t in self._timers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
