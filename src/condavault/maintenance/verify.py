"""Checks of ``condavault check``: package blobs against their records, published index files and
shards against the database's pointers, and each subdir's shard heads against its records."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from sqlalchemy import select

from condavault.channels.models import Channel, Record
from condavault.db.session import Database
from condavault.indexing.buckets import plain_id
from condavault.indexing.models import PublishedFile, ShardHead, SubdirState
from condavault.serving.decompressed import open_json
from condavault.storage.interfaces import BlobStore


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def blob_state(blobs: BlobStore, sha: str | None, size: int | None) -> str:
    """``ok``, ``missing`` or ``corrupt`` (size or sha256 differ)."""
    if not sha:
        return "missing"
    try:
        if size is not None and blobs.size(sha) != size:
            return "corrupt"
        h = hashlib.sha256()
        with blobs.open(sha) as fh:
            while chunk := fh.read(1024 * 1024):
                h.update(chunk)
        return "ok" if h.hexdigest() == sha else "corrupt"
    except FileNotFoundError:
        return "missing"


def decompressed_state(blobs: BlobStore, source: str, sha: str, size: int) -> str:
    """``ok``, ``missing`` or ``corrupt``: a plain JSON index file served from the zstd blob ``source``
    (:mod:`condavault.serving.decompressed`): its pointer names that blob (:func:`plain_id`), and the blob
    decompresses, in full, to the pointer's size. (The blob's own sha256 is checked with its ``.zst`` path.)"""
    if sha != plain_id(source):
        return "corrupt"
    n = 0
    try:
        with open_json(blobs, source) as fh:
            while chunk := fh.read(1024 * 1024):
                n += len(chunk)
    except FileNotFoundError:
        return "missing"
    except zstandard.ZstdError:
        return "corrupt"
    return "ok" if n == size else "corrupt"


@dataclass
class IndexReport:
    """Problems of the published index, and the (channel id, subdir) pairs a rebuild fixes."""

    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # shard heads that do not match the records
    subdirs: set[tuple[int, str]] = field(default_factory=set)  # to rebuild ("" = channel-level files)
    corrupt_shas: set[str] = field(default_factory=set)  # to move aside, so the rebuild writes them again

    @property
    def problems(self) -> int:
        return len(self.missing) + len(self.corrupt) + len(self.mismatched)


def check_index(db: Database, blobs: BlobStore) -> IndexReport:
    """Every published file and current shard has its blob, intact; every subdir indexed up to date
    has exactly one shard per package name of its records."""
    out = IndexReport()
    with db.session() as s:
        names = {cid: name for cid, name in s.execute(select(Channel.id, Channel.name))}
        files = s.execute(
            select(
                PublishedFile.channel_id,
                PublishedFile.subdir,
                PublishedFile.path,
                PublishedFile.sha256,
                PublishedFile.size,
                PublishedFile.source_sha256,
            )
        ).all()
        heads = s.execute(select(ShardHead.channel_id, ShardHead.subdir, ShardHead.name, ShardHead.sha256)).all()
        current = s.execute(
            select(SubdirState.channel_id, SubdirState.subdir).where(SubdirState.change_seq == SubdirState.indexed_seq)
        ).all()
    for cid, sd, path, sha, size, source in files:
        state = blob_state(blobs, sha, size) if source is None else decompressed_state(blobs, source, sha, size)
        if state != "ok":
            (out.missing if state == "missing" else out.corrupt).append(f"{names.get(cid, cid)}/{sd or '.'}/{path}")
            out.subdirs.add((cid, sd))
            if state == "corrupt":
                out.corrupt_shas.add(sha if source is None else source)
    for cid, sd, name, sha in heads:
        state = blob_state(blobs, sha, None)
        if state != "ok":
            where = f"{names.get(cid, cid)}/{sd}/shards/{sha}.msgpack.zst ({name})"
            (out.missing if state == "missing" else out.corrupt).append(where)
            out.subdirs.add((cid, sd))
            if state == "corrupt":
                out.corrupt_shas.add(sha)
    for cid, sd in current:
        if not _heads_match_records(db, cid, sd):
            out.mismatched.append(f"{names.get(cid, cid)}/{sd} (shards do not match the records)")
            out.subdirs.add((cid, sd))
    return out


def _heads_match_records(db: Database, cid: int, sd: str) -> bool:
    """True when the subdir's shard heads name exactly its records' packages -- or when a writer or the
    indexer changed the subdir while we looked (then there is nothing to conclude)."""
    where = (SubdirState.channel_id == cid, SubdirState.subdir == sd)
    seqs = select(SubdirState.change_seq, SubdirState.indexed_seq).where(*where)
    with db.session() as s:
        before = s.execute(seqs).first()
        heads = set(s.scalars(select(ShardHead.name).where(ShardHead.channel_id == cid, ShardHead.subdir == sd)))
        rows = set(s.scalars(select(Record.name).where(Record.channel_id == cid, Record.subdir == sd).distinct()))
        after = s.execute(seqs).first()
    if before is None or before != after or before[0] != before[1]:
        return True
    return heads == rows
