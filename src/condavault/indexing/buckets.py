"""A subdir's index pieces kept on disk, not in memory (issue 15).

The names of a subdir, sorted, are cut into buckets of about :data:`TARGET` bytes of records. Each bucket is
one file of this process's cache folder holding, for its names:

* the joined ``"fn":{...}`` entries of ``packages``, ``packages.conda``, ``signatures``, of
  ``run_exports.json``'s two sections and of ``current_repodata.json``'s two sections -- the bytes those
  files are concatenations of;
* every name's encoded segment (msgpack), so an upload re-encodes only the names it touched;
* each of those sections compressed on its own, as the blocks of one zstd frame
  (:mod:`condavault.indexing.zstd_frames`).

An upload rewrites the few buckets its names fall into (a new file each: the old files stay valid until
the run publishes), and the published files are composed as a stream of those pieces: ``repodata.json``
is written and hashed piece by piece, and ``repodata.json.zst`` is one frame spliced from the buckets'
compressed blocks, so a publish compresses only the buckets it rewrote. Memory holds one bucket at a time
and the manifest (a few fields per bucket); the cache is a cache: a new process rebuilds it from the
records on its first run of the subdir.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgpack

from condavault.indexing import zstd_frames
from condavault.indexing.builder import Segment

TARGET = 256 * 1024  # bytes of records per bucket; a bucket past twice this is split
# sections of a bucket file, in order; then the names' segments; then each of PARTS compressed
PARTS = ("tar", "conda", "sig", "re_tar", "re_conda", "cur_tar", "cur_conda")
_NAMES = len(PARTS)
_BLOCKS = _NAMES + 1  # the compressed blocks of PARTS[i] are section _BLOCKS + i


@dataclass(frozen=True)
class Bucket:
    lo: str  # the bucket holds the names from lo (inclusive) to the next bucket's lo
    path: Path
    ends: tuple[int, ...]  # end offset of each section (PARTS, the names, then PARTS compressed)
    removed: tuple[str, ...]
    records: int
    window_log: int  # the window its compressed sections need

    def span(self, i: int) -> tuple[int, int]:
        return (self.ends[i - 1] if i else 0), self.ends[i]

    def has(self, part: str) -> bool:
        start, end = self.span(PARTS.index(part))
        return end > start


def _read(b: Bucket, i: int) -> bytes:
    start, end = b.span(i)
    if end == start:
        return b""
    with open(b.path, "rb") as fh:
        fh.seek(start)
        return fh.read(end - start)


def read_segments(b: Bucket) -> list[tuple[str, Segment]]:
    raw = msgpack.unpackb(_read(b, _NAMES), raw=False, use_list=True)
    return [
        (n, Segment(tar, conda, rm, re_tar, re_conda, sigs, cur_tar, cur_conda))
        for n, tar, conda, rm, re_tar, re_conda, sigs, cur_tar, cur_conda in raw
    ]


def _cur(seg: Segment) -> tuple[list[bytes], list[bytes]]:
    return seg.cur_tar, seg.cur_conda


def _size(seg: Segment) -> int:
    return sum(len(e) for e in seg.tar) + sum(len(e) for e in seg.conda) + 1


class Store:
    """The buckets of one subdir: a manifest in memory, their bytes in files under ``folder``; sections
    compressed at zstd ``level``."""

    def __init__(self, folder: Path, level: int) -> None:
        self.folder = folder
        self.level = level
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, lo: str, segs: list[tuple[str, Segment]]) -> Bucket:
        joined = [
            b",".join(e for _, s in segs for e in s.tar),
            b",".join(e for _, s in segs for e in s.conda),
            b",".join(e for _, s in segs for e in s.signatures),
            b",".join(e for _, s in segs for e in s.run_exports_tar),
            b",".join(e for _, s in segs for e in s.run_exports_conda),
            b",".join(e for _, s in segs for e in s.cur_tar),
            b",".join(e for _, s in segs for e in s.cur_conda),
        ]
        names = msgpack.packb(
            [
                (n, s.tar, s.conda, s.removed, s.run_exports_tar, s.run_exports_conda, s.signatures, *_cur(s))
                for n, s in segs
            ],
            use_bin_type=True,
        )
        window_log = zstd_frames.MIN_WINDOW_LOG
        compressed = []
        for sec in joined:
            blocks = b""
            if sec:
                blocks, log = zstd_frames.compress_blocks(sec, self.level)
                window_log = max(window_log, log)
            compressed.append(blocks)
        sections = [*joined, names, *compressed]
        ends, at = [], 0
        for sec in sections:
            at += len(sec)
            ends.append(at)
        path = self.folder / f"{uuid.uuid4().hex}.bucket"
        with open(path, "wb") as fh:
            for sec in sections:
                fh.write(sec)
        removed = tuple(fn for _, s in segs for fn in s.removed)
        records = sum(len(s.tar) + len(s.conda) for _, s in segs)
        return Bucket(lo, path, tuple(ends), removed, records, window_log)

    def build(self, segments: Iterable[tuple[str, Segment]]) -> list[Bucket]:
        """Buckets of every name's segment, in name order (a full rebuild: one bucket in memory at a time)."""
        return list(self._split("", segments))

    def _split(self, lo: str, segments: Iterable[tuple[str, Segment]]) -> Iterator[Bucket]:
        """Write ``segments`` (in name order) as buckets of about ``TARGET`` bytes, the first starting at
        ``lo`` and each next one at its first name; at least one bucket."""
        made = False
        pending: list[tuple[str, Segment]] = []
        size = 0
        for n, seg in segments:
            pending.append((n, seg))
            size += _size(seg)
            if size >= TARGET:
                yield self.write(pending[0][0] if made else lo, pending)
                made, pending, size = True, [], 0
        if pending or not made:
            yield self.write(pending[0][0] if made else lo, pending)

    def update(self, buckets: list[Bucket], changed: dict[str, Segment | None]) -> tuple[list[Bucket], list[Bucket]]:
        """New buckets with ``changed`` names replaced (None: gone). Returns (new list, replaced buckets)."""
        los = [b.lo for b in buckets]
        touched: dict[int, dict[str, Segment | None]] = {}
        for n, seg in changed.items():
            touched.setdefault(max(0, bisect.bisect_right(los, n) - 1), {})[n] = seg
        out: list[Bucket] = []
        replaced: list[Bucket] = []
        for i, b in enumerate(buckets):
            changes = touched.get(i)
            if changes is None:
                out.append(b)
                continue
            replaced.append(b)
            segs = dict(read_segments(b))
            for n, seg in changes.items():
                if seg is None:
                    segs.pop(n, None)
                else:
                    segs[n] = seg
            items = sorted(segs.items())
            if not items:
                if i == 0:
                    out.append(self.write("", []))
                continue
            total = sum(_size(s) for _, s in items)
            if total <= 2 * TARGET:
                out.append(self.write(b.lo if i else "", items))
                continue
            out.extend(self._split(b.lo if i else "", items))
        if not out:
            out.append(self.write("", []))
        if out[0].lo != "":  # the first bucket always starts at ""
            out[0] = dataclasses.replace(out[0], lo="")
        return out, replaced

    def drop(self, buckets: Iterable[Bucket]) -> None:
        for b in buckets:
            b.path.unlink(missing_ok=True)

    def destroy(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


# -- composing the published files as streams of pieces -----------------------------------------------
Piece = bytes | tuple[Bucket, int]  # bytes, or a section of a bucket file (read when written)


def _joined_sections(buckets: list[Bucket], part: str) -> Iterator[Piece]:
    """Each bucket's ``part``, with a comma between them."""
    i = PARTS.index(part)
    first = True
    for b in buckets:
        if not b.has(part):
            continue
        if not first:
            yield b","
        first = False
        yield b, i


def repodata_pieces(subdir: str, buckets: list[Bucket]) -> Iterator[Piece]:
    """``repodata.json`` in pieces: written by :func:`write_pair`, the same JSON as
    :func:`condavault.indexing.builder.compose_repodata` of the same segments (byte for byte but for the
    spaces in front of each compressed piece)."""
    head = json.dumps({"subdir": subdir})
    yield f'{{"info":{head},"packages":{{'.encode()
    yield from _joined_sections(buckets, "tar")
    yield b'},"packages.conda":{'
    yield from _joined_sections(buckets, "conda")
    removed = sorted({fn for b in buckets for fn in b.removed})
    yield f'}},"removed":{json.dumps(removed)},"repodata_version":1'.encode()
    if any(b.has("sig") for b in buckets):
        yield b',"signatures":{'
        yield from _joined_sections(buckets, "sig")
        yield b"}"
    yield b"}"


def run_exports_pieces(subdir: str, buckets: list[Bucket]) -> Iterator[Piece]:
    head = json.dumps({"subdir": subdir, "version": 1})
    yield f'{{"info":{head},"packages":{{'.encode()
    yield from _joined_sections(buckets, "re_tar")
    yield b'},"packages.conda":{'
    yield from _joined_sections(buckets, "re_conda")
    yield b"}}"


def current_pieces(subdir: str, buckets: list[Bucket]) -> Iterator[Piece]:
    """``current_repodata.json`` in pieces: the same JSON as :func:`condavault.indexing.derived.encode_current`
    of :func:`condavault.indexing.derived.current_repodata` of the subdir's live records (see
    :func:`repodata_pieces`)."""
    head = json.dumps({"subdir": subdir}, separators=(",", ":"))
    yield f'{{"info":{head},"packages":{{'.encode()
    yield from _joined_sections(buckets, "cur_tar")
    yield b'},"packages.conda":{'
    yield from _joined_sections(buckets, "cur_conda")
    yield b'},"removed":[],"repodata_version":1}'


@dataclass(frozen=True)
class Written:
    path: Path | None  # None: not written (the JSON file of ``write_pair(keep_json=False)``: sha256 is its plain_id)
    sha256: str
    size: int


class _Out:
    """A temp file of the blob store, hashed as it is written."""

    def __init__(self, temp_file: Callable[[], tuple[int, Path]]) -> None:
        fd, self.path = temp_file()
        self.fh = os.fdopen(fd, "wb", buffering=1 << 20)
        self.hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        if data:
            self.fh.write(data)
            self.hash.update(data)
            self.size += len(data)
        return len(data)

    def close(self) -> Written:
        self.fh.close()
        return Written(self.path, self.hash.hexdigest(), self.size)

    def discard(self) -> None:
        self.fh.close()
        self.path.unlink(missing_ok=True)


def plain_id(zst_sha256: str) -> str:
    """What names a plain JSON index file served from the zstd blob ``zst_sha256`` (its ETag, in
    ``published_files.sha256``): derived from the compressed bytes, which determine the JSON, so it changes
    whenever the JSON does, and is no blob's name (a process of an earlier version answers 404, never other
    bytes). Not the JSON's sha256: hashing the whole JSON on every publish cost time that grew with the subdir."""
    return hashlib.sha256(b"plain-json:" + zst_sha256.encode()).hexdigest()


COMPRESS_OVER = 64 * 1024  # a bytes piece (head, tail, "removed") over this is compressed, else stored raw


def write_pair(
    pieces: Iterable[Piece], temp_file: Callable[[], tuple[int, Path]], level: int, *, keep_json: bool = True
) -> tuple[Written, Written]:
    """Write the JSON file and its zstd file from ``pieces``, hashing both as they are written. The zstd file
    is one frame (its size in the header) of the buckets' compressed sections and of the bytes pieces (raw
    blocks, or compressed here when large), with :data:`zstd_frames.RESET` in front of each compressed
    piece and its spaces in both files. A thread writes and hashes the JSON while this one writes the
    frame: at most two pieces in memory at a time. ``keep_json`` False: the JSON is neither written nor
    read (it is served decompressed from the zstd file: writing it was most of a publish's time at 300 k
    records, and hashing it the largest cost left that grew with the subdir); its :class:`Written` has
    no path and :func:`plain_id` of the zstd file's sha256 for its sha256."""
    listed = list(pieces)
    fresh = {
        i: zstd_frames.compress_blocks(p, level)
        for i, p in enumerate(listed)
        if isinstance(p, bytes) and len(p) > COMPRESS_OVER
    }
    size, window_log = 0, zstd_frames.MIN_WINDOW_LOG
    for i, piece in enumerate(listed):
        if isinstance(piece, bytes):
            size += len(piece) + (len(zstd_frames.RESET_OUT) if i in fresh else 0)
            window_log = max(window_log, fresh[i][1] if i in fresh else 0)
        else:
            start, end = piece[0].span(piece[1])
            size += end - start + len(zstd_frames.RESET_OUT)
            window_log = max(window_log, piece[0].window_log)
    raw: _Out | None = None
    zst: _Out | None = None
    try:
        raw = _Out(temp_file) if keep_json else None
        zst = _Out(temp_file)
        zst.write(zstd_frames.frame_header(size, window_log))

        def write_raw(*parts: bytes) -> None:
            assert raw is not None
            for part in parts:
                raw.write(part)

        with ThreadPoolExecutor(1, thread_name_prefix="index-write") as pool:
            pending: Future[None] | None = None
            for i, piece in enumerate(listed):
                if isinstance(piece, bytes):
                    data: tuple[bytes, ...] = (zstd_frames.RESET_OUT, piece) if i in fresh else (piece,)
                    blocks: Iterable[bytes] = (
                        (zstd_frames.RESET, fresh[i][0]) if i in fresh else zstd_frames.raw_blocks(piece)
                    )
                else:
                    b, part = piece
                    data = (zstd_frames.RESET_OUT, _read(b, part)) if raw is not None else ()
                    blocks = (zstd_frames.RESET, _read(b, _BLOCKS + part))
                if raw is not None:
                    if pending is not None:
                        pending.result()  # the JSON file in order (and its error, if any, raised here)
                    pending = pool.submit(write_raw, *data)
                for blk in blocks:
                    zst.write(blk)
            if pending is not None:
                pending.result()
        zst.write(zstd_frames.END)
        if raw is None:
            done = zst.close()
            return Written(None, plain_id(done.sha256), size), done
        if raw.size != size:
            raise AssertionError(f"wrote {raw.size} bytes, the frame header says {size}")
        return raw.close(), zst.close()
    except BaseException:
        for out in (raw, zst):
            if out is not None:
                out.discard()
        raise
