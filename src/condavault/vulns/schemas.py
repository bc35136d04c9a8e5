"""Pydantic request bodies of the vulnerability API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class FileRef(BaseModel):
    channel: str
    subdir: str
    filename: str


class CurateRequest(BaseModel):
    """One curation: per link (``link_ids`` / ``files``) or per package x version range (a rule)."""

    status: Literal["reported", "active", "mitigated", "cleared", "disputed"]
    reason: str = Field("", description="why (kept in the curation history and the audit log)")
    link_ids: list[int] = Field(default_factory=list)
    files: list[FileRef] = Field(default_factory=list)
    package: str | None = Field(None, description="conda package name: curate every matching build (a rule)")
    versions: str = Field("*", description="conda version range of the rule, e.g. '>=1.2,<1.3' or '1.2.11'")


class BulkCurateItem(CurateRequest):
    advisory: str


class BulkCurateRequest(BaseModel):
    items: list[BulkCurateItem]


class SyncRequest(BaseModel):
    sources: list[str] = Field(
        default_factory=list,
        description="URLs (JSON, zip, OSV zip) or server-side paths (folder, zip); empty: the configured sources",
    )
    wait: bool = Field(True, description="answer once the sync is done (else poll /api/cves/sync/jobs/{id})")


class CheckEnvRequest(BaseModel):
    content: str = Field(..., description="environment.yml, conda-lock/pixi lock file, or a spec list")
    kind: Literal["auto", "environment", "specs", "conda-lock", "pixi-lock", "explicit"] = "auto"
    channels: list[str] = Field(default_factory=list, description="channels of this server (default: the file's)")
    platform: str = Field("linux-64", description="target subdir for the solve")
    threshold: float | None = Field(None, description="score above which a package fails (default from settings)")
    format: Literal["json", "cyclonedx"] = "json"
