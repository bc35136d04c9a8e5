"""One contract for every blob store: the same tests against the local folder and an S3 bucket (moto's
standalone server, a real S3 API over HTTP)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.support.s3_server import S3Server

from condavault.config import Settings
from condavault.errors import SettingsError
from condavault.storage import BlobStore, open_blob_store
from condavault.storage import s3 as s3_module
from condavault.storage.local import BlobVanished


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _temp(store: BlobStore, data: bytes) -> Path:
    fd, path = store.temp_file()
    with open(fd, "wb") as fh:
        fh.write(data)
    return path


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield open_blob_store(Settings(data_dir=tmp_path / "data"), check=True)
        return
    s3: S3Server = request.getfixturevalue("s3")
    settings = Settings(data_dir=tmp_path / "data", **s3.settings(s3.new_bucket(), s3_prefix="cv/blobs"))
    yield open_blob_store(settings, check=True)


def _pending_uploads(store: BlobStore) -> list[object]:
    if store.kind != "s3":
        return []
    st = store  # an S3BlobStore
    return list(st.client.list_multipart_uploads(Bucket=st.bucket).get("Uploads", []))  # type: ignore[attr-defined]


def test_put_read_and_delete(store: BlobStore) -> None:
    spooled = _temp(store, b"spooled bytes")
    assert store.put_many([(b"one", _sha(b"one")), (spooled, _sha(b"spooled bytes"))]) == [True, True]
    assert not spooled.exists()  # the temp file is consumed
    assert store.exists(_sha(b"one")) and store.exists(_sha(b"spooled bytes"))
    with store.open(_sha(b"spooled bytes")) as fh:
        assert fh.read() == b"spooled bytes"
    with store.open_range(_sha(b"spooled bytes"), 3, 7) as fh:
        assert fh.read(5) == b"oled "
    assert store.size(_sha(b"one")) == 3
    age = store.age(_sha(b"one"))
    assert age is not None and -5 < age < 60
    with store.materialize(_sha(b"one")) as path:
        assert path.read_bytes() == b"one"
    assert sorted(store.iter_hashes()) == sorted([_sha(b"one"), _sha(b"spooled bytes")])
    store.delete(_sha(b"one"))
    assert not store.exists(_sha(b"one"))
    assert store.age(_sha(b"one")) is None
    assert list(store.iter_hashes()) == [_sha(b"spooled bytes")]


def test_missing_blob_is_file_not_found(store: BlobStore) -> None:
    sha = _sha(b"never stored")
    assert not store.exists(sha)
    with pytest.raises(FileNotFoundError):
        store.open(sha)
    with pytest.raises(FileNotFoundError):
        store.size(sha)
    with pytest.raises(FileNotFoundError), store.materialize(sha):
        pass
    store.delete(sha)  # deleting what is not there is no error


def test_put_of_an_existing_blob_is_a_no_op(store: BlobStore) -> None:
    sha = _sha(b"same")
    assert store.put_many([(b"same", sha)]) == [True]
    again = _temp(store, b"same")
    assert store.put_many([(again, sha), (b"same", sha)]) == [False, False]
    assert not again.exists()
    with store.open(sha) as fh:
        assert fh.read() == b"same"


def test_staged_blobs_are_invisible_until_commit(store: BlobStore) -> None:
    a, b = b"staged a" * 1000, b"staged b"
    src = _temp(store, a)
    staged = [store.stage(src, _sha(a)), store.stage(b, _sha(b))]
    assert not store.exists(_sha(a)) and not store.exists(_sha(b))
    assert list(store.iter_hashes()) == []
    assert store.commit(staged) == [True, True]
    with store.open(_sha(a)) as fh:
        assert fh.read() == a
    assert store.exists(_sha(b))
    assert _pending_uploads(store) == []


def test_discarded_stages_leave_nothing(store: BlobStore) -> None:
    data = b"to be dropped" * 100
    staged = [store.stage(_temp(store, data), _sha(data)), store.stage(b"dropped too", _sha(b"dropped too"))]
    store.discard_staged(staged)
    assert list(store.iter_hashes()) == []
    assert _pending_uploads(store) == []
    assert store.commit([]) == []


def test_a_blob_collected_between_stage_and_commit_fails_the_commit(store: BlobStore) -> None:
    sha = _sha(b"present")
    store.put_bytes(b"present", sha)
    staged = store.stage(b"present", sha)  # found present: relied on
    store.delete(sha)
    with pytest.raises(BlobVanished):
        store.commit([staged])


def test_big_file_in_parts(store: BlobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_module, "PART_SIZE", 5 * 1024 * 1024)  # S3's smallest part: 3 parts here
    data = os.urandom(11 * 1024 * 1024 + 17)
    store.put_file(_temp(store, data), _sha(data))
    assert store.size(_sha(data)) == len(data)
    with store.materialize(_sha(data)) as path:
        assert hashlib.sha256(path.read_bytes()).hexdigest() == _sha(data)
    with store.open_range(_sha(data), len(data) - 10) as fh:
        assert fh.read(10) == data[-10:]


def test_presigned_url_serves_the_bytes(store: BlobStore) -> None:
    sha = _sha(b"presigned")
    store.put_bytes(b"presigned", sha)
    url = store.presigned_url(sha, filename="x-1.0-0.conda")
    if store.kind == "local":
        assert url is None
        return
    assert url is not None and "X-Amz-Signature" in url
    r = httpx.get(url)
    assert r.status_code == 200 and r.content == b"presigned"
    assert 'filename="x-1.0-0.conda"' in r.headers["content-disposition"]
    assert "X-Amz-Expires=300" in url  # s3_presign_seconds (moto does not check signatures: AWS, MinIO do)


def test_listing_pages_through_more_than_a_thousand(store: BlobStore) -> None:
    items: list[tuple[Path | bytes, str]] = [(str(i).encode(), _sha(str(i).encode())) for i in range(1003)]
    store.put_many(items)
    assert sorted(store.iter_hashes()) == sorted(sha for _, sha in items)


def test_s3_listing_ignores_other_keys(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.new_bucket()
    store = open_blob_store(Settings(data_dir=tmp_path, **s3.settings(bucket, s3_prefix="mine")), check=True)
    store.put_bytes(b"x", _sha(b"x"))
    s3.client().put_object(Bucket=bucket, Key="other/ab/cd/" + _sha(b"y"), Body=b"y")
    s3.client().put_object(Bucket=bucket, Key="mine/notes.txt", Body=b"z")
    assert list(store.iter_hashes()) == [_sha(b"x")]
    assert f"mine/{_sha(b'x')[:2]}/{_sha(b'x')[2:4]}/{_sha(b'x')}" in s3.keys(bucket)


def test_s3_check_names_the_problem(s3: S3Server, tmp_path: Path) -> None:
    missing = Settings(data_dir=tmp_path, **s3.settings("no-such-bucket-here"))
    with pytest.raises(SettingsError, match=r"no-such-bucket-here.*does not exist"):
        open_blob_store(missing, check=True)
    from tests.support.server import free_port

    down = Settings(data_dir=tmp_path, **{**s3.settings("b"), "s3_endpoint_url": f"http://127.0.0.1:{free_port()}"})
    with pytest.raises(SettingsError, match="blob store unusable"):
        open_blob_store(down, check=True)
    with pytest.raises(ValueError, match="s3_bucket"):
        Settings(data_dir=tmp_path, blob_store="s3")
    with pytest.raises(ValueError):
        Settings(data_dir=tmp_path, blob_store="ftp")  # type: ignore[arg-type]
