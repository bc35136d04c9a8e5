"""One zstd frame made of pieces compressed once, each on its own (RFC 8878).

``repodata.json.zst`` must stay one frame: rattler (py-rattler 0.28, so pixi) reads only the first frame of
a file. But a frame is a header followed by blocks, and the blocks of a frame compressed on its own can be
moved into another frame, so unchanged buckets need not be compressed again on every publish. What a
decoder carries from one block to the next within a frame:

* the window (earlier output): a piece's matches reach only into its own bytes, which are all there;
* the Huffman and FSE tables of the previous block: the first block of a frame of its own defines its own
  (no "treeless" literals, no "repeat" table mode), and the blocks this module writes between pieces (raw
  blocks, and the reset below with raw literals and RLE tables) leave the Huffman table alone and are never
  what a piece's later blocks refer back to;
* the three repeat offsets, which a frame starts with as 1, 4, 8 and every sequence may change: a piece
  compressed on its own assumes 1, 4, 8 at its start. :data:`RESET` sets them back: three one-sequence
  blocks with explicit offsets 8, 4 and 1, which write :data:`RESET_OUT` (17 spaces) into the content.

So the spliced content has 17 spaces in front of every compressed piece; pieces start between JSON tokens,
where whitespace is allowed, and the plain ``.json`` file gets the same spaces, so both files hold the
same bytes. libzstd (the ``zstd`` command, python-zstandard -- what conda decodes with -- one shot and
streaming) and py-rattler read the result (tests/unit/test_zstd_splice.py,
tests/functional/test_index_buckets.py)."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import zstandard

MAGIC = b"\x28\xb5\x2f\xfd"
RAW, COMPRESSED = 0, 2  # block types
BLOCK_MAX = 1 << 17  # the largest block a frame may hold (and a window of at least this size is declared)
MIN_WINDOW_LOG = 17
MAX_WINDOW_LOG = 27  # what decoders accept without being told to (zstd's default window limit)


def block(content: bytes, kind: int, *, last: bool = False) -> bytes:
    return ((len(content) << 3) | (kind << 1) | int(last)).to_bytes(3, "little") + content


def _sequence_block(literals: bytes, ll_code: int, of_code: int, bits: int) -> bytes:
    """A compressed block of raw ``literals`` and one sequence, its three codes in RLE mode (so the
    bitstream holds only the offset's extra bits, then the end mark): match length 3."""
    assert len(literals) < 32
    header = bytes([len(literals) << 3])  # raw literals, one-byte header
    rle = 0b01_01_01_00  # literal lengths, offsets, match lengths: RLE
    return block(header + literals + bytes([1, rle, ll_code, of_code, 0, bits]), COMPRESSED)


# offset values 11, 7, 4 (offset + 3: explicit offsets 8, 4, 1): codes 3, 2, 2 with extra bits 3, 3, 0; each
# bitstream is the extra bits under a 1 bit that marks its end
RESET = (
    _sequence_block(b" " * 8, 8, 3, 0b1_011)  # 8 spaces, then 3 copied from 8 back: repeat offsets (8, a, b)
    + _sequence_block(b"", 0, 2, 0b1_11)  # 3 copied from 4 back: (4, 8, a)
    + _sequence_block(b"", 0, 2, 0b1_00)  # 3 copied from 1 back: (1, 4, 8), as at a frame's start
)
RESET_OUT = b" " * 17
END = block(b"", RAW, last=True)


def compress_blocks(data: bytes, level: int) -> tuple[bytes, int]:
    """``data`` compressed as a frame of its own, returned as that frame's blocks (the last no longer
    marked last) and the window log a decoder needs for them."""
    # zstd's levels never ask for a window over MAX_WINDOW_LOG; frame_header refuses one if it did
    compressor = zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=False)
    frame = compressor.compress(data)
    if frame[:4] != MAGIC:
        raise ValueError("not a zstd frame")
    fhd = frame[4]
    fcs_flag, single, checksum, dict_flag = fhd >> 6, (fhd >> 5) & 1, (fhd >> 2) & 1, fhd & 3
    if checksum or dict_flag:
        raise ValueError("a frame with a checksum or a dictionary cannot be spliced")
    fcs_size = (1 if single else 0, 2, 4, 8)[fcs_flag]
    at = 5
    if single:  # the window is the content
        window = len(data)
    else:
        wd = frame[at]
        at += 1
        log = 10 + (wd >> 3)
        window = (1 << log) + ((1 << log) >> 3) * (wd & 7)
    at += fcs_size
    blocks = bytearray(frame[at:])
    i = 0
    while True:
        header = int.from_bytes(blocks[i : i + 3], "little")
        kind, size = (header >> 1) & 3, header >> 3
        end = i + 3 + (1 if kind == 1 else size)  # an RLE block holds one byte
        if header & 1:
            if end != len(blocks):
                raise ValueError("bytes after the last block")
            blocks[i] &= 0xFE
            return bytes(blocks), max(MIN_WINDOW_LOG, (window - 1).bit_length())
        i = end


def raw_blocks(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), BLOCK_MAX):
        yield block(data[i : i + BLOCK_MAX], RAW)


def frame_header(content_size: int, window_log: int) -> bytes:
    """A frame header: its content size (8 bytes), a window of ``2 ** window_log``, no checksum."""
    window_log = max(MIN_WINDOW_LOG, window_log)
    if window_log > MAX_WINDOW_LOG:
        raise ValueError(f"window log {window_log} is over {MAX_WINDOW_LOG}")
    return MAGIC + bytes([0b11 << 6, (window_log - 10) << 3]) + struct.pack("<Q", content_size)
