"""In-process job runner (the embedded default of design.md §5).

``submit`` runs a job on a worker thread; ``submit_coalesced`` merges requests for the same key that
arrive before the job starts (a burst of uploads becomes one index run); ``every`` runs a function on
a fixed period and ``cron`` on a cron expression. Jobs raising exceptions are logged, never lost
silently, and never kill the runner.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime

from croniter import croniter

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

    def submit(self, fn: Callable[[], object], name: str = "job") -> Future[object]:
        def run() -> object:
            try:
                return fn()
            except Exception:
                log.exception("job failed", extra={"job": name})
                raise

        return self._pool.submit(run)

    def submit_coalesced(self, key: Hashable, fn: Callable[[], object]) -> None:
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

    def cron(self, expression: str, fn: Callable[[], object], name: str) -> None:
        def loop() -> None:
            it = croniter(expression, datetime.now(UTC))
            while not self._stop.is_set():
                nxt = it.get_next(datetime)
                while not self._stop.is_set():
                    wait = (nxt - datetime.now(UTC)).total_seconds()
                    if wait <= 0:
                        break
                    self._stop.wait(min(wait, 30))
                if self._stop.is_set():
                    return
                self.submit(fn, name)

        t = threading.Thread(target=loop, name=f"condavault-cron-{name}", daemon=True)
        t.start()
        self._timers.append(t)

    def shutdown(self, wait: bool = True) -> None:
        self._stop.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        deadline = time.monotonic() + 5
        for t in self._timers:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
