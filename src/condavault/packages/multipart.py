"""The files of a ``multipart/form-data`` body, received while hashing (no web framework).

:class:`FilesReader` is fed the body as it arrives (``feed``, ``close``) and yields one
:class:`~condavault.packages.spool.Received` per file part, with the part's filename. A part stays in
memory up to ``memory_limit`` bytes and is spooled to a temp file past it; the files of a body together are
limited to ``max_bytes``, and a body to ``max_files`` file parts. Text fields (anything without a filename) are
ignored but may hold at most ``MAX_FIELD`` bytes. Feed it from a worker thread: parsing, hashing and
writing are CPU and disk work (``read_files`` does that for an async body).

On any error every temp file of the body is removed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import anyio
from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from condavault.errors import InvalidRequest, PayloadTooLarge
from condavault.packages.spool import Received, Spool, TempFactory, feed_off_loop

MEMORY_LIMIT = 1024 * 1024
MAX_FIELD = 64 * 1024


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    filename: str | None = None
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    spool: Spool | None = None


class FilesReader:
    def __init__(
        self,
        content_type: str,
        temp_file: TempFactory,
        *,
        max_bytes: int,
        max_files: int,
        memory_limit: int = MEMORY_LIMIT,
    ) -> None:
        ctype, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if ctype != b"multipart/form-data" or not boundary:
            raise InvalidRequest("expected a multipart/form-data body with a boundary", code="invalid_multipart")
        self.temp_file = temp_file
        self.max_bytes = max_bytes
        self.max_files = max_files
        self.memory_limit = memory_limit
        self.files: list[tuple[str, Received]] = []
        self.total = 0  # bytes of every file part so far: a body is limited to ``max_bytes`` too
        self._part: _Part | None = None
        self._field = b""
        self._value = b""
        self._done = False
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._begin,
                "on_header_field": self._header_field,
                "on_header_value": self._header_value,
                "on_header_end": self._header_end,
                "on_part_data": self._data,
                "on_part_end": self._end,
                "on_end": self._finish,
            },
        )

    # -- feeding ---------------------------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        try:
            self._parser.write(data)
        except (InvalidRequest, PayloadTooLarge):
            raise
        except Exception as exc:  # the parser's own errors: a malformed body
            raise InvalidRequest(f"malformed multipart body: {exc}", code="invalid_multipart") from exc

    def close(self) -> list[tuple[str, Received]]:
        if not self._done:
            raise InvalidRequest("the multipart body ended early", code="invalid_multipart")
        return self.files

    def discard(self) -> None:
        """Remove every temp file of the body (after an error, or when the caller is done with them)."""
        for _, received in self.files:
            received.discard()
        if self._part is not None and self._part.spool is not None:
            self._part.spool.abort()
        self.files = []
        self._part = None

    # -- parser callbacks -------------------------------------------------------------------------------
    def _begin(self) -> None:
        self._part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        assert self._part is not None
        name, value = self._field.lower(), self._value
        self._field, self._value = b"", b""
        self._part.headers[name] = value
        if name == b"content-disposition":
            _, opts = parse_options_header(value)
            raw = opts.get(b"filename")
            if raw is not None:
                self._part.filename = raw.decode("utf-8", "replace")
                if len(self.files) >= self.max_files:
                    raise PayloadTooLarge(
                        f"at most {self.max_files} files per request", code="too_many_files", limit=self.max_files
                    )

    def _data(self, data: bytes, start: int, end: int) -> None:
        part = self._part
        assert part is not None
        chunk = data[start:end]
        part.size += len(chunk)
        if part.filename is None:
            if part.size > MAX_FIELD:
                raise PayloadTooLarge(f"a form field is limited to {MAX_FIELD} bytes", code="field_too_large")
            return
        self.total += len(chunk)
        if part.size > self.max_bytes or self.total > self.max_bytes:
            raise PayloadTooLarge(f"{part.filename}: over the limit of {self.max_bytes} bytes", limit=self.max_bytes)
        if part.spool is not None:
            part.spool.write(chunk)
            return
        part.chunks.append(chunk)
        if part.size > self.memory_limit:  # too big for memory: on to disk
            part.spool = Spool(self.temp_file, self.max_bytes)
            for c in part.chunks:
                part.spool.write(c)
            part.chunks = []

    def _end(self) -> None:
        part, self._part = self._part, None
        if part is None or part.filename is None:
            return
        if part.spool is not None:
            self.files.append((part.filename, part.spool.finish()))
        else:
            self.files.append((part.filename, Received.of_bytes(b"".join(part.chunks))))

    def _finish(self) -> None:
        self._done = True


async def read_files(
    content_type: str,
    chunks: AsyncIterator[bytes],
    temp_file: TempFactory,
    *,
    max_bytes: int,
    max_files: int,
) -> list[tuple[str, Received]]:
    """Every file of a multipart body: a worker thread parses, hashes and spools it (``feed_off_loop``;
    the body may exceed the files' limit by the size of its headers, 64 KiB per part at most)."""
    reader = FilesReader(content_type, temp_file, max_bytes=max_bytes, max_files=max_files)
    try:
        await feed_off_loop(chunks, reader.feed, max_bytes + (max_files + 1) * (MAX_FIELD + 4096))
        return reader.close()
    except BaseException:  # also a cancellation: shielded, or the temp files stay
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(reader.discard)
        raise
