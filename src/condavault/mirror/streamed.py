"""Passive mirrors at conda-forge scale: one subdir at a time, streamed (issues 15 and 16).

A passive mirror whose policy judges each file on its own (record filters only: no ``keep_latest``,
pruning, CVE or signature filters) does not need the whole upstream in memory. :func:`sync_subdir`
streams one subdir's ``repodata.json(.zst)`` from a spool file on disk (downloaded while hashing it) and
works through it a batch of :data:`BATCH` records at a time, each batch in one transaction:

* decide every record with the record filters;
* compare with the plan rows (``MirrorItem``) and the channel's records of the same filenames -- one
  query each per batch, never a dict of the whole subdir;
* insert new records metadata-only (bulk, through ``records.import_repodata``), refresh records whose
  upstream metadata changed, replace files whose upstream bytes changed, write only the plan rows that
  changed.

Then the files gone upstream are removed (``on_remove``), and the subdir is indexed once. A batch that
committed is never redone: a subdir sync interrupted with its worker (``kill -9``) and run again finds
those records present with their sha256 and skips them.

The upstream file's ETag and sha256 are kept per subdir (in the run's counts, ``subdirs``): the
next run asks with ``If-None-Match`` and skips a subdir upstream answers 304 for, or whose body hashes
the same, when the mirror's config and the subdir's record count are those of that sync.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, cast

import zstandard
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from condavault.channels import records as rec_svc
from condavault.channels.models import Channel, Record
from condavault.channels.repodata_stream import iter_records
from condavault.db import statistics
from condavault.db.base import table, utcnow
from condavault.indexing.dirty import get_state
from condavault.memory import trim
from condavault.mirror.config import MirrorConfig
from condavault.mirror.filters import FileRecord, FilterContext, RecordFilter, build_chain
from condavault.mirror.models import MirrorItem, MirrorRun
from condavault.mirror.planning import GONE, ITEM_COLUMNS, ItemRows, overrides_of, record_hash

__all__ = ["BATCH", "SubdirSync", "previous_state", "stream_blockers", "streamable"]

log = logging.getLogger(__name__)
BATCH = 5000
STATE_RUNS = 50  # how many recent runs are searched for a subdir's last sync state


def stream_blockers(cfg: MirrorConfig) -> list[str]:
    """What keeps this mirror off the streamed path (empty: it can go one subdir at a time)."""
    f = cfg.filters
    out = [] if cfg.mode == "passive" else ["mode: active"]
    out += [k for k in ("only_signed", "signature_keys", "sigstore_identities") if getattr(f, k)]
    out += [type(x).__name__ for x in build_chain(f) if not isinstance(x, RecordFilter) or x.requires]
    return out


def streamable(cfg: MirrorConfig) -> bool:
    """Whether a run of this mirror goes one subdir at a time, streamed: asked for (``streamed: true``, which
    does not carry upstream signatures or read its removed list) and possible (passive, record filters only)."""
    return cfg.streamed and not stream_blockers(cfg)


# -- per-subdir state (ETag, body hash) ---------------------------------------------------------------
def previous_state(s: Session, mirror_id: int) -> dict[str, dict[str, Any]]:
    """The latest recorded sync state of each subdir (from the mirror's recent runs, newest first)."""
    out: dict[str, dict[str, Any]] = {}
    rows = s.scalars(
        select(MirrorRun.counts)
        .where(MirrorRun.mirror_id == mirror_id, MirrorRun.dry_run.is_(False))
        .order_by(MirrorRun.id.desc())
        .limit(STATE_RUNS)
    )
    for text in rows:
        try:
            subdirs = json.loads(text or "{}").get("subdirs") or {}
        except ValueError:
            continue
        for sd, st in subdirs.items():
            out.setdefault(sd, st)
    return out


def record_count(s: Session, channel_id: int, subdir: str) -> int:
    return int(
        s.scalar(
            select(func.count()).select_from(Record).where(Record.channel_id == channel_id, Record.subdir == subdir)
        )
        or 0
    )


def open_body(path: Path, compressed: bool) -> IO[bytes]:
    fh = open(path, "rb")  # noqa: SIM115 - the caller closes it
    if not compressed:
        return fh
    return zstandard.ZstdDecompressor().stream_reader(fh, closefd=True)  # type: ignore[return-value]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


# -- one subdir ----------------------------------------------------------------------------------------
@dataclass
class SubdirSync:
    """Sync one subdir of a passive mirror from a spooled upstream body (see the module docstring)."""

    ctx: Any  # condavault.context.Context
    mirror_id: int
    run_id: int
    channel_id: int
    cfg: MirrorConfig
    subdir: str
    base_url: str | None
    progress: Callable[[int], None] = lambda _n: None
    cancelled: Callable[[], bool] = lambda: False
    counts: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.batch_size = int(getattr(self.ctx.settings, "mirror_batch_records", BATCH))
        self.chain = build_chain(self.cfg.filters)
        self.fctx = FilterContext()
        for k in ("files", "kept", "dropped", "indexed_passive", "present", "refreshed", "replaced", "removed"):
            self.counts[k] = 0
        self.counts["invalid_upstream_records"] = 0

    def run(self, body: IO[bytes]) -> dict[str, int]:
        seen: set[str] = set()
        batch: dict[str, dict[str, Any]] = {}
        for _section, fn, rec in iter_records(cast(BinaryIO, body)):
            if not isinstance(rec, dict):
                continue
            batch[fn] = rec
            if len(batch) >= self.batch_size:
                self._batch(batch)
                seen.update(batch)
                batch = {}
                self.progress(self.counts["files"])
                if self.cancelled():
                    return self.counts
        if batch:
            self._batch(batch)
            seen.update(batch)
        self.progress(self.counts["files"])
        self._gone(seen)
        del seen
        trim()
        return self.counts

    def _decide(self, fr: FileRecord) -> tuple[bool, str, str, str]:
        for f in self.chain:
            d = f.decide(fr, self.fctx)  # type: ignore[union-attr]
            if d is not None and not d.kept:
                return False, d.filter, d.rule, d.value
        return True, "default", "no filter objected", ""

    def _batch(self, batch: dict[str, dict[str, Any]]) -> None:
        sd, fns = self.subdir, sorted(batch)
        passive_imports: dict[str, dict[str, Any]] = {}
        refresh: dict[tuple[str, str], dict[str, Any]] = {}
        replace: list[tuple[str, str]] = []
        remove: list[tuple[str, str]] = []
        rows = ItemRows(self.mirror_id, self.run_id)
        now = utcnow()
        with self.ctx.db.session() as s:
            chan = {
                fn: (sha, has_blob)
                for fn, sha, has_blob in s.execute(
                    select(Record.filename, Record.sha256, Record.has_blob).where(
                        Record.channel_id == self.channel_id, Record.subdir == sd, Record.filename.in_(fns)
                    )
                )
            }
            old = {
                r.filename: r
                for r in s.execute(
                    select(*ITEM_COLUMNS).where(
                        MirrorItem.mirror_id == self.mirror_id, MirrorItem.subdir == sd, MirrorItem.filename.in_(fns)
                    )
                )
            }
        for fn in fns:
            rec = batch[fn]
            sha = rec.get("sha256")
            rh = record_hash(rec)
            kept, filt, rule, value = self._decide(FileRecord(sd, fn, rec))
            have, prev = chan.get(fn), old.get(fn)
            self.counts["files"] += 1
            if kept:
                self.counts["kept"] += 1
                if have is not None and (have[0] == sha if sha else prev is not None):
                    state = "done" if have[1] else "passive"
                    self.counts["present"] += 1
                    if prev is not None and prev.record_hash not in (None, rh):
                        refresh[(sd, fn)] = overrides_of(rec)
                else:
                    state = "passive"
                    if have is not None and prev is not None:  # ours, but upstream's bytes changed
                        replace.append((sd, fn))
                    if have is None or prev is not None:
                        passive_imports[fn] = rec
            else:
                self.counts["dropped"] += 1
                state = "dropped"
                if have is not None and prev is not None and prev.kept and self.cfg.on_remove == "remove":
                    remove.append((sd, fn))
            value = value or f"{rec.get('name')}-{rec.get('version')}-{rec.get('build')}"
            decision = {"kept": kept, "flag": False, "filter": filt, "rule": rule, "value": value}
            rows.stage((sd, fn), rec, prev, decision=decision, state=state, rh=rh, now=now)
        inserts, updates = rows.inserts, rows.updates
        if not (passive_imports or refresh or replace or remove or inserts or updates):
            return

        def write(s: Session) -> dict[str, int]:
            got: dict[str, int] = {}
            channel = s.get(Channel, self.channel_id)
            assert channel is not None
            if replace or remove:
                got["removed"] = len(rec_svc.remove_by_keys(s, channel, replace + remove)) - len(replace)
            if passive_imports:
                entries = [
                    ("packages.conda" if fn.endswith(".conda") else "packages", fn, r)
                    for fn, r in passive_imports.items()
                ]
                got.update(
                    rec_svc.import_repodata(
                        s, channel, sd, lambda: iter(entries), base_url=self.base_url, skip_invalid=True
                    )
                )
            if refresh:
                got["refreshed"] = rec_svc.refresh_records(s, self.channel_id, refresh)
            if inserts:
                s.execute(table(MirrorItem).insert(), inserts)
                statistics.note_growth(s, "mirror_items", len(inserts))
            if updates:
                s.execute(update(MirrorItem), updates)
            return got

        got = self.ctx.db.run_write(write)
        self.counts["indexed_passive"] += got.get("created", 0)
        self.counts["invalid_upstream_records"] += got.get("invalid", 0)
        self.counts["refreshed"] += got.get("refreshed", 0)
        self.counts["removed"] += max(0, got.get("removed", 0))
        self.counts["replaced"] += len(replace)

    def _gone(self, seen: set[str]) -> None:
        """Plan rows of files no longer upstream: their records removed (``on_remove: remove``) or kept."""
        sd = self.subdir
        with self.ctx.db.session() as s:
            gone = [
                (item_id, fn, kept, filt)
                for item_id, fn, kept, filt in s.execute(
                    select(MirrorItem.id, MirrorItem.filename, MirrorItem.kept, MirrorItem.filter).where(
                        MirrorItem.mirror_id == self.mirror_id, MirrorItem.subdir == sd
                    )
                )
                if fn not in seen
            ]
        for i in range(0, len(gone), BATCH):
            chunk = gone[i : i + BATCH]

            def write(s: Session, chunk: list[tuple[int, str, bool, str]] = chunk) -> int:
                channel = s.get(Channel, self.channel_id)
                assert channel is not None
                fns = [fn for _, fn, _, _ in chunk]
                in_chan = set(
                    s.scalars(
                        select(Record.filename).where(
                            Record.channel_id == self.channel_id, Record.subdir == sd, Record.filename.in_(fns)
                        )
                    )
                )
                removed = 0
                if self.cfg.on_remove == "remove" and in_chan:
                    removed = len(rec_svc.remove_by_keys(s, channel, [(sd, fn) for fn in sorted(in_chan)]))
                    in_chan = set()
                drop = [item_id for item_id, fn, _, _ in chunk if fn not in in_chan]
                for j in range(0, len(drop), 1000):
                    s.execute(delete(MirrorItem).where(MirrorItem.id.in_(drop[j : j + 1000])))
                keep = [item_id for item_id, fn, kept, filt in chunk if fn in in_chan and (kept or filt != GONE)]
                if keep:
                    s.execute(
                        update(MirrorItem)
                        .where(MirrorItem.id.in_(keep))
                        .values(
                            kept=False,
                            flag=False,
                            filter=GONE,
                            rule="not in upstream repodata",
                            state="dropped",
                            run_id=self.run_id,
                            error=None,
                        )
                    )
                return removed

            self.counts["removed"] += self.ctx.db.run_write(write)
        if gone:
            self.counts["kept_removed_upstream" if self.cfg.on_remove == "keep" else "gone_upstream"] = len(gone)

    # -- index ---------------------------------------------------------------------------------------
    def publish(self) -> float:
        """Index the subdir once (every mirrored subdir gets a repodata.json, even an empty one)."""
        t0 = time.perf_counter()
        with self.ctx.db.session() as s:
            st = get_state(s, self.channel_id, self.subdir, create=False)
        if st is None:
            self.ctx.db.run_write(lambda s: get_state(s, self.channel_id, self.subdir))
            with self.ctx.db.session() as s:
                st = get_state(s, self.channel_id, self.subdir, create=False)
        assert st is not None
        seq = st.change_seq
        self.ctx.indexer.index_subdir(self.channel_id, self.subdir)
        if not self.ctx.indexer.wait_for(self.channel_id, self.subdir, seq, timeout=1800):
            log.warning("index not published in time", extra={"channel_id": self.channel_id, "subdir": self.subdir})
        trim()
        return time.perf_counter() - t0
