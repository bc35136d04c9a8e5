"""Cache invalidation across processes and machines.

Every process keeps short-lived caches (token identities, channel lookups, index pointers, the CVE
snapshot, the scanning block list), each with an ``invalidate`` method that its own changes call once they
have committed. :class:`CacheBroadcast` tells the other processes too:

* **PostgreSQL**: ``NOTIFY condavault_cache, '<json>'`` after the local invalidation (a sender thread, so a
  request never waits on it), and in every process a listener thread on a connection of its own
  (``LISTEN condavault_cache``) that calls the same ``invalidate`` with the same argument. PostgreSQL
  delivers a notification to every listening session of every machine within milliseconds. When the
  listener's connection breaks it reconnects (1 s, 2 s, ... at most 10 s apart) and, since it may have
  missed messages meanwhile, invalidates every cache once connected again.
* **SQLite** (one machine; ``serve --workers N`` shares the file): nothing is sent; every cache of the list
  above lives at most 1 s (token identities and channels 0.5 s; ``CACHE_TTL``/``TTL``/``FRESHNESS``).

A message carries the sending process's id, so a process ignores its own (it has invalidated already).
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy import text

from condavault import metrics
from condavault.db.session import Database

log = logging.getLogger(__name__)
CHANNEL = "condavault_cache"
MAX_PAYLOAD = 7000  # PostgreSQL's limit is 8000 bytes; a longer message invalidates the whole topic
RECONNECT_MAX_SECONDS = 10.0

Arg = str | int | None


class Invalidating(Protocol):
    def invalidate(self, *args: Any) -> None: ...


class CacheBroadcast:
    """Attach caches with :meth:`attach`; :meth:`start` the listener and sender threads (PostgreSQL)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.origin = uuid.uuid4().hex[:12]
        self.enabled = db.engine.dialect.name == "postgresql"
        self._local: dict[str, Callable[..., None]] = {}
        self._out: queue.SimpleQueue[tuple[str, Arg] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conn: Any = None
        self.received = 0  # messages of other processes applied here
        self.connected = threading.Event()  # the listener is listening (tests wait for it)

    # -- wiring ----------------------------------------------------------------------------------------
    def attach(self, topic: str, cache: Invalidating) -> None:
        """From now on ``cache.invalidate(arg)`` also invalidates ``topic`` in every other process, and a
        message of another process calls the original ``invalidate``. ``arg`` is absent, an int or a str."""
        original = cache.invalidate
        self._local[topic] = original

        def invalidate(*args: Any) -> None:
            original(*args)
            if self._threads:  # started (a serving or worker process; not a one-shot CLI command)
                self._out.put((topic, args[0] if args else None))

        setattr(cache, "invalidate", invalidate)  # noqa: B010 - an instance attribute shadowing the method

    # -- life cycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        if not self.enabled or self._threads:
            return
        self._stop.clear()
        for target, name in ((self._listen, "listen"), (self._send, "notify")):
            t = threading.Thread(target=target, name=f"condavault-cache-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stop.set()
        self._out.put(None)
        conn = self._conn
        if conn is not None:
            try:
                conn.close()
            except Exception:  # pragma: no cover - closing a broken connection
                pass
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []

    # -- sending ---------------------------------------------------------------------------------------
    def _send(self) -> None:
        while not self._stop.is_set():
            item = self._out.get()
            if item is None:
                return
            batch = {item}
            while True:  # a burst of invalidations (a mirror run's files) goes out once each
                try:
                    more = self._out.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._stop.set()
                    break
                batch.add(more)
            try:
                with self.db.engine.connect() as conn:
                    for topic, arg in sorted(batch, key=repr):
                        conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": self._payload(topic, arg)})
                    conn.commit()
            except Exception:  # the database is away: the other processes' caches expire on their own
                log.warning("sending a cache invalidation failed", exc_info=True)

    def _payload(self, topic: str, arg: Arg) -> str:
        text_ = json.dumps({"o": self.origin, "t": topic, "a": arg}, separators=(",", ":"))
        if len(text_.encode()) > MAX_PAYLOAD:
            text_ = json.dumps({"o": self.origin, "t": topic, "a": None}, separators=(",", ":"))
        return text_

    # -- receiving -------------------------------------------------------------------------------------
    def _listen(self) -> None:
        import psycopg

        url = self.db.engine.url
        params = url.translate_connect_args(username="user", database="dbname")
        params.update({k: v for k, v in url.query.items() if isinstance(v, str)})
        delay = 1.0
        first = True
        while not self._stop.is_set():
            try:
                with psycopg.connect(autocommit=True, application_name="condavault-listen", **params) as conn:
                    self._conn = conn
                    conn.execute(f"LISTEN {CHANNEL}")
                    if not first:  # messages may have been missed while disconnected
                        self._apply_all()
                    first, delay = False, 1.0
                    self.connected.set()
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=1.0):
                            self._apply(note.payload)
            except Exception:
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning("cache listener lost its database connection; reconnecting", exc_info=True)
                self._stop.wait(delay)
                delay = min(RECONNECT_MAX_SECONDS, delay * 2)
            finally:
                self._conn = None

    def _apply(self, payload: str) -> None:
        try:
            msg = json.loads(payload)
            if msg.get("o") == self.origin:
                return
            fn = self._local.get(msg.get("t"))
            if fn is None:
                return
            arg = msg.get("a")
            if arg is None:
                fn()
            else:
                fn(arg)
            self.received += 1
            metrics.CACHE_INVALIDATIONS_RECEIVED.inc()
        except Exception:
            log.warning("bad cache invalidation message ignored", exc_info=True)

    def _apply_all(self) -> None:
        for fn in self._local.values():
            try:
                fn()
            except Exception:  # pragma: no cover - invalidate methods only clear dicts
                log.exception("invalidating a cache failed")
