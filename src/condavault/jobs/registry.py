"""Job kinds: what each kind of job runs, and the handle a running job gets (:class:`JobRun`).

Domains register their kinds at wiring time (``condavault.wiring``): a name (``domain.verb``, e.g.
``mirror.run``), a handler ``fn(run) -> dict | None`` (the dict is stored as the job's result), a lane
(``short`` jobs -- after-commit events, purges -- have a thread of their own in every worker, so a few
long mirror runs never delay them) and how often a failing job is tried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from condavault.context import Context

JsonDict = dict[str, Any]
Lane = Literal["short", "long"]


class JobCancelled(Exception):
    """Raised by :meth:`JobRun.check_cancelled` once the job was asked to stop."""


@dataclass(frozen=True)
class JobKind:
    name: str
    handler: Callable[[JobRun], JsonDict | None]
    lane: Lane = "long"
    max_attempts: int = 3
    priority: int = 0
    quiet: bool = False  # a run that succeeds without a result leaves no row (frequent housekeeping)
    # times a job whose worker died (kill -9, a lost machine) is queued again on top of max_attempts: a
    # resumable handler (a mirror run) continues from its persisted state instead of failing
    takeovers: int = 0
    description: str = ""


class JobKinds:
    """The kinds this process knows; a worker only claims jobs of these."""

    def __init__(self) -> None:
        self._kinds: dict[str, JobKind] = {}

    def register(self, kind: JobKind) -> None:
        self._kinds[kind.name] = kind

    def get(self, name: str) -> JobKind | None:
        return self._kinds.get(name)

    def require(self, name: str) -> JobKind:
        kind = self._kinds.get(name)
        if kind is None:
            raise ValueError(f"unknown job kind {name!r}")
        return kind

    def names(self) -> list[str]:
        return sorted(self._kinds)


@dataclass
class JobRun:
    """What a handler gets: its parameters, the Context, and progress / cancellation."""

    id: int
    kind: str
    params: JsonDict
    attempt: int
    ctx: Context
    report: Callable[[JobRun], None] = field(repr=False, default=lambda _run: None)
    phase: str = ""
    done: int = 0
    total: int | None = None
    cancel_requested: bool = False
    stopping: bool = False  # the worker shuts down: stop early, the job is queued again
    lost: bool = False  # another worker took the job over (its lease expired)
    local: dict[str, Any] = field(default_factory=dict)  # in-process extras of a run_here (progress callbacks)
    error: BaseException | None = None  # what the handler raised (for run_here callers)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested or self.stopping or self.lost

    def check_cancelled(self) -> None:
        if self.cancelled:
            raise JobCancelled(f"job {self.id} was asked to stop")

    def progress(self, *, phase: str | None = None, done: int | None = None, total: int | None = None) -> None:
        """Record progress (written to the job row by the heartbeat, or at once for a phase change)."""
        with self._lock:
            new_phase = phase is not None and phase != self.phase
            if phase is not None:
                self.phase = phase
            if done is not None:
                self.done = done
            if total is not None:
                self.total = total
        if new_phase:
            self.report(self)
