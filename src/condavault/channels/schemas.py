"""Pydantic I/O of the channels API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from condavault.channels.models import Channel, Record


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    privacy: str = "public"
    description: str = ""


class ChannelUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    privacy: str | None = None
    description: str | None = None


class ChannelOut(BaseModel):
    name: str
    privacy: str
    description: str
    created_at: datetime
    stats: dict[str, Any] | None = None

    @classmethod
    def of(cls, c: Channel, stats: dict[str, Any] | None = None) -> ChannelOut:
        return cls(name=c.name, privacy=c.privacy, description=c.description, created_at=c.created_at, stats=stats)


class FileOut(BaseModel):
    subdir: str
    filename: str
    name: str
    version: str
    build: str
    build_number: int
    sha256: str | None
    md5: str | None
    size: int | None
    indexed_timestamp: int
    has_blob: bool
    removed: bool
    license: str | None
    uploaded_by: str | None
    record: dict[str, Any] | None = None
    signature: dict[str, Any] | None = None  # with full=true: carried signatures' outcome (docs/signing.md)

    @classmethod
    def of(cls, r: Record, full: bool = False) -> FileOut:
        return cls(
            subdir=r.subdir,
            filename=r.filename,
            name=r.name,
            version=r.version,
            build=r.build,
            build_number=r.build_number,
            sha256=r.sha256,
            md5=r.md5,
            size=r.size,
            indexed_timestamp=r.indexed_timestamp,
            has_blob=r.has_blob,
            removed=r.removed,
            license=r.license,
            uploaded_by=r.uploaded_by,
            record=json.loads(r.fragment) if full else None,
        )


class FilesRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    files: list[str] = Field(description="'subdir/filename' or bare filenames")


class CopyRequest(FilesRequest):
    to: str
    move: bool = False
    force: bool = False


class UploadOut(BaseModel):
    channel: str
    subdir: str
    filename: str
    sha256: str
    md5: str
    size: int
    status: str
    indexed: bool


class BatchOut(BaseModel):
    id: str
    channel: str
    state: str = Field(description="open | committed | expired (open, but idle past its time)")
    subdirs: list[str]
    counts: dict[str, int]
    expires_at: float = Field(description="unix seconds; every request to the batch moves it on")
    created_by: str | None
    created_at: datetime
    committed_at: datetime | None = None


class BatchFileOut(BaseModel):
    filename: str
    status: str = Field(description="created | replaced | unchanged | skipped | failed")
    channel: str | None = None
    subdir: str | None = None
    sha256: str | None = None
    md5: str | None = None
    size: int | None = None
    indexed: bool | None = None
    error: dict[str, Any] | None = None


class BatchFilesOut(BaseModel):
    files: list[BatchFileOut]
    batch: BatchOut


class BatchCommitOut(BatchOut):
    indexed: bool


class DependantOut(BaseModel):
    channel: str
    name: str
    version: str  # of the newest build that depends on the package
    spec: str  # that build's ``depends`` entry naming the package


class DependantsOut(BaseModel):
    package: str
    dependants: list[DependantOut]
    total: int  # packages; at most COUNT_CAP (1,000)
    total_capped: bool  # there are more than ``total``
    limit: int
    offset: int
