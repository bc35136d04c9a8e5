"""What points at blobs, and collecting the blobs nothing points at -- safely beside a running server.

A blob is deleted only when (1) it is older than the grace period (``blob_grace_seconds``: writers
refresh the mtime of blobs they rely on, and superseded index files stay downloadable that long),
(2) the collector holds the store's collection lock exclusively (the indexer holds it shared from
writing index blobs to pointing at them), and (3) :meth:`BlobGuard.delete_if_unreferenced` finds,
under the per-blob database lock, no row of :data:`BLOB_COLUMNS` and no live ingest pin pointing at it
(an upload of the same bytes pins them before it relies on the file).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from sqlalchemy import select

from condavault.channels.blobs import BLOB_COLUMNS, BlobGuard
from condavault.db.session import Database
from condavault.storage.interfaces import BlobStore
from condavault.storage.local import files_older_than

BATCH = 500


def referenced(db: Database, hashes: Iterable[str]) -> set[str]:
    """The subset of ``hashes`` some row points at (a fresh read)."""
    wanted = list(hashes)
    out: set[str] = set()
    with db.session() as s:
        for i in range(0, len(wanted), BATCH):
            chunk = wanted[i : i + BATCH]
            for column in BLOB_COLUMNS:
                out.update(s.scalars(select(column).where(column.in_(chunk)).distinct()))
    return out


def all_referenced(db: Database) -> set[str]:
    out: set[str] = set()
    with db.session() as s:
        for column in BLOB_COLUMNS:
            out.update(h for h in s.scalars(select(column).distinct()) if h)
    return out


def collect(
    db: Database,
    guard: BlobGuard,
    candidates: list[str],
    grace: float,
    advance: Callable[[int], None] | None = None,
) -> tuple[int, int]:
    """Delete the ``candidates`` (blobs seen unreferenced) that are still unreferenced and older than
    ``grace`` seconds, a batch at a time under the collection lock. Returns (deleted, kept young)."""
    blobs = guard.blobs
    deleted = young = 0
    for i in range(0, len(candidates), BATCH):
        chunk = candidates[i : i + BATCH]
        with blobs.collecting():
            old = []
            for h in chunk:
                age = blobs.age(h)
                if age is None:
                    continue
                if age < grace:
                    young += 1
                else:
                    old.append(h)
            for h in set(old) - referenced(db, old):  # one read for the batch; each delete checks again
                deleted += guard.delete_if_unreferenced(h)
        if advance is not None:
            advance(len(chunk))
    return deleted, young


def temp_folders(data_dir: Path) -> list[tuple[Path, str]]:
    """Folders (and name patterns) outside the blob store where temp files of killed writes stay."""
    return [
        (data_dir / "vulns" / "uploads", "*"),
        (data_dir / "vulns" / "cache", "*.part"),
        (data_dir / "cache", ".scan-prefilter-*"),  # compiled scan prefilters being written (scanning/prefilter.py)
    ]


def sweep_temp_files(
    blobs: BlobStore, older_than: float, extra: Iterable[tuple[Path, str]] = (), *, dry_run: bool = False
) -> int:
    """Remove temp files older than ``older_than`` seconds that killed or failed writes left behind:
    upload spools and staged blobs (``*.part``), CVE feed uploads and downloads. Younger ones may be in
    flight. Returns how many there were."""
    removed = 0
    paths = list(blobs.stale_temp_files(older_than))
    for folder, pattern in extra:
        paths.extend(_old_files(folder, pattern, older_than))
    if dry_run:
        return len(paths)
    for path in paths:
        try:
            path.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def _old_files(folder: Path, pattern: str, older_than: float) -> list[Path]:
    return files_older_than(folder.glob(pattern), older_than) if folder.is_dir() else []
