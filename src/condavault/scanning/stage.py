"""The scanning stage of the ingest path (every way in: upload, active and passive mirror, bundle import).

Hooked into the :class:`~condavault.channels.ingest.Ingestor` (``scanning.plugin.wire``):

* ``visitor``: a :class:`~condavault.scanning.engine.ScanPass` sees every archive member during the
  ingest's own archive walk (one decompression, not two);
* ``checks``: the pass is finished (paths.json, block list); a ``malicious`` verdict holds the file
  (``Ingested.held``: a bundle import that only checks refuses the bundle);
* ``pre_store``: with the channel known, the version diff (install-time code or network/exec capability
  the previous version lacked: ``suspicious``, rule ``version-diff``) and the channel's
  ``quarantine_suspicious`` policy;
* ``on_write``: the verdict row of every stored file, in its record transaction;
* ``on_hold``: held files go to ``quarantined_files`` (their blob is stored; they are never indexed,
  never served), with an audit entry, and their ingest answers :class:`~condavault.errors.Quarantined`.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from condavault.channels.events import RecordsChanged
from condavault.channels.ingest import Ingested
from condavault.channels.models import Channel, Record
from condavault.channels.records import remove_by_keys
from condavault.db.base import utcnow
from condavault.db.session import Database
from condavault.errors import Quarantined
from condavault.packages.archive import Visit
from condavault.scanning.engine import ClamdClient, Finding, RuleSet, Scanner, ScanResult, install_time_keys
from condavault.scanning.models import BlockedHash, QuarantinedFile, ScanChannelPolicy, ScanVerdict

if TYPE_CHECKING:
    from condavault.context import Context

log = logging.getLogger(__name__)
FRESHNESS = 1.0  # seconds between checks of the block list's generation


class BlockList:
    """The blocked sha256s, cached in memory and reloaded when the table changes (count, newest row)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._set: frozenset[str] = frozenset()
        self._gen: tuple[int, Any] | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._checked = 0.0

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < FRESHNESS:
            return
        with self._lock:
            if now - self._checked < FRESHNESS:
                return
            with self.db.session() as s:
                gen = tuple(s.execute(select(func.count(), func.max(BlockedHash.added_at))).one())
                if gen != self._gen:
                    self._set = frozenset(s.scalars(select(BlockedHash.sha256)))
                    self._gen = gen  # type: ignore[assignment]
            self._checked = time.monotonic()

    def __call__(self, shas: set[str]) -> set[str]:
        self._refresh()
        return shas & self._set if self._set else set()


def quarantine_error(filename: str, res: ScanResult) -> Quarantined:
    top = res.top
    rule = top.rule if top else None
    where = f" in {top.path}" if top and top.path else ""
    return Quarantined(
        f"{filename} is quarantined: {res.verdict} (rule {rule}{where})",
        filename=filename,
        verdict=res.verdict,
        rule=rule,
        path=top.path if top else None,
        detail=top.detail if top else None,
    )


class ScanStage:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.enabled = settings.scanning
        self.ruleset = RuleSet(settings.scan_rules_dir, cache_dir=settings.data_dir / "cache")
        clamd = ClamdClient(settings.clamd_socket) if settings.clamd_socket else None
        self.scanner = Scanner(self.ruleset, clamd=clamd, max_file_bytes=settings.scan_max_file_bytes)
        self.blocked = BlockList(ctx.db)

    # -- the ingest hooks ------------------------------------------------------------------------------
    def visitor(self, b: Ingested) -> Visit:
        p = self.scanner.start()
        b.notes["scan_pass"] = p
        return p.visit

    def check(self, b: Ingested) -> None:
        p = b.notes.pop("scan_pass", None)
        if p is None:
            return
        res = p.finish(b.item.received.sha256, self.blocked)
        b.notes["scan"] = res
        if res.verdict == "malicious":
            b.held = quarantine_error(b.item.filename, res)

    def pre_store(self, channel_id: int, live: list[Ingested]) -> None:
        todo = [b for b in live if isinstance(b.notes.get("scan"), ScanResult)]
        if not todo:
            return
        with self.ctx.db.session() as s:
            pol = s.get(ScanChannelPolicy, channel_id)
            strict = pol.quarantine_suspicious if pol is not None else self.ctx.settings.scan_quarantine_suspicious
            for b in todo:
                res: ScanResult = b.notes["scan"]
                self._version_diff(s, channel_id, b, res)
                if b.held is None and (res.verdict == "malicious" or (strict and res.verdict == "suspicious")):
                    b.held = quarantine_error(b.item.filename, res)

    def _version_diff(self, s: Session, channel_id: int, b: Ingested, res: ScanResult) -> None:
        """Flag a build whose install-time code (or its network/exec capability) is new against the
        newest other build of the same name in the channel's subdir that has a verdict."""
        gained_keys = install_time_keys(res.properties)
        if not gained_keys:
            return
        name = str(b.record.get("name", ""))
        row = s.execute(
            select(Record.filename, ScanVerdict.properties)
            .join(ScanVerdict, ScanVerdict.sha256 == Record.sha256)
            .where(
                Record.channel_id == channel_id,
                Record.subdir == b.subdir,
                Record.name == name,
                Record.filename != b.item.filename,
                Record.removed.is_(False),
            )
            .order_by(Record.timestamp.desc().nulls_last(), Record.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return
        try:
            before = install_time_keys(json.loads(row[1]))
        except ValueError:
            return
        gained = sorted(gained_keys - before)
        if gained:
            res.findings.append(
                Finding("version-diff", "suspicious", None, f"gains {', '.join(gained)} that {row[0]} lacked")
            )

    def on_write(self, s: Session, group: list[Ingested]) -> None:
        put_verdicts(
            s, [(b.item.received.sha256, b.notes["scan"]) for b in group if isinstance(b.notes.get("scan"), ScanResult)]
        )

    def on_hold(self, s: Session, channel_id: int, held: list[Ingested], actor: str | None) -> None:
        channel = s.get(Channel, channel_id)
        for b in held:
            res = b.notes.get("scan")
            if not isinstance(res, ScanResult):
                continue
            sha = b.item.received.sha256
            put_verdict(s, sha, res)
            meta = b.meta
            extra = {
                "about": meta.about if meta else None,
                "run_exports": meta.run_exports if meta else None,
                "paths_summary": meta.paths_summary if meta else None,
                "security": meta.security if meta else None,
            }
            d = res.to_dict()
            row = s.scalar(
                select(QuarantinedFile).where(
                    QuarantinedFile.channel_id == channel_id,
                    QuarantinedFile.subdir == b.subdir,
                    QuarantinedFile.filename == b.item.filename,
                )
            )
            if row is None:
                row = QuarantinedFile(channel_id=channel_id, subdir=b.subdir, filename=b.item.filename)
                s.add(row)
            row.sha256, row.size = sha, b.item.received.size
            row.record, row.extra = json.dumps(b.record, sort_keys=True), json.dumps(extra, sort_keys=True)
            row.verdict, row.rule, row.path = d["verdict"], d["rule"], d["path"]
            row.findings, row.ruleset = json.dumps(d["findings"]), res.ruleset
            row.source_url, row.uploaded_by, row.state = b.item.source_url, actor, "quarantined"
            row.created_at = utcnow()
            if channel is not None:
                self._unlist_metadata_only(s, channel, b)
            target = f"{channel.name if channel else channel_id}/{b.subdir}/{b.item.filename}"
            self.ctx.record_change(
                SimpleNamespace(username=actor),
                "quarantine:hold",
                target,
                None,
                {"verdict": d["verdict"], "rule": d["rule"], "path": d["path"], "sha256": sha},
                session=s,
            )
            log.warning("file quarantined", extra={"file": target, "verdict": d["verdict"], "rule": d["rule"]})

    def _unlist_metadata_only(self, s: Session, channel: Channel, b: Ingested) -> None:
        """A passive mirror listed the file before its bytes were known: a quarantined one leaves the index."""
        rec = s.scalar(
            select(Record).where(
                Record.channel_id == channel.id,
                Record.subdir == b.subdir,
                Record.filename == b.item.filename,
                Record.has_blob.is_(False),
            )
        )
        if rec is not None:
            remove_by_keys(s, channel, [(b.subdir, b.item.filename)])
            self.ctx.events.record(s, RecordsChanged(channel.id, (b.subdir,), index=True))


def put_verdict(s: Session, sha256: str, res: ScanResult) -> None:
    """Insert or update the verdict of a blob (an upsert: concurrent ingests of the same bytes agree)."""
    put_verdicts(s, [(sha256, res)])


def put_verdicts(s: Session, verdicts: list[tuple[str, ScanResult]]) -> None:
    """:func:`put_verdict` for many blobs: multi-row upserts (the last verdict of a sha256 listed twice wins)."""
    rows: dict[str, dict[str, Any]] = {}
    now = utcnow()
    for sha256, res in verdicts:
        d = res.to_dict()
        rows[sha256] = {
            "sha256": sha256,
            "verdict": d["verdict"],
            "rule": d["rule"],
            "path": d["path"],
            "ruleset": res.ruleset,
            "properties": json.dumps(res.properties, sort_keys=True),
            "findings": json.dumps(d["findings"]),
            "scanned_at": now,
        }
    if not rows:
        return
    ins = (postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert)(ScanVerdict)
    values = [rows[k] for k in sorted(rows)]  # sorted: concurrent batches lock rows in one order
    # executemany: SQLAlchemy sends it as multi-row statements ("insertmanyvalues"), one cached compile
    s.execute(
        ins.on_conflict_do_update(
            index_elements=["sha256"], set_={k: getattr(ins.excluded, k) for k in values[0] if k != "sha256"}
        ),
        values,
    )
