"""The verify step's helpers of ``bundle import``: the journal of verified files (what a resumed import does
not read again), hashing, and the package blobs written ahead while the rest is still being verified."""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Container
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from condavault.storage.interfaces import BlobStore

IN_MEMORY = 16 * 1024 * 1024
STAGE_THREADS = 16  # blob writes (each fsynced) overlap: their latency, not the disk, is the limit
STAGE_PENDING = 256  # verified files waiting to be written, at most (bounds the memory)


class Journal:
    """Files verified so far (path, size, mtime, sha256): what a resumed import does not read again."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, tuple[int, int, str]] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    doc = json.loads(line)
                    self.done[doc["p"]] = (int(doc["s"]), int(doc["m"]), str(doc["h"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a line cut by a kill
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a")  # noqa: SIM115 - closed by close()

    def verified(self, rel: str, st: os.stat_result, sha256: str) -> bool:
        return self.done.get(rel) == (st.st_size, st.st_mtime_ns, sha256)

    def add(self, rel: str, st: os.stat_result, sha256: str) -> None:
        self._fh.write(json.dumps({"p": rel, "s": st.st_size, "m": st.st_mtime_ns, "h": sha256}) + "\n")

    def flush(self) -> None:
        self._fh.flush()

    def close(self, remove: bool = False) -> None:
        self._fh.close()
        if remove:
            self.path.unlink(missing_ok=True)


def hash_file(path: Path) -> tuple[str, os.stat_result, bytes | None]:
    """sha256, the open file's stat (size and mtime for the journal) and, for files up to ``IN_MEMORY``, the
    bytes -- one read. (No md5: a bundle's records carry theirs, signed, and nothing here uses another.)"""
    with open(path, "rb", buffering=0) as fh:
        st = os.fstat(fh.fileno())
        if st.st_size <= IN_MEMORY:
            data = fh.read()
            return hashlib.sha256(data).hexdigest(), st, data
        return hashlib.file_digest(fh, "sha256").hexdigest(), st, None


class WriteAhead:
    """Verified package bytes made durable under temp names on I/O threads while the checks go on (the bundle
    is read once; the writes overlap the checks). Nothing is visible under its name before ``take`` hands the
    staged blobs to the store step's commit; ``discard`` drops what was not taken."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self.staged: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._futures: list[Future[None]] = []
        self._slots = threading.BoundedSemaphore(STAGE_PENDING)
        self._io: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self.staged, self._futures = {}, []
        self._slots = threading.BoundedSemaphore(STAGE_PENDING)
        self._io = ThreadPoolExecutor(STAGE_THREADS, thread_name_prefix="bundle-stage")

    def stage(self, sha256: str, data: bytes) -> None:
        assert self._io is not None, "start() first"
        self._slots.acquire()  # bounded: the bytes waiting to be written stay few
        try:
            fut = self._io.submit(self._stage_now, sha256, data)
        except BaseException:
            self._slots.release()
            raise
        fut.add_done_callback(lambda _f: self._slots.release())
        with self._lock:
            self._futures.append(fut)

    def _stage_now(self, sha256: str, data: bytes) -> None:
        staged = self.blobs.stage(data, sha256)
        with self._lock:
            if sha256 in self.staged:  # the same bytes listed twice
                self.blobs.discard_staged([staged])
            else:
                self.staged[sha256] = staged

    def wait(self) -> None:
        """Every write ahead finished (or failed)."""
        if self._io is not None:
            self._io.shutdown(wait=True)

    def check(self) -> None:
        """Raise the first write error, if any."""
        for fut in self._futures:
            fut.result()

    def take(self, wanted: Container[str]) -> list[Any]:
        """The staged blobs of ``wanted`` hashes, now the caller's to commit."""
        with self._lock:
            return [self.staged.pop(sha) for sha in list(self.staged) if sha in wanted]

    def discard(self) -> None:
        with self._lock:
            staged, self.staged = list(self.staged.values()), {}
        self.blobs.discard_staged(staged)
