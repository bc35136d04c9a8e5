"""Memory stays bounded (issue 11, finding 7): the audit queue when the database cannot keep up, and
re-patching a large subdir."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import func, select

from condavault.audit.models import ChangeEvent, DownloadEvent
from condavault.audit.recorder import AuditRecorder
from condavault.channels import records
from condavault.channels.models import Record
from condavault.channels.services import create_channel
from condavault.db import migrate
from condavault.db.session import Database
from tests.support.server import database_url, drop_pg_database


def _download(i: int) -> tuple[object, ...]:
    request = SimpleNamespace(method="GET", client=SimpleNamespace(host="127.0.0.1"), headers={"user-agent": "t"})
    identity = SimpleNamespace(username=None, user_id=None, token_id=None)
    channel = SimpleNamespace(name="bounded")
    target = SimpleNamespace(filename=f"p-{i}-0.conda", sha256="0" * 64, size=1)
    return request, identity, channel, "noarch", target


def test_the_audit_queue_is_bounded_and_says_what_it_dropped(tmp_path: Path, db_backend: str) -> None:
    url, pg = database_url(db_backend, tmp_path)
    migrate.upgrade(url)
    db = Database(url)
    try:
        rec = AuditRecorder(db, max_queued=1000)  # the background writer is not started: nothing drains
        for i in range(1500):
            rec.on_download(*_download(i))  # type: ignore[arg-type]
        assert rec.pending == 1000 and rec.dropped == 500
        assert rec.flush() == 1000 and rec.pending == 0
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(DownloadEvent)) == 1000
            (note,) = s.scalars(select(ChangeEvent).where(ChangeEvent.action == "audit:overflow"))
        assert json.loads(note.after or "{}") == {"downloads_not_recorded": 500}
        rec.on_download(*_download(0))  # room again
        assert rec.pending == 1
    finally:
        db.dispose()
        if pg:
            drop_pg_database(pg)


def test_repatching_a_large_subdir_reads_it_in_bounded_batches(tmp_path: Path, db_backend: str) -> None:
    """8,000 records re-patched: every one is right, and the peak of Python allocations stays far below
    what holding the subdir's rows would take (about 22 MB for these; 56 MB for 20,000)."""
    url, pg = database_url(db_backend, tmp_path)
    migrate.upgrade(url)
    db = Database(url)
    n = 8_000
    try:
        with db.write_session() as s:
            ch = create_channel(s, "big")
            pkgs = {
                f"pkg{i}-1.0-0.tar.bz2": {
                    "name": f"pkg{i}",
                    "version": "1.0",
                    "build": "0",
                    "build_number": 0,
                    "depends": ["python >=3.8", "numpy"],
                    "license": "BSD-3-Clause",
                    "sha256": f"{i:064x}",
                    "size": 1000 + i,
                }
                for i in range(n)
            }
            records.import_repodata(s, ch, "linux-64", {"packages": pkgs})
            cid = ch.id
        patch = {
            "patch_instructions_version": 1,
            "remove": [],
            "packages": {f"pkg{i}-1.0-0.tar.bz2": {"depends": ["python >=3.9"]} for i in range(0, n, 2)},
        }
        tracemalloc.start()
        try:
            with db.write_session() as s:
                changed = records.apply_patches(s, cid, "linux-64", patch)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert changed == n // 2
        with db.session() as s:
            frag0 = json.loads(s.scalar(select(Record.fragment).where(Record.filename == "pkg0-1.0-0.tar.bz2")))
            frag1 = json.loads(s.scalar(select(Record.fragment).where(Record.filename == "pkg1-1.0-0.tar.bz2")))
        assert frag0["depends"] == ["python >=3.9"] and frag1["depends"] == ["python >=3.8", "numpy"]
        # the patch document itself is ~0.4 MB; the batched read peaks near 3 MB whatever the subdir's size
        assert peak < 10 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
    finally:
        db.dispose()
        if pg:
            drop_pg_database(pg)
