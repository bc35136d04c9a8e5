"""The slow lane (design.md §1.3): the channel's ``channeldata.json``, derived from every live record of the
channel (see :mod:`condavault.indexing.derived`). ``current_repodata.json`` is published with each subdir's
``repodata.json`` by the indexer, kept up to date name by name (:mod:`condavault.indexing.current`).

``channeldata.json`` has one entry per package name, so it is kept up to date name by name too: each index
run this process publishes hands the :class:`Tracker` the names it changed, and the next slow-lane run
rebuilds only those names' entries and splices them into the file this process published last. The file
is rebuilt from every record instead when that chain may have a gap: the first run of a process, another
process published an index run of the channel or its ``channeldata.json``, the file is gone, or a
``check --repair``. Both ways give the same bytes (tests compare them).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record
from condavault.db.session import Database
from condavault.indexing import builder, derived, garbage
from condavault.indexing.models import PublishedFile, SubdirState
from condavault.storage.interfaces import BlobStore

log = logging.getLogger(__name__)
JSON = "application/json"
ZST = "application/zstd"
BATCH = 20_000  # records of whole names per channeldata batch
NAMES_PER_QUERY = 500
PATH = "channeldata.json"
# told after a publish: (channel id, subdir -- None for the channel's own files --, the names whose records
# changed since the subdir's last publish)
Listener = Callable[[int, str | None, frozenset[str]], None]


@dataclass
class _Chain:
    """What this process knows of a channel's ``channeldata.json``: the file it published (``sha256``,
    None while the first one is built), each subdir's ``indexed_seq`` that file plus ``pending`` account
    for, and the names whose entries may have changed since."""

    seqs: dict[str, int]
    sha256: str | None = None
    pending: set[str] = field(default_factory=set)
    subdirs: set[str] = field(default_factory=set)  # the file's "subdirs"


@dataclass(frozen=True)
class ExtrasRun:
    """What the last slow-lane run of a channel did (logs and tests)."""

    full: bool
    names: int  # entries rebuilt (-1: every one)
    reason: str  # why a full run ("" when incremental)
    published: bool = True  # False: nothing had changed since the last run


class Tracker:
    """The chains of the channels this process publishes ``channeldata.json`` for (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._chains: dict[int, _Chain] = {}
        # one slow-lane run of a channel at a time: two would splice into the same file, the later one
        # publishing without the earlier one's names
        self.runs: dict[int, threading.Lock] = defaultdict(threading.Lock)

    def note(self, channel_id: int, subdir: str, before: int, after: int, names: Iterable[str]) -> None:
        """An index run of ours published ``subdir`` from ``indexed_seq`` ``before`` to ``after``, changing
        the records of ``names``. A run that does not continue the chain breaks it (full rebuild next)."""
        with self._lock:
            chain = self._chains.get(channel_id)
            if chain is None:
                return
            if chain.seqs.get(subdir, 0) not in (before, after):
                del self._chains[channel_id]
                return
            chain.seqs[subdir] = after
            chain.pending.update(names)

    def forget(self, channel_id: int) -> None:
        with self._lock:
            self._chains.pop(channel_id, None)

    def _take(self, channel_id: int) -> tuple[_Chain | None, set[str]]:
        """The channel's chain and its pending names (handed over: later runs collect anew)."""
        with self._lock:
            chain = self._chains.get(channel_id)
            if chain is None:
                return None, set()
            names, chain.pending = chain.pending, set()
            return chain, names

    def _why_full(self, chain: _Chain | None, states: dict[str, int], pointed: str | None) -> str:
        """Why the chain cannot be continued ("" when it can): every index run up to ``states`` must have been
        this process's and noted, and the published file must be the chain's."""
        with self._lock:
            if chain is None or chain.sha256 is None:
                return "no chain"
            if pointed != chain.sha256:
                return "published elsewhere"
            if any(chain.seqs.get(sd, 0) != seq for sd, seq in states.items()):
                return "indexed elsewhere"
            return ""

    def _restore(self, chain: _Chain, names: set[str]) -> None:
        """A run that failed: its names stay pending (if the chain still stands)."""
        with self._lock:
            chain.pending |= names

    def _start(self, channel_id: int, seqs: dict[str, int]) -> _Chain:
        with self._lock:
            chain = self._chains[channel_id] = _Chain(seqs=dict(seqs))
            return chain

    def _published(self, channel_id: int, chain: _Chain, sha256: str, subdirs: set[str]) -> None:
        with self._lock:
            if self._chains.get(channel_id) is chain:
                chain.sha256, chain.subdirs = sha256, subdirs

    def _drop(self, channel_id: int, chain: _Chain) -> None:
        with self._lock:
            if self._chains.get(channel_id) is chain:
                del self._chains[channel_id]


def publish_extras(
    db: Database, blobs: BlobStore, channel_id: int, listeners: list[Listener], tracker: Tracker, *, full: bool = False
) -> ExtrasRun:
    """The slow lane: the channel's ``channeldata.json``, name by name when ``tracker`` allows it (see the
    module's docstring), else from every record (light columns streamed by name; full records only for the
    newest files)."""
    with tracker.runs[channel_id]:
        return _publish(db, blobs, channel_id, listeners, tracker, full)


def _publish(
    db: Database,
    blobs: BlobStore,
    channel_id: int,
    listeners: list[Listener],
    tracker: Tracker,
    full: bool,
) -> ExtrasRun:
    started = time.monotonic()
    # the pending names first, then the subdirs' states: a run of ours publishing in between advances the
    # chain to what the states say, its names staying pending for the next run
    chain, names = (None, set()) if full else tracker._take(channel_id)
    with db.session() as s:
        states: dict[str, int] = {
            sd: seq
            for sd, seq in s.execute(
                select(SubdirState.subdir, SubdirState.indexed_seq).where(SubdirState.channel_id == channel_id)
            )
        }
        pointed = s.scalar(
            select(PublishedFile.sha256).where(
                PublishedFile.channel_id == channel_id, PublishedFile.subdir == "", PublishedFile.path == PATH
            )
        )
    subdirs = _subdirs(states)
    reason = tracker._why_full(chain, states, pointed) if not full else "asked"
    data: Path | bytes | None = None  # the new file: written to a temp file (incremental), or its bytes
    size, digest = 0, ""
    if chain is not None and not reason and not names and subdirs == chain.subdirs:
        return ExtrasRun(full=False, names=0, reason="", published=False)  # what is published is current
    if chain is not None and not reason:
        try:
            data, digest, size = _incremental(db, blobs, channel_id, chain, names, subdirs)
        except FileNotFoundError:
            reason = "file gone"
        except ValueError:  # not a file of this layout (cannot happen for our own file; rebuilt if it does)
            reason = "file unreadable"
        except BaseException:
            tracker._restore(chain, names)
            raise
    if data is None:
        # states were read before the records are: a run publishing meanwhile is noted, or breaks the chain
        chain = tracker._start(channel_id, states)
        try:
            data = _full(db, channel_id, subdirs)
        except BaseException:
            tracker._drop(channel_id, chain)
            raise
        digest, size = builder.sha256(data), len(data)
    assert chain is not None

    def publish(s: Session) -> None:
        if s.get(Channel, channel_id) is not None:  # unless deleted meanwhile
            garbage.point_paths(s, channel_id, [("", PATH, digest, size, JSON)], revision=None)

    try:
        with blobs.writing():  # no collection between writing the blobs and pointing at them
            blobs.put_many([(data, digest)])  # a temp file is moved into the store (or removed on error)
            db.run_write(publish)
    except BaseException:
        tracker._drop(channel_id, chain)
        raise
    tracker._published(channel_id, chain, digest, subdirs)
    run = ExtrasRun(full=bool(reason), names=len(names) if not reason else -1, reason=reason)
    log.info(
        "published channeldata.json (%s, %.2f s)",
        f"in full: {reason}" if reason else f"{len(names)} names",
        time.monotonic() - started,
        extra={"channel_id": channel_id, "full": run.full, "reason": reason, "names": len(names)},
    )
    for fn in listeners:
        fn(channel_id, None, frozenset())  # no record changed
    return run


def _subdirs(states: dict[str, int]) -> set[str]:
    """The file's "subdirs": every subdir with index state (every write of records creates it), and noarch."""
    return {*states, "noarch"}


class _Reader:
    """Light rows of the channel's live records, and full records of the newest files."""

    def __init__(self, db: Database, channel_id: int) -> None:
        self.db = db
        self.live = (Record.channel_id == channel_id, Record.removed.is_(False))
        self.parsed: dict[str, Any] = {}
        self.columns = (
            Record.subdir,
            Record.filename,
            Record.name,
            Record.version,
            Record.timestamp,
            Record.run_exports,
            Record.paths_summary,
        )

    def small_json(self, text: str | None) -> Any:
        if not text:
            return None
        if text not in self.parsed:
            self.parsed[text] = json.loads(text)
        return self.parsed[text]

    def row(self, r: Any) -> derived.NameRow:
        return derived.NameRow(r[0], r[1], r[2], r[3], r[4], self.small_json(r[5]), self.small_json(r[6]))

    def about(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]]:
        by_subdir: dict[str, list[str]] = defaultdict(list)
        for sd, fn in keys:
            by_subdir[sd].append(fn)
        out: dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]] = {}
        with self.db.session() as s:
            for sd, fns in by_subdir.items():
                for i in range(0, len(fns), NAMES_PER_QUERY):
                    q = select(Record.filename, Record.about, Record.fragment).where(
                        *self.live, Record.subdir == sd, Record.filename.in_(fns[i : i + NAMES_PER_QUERY])
                    )
                    for fn, ab, frag in s.execute(q):
                        out[(sd, fn)] = (json.loads(ab) if ab else {}, json.loads(frag))
        return out

    def entries(self, rows: list[derived.NameRow], subdirs: set[str]) -> dict[str, bytes]:
        """Each name's entry of ``rows`` (all rows of those names), encoded."""
        doc = derived.channeldata(rows, subdirs, self.about)["packages"]
        self.parsed.clear()
        return {name: derived.encode_channeldata_entry(entry) for name, entry in doc.items()}


def _full(db: Database, channel_id: int, subdirs: set[str]) -> bytes:
    """``channeldata.json`` from every live record: streamed by name, a batch of names at a time; each
    entry kept encoded (the bytes it has in the file), not as a dict: a fraction of the memory."""
    reader = _Reader(db, channel_id)
    packages: dict[str, bytes] = {}
    batch: list[derived.NameRow] = []
    with db.session() as s:
        q = select(*reader.columns).where(*reader.live).order_by(Record.name).execution_options(yield_per=5000)
        for _name, group in itertools.groupby(s.execute(q), key=lambda r: r[2]):
            batch.extend(reader.row(r) for r in group)
            if len(batch) >= BATCH:
                packages.update(reader.entries(batch, subdirs))
                batch.clear()
    packages.update(reader.entries(batch, subdirs))
    return derived.compose_channeldata(packages, subdirs)


def _incremental(
    db: Database, blobs: BlobStore, channel_id: int, chain: _Chain, names: set[str], subdirs: set[str]
) -> tuple[Path, str, int]:
    """The file this process published last with the entries of ``names`` rebuilt from their records
    (a name without live records any more loses its entry), written to a temp file of the blob store as a
    stream of the old file's unchanged entries and the new ones: the temp file, its sha256 and size.
    FileNotFoundError: that file is gone."""
    assert chain.sha256 is not None
    with blobs.open(chain.sha256) as f:
        old = f.read()
    reader = _Reader(db, channel_id)
    todo = sorted(names)
    changed: dict[str, bytes | None] = {}
    # the subdirs listed: SQLite then looks names up in the (channel, subdir, name) index; for
    # "channel_id = ? AND name IN (...)" it read every record of the channel
    in_subdirs = Record.subdir.in_(sorted(subdirs))
    for i in range(0, len(todo), NAMES_PER_QUERY):
        part = todo[i : i + NAMES_PER_QUERY]
        with db.session() as s:
            q = select(*reader.columns).where(*reader.live, in_subdirs, Record.name.in_(part))
            rows = [reader.row(r) for r in s.execute(q)]
        fresh = reader.entries(rows, subdirs)
        changed.update((name, fresh.get(name)) for name in part)
    fd, path = blobs.temp_file()
    h, size = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for piece in derived.splice_channeldata(old, changed, subdirs):
                out.write(piece)
                h.update(piece)
                size += len(piece)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path, h.hexdigest(), size
