"""Channel lookups on the request path, cached briefly, always through ``auth.policy``."""

from __future__ import annotations

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

TTL = 0.5  # also the bound across processes on SQLite (PostgreSQL: condavault.db.notify)


class ChannelDirectory:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[str, tuple[float, ChannelRef | None]] = {}
        self._lock = threading.Lock()

    def invalidate(self, name: str | None = None) -> None:
        with self._lock:
            if name is None:
                self._cache.clear()
            else:
                self._cache.pop(name, None)

    def lookup(self, name: str) -> ChannelRef | None:
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit is not None and hit[0] > now:
            return hit[1]
        with self.db.session() as s:
            row = s.execute(select(Channel.id, Channel.name, Channel.privacy).where(Channel.name == name)).first()
        ref = ChannelRef(row[0], row[1], row[2]) if row else None
        with self._lock:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[name] = (now + TTL, ref)
        return ref

    def peek(self, name: str) -> tuple[bool, ChannelRef | None]:
        """``(True, channel or None)`` when the lookup is cached: no database (the event loop may call it)."""
        hit = self._cache.get(name)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

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
