"""The local blob store's batched write: new or existing per item, temp files consumed, nothing half-written."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from condavault.storage.local import LocalBlobStore


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _temp(store: LocalBlobStore, data: bytes) -> Path:
    fd, path = store.temp_file()
    with open(fd, "wb") as fh:
        fh.write(data)
    return path


def _leftovers(store: LocalBlobStore) -> list[Path]:
    return [p for p in store.root.rglob("*") if p.is_file() and len(p.name) != 64]


@pytest.mark.parametrize("sync", ["syncfs", "fsync"])
def test_put_many_stores_bytes_and_temp_files_once(tmp_path: Path, sync: str) -> None:
    store = LocalBlobStore(tmp_path / "blobs", sync=sync)
    store.put_bytes(b"old", _sha(b"old"))
    spooled = _temp(store, b"spooled")
    again = _temp(store, b"old")
    items = [(b"one", _sha(b"one")), (spooled, _sha(b"spooled")), (b"one", _sha(b"one")), (again, _sha(b"old"))]
    assert store.put_many(items) == [True, True, False, False]
    for data in (b"one", b"spooled", b"old"):
        assert store.path(_sha(data)).read_bytes() == data
        assert store.path(_sha(data)).stat().st_mode & 0o777 == 0o644
    assert not spooled.exists() and not again.exists()
    assert _leftovers(store) == []
    assert sorted(store.iter_hashes()) == sorted(_sha(d) for d in (b"one", b"spooled", b"old"))


@pytest.mark.parametrize("sync", ["syncfs", "fsync"])
def test_put_many_failing_leaves_no_temp_file(tmp_path: Path, sync: str) -> None:
    store = LocalBlobStore(tmp_path / "blobs", sync=sync)
    spooled = _temp(store, b"spooled")
    gone = tmp_path / "missing.part"  # a temp file that vanished: the batch fails
    items = [(b"a" * 10, _sha(b"a" * 10)), (spooled, _sha(b"spooled")), (gone, _sha(b"x")), (b"b", _sha(b"b"))]
    with pytest.raises(FileNotFoundError):
        store.put_many(items)
    assert _leftovers(store) == []
    assert list(store.iter_hashes()) == []  # no name points at anything: the barrier comes first


def test_stale_temp_files_are_found_for_check_repair(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    data = b"blob"
    store.put_bytes(data, hashlib.sha256(data).hexdigest())
    blob_dir = store.path(hashlib.sha256(data).hexdigest()).parent
    old_beside, old_tmp, fresh = blob_dir / ".abc.part", store.tmp / "xyz.part", blob_dir / ".new.part"
    for p in (old_beside, old_tmp, fresh):
        p.write_bytes(b"half")
    for p in (old_beside, old_tmp):
        os.utime(p, (time.time() - 7200, time.time() - 7200))
    assert sorted(store.stale_temp_files()) == sorted([old_beside, old_tmp])  # a write in progress is not
    assert list(store.iter_hashes()) == [hashlib.sha256(data).hexdigest()]


def test_syncfs_barrier_comes_before_any_name_and_after_the_last(tmp_path: Path) -> None:
    """With syncfs, staging writes without a sync; commit syncs once before the first rename (no blob
    name yet, every temp file complete) and once after the last (every name there)."""
    store = LocalBlobStore(tmp_path / "blobs", sync="syncfs")
    assert store._syncfs is not None  # Linux: the test machine has syncfs
    real = store._syncfs
    seen: list[tuple[int, int]] = []

    def recording() -> None:
        real()  # the real system call, so its error handling runs too
        seen.append((len(list(store.iter_hashes())), len(_leftovers(store))))

    store._syncfs = recording
    items = [(bytes([i]) * 100, _sha(bytes([i]) * 100)) for i in range(20)]
    staged = [store.stage(d, sha) for d, sha in items]
    assert seen == []  # staging alone syncs nothing
    assert store.commit(staged) == [True] * 20
    assert seen == [(0, 20), (20, 0)]
    store.commit([store.stage(items[0][0], items[0][1])])  # an existing blob: nothing to sync
    assert seen == [(0, 20), (20, 0)]


def test_fsync_mode_syncs_each_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path / "blobs", sync="fsync")
    assert store._syncfs is None
    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real(fd))[1])
    store.put_many([(b"x" * 10, _sha(b"x" * 10))])
    assert len(calls) == 1 + 3  # the file, then its folder, the folder above (both new) and the root
