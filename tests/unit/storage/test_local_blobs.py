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


def test_put_many_stores_bytes_and_temp_files_once(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
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


def test_put_many_failing_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
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
