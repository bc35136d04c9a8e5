"""The indexer: turns dirty subdirs into published index files (design.md §1.3).

One indexer at a time per subdir, across threads (a lock) and processes (a lease row). A run reads the
change sequence, rebuilds only the dirty names' segments and shards, writes the new blobs, then
publishes every pointer in one transaction: readers see the old index or the new one, never a mix.
Runs coalesce: however many uploads land while a run is busy, one more run picks them all up.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from condavault.config import Settings
from condavault.db.base import affected, table, utcnow
from condavault.db.session import Database
from condavault.errors import LeaseLost
from condavault.indexing import buckets, builder, current, extras, garbage, reading
from condavault.indexing.dirty import _insert, clear_dirty, dirty_names
from condavault.indexing.models import ShardBlob, ShardHead, SubdirState
from condavault.jobs.holders import holder_is_dead, new_holder
from condavault.memory import trim
from condavault.storage.interfaces import BlobStore

log = logging.getLogger(__name__)
LEASE_SECONDS = 120.0
JSON = "application/json"
ZST = "application/zstd"
MSGPACK_ZST = "application/octet-stream"

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """Threads for an index run's GIL-free work (zstd, sha256, blob writes and fsyncs)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="condavault-index-io")
        return _POOL


@dataclass(frozen=True)
class RunStats:
    """What the last published run of a subdir did (for metrics, logs and tests)."""

    full: bool  # every record was read (first run, reindex, patches changed, or another process indexed)
    rows_read: int
    names_changed: int
    records: int


@dataclass
class _State:
    """What this process knows of a subdir it published: the index pieces on disk (a manifest of buckets
    in memory, see :mod:`condavault.indexing.buckets`) and each name's shard, as of change ``seq``."""

    seq: int
    store: buckets.Store
    buckets: list[buckets.Bucket]
    heads: dict[str, str]
    closure: current.Closure | None  # current_repodata's state (None: not published)


_ROOTS: set[Path] = set()  # cache folders of this process's indexers


def _cache_root(data_dir: Path) -> Path:
    """This indexer's cache folder; folders of processes that are gone are removed."""
    base = data_dir / "index-cache"
    root = base / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
    _ROOTS.add(root)
    if base.is_dir():
        for old in base.iterdir():
            pid = old.name.split("-", 1)[0]
            if old in _ROOTS or not pid.isdigit():
                continue
            if int(pid) == os.getpid() or not _alive(int(pid)):  # same pid: an earlier run (a container)
                shutil.rmtree(old, ignore_errors=True)
    return root


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Indexer:
    def __init__(self, settings: Settings, db: Database, blobs: BlobStore) -> None:
        self.settings = settings
        self.db = db
        self.blobs = blobs
        self.holder = new_holder()
        self._state: dict[tuple[int, str], _State] = {}
        self._root = _cache_root(settings.data_dir)
        self._locks: dict[tuple[int, str], threading.Lock] = defaultdict(threading.Lock)
        self._wanted: set[tuple[int, str]] = set()
        self._published = threading.Condition()
        self.listeners: list[extras.Listener] = []  # told after every publish
        self.after_publish: list[Callable[[int, str], None]] = []
        self.publishes: dict[tuple[int, str], int] = defaultdict(int)  # runs that published, per subdir
        self.last_run: dict[tuple[int, str], RunStats] = {}
        self.channeldata = extras.Tracker()  # the names each publish changed, for channeldata.json
        self.last_extras: dict[int, extras.ExtrasRun] = {}  # the last slow-lane run that published

    # -- public ----------------------------------------------------------------------------------
    def index_subdir(self, channel_id: int, subdir: str) -> bool:
        """Bring one subdir up to date. Returns True when something was published.

        A request that finds another thread of ours indexing the subdir leaves a "wanted" mark and
        returns; the busy thread sees the mark after its run and goes round once more, so no change is
        left behind and a burst of requests costs a few runs, not one each.
        """
        key = (channel_id, subdir)
        published = False
        lock = self._locks[key]
        self._wanted.add(key)
        while key in self._wanted:
            if not lock.acquire(blocking=False):
                return published  # the holder will see our mark
            try:
                while key in self._wanted:
                    self._wanted.discard(key)
                    if not self._acquire_lease(channel_id, subdir):
                        return published  # another process holds it; the sweep retries later
                    try:
                        while self._run_once(channel_id, subdir):
                            published = True
                    except LeaseLost:
                        log.warning("index lease lost: the other process publishes", extra={"subdir": subdir})
                        return published
                    finally:
                        self._release_lease(channel_id, subdir)
                    if self._pending(channel_id, subdir):
                        self._wanted.add(key)
            finally:
                lock.release()
        if published:
            for fn in self.after_publish:
                try:
                    fn(channel_id, subdir)
                except Exception:  # pragma: no cover - listener bugs must not break indexing
                    log.exception("after_publish listener failed")
        return published

    def pending_subdirs(self) -> list[tuple[int, str]]:
        """Dirty subdirs nobody alive is indexing."""
        now = time.time()
        with self.db.session() as s:
            rows = s.execute(
                select(
                    SubdirState.channel_id, SubdirState.subdir, SubdirState.lease_holder, SubdirState.lease_until
                ).where(SubdirState.change_seq > SubdirState.indexed_seq)
            ).all()
        return [(r[0], r[1]) for r in rows if r[3] < now or r[2] in (None, self.holder) or holder_is_dead(r[2])]

    def wait_for(self, channel_id: int, subdir: str, seq: int, timeout: float = 60.0) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self.db.session() as s:
                done = s.scalar(
                    select(SubdirState.indexed_seq).where(
                        SubdirState.channel_id == channel_id, SubdirState.subdir == subdir
                    )
                )
            if done is not None and done >= seq:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._published:
                self._published.wait(min(remaining, 0.2))

    def forget(self, channel_id: int) -> None:
        self.channeldata.forget(channel_id)
        for key in [k for k in self._state if k[0] == channel_id]:
            with self._locks[key]:  # not under a run of the subdir
                st = self._state.pop(key, None)
            if st is not None:
                st.store.destroy()

    # -- lease -----------------------------------------------------------------------------------
    def _acquire_lease(self, channel_id: int, subdir: str) -> bool:
        now = time.time()

        def take(s: Session) -> bool:
            where = [SubdirState.channel_id == channel_id, SubdirState.subdir == subdir]
            res = s.execute(
                update(SubdirState)
                .where(*where, or_(SubdirState.lease_until < now, SubdirState.lease_holder == self.holder))
                .values(lease_holder=self.holder, lease_until=now + LEASE_SECONDS)
            )
            if affected(res):
                return True
            holder = s.scalar(select(SubdirState.lease_holder).where(*where))
            if holder is None or not holder_is_dead(holder):
                return False
            log.warning("taking over the index lease of a dead process", extra={"holder": holder})
            res = s.execute(  # only if it is still that dead holder's
                update(SubdirState)
                .where(*where, SubdirState.lease_holder == holder)
                .values(lease_holder=self.holder, lease_until=now + LEASE_SECONDS)
            )
            return bool(affected(res))

        return self.db.run_write(take)

    def _release_lease(self, channel_id: int, subdir: str) -> None:
        def free(s: Session) -> None:
            s.execute(
                update(SubdirState)
                .where(
                    SubdirState.channel_id == channel_id,
                    SubdirState.subdir == subdir,
                    SubdirState.lease_holder == self.holder,
                )
                .values(lease_holder=None, lease_until=0.0)
            )

        self.db.run_write(free)

    def _pending(self, channel_id: int, subdir: str) -> bool:
        with self.db.session() as s:
            row = s.execute(
                select(SubdirState.change_seq, SubdirState.indexed_seq).where(
                    SubdirState.channel_id == channel_id, SubdirState.subdir == subdir
                )
            ).first()
        return row is not None and row[0] > row[1]

    # -- one run ---------------------------------------------------------------------------------
    @staticmethod
    def _segment(closure: current.Closure | None, n: str, rows: list[builder.RecordRow]) -> builder.Segment:
        seg = builder.build_segment(rows)
        if closure is not None:
            seg.cur_tar, seg.cur_conda = closure.entries(n, rows)
        return seg

    def _run_once(self, channel_id: int, subdir: str) -> bool:
        key = (channel_id, subdir)
        settings = self.settings
        with self.db.session() as s:
            state = s.scalar(
                select(SubdirState).where(SubdirState.channel_id == channel_id, SubdirState.subdir == subdir)
            )
            if state is None or state.indexed_seq >= state.change_seq:
                return False
            seq, indexed = state.change_seq, state.indexed_seq
            full = state.full_seq > indexed
            cached = self._state.get(key)
            dirty = dirty_names(s, channel_id, subdir)
            rebuilt = full or cached is None or cached.seq != indexed
            heads: dict[str, str] = {}
            new_shards: dict[str, tuple[str, bytes]] = {}
            rows_read = 0

            def shard(n: str, rows: list[builder.RecordRow]) -> None:
                data = builder.encode_shard(rows, settings.shard_zstd_level)
                digest = builder.sha256(data)
                heads[n] = digest
                # a full rebuild (reindex, check --repair) also writes back unchanged shards whose blob is gone
                if digest != old_heads.get(n) or (full and not self.blobs.exists(digest)):
                    new_shards[n] = (digest, data)

            if rebuilt:
                old_heads = {
                    n: h
                    for n, h in s.execute(
                        select(ShardHead.name, ShardHead.sha256).where(
                            ShardHead.channel_id == channel_id, ShardHead.subdir == subdir
                        )
                    )
                }
                heads.update(old_heads)
                store = buckets.Store(self._folder(channel_id, subdir), settings.zstd_level)
                present: set[str] = set()
                closure = current.Closure() if settings.current_repodata else None

                # Streamed by name into buckets on disk: one name's rows and one bucket are alive at a time.
                def segments() -> Iterator[tuple[str, builder.Segment]]:
                    nonlocal rows_read
                    for n, rows in reading.each_name(s, channel_id, subdir):
                        rows_read += len(rows)
                        present.add(n)
                        if full or n in dirty or n not in old_heads:
                            shard(n, rows)
                        if closure is not None:  # the name's base now; back-filled records once all are seen
                            closure.set_name(n, rows)
                        yield n, self._segment(closure, n, rows)

                try:
                    new_buckets = store.build(segments())
                    if closure is not None:
                        # the names that back-fill older records into current_repodata, a batch at a time
                        fetch = partial(reading.rows_of, s, channel_id, subdir)
                        backfilled = sorted(closure.resolve({}, fetch))
                        for i in range(0, len(backfilled), 1000):
                            part = reading.rows_of(s, channel_id, subdir, set(backfilled[i : i + 1000]))
                            more: dict[str, builder.Segment | None] = {
                                n: self._segment(closure, n, rows) for n, rows in part.items()
                            }
                            del part
                            new_buckets, dropped = store.update(new_buckets, more)
                            store.drop(dropped)
                except BaseException:
                    store.destroy()
                    raise
                replaced: list[buckets.Bucket] = []
                changed = present | set(old_heads) if full else set(dirty) | (present ^ set(old_heads))
                gone = {n for n in changed if n not in present}
            else:
                assert cached is not None  # not rebuilt: the cache is current
                # from here the cached closure changes in place: until this run publishes, the state is not
                # current (a run that fails leaves it so, and the next run rebuilds from the records)
                cached.seq = -1
                store = cached.store
                closure = cached.closure
                old_heads = cached.heads
                heads.update(old_heads)
                changed = set(dirty)
                rows_by_name = reading.rows_of(s, channel_id, subdir, changed)
                for n in changed:
                    rows_read += len(rows_by_name.get(n, ()))
                    if closure is not None:
                        closure.set_name(n, rows_by_name.get(n, []))
                rewrite = set(changed)
                if closure is not None:  # names whose back-filled records changed: their entries anew too
                    others = closure.resolve(rows_by_name, partial(reading.rows_of, s, channel_id, subdir))
                    others -= changed
                    rows_by_name.update(reading.rows_of(s, channel_id, subdir, others - set(rows_by_name)))
                    rewrite |= others
                changes: dict[str, builder.Segment | None] = {}
                for n in rewrite:
                    rows = rows_by_name.get(n, [])
                    if rows:
                        changes[n] = self._segment(closure, n, rows)
                        if n in changed:
                            shard(n, rows)
                    else:
                        changes[n] = None
                del rows_by_name
                new_buckets, replaced = store.update(cached.buckets, changes)
                gone = {n for n, seg in changes.items() if seg is None}
            for n in gone:  # names without records any more: no shard
                heads.pop(n, None)
            # the only names whose head this run may have changed or dropped (the others keep their old one):
            # the publish looks at these, not at every name of the subdir
            touched = sorted(set(changed) | gone)

        try:
            digests, payload = self._compose(subdir, new_buckets, heads, new_shards, closure is not None)
        except BaseException:
            self._discard(store, new_buckets, cached, rebuilt)
            raise

        def publish(s: Session) -> None:
            # The fence: publish only while this process still holds the subdir's lease. The update takes the
            # row's lock until the commit (PostgreSQL), so no other process can take the lease in between;
            # a run whose lease expired and was taken over publishes nothing (the new holder does).
            fenced = s.execute(
                update(SubdirState)
                .where(
                    SubdirState.channel_id == channel_id,
                    SubdirState.subdir == subdir,
                    SubdirState.lease_holder == self.holder,
                )
                .values(indexed_seq=seq, lease_until=time.time() + LEASE_SECONDS)
            )
            if not affected(fenced):
                raise LeaseLost(f"index lease of {subdir} lost to another process", code="index_lease_lost")
            now = utcnow()
            ins = _insert(s)
            garbage.point_paths(s, channel_id, [(subdir, p, *d) for p, d in digests.items()], revision=seq)
            gone = [n for n in touched if n in old_heads and n not in heads]
            for i in range(0, len(gone), 500):
                s.execute(
                    table(ShardHead)
                    .delete()
                    .where(
                        ShardHead.channel_id == channel_id,
                        ShardHead.subdir == subdir,
                        ShardHead.name.in_(gone[i : i + 500]),
                    )
                )
            # every new shard in two statements (executemany: SQLAlchemy sends multi-row upserts), not two
            # statements a shard: a new subdir of 1,000 names was 2,000 round trips in the publish
            if new_shards:
                head = ins(ShardHead)
                s.execute(
                    head.on_conflict_do_update(
                        index_elements=["channel_id", "subdir", "name"], set_={"sha256": head.excluded.sha256}
                    ),
                    [
                        {"channel_id": channel_id, "subdir": subdir, "name": n, "sha256": digest}
                        for n, (digest, _) in sorted(new_shards.items())
                    ],
                )
                blobs_rows: dict[str, dict[str, Any]] = {}
                for n, (digest, data) in sorted(new_shards.items()):
                    blobs_rows.setdefault(
                        digest,
                        {
                            "channel_id": channel_id,
                            "subdir": subdir,
                            "sha256": digest,
                            "name": n,
                            "size": len(data),
                            "created_at": now,
                        },
                    )  # one row per digest: a multi-row upsert may not touch a row twice (PostgreSQL)
                s.execute(
                    ins(ShardBlob).on_conflict_do_update(
                        index_elements=["channel_id", "subdir", "sha256"], set_={"superseded_at": None}
                    ),
                    list(blobs_rows.values()),
                )
            superseded = [old_heads[n] for n in touched if n in old_heads and heads.get(n) != old_heads[n]]
            for i in range(0, len(superseded), 500):
                s.execute(
                    update(ShardBlob)
                    .where(
                        ShardBlob.channel_id == channel_id,
                        ShardBlob.subdir == subdir,
                        ShardBlob.sha256.in_(superseded[i : i + 500]),
                    )
                    .values(superseded_at=now)
                )
            clear_dirty(s, channel_id, subdir, seq)

        try:
            with self.blobs.writing():  # no collection between writing the blobs and pointing at them
                self.blobs.put_many(payload)
                del payload
                self.db.run_write(publish)
        except BaseException:
            self._discard(store, new_buckets, cached, rebuilt)
            raise
        if rebuilt:
            if cached is not None:
                cached.store.destroy()
            self._state[key] = _State(seq, store, new_buckets, heads, closure)
        else:
            assert cached is not None
            store.drop(replaced)
            cached.seq, cached.buckets, cached.heads = seq, new_buckets, heads
        records = sum(b.records for b in new_buckets)
        if rebuilt:
            trim()  # a full rebuild read every record: give the transient memory back
        self.publishes[key] += 1
        self.last_run[key] = RunStats(
            full=rebuilt,
            rows_read=rows_read,
            names_changed=len(changed),
            records=records,
        )
        with self._published:
            self._published.notify_all()
        # every name whose records changed since the last publish, however the run read them: the dirty names
        # (and names that appeared or went); a full run (reindex, patches, a new subdir): every name the subdir
        # has or had. Search documents and channeldata.json entries are per name: those names are enough.
        names = frozenset(changed)
        self.channeldata.note(channel_id, subdir, indexed, seq, names)
        for fn in self.listeners:
            fn(channel_id, subdir, names)
        log.info(
            "published index",
            extra={
                "channel_id": channel_id,
                "subdir": subdir,
                "seq": seq,
                "names_changed": len(changed),
                "records": records,
            },
        )
        return True

    def _folder(self, channel_id: int, subdir: str) -> Path:
        return self._root / f"{channel_id}-{subdir}-{uuid.uuid4().hex[:8]}"

    def _compose(
        self,
        subdir: str,
        pieces: list[buckets.Bucket],
        heads: dict[str, str],
        new_shards: dict[str, tuple[str, bytes]],
        with_current: bool,
    ) -> tuple[dict[str, tuple[str, int, str, str | None]], list[tuple[Path | bytes, str]]]:
        """The subdir's files, written as streams of the buckets' pieces into temp files of the blob store
        (run_exports and current_repodata on the pool meanwhile): their digests (with the ``.zst`` blob a
        plain JSON file is served from: only the ``.zst`` files are written) and what ``put_many`` stores."""
        level = self.settings.zstd_level
        pair = partial(buckets.write_pair, temp_file=self.blobs.temp_file, level=level, keep_json=False)
        re_job = _pool().submit(pair, buckets.run_exports_pieces(subdir, pieces))
        cur_job = _pool().submit(pair, buckets.current_pieces(subdir, pieces)) if with_current else None
        written: list[buckets.Written] = []
        try:
            rd, rd_zst = pair(buckets.repodata_pieces(subdir, pieces))
            written += (rd, rd_zst)
        finally:
            re, re_zst = re_job.result()
            written += (re, re_zst)
            cur = cur_job.result() if cur_job is not None else None
            if cur is not None:
                written += cur
        shard_index = builder.encode_shard_index(subdir, heads, self.settings.shard_zstd_level)
        index_sha = builder.sha256(shard_index)
        digests: dict[str, tuple[str, int, str, str | None]] = {
            "repodata.json": (rd.sha256, rd.size, JSON, rd_zst.sha256),
            "repodata.json.zst": (rd_zst.sha256, rd_zst.size, ZST, None),
            "repodata_shards.msgpack.zst": (index_sha, len(shard_index), MSGPACK_ZST, None),
            "run_exports.json": (re.sha256, re.size, JSON, re_zst.sha256),
            "run_exports.json.zst": (re_zst.sha256, re_zst.size, ZST, None),
        }
        if cur is not None:
            digests["current_repodata.json"] = (cur[0].sha256, cur[0].size, JSON, cur[1].sha256)
            digests["current_repodata.json.zst"] = (cur[1].sha256, cur[1].size, ZST, None)
        payload: list[tuple[Path | bytes, str]] = [
            *((w.path, w.sha256) for w in written if w.path is not None),
            (shard_index, index_sha),
            *((data, digest) for digest, data in new_shards.values()),
        ]
        return digests, payload

    @staticmethod
    def _discard(store: buckets.Store, new: list[buckets.Bucket], cached: _State | None, rebuilt: bool) -> None:
        """A run that did not publish: drop the buckets it wrote (the cached ones stay current)."""
        if rebuilt:
            store.destroy()
        elif cached is not None:
            keep = {b.path for b in cached.buckets}
            store.drop(b for b in new if b.path not in keep)

    def publish_extras(self, channel_id: int, *, full: bool = False) -> None:
        """The slow lane: the channel's ``channeldata.json`` (``current_repodata.json`` is published with each
        subdir's ``repodata.json``), name by name where it can be (``full``: from every record)."""
        run = extras.publish_extras(self.db, self.blobs, channel_id, self.listeners, self.channeldata, full=full)
        if run.published:
            self.last_extras[channel_id] = run

    def expire_old_shards(self) -> int:
        """Forget shards superseded longer than the retention; their blobs are noted as superseded (at
        their old time), so the next ``index.collect`` deletes them unless pointed at again."""
        cutoff = utcnow() - timedelta(days=self.settings.shard_retention_days)

        def drop(s: Session) -> int:
            old = ShardBlob.superseded_at.is_not(None), ShardBlob.superseded_at < cutoff
            shas = list(s.scalars(select(ShardBlob.sha256).where(*old).distinct()))
            res = s.execute(table(ShardBlob).delete().where(*old))
            garbage.record(s, shas, at=cutoff)
            return affected(res)

        return self.db.run_write(drop)


def decode_json(data: bytes) -> object:
    return json.loads(data)
