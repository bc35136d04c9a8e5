"""Fetch advisory sources: http(s) URLs (JSON, zip or OSV-style zip; ETag / Last-Modified), local
directories and zip files (the air-gap path), uploads.

A URL source is downloaded to ``<data_dir>/vulns/cache/<sha256(url)>`` with the validators of the last
download; a ``304`` reuses the cached file. Each source's records are then stored as that source's
versions (``catalog.store_records``) and only the advisories they touch are re-merged and re-matched
(``catalog.remerge`` + ``services.match_advisories``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.db.base import utcnow
from condavault.errors import InvalidRequest, UpstreamError
from condavault.vulns.models import VulnSource

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]  # (phase, done, total)


@dataclass
class Fetched:
    location: str
    path: Path | None
    status: str  # downloaded | not-modified | local
    etag: str | None = None
    last_modified: str | None = None
    name: str | None = None  # the source's name when it is not its location (an upload: "upload:<name>")

    @property
    def label(self) -> str:
        """The source's key in ``vuln_sources``: its URL or server path, or the name of an upload."""
        return self.name or self.location


@dataclass
class SyncReport:
    """What a sync did. ``records*`` count per-source records (each source's own version of a record);
    ``advisories`` the merged advisories recomputed, of which ``created`` are new, ``updated`` changed and
    ``removed`` merged into another (their ids became aliases); ``names`` the name mapping entries read."""

    sources: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0
    records_new: int = 0
    records_changed: int = 0
    records_unchanged: int = 0
    names: int = 0
    advisories: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    records_checked: int = 0
    links_added: int = 0
    links_removed: int = 0
    links_updated: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


def _suffix(url: str, content_type: str) -> str:
    path = url.split("?", 1)[0].lower()
    for suffix in (".zip", ".json", ".yaml", ".yml"):
        if path.endswith(suffix):
            return suffix
    if "zip" in content_type:
        return ".zip"
    return ".json"


def fetch_url(
    session: Session, url: str, cache_dir: Path, *, client: httpx.Client | None = None, timeout: float = 120.0
) -> Fetched:
    """Download ``url`` unless the stored ETag / Last-Modified say it did not change."""
    row = session.scalar(select(VulnSource).where(VulnSource.location == url))
    headers: dict[str, str] = {}
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = hashlib.sha256(url.encode()).hexdigest()[:32]
    cached = next(iter(sorted(cache_dir.glob(f"{stem}.*"))), None)
    if row is not None and cached is not None:
        if row.etag:
            headers["If-None-Match"] = row.etag
        if row.last_modified:
            headers["If-Modified-Since"] = row.last_modified
    own = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        with http.stream("GET", url, headers=headers) as resp:
            if resp.status_code == 304 and cached is not None:
                return Fetched(
                    url, cached, "not-modified", row.etag if row else None, row.last_modified if row else None
                )
            if resp.status_code >= 400:
                raise UpstreamError(f"{url}: HTTP {resp.status_code}", code="vuln_source_failed", url=url)
            suffix = _suffix(url, resp.headers.get("content-type", ""))
            fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".part")
            with os.fdopen(fd, "wb") as fh:
                for chunk in resp.iter_bytes(1024 * 1024):
                    fh.write(chunk)
            for old in cache_dir.glob(f"{stem}.*"):
                if not old.name.endswith(".part"):
                    old.unlink(missing_ok=True)
            target = cache_dir / f"{stem}{suffix}"
            os.replace(tmp, target)
            return Fetched(url, target, "downloaded", resp.headers.get("etag"), resp.headers.get("last-modified"))
    except httpx.HTTPError as exc:
        raise UpstreamError(f"{url}: {exc}", code="vuln_source_failed", url=url) from exc
    finally:
        if own:
            http.close()


def resolve_local(location: str, name: str | None = None) -> Fetched:
    path = Path(location.removeprefix("file://")).expanduser()
    if not path.exists():
        raise InvalidRequest(f"vulnerability source {location!r} does not exist", code="vuln_source_missing")
    return Fetched(location, path, "local", name=name)


def file_hash(path: Path) -> str:
    """A content hash of a file or every file below a directory (to skip unchanged sources quickly)."""
    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def remember(session: Session, f: Fetched, records: int, names: int, status: str) -> None:
    """Keep a source's validators, content hash and last outcome (its row exists: ``catalog.source_pk``)."""
    row = session.scalar(select(VulnSource).where(VulnSource.location == f.label[:1000]))
    if row is None:
        row = VulnSource(location=f.label[:1000], last_status="", advisories=0, names=0)
        session.add(row)
    if f.status == "downloaded":
        row.etag, row.last_modified = f.etag, f.last_modified
    row.last_run = utcnow()
    row.last_status = status
    row.advisories = records
    row.names = names
    if f.path is not None and f.path.exists():
        row.content_hash = file_hash(f.path)
