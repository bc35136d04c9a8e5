"""Local-folder blob store: ``<root>/ab/cd/<sha256>``, written to a temp name then renamed.

Durability: a blob's bytes reach the disk before its name appears (so a blob that exists is always
complete: ``put_*`` skip blobs that exist), and its name reaches the disk before ``put_*`` returns (so
a DB row committed afterwards never points at a blob lost in a crash). Many blobs share one barrier
(:meth:`LocalBlobStore.put_many`, or :meth:`~LocalBlobStore.stage` as each blob comes and
:meth:`~LocalBlobStore.commit` for the batch). On Linux (``sync="syncfs"``, the default) the barrier is
two ``syncfs(2)`` calls on the store's filesystem: staging only writes the temp files; commit syncs
(the bytes and the temp files' inodes are on disk), renames, and syncs again (the names). Elsewhere,
or with ``sync="fsync"``: every temp file is fsynced as it is staged (on a few threads), then renamed,
then the directories whose entries changed are fsynced. Measured on ext4 with 1,000 blobs of 1 KB in
batches of 64 (docs/performance.md, "Bulk uploads"): syncfs took 0.7-1.8 s where per-file fsync took
0.9-3.4 s, and less CPU. The price of syncfs: it also waits for other writers' dirty data on the same
filesystem, so a blob store on a disk shared with heavy writers may prefer ``sync="fsync"``.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import secrets
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
IO_THREADS = 16  # file creations and fsyncs of many small blobs overlap
T = TypeVar("T")
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def io_pool() -> ThreadPoolExecutor:
    """The threads for blob file system work (shared by every store of the process)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="condavault-blob-io")
        return _POOL


def run_all(fn: Callable[..., T], args: list[tuple[Any, ...]], collect: list[T] | None = None) -> list[T]:
    """``fn(*a)`` for each of ``args``, a few at a time when there are many; every call has finished
    when this returns or raises (the first error). ``collect`` receives the results of the calls that
    succeeded, also when another one failed."""
    collect = [] if collect is None else collect
    if len(args) <= 2:
        for a in args:
            collect.append(fn(*a))
        return collect
    futures = [io_pool().submit(fn, *a) for a in args]
    wait(futures)
    collect.extend(f.result() for f in futures if f.exception() is None)
    for f in futures:
        f.result()  # the first error, if any
    return collect


def stage_and_commit(store: Any, items: Iterable[tuple[Path | bytes, str]]) -> list[bool]:
    """``put_many`` of any store from its ``stage``/``commit``/``discard_staged``: every item staged (a few
    at a time), then committed together. On an error, what was staged is discarded and the temp files
    handed in are removed."""
    pending = list(items)
    staged: list[Any] = []
    try:
        staged = run_all(store.stage, pending, collect=staged)
        return list(store.commit(staged))
    except BaseException:
        store.discard_staged(staged)
        for src, _ in pending:
            if isinstance(src, Path):
                src.unlink(missing_ok=True)
        raise


class BlobVanished(OSError):
    """A blob found present at staging was gone at commit (collected meanwhile): the write fails and is
    retried by its caller; nothing points at a missing blob."""

    def __init__(self, message: str, sha256: str) -> None:
        super().__init__(message)
        self.sha256 = sha256


@contextmanager
def _flock(path: Path, mode: int) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, mode)
        yield
    finally:
        os.close(fd)  # releases the lock


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:  # read-only store, or gone: commit looks again
        pass


def files_older_than(paths: Iterable[Path], seconds: float) -> list[Path]:
    """The regular files among ``paths`` last modified more than ``seconds`` ago."""
    cutoff = time.time() - seconds
    out = []
    for p in paths:
        try:
            if p.is_file() and p.stat().st_mtime < cutoff:
                out.append(p)
        except OSError:
            continue
    return out


def fsync_all(paths: list[Path]) -> None:
    """fsync every file or directory of ``paths`` (a few at a time when there are many)."""
    run_all(_fsync_path, [(p,) for p in paths])


def _syncfs_of(root: Path) -> Callable[[], None] | None:
    """``syncfs(2)`` of the filesystem holding ``root`` (Linux), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None
    call.argtypes, call.restype = [ctypes.c_int], ctypes.c_int

    def syncfs() -> None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            if call(fd) != 0:  # writeback errors are reported since Linux 5.8
                err = ctypes.get_errno()
                raise OSError(err, f"syncfs of the blob store failed: {os.strerror(err)}", str(root))
        finally:
            os.close(fd)

    return syncfs


class SharedSync:
    """A group commit of ``sync``: callers that ask while one runs share the next one -- a sync that
    starts after a caller asked covers everything the caller wrote before asking. Concurrent batches
    (parallel upload requests, each with its barrier of two syncs) then pay one sync instead of one each.
    A failed sync raises in the caller that ran it; the others it would have covered run their own."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self._sync = sync
        self._cond = threading.Condition()
        self._asked = 0  # tickets handed out
        self._done = 0  # every ticket up to this one is covered by a sync that completed
        self._running = False

    def __call__(self) -> None:
        with self._cond:
            self._asked += 1
            ticket = self._asked
            while self._done < ticket:
                if self._running:
                    self._cond.wait()
                    continue
                self._running, covers = True, self._asked
                self._cond.release()
                try:
                    self._sync()
                finally:
                    self._cond.acquire()
                    self._running = False
                    self._cond.notify_all()
                self._done = max(self._done, covers)


@dataclass
class Staged:
    """A blob written but not yet visible under its name (:meth:`LocalBlobStore.stage`)."""

    sha256: str
    dest: Path
    tmp: Path | None  # None: the blob existed when staged (or this was committed or discarded)
    dirs: list[Path]  # directories whose entries change when it is committed


class LocalBlobStore:
    """Blobs under ``root``. Collection (``condavault check --repair``) and writers share a lock file:
    a writer holds it shared from the moment it relies on a blob (writes it, or finds it present) until
    the row pointing at the blob is committed (:meth:`writing`); a collector deletes only while holding
    it exclusively, after looking again that nothing points at the blob (:meth:`collecting`). Blobs a
    writer finds present get a fresh mtime, so a grace period also protects writes that stage blobs
    long before their rows (a mirror batch) and stores on several machines."""

    kind = "local"

    def __init__(self, root: Path, *, sync: str = "syncfs") -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.tmp = self.root / ".tmp"
        self.tmp.mkdir(exist_ok=True)
        self._lock_path = self.root / ".collect.lock"
        syncfs = _syncfs_of(self.root) if sync == "syncfs" else None
        self._syncfs = SharedSync(syncfs) if syncfs is not None else None

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold off collection while blobs are written and their rows committed (shared, re-entrant
        across threads: each holder has its own lock)."""
        with _flock(self._lock_path, fcntl.LOCK_SH):
            yield

    @contextmanager
    def collecting(self, *, wait: bool = True) -> Iterator[bool]:
        """Exclusive: no writer is between relying on a blob and committing its row. Yields False
        (without the lock) when ``wait`` is off and a writer is busy."""
        try:
            with _flock(self._lock_path, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB)):
                yield True
        except BlockingIOError:
            yield False

    def age(self, sha256: str) -> float | None:
        """Seconds since the blob was last written or relied on; None when it does not exist."""
        try:
            return time.time() - self.path(sha256).stat().st_mtime
        except FileNotFoundError:
            return None

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def local_path(self, sha256: str) -> Path:
        return self.path(sha256)

    def exists(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    # -- writing -----------------------------------------------------------------------------------
    def put_file(self, src: Path, sha256: str) -> None:
        self.put_many([(src, sha256)])

    def put_bytes(self, data: bytes, sha256: str) -> None:
        self.put_many([(data, sha256)])

    def put_many(self, items: Iterable[tuple[Path | bytes, str]]) -> list[bool]:
        """Store blobs -- temp files (moved in) or bytes -- with one durability barrier for all of them:
        :meth:`stage` each (a few at a time), then :meth:`commit` them together.

        Returns, for each item, whether its blob was new (False: it existed; a temp file is dropped).
        When this returns every blob is durable under its name. On an error the temp files are removed;
        blobs already moved in stay (they are complete; unreferenced ones are swept by ``check``).
        """
        return stage_and_commit(self, items)

    def stage(self, src: Path | bytes, sha256: str) -> Staged:
        """First half of a write, the slow one (creating files and directories costs far more than
        writing small ones): the bytes durable in a temp file -- ``src`` itself when it is one, else a
        hidden file beside the blob's name (creations in one shared folder would queue on its lock) --
        and the blob's directory in place. Nothing is visible under the blob's name until :meth:`commit`.
        No temp file is made when the blob exists already."""
        dest = self.path(sha256)
        d = os.fspath(dest)
        if os.path.isfile(d):
            _touch(dest)  # relied on from now: a fresh mtime keeps collection (grace period) away
            if isinstance(src, Path):
                src.unlink(missing_ok=True)
            return Staged(sha256, dest, None, [])
        dirs = [dest.parent]
        if isinstance(src, bytes):
            # a hidden name of our own beside the blob (O_EXCL: never another writer's file), created in one
            # call; its folders only when that fails (a new blob of a big store usually has them already)
            name = f"{d[:-64]}.{sha256[:16]}.{secrets.token_hex(6)}.part"
            try:
                fd = os.open(name, _NEW_FILE, 0o644)
            except FileNotFoundError:
                dirs += self._make_dirs(dest)
                fd = os.open(name, _NEW_FILE, 0o644)
            tmp = Path(name)
            try:
                os.fchmod(fd, 0o644)  # whatever the umask: the web server may serve it (X-Accel-Redirect)
                view = memoryview(src)
                while view:
                    view = view[os.write(fd, view) :]
                if self._syncfs is None:
                    os.fsync(fd)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            finally:
                os.close(fd)
        else:
            if not os.path.isdir(dest.parent):
                dirs += self._make_dirs(dest)
            tmp = src
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fchmod(fd, 0o644)
                if self._syncfs is None:
                    os.fsync(fd)
            finally:
                os.close(fd)
        return Staged(sha256, dest, tmp, dirs)

    def commit(self, staged: list[Staged]) -> list[bool]:
        """Second half: give staged blobs their names, then sync the directories -- one barrier for all.
        Returns, for each, whether its blob was new (a blob staged twice, or written meanwhile, is not)."""
        out: list[bool] = []
        dirs: set[Path] = set()
        try:
            if self._syncfs is not None and any(st.tmp is not None for st in staged):
                self._syncfs()  # the staged bytes on disk before any name points at them
            for st in staged:
                if st.tmp is None and not st.dest.is_file():
                    raise BlobVanished(f"blob {st.sha256} was collected between staging and commit", st.sha256)
                if st.tmp is None or st.dest.is_file():
                    out.append(False)
                    if st.tmp is not None:
                        st.tmp.unlink(missing_ok=True)
                        st.tmp = None
                    continue
                os.replace(st.tmp, st.dest)  # same filesystem: atomic
                st.tmp = None
                dirs.update(st.dirs)
                out.append(True)
            if dirs:  # the names
                self._syncfs() if self._syncfs is not None else fsync_all(sorted(dirs))
        except BaseException:
            self.discard_staged(staged)
            raise
        return out

    def _make_dirs(self, dest: Path) -> list[Path]:
        """Create the folders of ``dest``; the ones whose entries changed (to sync at commit)."""
        made = []
        for folder in (dest.parent.parent, dest.parent):
            try:
                os.mkdir(folder)
            except FileExistsError:
                continue
            except FileNotFoundError:  # the store's root itself is gone: recreate the chain
                folder.mkdir(parents=True, exist_ok=True)
            made.append(folder.parent)
        return made

    @staticmethod
    def discard_staged(staged: Iterable[Staged]) -> None:
        """Drop staged blobs that will not be committed."""
        for st in staged:
            if st.tmp is not None:
                st.tmp.unlink(missing_ok=True)
                st.tmp = None

    # -- reading -----------------------------------------------------------------------------------
    def open(self, sha256: str) -> BinaryIO:
        return open(self.path(sha256), "rb")

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> BinaryIO:
        fh = open(self.path(sha256), "rb")  # noqa: SIM115 - the caller closes it
        fh.seek(start)
        return fh

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def delete(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)

    def iter_hashes(self) -> Iterator[str]:
        for p in self.root.glob("??/??/*"):
            if p.is_file() and len(p.name) == 64:
                yield p.name

    def stale_temp_files(self, older_than: float = 3600.0) -> list[Path]:
        """Temp files (``.part``) a killed process left behind: in the temp folder and beside blobs."""
        return files_older_than([*self.tmp.glob("*.part"), *self.root.glob("??/??/.*.part")], older_than)

    def temp_file(self) -> tuple[int, Path]:
        """A temp file on the store's filesystem, so ``put_file`` is a rename."""
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        return fd, Path(name)

    # -- the rest of the BlobStore protocol ------------------------------------------------------------
    @contextmanager
    def materialize(self, sha256: str) -> Iterator[Path]:
        """The blob file itself (it never changes; collection leaves referenced blobs alone)."""
        path = self.path(sha256)
        if not path.is_file():
            raise FileNotFoundError(f"blob {sha256} is missing")
        yield path

    def check(self) -> None:
        """The folder is there (a write to it fails loudly anyway)."""
        if not self.root.is_dir():
            from condavault.errors import SettingsError

            raise SettingsError(f"blob store folder {self.root} is missing", code="blob_store_unusable")

    def presigned_url(self, sha256: str, *, filename: str | None = None) -> str | None:
        return None
