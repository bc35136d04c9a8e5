"""Reading a ``repodata.json`` one record at a time (issue 15: memory flat in the size of a subdir).

``json.load`` of a 300 k-record body holds every record as Python objects at once (over a gigabyte).
:func:`iter_records` walks the top-level object by hand and decodes each value of ``packages`` and
``packages.conda`` on its own (``json.JSONDecoder.raw_decode`` on a sliding buffer), so only one record
is alive at a time. Other top-level values (``info``, ``removed``, ...) are decoded and dropped. A value
larger than ``max_value`` characters, trailing bytes, or anything that is not JSON is refused with a
400 naming the byte offset.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator
from typing import Any, BinaryIO

from condavault.errors import InvalidRequest

SECTIONS = ("packages", "packages.conda")
READ = 1 << 20
MAX_VALUE = 16 << 20  # characters of one record (or of one other top-level value)
_WS = " \t\n\r"


class _Reader:
    def __init__(self, fh: BinaryIO, max_value: int) -> None:
        self.fh = fh
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.json = json.JSONDecoder()
        self.buf = ""
        self.pos = 0
        self.consumed = 0  # characters dropped from the front of buf
        self.eof = False
        self.max_value = max_value

    def _fail(self, why: str) -> InvalidRequest:
        return InvalidRequest(
            f"invalid repodata JSON at character {self.consumed + self.pos}: {why}", code="invalid_repodata"
        )

    def _more(self, size: int | None = None) -> bool:
        if self.eof:
            return False
        if self.pos > READ:
            self.consumed += self.pos
            self.buf, self.pos = self.buf[self.pos :], 0
        data = self.fh.read(size or READ)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError as exc:
            raise self._fail("not UTF-8") from exc
        if not data:
            self.eof = True
        self.buf += text
        return bool(data)

    def peek(self) -> str:
        """The next non-blank character ('' at the end), consumed only by :meth:`take`."""
        while True:
            while self.pos < len(self.buf) and self.buf[self.pos] in _WS:
                self.pos += 1
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self._more():
                return ""

    def take(self, wanted: str) -> str:
        c = self.peek()
        if c not in wanted or not c:
            raise self._fail(f"expected one of {wanted!r}, found {c or 'the end'!r}")
        self.pos += 1
        return c

    def value(self) -> Any:
        self.peek()
        size = READ
        while True:
            try:
                value, end = self.json.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as exc:
                if len(self.buf) - self.pos > self.max_value:
                    raise self._fail("a value is too large") from exc
                if not self._more(size):
                    raise self._fail(exc.msg) from exc
                size = min(size * 2, 64 << 20)  # a long value: read ahead faster than we re-parse
                continue
            if end == len(self.buf) and not self.eof:  # a number may go on in the next read
                self._more()
                continue
            self.pos = end
            return value

    def string(self) -> str:
        if self.peek() != '"':
            raise self._fail("expected a string key")
        key = self.value()
        assert isinstance(key, str)
        return key


def iter_records(fh: BinaryIO, *, max_value: int = MAX_VALUE) -> Iterator[tuple[str, str, Any]]:
    """``(section, filename, record)`` for every entry of ``packages`` and ``packages.conda`` (records
    as decoded, unchecked), in file order. Raises :class:`InvalidRequest` on anything that is not one
    JSON object."""
    r = _Reader(fh, max_value)
    r.take("{")
    if r.peek() == "}":
        r.take("}")
    else:
        while True:
            key = r.string()
            r.take(":")
            if key in SECTIONS and r.peek() == "{":
                r.take("{")
                if r.peek() == "}":
                    r.take("}")
                else:
                    while True:
                        fn = r.string()
                        r.take(":")
                        yield key, fn, r.value()
                        if r.take(",}") == "}":
                            break
            elif r.value() is not None and key in SECTIONS:
                raise r._fail(f"{key!r} must be an object")
            if r.take(",}") == "}":
                break
    if r.peek() != "":
        raise r._fail("trailing data after the object")
