"""What a repo URL points at: published index pointers, shards and package blobs (cached briefly)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from sqlalchemy import select

from condavault.channels.models import Record
from condavault.db.session import Database
from condavault.indexing.models import PublishedFile, ShardBlob

TTL = 1.0


@dataclass(frozen=True)
class Target:
    sha256: str
    size: int
    content_type: str
    last_modified: float  # unix seconds
    kind: str  # index | shard | package
    has_blob: bool = True
    record_id: int | None = None
    source_url: str | None = None
    filename: str | None = None


class Lookup:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._cache: dict[tuple[object, ...], tuple[float, Target | None]] = {}
        self._lock = threading.Lock()

    def invalidate(self, channel_id: int | None = None) -> None:
        with self._lock:
            if channel_id is None:
                self._cache.clear()
            else:
                for k in [k for k in self._cache if k[1] == channel_id]:
                    del self._cache[k]

    def cached(self, key: tuple[object, ...]) -> tuple[bool, Target | None]:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return True, hit[1]
        return False, None

    def store(self, key: tuple[object, ...], value: Target | None) -> None:
        with self._lock:
            if len(self._cache) > 50000:
                self._cache.clear()
            self._cache[key] = (time.monotonic() + TTL, value)

    def load(self, key: tuple[object, ...]) -> Target | None:
        kind, channel_id, subdir, name = key
        with self.db.session() as s:
            if kind == "index":
                row = s.execute(
                    select(
                        PublishedFile.sha256, PublishedFile.size, PublishedFile.content_type, PublishedFile.updated_at
                    ).where(
                        PublishedFile.channel_id == channel_id,
                        PublishedFile.subdir == subdir,
                        PublishedFile.path == name,
                    )
                ).first()
                target = Target(row[0], row[1], row[2], row[3].timestamp(), "index") if row else None
            elif kind == "shard":
                row = s.execute(
                    select(ShardBlob.size, ShardBlob.created_at).where(
                        ShardBlob.channel_id == channel_id,
                        ShardBlob.subdir == subdir,
                        ShardBlob.sha256 == name,
                    )
                ).first()
                target = (
                    Target(str(name), row[0], "application/octet-stream", row[1].timestamp(), "shard") if row else None
                )
            else:
                row = s.execute(
                    select(
                        Record.sha256, Record.size, Record.created_at, Record.has_blob, Record.id, Record.source_url
                    ).where(
                        Record.channel_id == channel_id,
                        Record.subdir == subdir,
                        Record.filename == name,
                    )
                ).first()
                target = (
                    Target(
                        row[0] or "",
                        row[1] or 0,
                        "application/octet-stream",
                        row[2].timestamp(),
                        "package",
                        has_blob=row[3],
                        record_id=row[4],
                        source_url=row[5],
                        filename=str(name),
                    )
                    if row
                    else None
                )
        self.store(key, target)
        return target
