"""Issue 15: ``repodata.json.zst`` spliced from the buckets' blocks, compressed once each, is one zstd frame
that every decoder reads as the JSON file written beside it.

The pieces here start with runs of one byte, so the encoder opens them with a repeat offset (1, as at a
frame's start): without the reset between pieces those matches copy from the wrong place, which the last
test shows, so the round trips are not passing by luck.
"""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import zstandard

from condavault.indexing import buckets, zstd_frames
from condavault.indexing.builder import Segment


def _entries(rng: random.Random, n: int, start: int = 0) -> list[bytes]:
    out = []
    for i in range(start, start + n):
        record = {
            "build": f"h{rng.getrandbits(32):08x}_{rng.randrange(3)}",
            "depends": [f"libfoo >={rng.randrange(4)}.{rng.randrange(9)}", "python >=3.9"],
            "license": "BSD-3-Clause",
            "name": f"pkg{i // 7}",
            "pad": " " * rng.randrange(0, 40),  # runs of one byte: repeat offset 1
            "sha256": f"{rng.getrandbits(256):064x}",
            "version": f"{rng.randrange(3)}.{rng.randrange(30)}",
        }
        out.append(json.dumps({f"pkg{i // 7}-{i}.conda": record}, separators=(",", ":"))[1:-1].encode())
    return out


def _store(tmp_path: Path, rng: random.Random, names: int, level: int) -> tuple[buckets.Store, list[buckets.Bucket]]:
    entries = _entries(rng, names * 7)
    segments = []
    for k in range(names):
        mine = entries[k * 7 : k * 7 + 7]
        segments.append((f"pkg{k:05d}", Segment(conda=mine, tar=mine[:2], cur_conda=mine[-1:], run_exports_conda=[])))
    store = buckets.Store(tmp_path / "cache", level)
    return store, store.build(segments)


def _mk(tmp_path: Path) -> tuple[int, Path]:
    fd, name = tempfile.mkstemp(dir=tmp_path)
    return fd, Path(name)


@pytest.mark.parametrize("level", [1, 3, 19])
def test_spliced_frame_reads_as_the_json_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, level: int) -> None:
    monkeypatch.setattr(buckets, "TARGET", 8 * 1024)
    store, built = _store(tmp_path, random.Random(level), 400, level)
    assert len(built) > 10
    raw, zst = buckets.write_pair(buckets.repodata_pieces("linux-64", built), lambda: _mk(tmp_path), level)
    data, frame = raw.path.read_bytes(), zst.path.read_bytes()
    doc = json.loads(data)
    assert len(doc["packages.conda"]) == 2800 and len(doc["packages"]) == 800
    d = zstandard.ZstdDecompressor()
    assert zstandard.frame_content_size(frame) == len(data)
    assert d.decompress(frame) == data  # one shot, into a buffer of the header's size
    assert d.stream_reader(io.BytesIO(frame)).read() == data  # streaming, through the declared window
    assert d.decompressobj().decompress(frame) == data
    if shutil.which("zstd"):
        assert subprocess.run(["zstd", "-dc"], input=frame, capture_output=True, check=True).stdout == data
    # an update rewrites a few buckets; the others' blocks are spliced again as they are
    changed = {"pkg00007": Segment(conda=_entries(random.Random(9), 3, start=10**6)), "pkg00300": None}
    updated, replaced = store.update(built, changed)
    assert 0 < len(replaced) <= 2
    raw2, zst2 = buckets.write_pair(buckets.current_pieces("linux-64", updated), lambda: _mk(tmp_path), level)
    assert d.decompress(zst2.path.read_bytes()) == raw2.path.read_bytes()
    raw3, zst3 = buckets.write_pair(buckets.repodata_pieces("linux-64", updated), lambda: _mk(tmp_path), level)
    doc3 = json.loads(raw3.path.read_bytes())
    assert d.decompress(zst3.path.read_bytes()) == raw3.path.read_bytes()
    assert len(doc3["packages.conda"]) == 2800 - 7 - 7 + 3


def test_large_bytes_pieces_are_compressed_too(tmp_path: Path) -> None:
    removed = json.dumps([f"gone-{i}.tar.bz2" for i in range(20_000)]).encode()
    pieces: list[buckets.Piece] = [b'{"removed":', removed, b"}"]
    raw, zst = buckets.write_pair(pieces, lambda: _mk(tmp_path), 3)
    frame = zst.path.read_bytes()
    assert len(frame) < len(removed) / 4
    assert zstandard.ZstdDecompressor().decompress(frame) == raw.path.read_bytes()
    assert len(json.loads(raw.path.read_bytes())["removed"]) == 20_000


def test_without_the_reset_the_repeat_offsets_of_the_previous_piece_corrupt_the_next() -> None:
    rng = random.Random(1)
    pieces = [b" " * 40 + b",".join(_entries(rng, 50)) for _ in range(20)]
    blocks = [zstd_frames.compress_blocks(p, 3) for p in pieces]
    log = max(b[1] for b in blocks)
    with_reset = zstd_frames.RESET_OUT.join([b"", *pieces])
    frame = (
        zstd_frames.frame_header(len(with_reset), log)
        + b"".join(zstd_frames.RESET + b for b, _ in blocks)
        + zstd_frames.END
    )
    assert zstandard.ZstdDecompressor().decompress(frame) == with_reset
    plain = b"".join(pieces)
    bare = zstd_frames.frame_header(len(plain), log) + b"".join(b for b, _ in blocks) + zstd_frames.END
    try:
        out = zstandard.ZstdDecompressor().decompress(bare)
    except zstandard.ZstdError:
        return  # refused: also proof that the reset is needed
    assert out != plain
