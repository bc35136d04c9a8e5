"""Audit recording.

Downloads are recorded off the serving path: an in-memory queue drained by one background thread into
batched INSERTs. ``close()`` (app shutdown, and ``atexit`` as a safety net) drains what is left, so
nothing recorded is lost on a clean stop. The queue is bounded (``audit_queue_max`` rows): when the
database cannot keep up or is down, further downloads are counted instead of queued, and the count is
written as an ``audit:overflow`` change as soon as the database takes writes again (and exported as
``condavault_audit_dropped_total``), so a gap is visible, never silent.

Administrative changes are written in the transaction of the change itself (:meth:`write_change`, an
``AdminChange`` event subscriber): exactly once, and only if the change commits."""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert
from sqlalchemy.orm import Session

from condavault import metrics
from condavault.audit.models import ChangeEvent, DownloadEvent
from condavault.db.session import Database

if TYPE_CHECKING:
    from condavault.events import AdminChange

log = logging.getLogger(__name__)
BATCH = 2000


def package_name(filename: str) -> str:
    base = filename.removesuffix(".conda").removesuffix(".tar.bz2")
    parts = base.rsplit("-", 2)
    return parts[0] if len(parts) == 3 else base


def _json(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return json.dumps(value, default=str, sort_keys=True)
    except (TypeError, ValueError):
        return json.dumps(repr(value))


def change_row(event: AdminChange) -> dict[str, Any]:
    action, target = event.action, event.target
    channel = None
    if action.startswith(("channel:", "package:")):
        channel = str(target).split("/", 1)[0].split("->", 1)[0][:100]
    return {
        "at": datetime.now(UTC),
        "username": event.actor.username,
        "user_id": event.actor.user_id,
        "token_id": event.actor.token_id,
        "action": action[:100],
        "target": str(target)[:500],
        "channel": channel,
        "before": _json(event.before),
        "after": _json(event.after),
    }


class AuditRecorder:
    def __init__(self, db: Database, *, interval: float = 0.2, max_queued: int = 100_000) -> None:
        self.db = db
        self.interval = interval
        self.enabled = True
        self.max_queued = max_queued
        self.dropped = 0  # downloads not recorded because the queue was full (not yet reported)
        self.dropped_total = 0
        self._downloads: collections.deque[dict[str, Any]] = collections.deque()
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.written = 0

    # -- listeners (hot path: append only) -----------------------------------------------------

    def on_download(self, request: Any, identity: Any, channel: Any, subdir: str, target: Any) -> None:
        if not self.enabled or getattr(request, "method", "GET") == "HEAD":
            return  # a HEAD transfers no bytes
        if len(self._downloads) >= self.max_queued:
            self.dropped += 1  # counted, reported at the next flush that reaches the database
            self.dropped_total += 1
            metrics.AUDIT_DROPPED.inc()
            return
        client = getattr(request, "client", None)
        filename = target.filename or ""
        self._downloads.append(
            {
                "at": datetime.now(UTC),
                "username": identity.username,
                "user_id": identity.user_id,
                "token_id": identity.token_id,
                "ip": client.host if client else None,
                "user_agent": (request.headers.get("user-agent") or "")[:500] or None,
                "channel": channel.name,
                "subdir": subdir,
                "filename": filename,
                "package": package_name(filename),
                "sha256": target.sha256,
                "size": target.size,
            }
        )

    def write_change(self, session: Session, event: AdminChange) -> None:
        """The audit row of an administrative change, in the change's own transaction."""
        session.execute(insert(ChangeEvent), [change_row(event)])

    # -- background writer ---------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="condavault-audit", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.flush()
            except Exception:  # keep going; the rows stay queued
                log.exception("audit flush failed; will retry")
                time.sleep(1.0)

    @property
    def pending(self) -> int:
        return len(self._downloads)

    def flush(self) -> int:
        """Write everything queued so far; returns the number of rows written."""
        n = 0
        with self._flush_lock:
            if self.dropped:
                lost = self.dropped
                row = {
                    "at": datetime.now(UTC),
                    "username": "condavault",
                    "action": "audit:overflow",
                    "target": "downloads",
                    "after": _json({"downloads_not_recorded": lost}),
                }
                with self.db.session() as s:
                    s.execute(insert(ChangeEvent), [row])
                self.dropped -= lost
                log.error("audit queue overflowed: downloads were not recorded", extra={"downloads_lost": lost})
            queue = self._downloads
            while queue:
                batch: list[dict[str, Any]] = []
                while queue and len(batch) < BATCH:
                    batch.append(queue.popleft())
                try:
                    with self.db.session() as s:
                        s.execute(insert(DownloadEvent), batch)
                except Exception:
                    queue.extendleft(reversed(batch))  # put back in order; retried next time
                    raise
                n += len(batch)
        self.written += n
        return n

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        for attempt in range(5):
            try:
                self.flush()
                return
            except Exception:
                log.exception("audit flush at shutdown failed (attempt %d)", attempt + 1)
                time.sleep(0.5)
