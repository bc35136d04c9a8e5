"""Channel lookups on the request path, cached briefly, always through ``auth.policy``."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import anyio
from sqlalchemy import select

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import ChannelRef, allowed, authorize, channel_denied
from condavault.channels.models import Channel
from condavault.db.session import Database
from condavault.errors import NotFound

log = logging.getLogger(__name__)

TTL = 0.5  # also the bound across processes on SQLite (PostgreSQL: condavault.db.notify)
# A hit this close to the entry's expiry reloads it in the background (as the repo lookups do): under
# steady traffic a channel's entry never expires, so its requests never all miss at once and take the
# slow path together (every 0.5 s, with 16 clients revalidating, a few percent of a 304's CPU).
REFRESH_AHEAD = 0.05


class ChannelDirectory:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, ChannelRef | None]] = {}
        self._lock = threading.Lock()
        self._gen = 0  # bumped by invalidate(): a load that started before it must not store its answer
        self._refreshing: set[str] = set()

    def invalidate(self, name: str | None = None) -> None:
        with self._lock:
            self._gen += 1
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)

    def lookup(self, name: str) -> ChannelRef | None:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        return self._load(name)

    def _load(self, name: str) -> ChannelRef | None:
        gen, now = self._gen, time.monotonic()
        with self.db.session() as s:
            row = s.execute(select(Channel.id, Channel.name, Channel.privacy).where(Channel.name == name)).first()
        ref = ChannelRef(row[0], row[1], row[2]) if row else None
        with self._lock:
            if gen == self._gen:  # else invalidated meanwhile: the next lookup reads again
                if len(self._cache) > 10000:
                    self._cache.clear()
                self._cache[name] = (now + TTL, ref)
        return ref

    def peek(self, name: str) -> tuple[bool, ChannelRef | None]:
        """``(True, channel or None)`` when the lookup is cached: no database (the event loop may call it;
        there, a hit about to expire also starts its reload on a thread)."""
        hit = self._cache.get(name)
        if hit is not None:
            left = hit[0] - time.monotonic()
            if left > 0:
                if left < REFRESH_AHEAD and name not in self._refreshing:
                    self._refresh(name)
                return True, hit[1]
        return False, None

    def _refresh(self, name: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._refreshing.add(name)

        def done(f: asyncio.Future[ChannelRef | None]) -> None:
            self._refreshing.discard(name)
            if not f.cancelled() and f.exception() is not None:  # the requests load it again
                log.warning("reloading a channel lookup failed", extra={"error": repr(f.exception())[:300]})

        loop.run_in_executor(None, self._load, name).add_done_callback(done)

    async def afor_read(self, identity: Identity, name: str) -> ChannelRef:
        """:meth:`for_read` for async code: a cache miss is looked up on a worker thread."""
        cached, _ = self.peek(name)
        if cached:
            return self.for_read(identity, name)
        return await anyio.to_thread.run_sync(self.for_read, identity, name)

    def for_read(self, identity: Identity, name: str) -> ChannelRef:
        """The channel if ``identity`` may read it; otherwise the same error whether it exists or not."""
        ref = self.lookup(name)
        if ref is None:
            if identity.is_admin:
                raise NotFound(f"channel {name!r} not found", code="channel_not_found", channel=name)
            raise channel_denied(identity, name)
        if not allowed(identity, Permission.CHANNEL_READ, ref):
            raise channel_denied(identity, name)
        return ref

    def require(self, identity: Identity, name: str, perm: Permission) -> ChannelRef:
        ref = self.for_read(identity, name)
        if perm != Permission.CHANNEL_READ:
            authorize(identity, perm, ref)
        return ref
