"""Typed events: what a service records inside its transaction, and the work that follows the commit.

A service calls ``ctx.events.record(session, SomethingHappened(...))`` next to its change. Subscribers
say when they run:

* ``transaction`` -- at once, in the same transaction (``fn(session, event)``): rows that must commit or
  roll back with the change, e.g. the audit row of an administrative change, the owner grant of a new
  channel. Retried with the transaction by ``Database.run_write``, so they are written exactly once.
* ``commit`` -- in this process once the transaction has committed, never if it rolls back
  (``fn(event)``): cache invalidation, asking for an index run. Lost if the process dies right then,
  which is fine for work that a periodic sweep or a cache TTL also covers.
* ``durable`` -- a job enqueued in the same transaction (the job system's outbox), run once after the
  commit by any worker, retried on failure, surviving restarts (``fn(ctx, event)``): e.g. CVE matching of
  uploaded packages.

An event is a frozen dataclass. A durable one must survive JSON (``to_params``/``from_params``).
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

from sqlalchemy.orm import Session

from condavault.db.session import Database, after_commit
from condavault.jobs.registry import JobKind, JobRun, JsonDict

if TYPE_CHECKING:
    from condavault.context import Context
    from condavault.jobs.queue import JobQueue

E = TypeVar("E", bound="Event")
Phase = Literal["transaction", "commit"]


@dataclass(frozen=True)
class Event:
    """Base of every event."""

    name: ClassVar[str] = "event"

    def to_params(self) -> JsonDict:
        return dataclasses.asdict(self)

    @classmethod
    def from_params(cls: type[E], params: JsonDict) -> E:
        return cls(**params)

    def coalesce_key(self) -> str | None:
        """Events of the same key may share one durable job (``EventBus.record(..., coalesce=...)``)."""
        return None

    @classmethod
    def merge_params(cls, queued: JsonDict, new: JsonDict) -> JsonDict | None:
        """The parameters of one job doing the work of both; None when they do not go together."""
        return None


@dataclass(frozen=True)
class Actor:
    """Who caused a change (the part of an identity the audit log keeps)."""

    username: str | None = None
    user_id: int | None = None
    token_id: int | None = None
    is_admin: bool = False

    @classmethod
    def of(cls, identity: object) -> Actor:
        return cls(
            username=getattr(identity, "username", None),
            user_id=getattr(identity, "user_id", None),
            token_id=getattr(identity, "token_id", None),
            is_admin=bool(getattr(identity, "is_admin", False)),
        )


@dataclass(frozen=True)
class AdminChange(Event):
    """An administrative change, for the audit log (``source:subject:action`` style actions)."""

    name: ClassVar[str] = "admin_change"
    actor: Actor
    action: str
    target: str
    before: Any = None
    after: Any = None


class EventBus:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.queue: JobQueue | None = None  # set once the job system exists (durable subscribers)
        self._tx: dict[type[Event], list[Callable[[Session, Any], None]]] = defaultdict(list)
        self._commit: dict[type[Event], list[Callable[[Any], None]]] = defaultdict(list)
        self._durable: dict[type[Event], list[str]] = defaultdict(list)

    # -- subscribing -----------------------------------------------------------------------------------
    def on_transaction(self, etype: type[E], fn: Callable[[Session, E], None]) -> None:
        self._tx[etype].append(fn)

    def on_commit(self, etype: type[E], fn: Callable[[E], None]) -> None:
        self._commit[etype].append(fn)

    def durable(self, etype: type[E], name: str, fn: Callable[[Context, E], JsonDict | None]) -> JobKind:
        """Run ``fn`` once after each commit that recorded an ``etype``, through the job system. Returns the
        job kind to register (``event.<name>``, short lane)."""
        kind_name = f"event.{name}"
        self._durable[etype].append(kind_name)

        def handler(run: JobRun) -> JsonDict | None:
            return fn(run.ctx, etype.from_params(run.params))

        return JobKind(
            kind_name,
            handler,
            lane="short",
            max_attempts=5,
            priority=10,
            description=f"after-commit work of {etype.__name__}",
        )

    # -- recording -------------------------------------------------------------------------------------
    def record(self, session: Session, event: Event, *, coalesce: float = 0.0, wake: bool = True) -> list[int]:
        """Record ``event`` in the caller's transaction (see the module docstring for when each kind of
        subscriber runs). Returns the ids of the jobs of its durable subscribers (a caller that promises
        its client the effects may run them at once: ``JobWorker.run_here``). ``coalesce`` (seconds, for
        a writer of many small changes that nobody waits for, e.g. the requests of an upload batch): the
        durable work may wait that long, and joins a queued job of the same ``Event.coalesce_key``.
        ``wake`` False: the caller runs the jobs itself at once; the workers are not woken for them (they
        find them at their next poll if the caller does not)."""
        etype = type(event)
        for fn in self._tx.get(etype, ()):
            fn(session, event)
        kinds = self._durable.get(etype, ())
        job_ids = []
        if kinds:
            assert self.queue is not None, "durable subscribers need the job queue"
            params = event.to_params()
            key = event.coalesce_key() if coalesce > 0 else None
            for kind in kinds:
                if key is None:
                    job_ids.append(self.queue.enqueue(kind, params, session=session, wake=wake))
                else:
                    job_ids.append(
                        self.queue.enqueue_merged(
                            kind, params, etype.merge_params, session=session, key=f"{kind}:{key}", delay=coalesce
                        )
                    )
        for commit_fn in self._commit.get(etype, ()):
            after_commit(session, partial(commit_fn, event))
        return job_ids

    def emit(self, event: Event) -> list[int]:
        """Record ``event`` in a transaction of its own (a change made outside any session of ours)."""
        return self.db.run_write(lambda s: self.record(s, event))
