"""Pure builders of the published index files from stored record fragments.

A subdir's index is held as one ``Segment`` per package name: the already-serialised JSON
fragments of its records. The monolithic ``repodata.json`` is a concatenation of segments, so an
upload re-serialises only the records of the names it touched (design.md §1.3).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgpack
import zstandard


@dataclass(frozen=True)
class RecordRow:
    filename: str
    name: str
    fragment: str  # patched record JSON (with indexed_timestamp)
    removed: bool
    run_exports: str | None  # JSON of the package's run_exports, None = unknown
    signatures: str | None = None  # JSON of the file's carried ``signatures`` entry (conda-content-trust)
    signed_record: str | None = None  # the upstream record those signatures cover (compact JSON)
    fragment_digest: str | None = None  # fragment_digest(fragment) when signed_record was saved
    version: str = ""  # the record's columns current_repodata's choice reads (derived.Light)
    build: str = ""
    build_number: int = 0


def fragment_digest(fragment: str) -> str:
    return hashlib.sha256(fragment.encode()).hexdigest()


def published_fragment(row: RecordRow) -> str:
    """The record text to publish. For a file carrying signatures, the upstream record they cover, exactly,
    so clients checking conda-content-trust signatures against this index verify them -- unless the
    record's fragment changed since (a repodata patch): then the patched fragment."""
    if row.signatures and row.signed_record and row.fragment_digest == fragment_digest(row.fragment):
        return row.signed_record
    return row.fragment


@dataclass
class Segment:
    """Everything one package name contributes to a subdir's index."""

    tar: list[bytes] = field(default_factory=list)  # b'"fn":{...}' for .tar.bz2 (UTF-8)
    conda: list[bytes] = field(default_factory=list)  # b'"fn":{...}' for .conda
    removed: list[str] = field(default_factory=list)
    run_exports_tar: list[bytes] = field(default_factory=list)
    run_exports_conda: list[bytes] = field(default_factory=list)
    signatures: list[bytes] = field(default_factory=list)  # b'"fn":{"<keyid>":{"signature":...}}'
    cur_tar: list[bytes] = field(default_factory=list)  # current_repodata.json's entries (current.Closure)
    cur_conda: list[bytes] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.tar or self.conda or self.removed)


def build_segment(rows: Iterable[RecordRow]) -> Segment:
    seg = Segment()
    for row in sorted(rows, key=lambda r: r.filename):
        if row.removed:
            seg.removed.append(row.filename)
            continue
        key = json.dumps(row.filename)
        entry = f"{key}:{published_fragment(row)}".encode()
        re_entry = f'{key}:{{"run_exports":{row.run_exports if row.run_exports is not None else "{}"}}}'.encode()
        if row.signatures:
            seg.signatures.append(f"{key}:{row.signatures}".encode())
        if row.filename.endswith(".conda"):
            seg.conda.append(entry)
            seg.run_exports_conda.append(re_entry)
        else:
            seg.tar.append(entry)
            seg.run_exports_tar.append(re_entry)
    return seg


def _joined(pieces: Iterable[bytes]) -> Iterator[bytes]:
    """``pieces`` with a comma between each two."""
    first = True
    for piece in pieces:
        if not first:
            yield b","
        first = False
        yield piece


def compose_repodata(subdir: str, segments: Mapping[str, Segment], extra_removed: Iterable[str] = ()) -> bytes:
    """The monolithic ``repodata.json``: one join of the stored entries (one copy of the file in memory)."""
    names = sorted(segments)
    removed = sorted({*extra_removed, *(fn for n in names for fn in segments[n].removed)})
    head = json.dumps({"subdir": subdir})
    signed = [e for n in names for e in segments[n].signatures]
    # conda-content-trust's top-level section, only when some file carries signatures (by name, then filename)
    tail = [b',"signatures":{', *_joined(signed), b"}"] if signed else []
    return b"".join(
        [
            f'{{"info":{head},"packages":{{'.encode(),
            *_joined(e for n in names for e in segments[n].tar),
            b'},"packages.conda":{',
            *_joined(e for n in names for e in segments[n].conda),
            f'}},"removed":{json.dumps(removed)},"repodata_version":1'.encode(),
            *tail,
            b"}",
        ]
    )


def compose_run_exports(subdir: str, segments: Mapping[str, Segment]) -> bytes:
    names = sorted(segments)
    head = json.dumps({"subdir": subdir, "version": 1})
    return b"".join(
        [
            f'{{"info":{head},"packages":{{'.encode(),
            *_joined(e for n in names for e in segments[n].run_exports_tar),
            b'},"packages.conda":{',
            *_joined(e for n in names for e in segments[n].run_exports_conda),
            b"}}",
        ]
    )


def _shard_record(fragment: str, run_exports: str | None) -> dict[str, Any]:
    rec = json.loads(fragment)
    for key in ("md5", "sha256"):
        if isinstance(rec.get(key), str):
            rec[key] = bytes.fromhex(rec[key])
    if run_exports is not None:
        rec["run_exports"] = json.loads(run_exports)
    return rec


def encode_shard(rows: Iterable[RecordRow], level: int) -> bytes:
    """One CEP-16 shard: zstd(msgpack) with md5/sha256 as bin, keys sorted for a stable hash."""
    shard: dict[str, Any] = {"packages": {}, "packages.conda": {}, "removed": []}
    for row in sorted(rows, key=lambda r: r.filename):
        if row.removed:
            shard["removed"].append(row.filename)
        else:
            key = "packages.conda" if row.filename.endswith(".conda") else "packages"
            shard[key][row.filename] = _shard_record(published_fragment(row), row.run_exports)
    packed = msgpack.packb(_sorted(shard), use_bin_type=True)
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(packed)


def _sorted(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _sorted(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [_sorted(v) for v in obj]
    return obj


def encode_shard_index(subdir: str, heads: Mapping[str, str], level: int) -> bytes:
    index = {
        "version": 1,
        "info": {
            "subdir": subdir,
            "base_url": "",
            "shards_base_url": "./shards/",
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
        "shards": {name: bytes.fromhex(heads[name]) for name in sorted(heads)},
    }
    packed = msgpack.packb(index, use_bin_type=True)
    return zstandard.ZstdCompressor(level=level, write_content_size=True).compress(packed)


def zstd(data: bytes, level: int) -> bytes:
    return zstandard.ZstdCompressor(level=level, write_content_size=True, threads=0).compress(data)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
