"""S3-compatible blob store (AWS S3, MinIO, Ceph RGW, ...): ``<bucket>/<prefix>ab/cd/<sha256>``.

boto3 rather than obstore: its client is thread-safe (the ingest and index threads share one), it signs
presigned GETs for any endpoint, and its multipart calls give :meth:`S3BlobStore.stage` /
:meth:`~S3BlobStore.commit` exactly the protocol's semantics.

Visibility: an object appears under its name only complete (S3 PUT and CompleteMultipartUpload are
atomic), so an existing key is always a whole blob and ``put_*`` of an existing key is a no-op.
Files (uploads, mirror downloads) are staged as a multipart upload -- the slow part, done as each file
comes -- and the batch's :meth:`~S3BlobStore.commit` completes them; bytes (index files) are PUT at commit.
Spooled temp files stay on the local disk of the process only until they are staged.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from condavault.errors import SettingsError
from condavault.storage.local import IO_THREADS, BlobVanished, files_older_than, run_all, stage_and_commit

if TYPE_CHECKING:
    from condavault.config import Settings

PART_SIZE = 64 * 1024 * 1024  # multipart part size (S3: 5 MiB..5 GiB, at most 10,000 parts)
READ_CHUNK = 1024 * 1024
_SHA_KEY = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/([0-9a-f]{64})")


def _is_missing(exc: Exception) -> bool:
    resp = getattr(exc, "response", None) or {}
    code = str(resp.get("Error", {}).get("Code", ""))
    status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"} or status == 404


@dataclass
class S3Staged:
    """A blob staged but not visible under its name yet (:meth:`S3BlobStore.stage`)."""

    sha256: str
    existed: bool
    data: bytes | None = None  # bytes PUT at commit
    upload_id: str | None = None  # or: a multipart upload whose parts are up
    parts: list[dict[str, Any]] = field(default_factory=list)


class _BodyReader(io.RawIOBase):
    """A botocore streaming body as a raw binary file (wrapped in a BufferedReader by callers)."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()


class S3BlobStore:
    """Blobs in a bucket. Collection cannot lock writers on other machines out: it relies on the grace
    period alone (``blob_grace_seconds``; an object's age is its LastModified)."""

    kind = "s3"

    def __init__(
        self,
        bucket: str,
        *,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        presign_seconds: int = 300,
        tmp_dir: Path,
    ) -> None:
        import boto3
        from botocore.config import Config

        if prefix and not prefix.endswith("/"):
            prefix += "/"
        self.bucket = bucket
        self.prefix = prefix
        self.endpoint_url = endpoint_url
        self.presign_seconds = presign_seconds
        config = Config(
            region_name=region,
            connect_timeout=5,
            read_timeout=60,
            retries={"max_attempts": 4, "mode": "standard"},
            max_pool_connections=IO_THREADS * 2,
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            signature_version="s3v4",
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key, region_name=region
        )
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config)
        self.tmp = tmp_dir  # created on first use: a failed start leaves no folder behind

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        if not settings.s3_bucket:
            raise SettingsError("blob_store = 's3' needs s3_bucket (CONDAVAULT_S3_BUCKET)")
        return cls(
            settings.s3_bucket,
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
            access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key,
            presign_seconds=settings.s3_presign_seconds,
            tmp_dir=settings.data_dir / "tmp",
        )

    def key(self, sha256: str) -> str:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        return f"{self.prefix}{sha256[:2]}/{sha256[2:4]}/{sha256}"

    def check(self) -> None:
        """The bucket exists and these credentials may use it (one HEAD), else a one-line SettingsError."""
        where = f"s3 bucket {self.bucket!r}" + (f" at {self.endpoint_url}" if self.endpoint_url else "")
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:  # botocore raises many kinds: name the cause in one line
            if _is_missing(exc):
                reason = "the bucket does not exist"
            else:
                resp = getattr(exc, "response", None) or {}
                code = resp.get("Error", {}).get("Code")
                reason = f"{code}: access denied or bad credentials" if code else str(exc).splitlines()[0]
            raise SettingsError(f"blob store unusable: {where}: {reason}", code="blob_store_unusable") from None

    # -- reading -----------------------------------------------------------------------------------
    def _head(self, sha256: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self.key(sha256)))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def local_path(self, sha256: str) -> Path | None:
        return None

    def size(self, sha256: str) -> int:
        head = self._head(sha256)
        if head is None:
            raise FileNotFoundError(f"blob {sha256} is missing")
        return int(head["ContentLength"])

    def age(self, sha256: str) -> float | None:
        head = self._head(sha256)
        return None if head is None else time.time() - head["LastModified"].timestamp()

    def open(self, sha256: str) -> BinaryIO:
        return self.open_range(sha256)

    def open_range(self, sha256: str, start: int = 0, end: int | None = None) -> BinaryIO:
        """The blob's bytes ``start..end`` (inclusive; None: to the end) as a streaming file object."""
        kw: dict[str, Any] = {}
        if start or end is not None:
            kw["Range"] = f"bytes={start}-{'' if end is None else end}"
        try:
            obj = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256), **kw)
        except Exception as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"blob {sha256} is missing") from None
            raise
        return io.BufferedReader(_BodyReader(obj["Body"]), buffer_size=READ_CHUNK)

    @contextmanager
    def materialize(self, sha256: str) -> Iterator[Path]:
        """Download the blob to a local temp file for the context's duration."""
        fd, tmp = self.temp_file()
        os.close(fd)
        try:
            try:
                self.client.download_file(self.bucket, self.key(sha256), str(tmp))
            except Exception as exc:
                if _is_missing(exc):
                    raise FileNotFoundError(f"blob {sha256} is missing") from None
                raise
            yield tmp
        finally:
            tmp.unlink(missing_ok=True)

    def presigned_url(self, sha256: str, *, filename: str | None = None) -> str | None:
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(sha256)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return str(self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=self.presign_seconds))

    def iter_hashes(self) -> Iterator[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix)
        for page in pages:
            for obj in page.get("Contents", []):
                m = _SHA_KEY.fullmatch(obj["Key"][len(self.prefix) :])
                if m:
                    yield m.group(1)

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))

    # -- writing -----------------------------------------------------------------------------------
    @contextmanager
    def writing(self) -> Iterator[None]:
        yield  # no lock across machines: collection keeps young objects (grace period)

    @contextmanager
    def collecting(self, *, wait: bool = True) -> Iterator[bool]:
        yield True

    def put_file(self, src: Path, sha256: str) -> None:
        self.put_many([(src, sha256)])

    def put_bytes(self, data: bytes, sha256: str) -> None:
        self.put_many([(data, sha256)])

    def put_many(self, items: Iterable[tuple[Path | bytes, str]]) -> list[bool]:
        return stage_and_commit(self, items)

    def stage(self, src: Path | bytes, sha256: str) -> S3Staged:
        """Bytes are kept for the PUT at commit; a file is uploaded as the parts of a multipart upload
        (then its local temp file is removed). Nothing is uploaded when the blob exists."""
        key = self.key(sha256)
        if self.exists(sha256):
            if isinstance(src, Path):
                src.unlink(missing_ok=True)
            return S3Staged(sha256, existed=True)
        if isinstance(src, bytes):
            return S3Staged(sha256, existed=False, data=src)
        upload_id = str(self.client.create_multipart_upload(Bucket=self.bucket, Key=key)["UploadId"])
        st = S3Staged(sha256, existed=False, upload_id=upload_id)
        try:
            with open(src, "rb") as fh:
                number = 1
                while True:
                    chunk = fh.read(PART_SIZE)
                    if not chunk and number > 1:
                        break
                    part = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=chunk
                    )
                    st.parts.append({"ETag": part["ETag"], "PartNumber": number})
                    number += 1
                    if len(chunk) < PART_SIZE:
                        break
        except BaseException:
            self.discard_staged([st])
            raise
        src.unlink(missing_ok=True)
        return st

    def _commit_one(self, st: S3Staged) -> bool:
        key = self.key(st.sha256)
        if st.existed:
            if not self.exists(st.sha256):
                raise BlobVanished(f"blob {st.sha256} was collected between staging and commit", st.sha256)
            return False
        if st.data is not None:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=st.data)
            st.data = None
        elif st.upload_id is not None:
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=st.upload_id, MultipartUpload={"Parts": st.parts}
            )
            st.upload_id = None
        return True

    def commit(self, staged: list[S3Staged]) -> list[bool]:
        """Make the staged blobs visible (a few at a time); each is durable under its name on return."""
        try:
            done: list[bool] = []
            run_all(self._commit_one, [(st,) for st in staged], collect=done)
            return [not st.existed for st in staged]
        except BaseException:
            self.discard_staged(staged)
            raise

    def discard_staged(self, staged: Iterable[S3Staged]) -> None:
        for st in staged:
            st.data = None
            if st.upload_id is not None:
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=self.key(st.sha256), UploadId=st.upload_id
                    )
                except Exception:  # best effort: a bucket lifecycle rule sweeps leftovers
                    pass
                st.upload_id = None

    # -- local temp files --------------------------------------------------------------------------
    def temp_file(self) -> tuple[int, Path]:
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=".part")
        return fd, Path(name)

    def stale_temp_files(self, older_than: float = 3600.0) -> list[Path]:
        return files_older_than(self.tmp.glob("*.part"), older_than) if self.tmp.is_dir() else []
