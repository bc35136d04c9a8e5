"""``condavault bundle import``: verify a bundle whole, then publish it atomically.

1. **Open** (``manifest.open_bundle``): the signature against the trusted keys, then the folder against
   the manifest (exactly the listed files, regular, of their sizes; no symlink, no path leaving it). A
   ``.tar``/``.tar.gz`` is unpacked first (``unpack``), member by member against the signed manifest.
2. **Decide**: a bundle imported before is a no-op; one older than the last bundle of its origin applied
   to a target is a replay (refused); an incremental bundle whose base watermark is not the target's
   current one is refused, naming the bundle it needs.
3. **Verify** every file's sha256 (and, for packages, the archive as an upload is checked:
   ``Ingestor.check``) -- before anything is stored. Progress goes to a journal
   (``<data-dir>/bundles/journal/<bundle id>.jsonl``), so an import killed here resumes without reading
   the verified files again.
4. **Store** the package blobs through the blob store (pinned; a blob already present is not written
   again: deduplicated by sha256, and skipped on resume).
5. **Publish** each channel's records, patches and removals in one transaction with the bundle's
   bookkeeping, then ask for an index run; vulnerability data is stored, merged and matched as an online
   sync does (``airgap.vulns``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.airgap import scanning as scanning_bundle
from condavault.airgap import vulns as vulns_bundle
from condavault.airgap.bundle_data import ChannelPlan, parse_targets
from condavault.airgap.manifest import (
    MANIFEST,
    FileEntry,
    Opened,
    is_part_dir,
    open_bundle,
    open_parts,
    part_dirs_in,
    rejected,
    replay_error,
)
from condavault.airgap.models import BundleChannelState, BundleImport
from condavault.airgap.unpack import is_archive, unpack
from condavault.airgap.verifying import Journal, WriteAhead, hash_file
from condavault.channels import records
from condavault.channels.blobs import BlobGuard
from condavault.channels.events import ChannelChanged, RecordsChanged
from condavault.channels.ingest import IngestItem
from condavault.channels.models import Record
from condavault.channels.services import create_channel, find_channel
from condavault.context import Context
from condavault.db.base import utcnow
from condavault.errors import Busy, CondavaultError, Conflict
from condavault.jobs.holders import new_holder
from condavault.packages.spool import Received
from condavault.signing.carry import TrustEntry
from condavault.signing.carry import save as save_trust
from condavault.signing.keys import trusted_keys

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
STORE_BATCH = 2048
STORE_BATCH_BYTES = 512 * 1024 * 1024
HASH_THREADS = 4


@dataclass
class ImportReport:
    bundle_id: str
    status: str  # imported | already-imported | dry-run
    parent_id: str | None = None
    origin_key: str = ""
    files: int = 0
    bytes: int = 0
    records: int = 0
    removed: int = 0
    disk_needed: int = 0
    disk_free: int = 0
    resumed_files: int = 0
    verified_files: int = 0
    stored_blobs: int = 0
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    vulns: dict[str, Any] | None = None
    scanning: dict[str, Any] | None = None
    seconds: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)  # seconds per step (verify, parse, store, publish, ...)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Importer:
    def __init__(self, ctx: Context, progress: Progress | None = None) -> None:
        self.ctx = ctx
        self.progress = progress or (lambda *_: None)
        s = ctx.settings
        self.trusted = trusted_keys(s)
        self.max_files, self.max_bytes = s.airgap_max_files, s.airgap_max_bundle_bytes
        self.pause_after = int(os.environ.get("CONDAVAULT_TEST_BUNDLE_PAUSE_AFTER", "0") or 0)  # tests only
        # package blobs written ahead while verifying: committed after the whole bundle verified
        self.ahead = WriteAhead(ctx.blobs)

    # -- opening -----------------------------------------------------------------------------------
    def open(self, source: Path | list[Path]) -> Opened:
        """A bundle: a folder, a ``.tar``/``.tar.gz``, or a split bundle -- the folder holding its parts, the
        part folders (a list, in any order, wherever each one is), or one part with its siblings beside it."""
        self.unpacked = None
        paths = [p.expanduser().absolute() for p in source] if isinstance(source, list) else [source]
        if len(paths) > 1:
            for p in paths:
                if not p.exists() or p.is_symlink():
                    raise rejected(f"{p} does not exist" if not p.exists() else f"{p} is a symbolic link")
            return open_parts(paths, self.trusted, max_files=self.max_files, max_bytes=self.max_bytes)
        if not paths:
            raise rejected("no bundle given")
        path = paths[0].expanduser().absolute()
        if not path.exists() and not path.is_symlink():
            raise rejected(f"{path} does not exist")
        if path.is_symlink():
            raise rejected(f"{path} is a symbolic link")
        if path.is_file() and is_archive(path):
            folder = (
                self.ctx.settings.data_dir
                / "bundles"
                / "unpacked"
                / hashlib.sha256(f"{path}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:24]
            )
            if not (folder / "manifest.json").is_file():  # unpacked before (an interrupted import): reused
                unpack(path, folder, self.trusted, max_files=self.max_files, max_bytes=self.max_bytes)
            self.unpacked = folder
            path = folder
        if is_part_dir(path) and (path / MANIFEST).is_file():  # one part given: its siblings are the others
            return open_parts(
                part_dirs_in(path.parent), self.trusted, max_files=self.max_files, max_bytes=self.max_bytes
            )
        return open_bundle(path, self.trusted, max_files=self.max_files, max_bytes=self.max_bytes)

    unpacked: Path | None = None

    # -- the whole import --------------------------------------------------------------------------
    def run(self, path: Path | list[Path], *, dry_run: bool = False) -> ImportReport:
        lock_path = self.ctx.settings.data_dir / "bundles" / "import.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, (fcntl.LOCK_SH if dry_run else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy(
                    "another bundle import is running on this server; try again when it is done",
                    code="bundle_import_running",
                ) from None
            return self._locked_run(path, dry_run)
        finally:
            os.close(fd)

    def _locked_run(self, path: Path | list[Path], dry_run: bool) -> ImportReport:
        started = time.perf_counter()
        self._finished = False
        opened = self.open(path)
        unpacked = self.unpacked
        try:
            return self._run(opened.source if unpacked is None else str(path), opened, started, dry_run)
        except CondavaultError as exc:
            if unpacked is not None and exc.code == "bundle_rejected":
                shutil.rmtree(unpacked, ignore_errors=True)
            raise
        finally:
            if unpacked is not None and not dry_run and self._finished:
                shutil.rmtree(unpacked, ignore_errors=True)  # a tar's unpacked copy, once imported

    _finished = False

    def _run(self, path: str, opened: Opened, started: float, dry_run: bool) -> ImportReport:
        m = opened.manifest
        report = ImportReport(m.bundle_id, "imported", m.parent_id, m.origin_key, len(m.files), m.total_bytes)
        report.targets = {
            k: {kk: v.get(kk) for kk in ("records", "removed", "full", "watermark")} for k, v in m.targets.items()
        }
        for t in m.targets.values():
            report.records += int(t.get("records") or 0)
            report.removed += int(t.get("removed") or 0)
        with self.ctx.db.session() as s:
            if (
                s.scalar(
                    select(BundleImport.id).where(BundleImport.bundle_id == m.bundle_id, BundleImport.state == "done")
                )
                is not None
            ):
                report.status = "already-imported"
                self._finished = True
                return report
            self._decide(s, opened)
        report.disk_needed = sum(
            f.size for f in m.files if not self._is_package(opened, f) or not self.ctx.blobs.exists(f.sha256)
        )
        # an object store has no local disk to fill (its own quota answers the write)
        report.disk_free = (
            shutil.disk_usage(self.ctx.settings.blobs_path).free if self.ctx.blobs.kind == "local" else 2**62
        )
        if dry_run:
            report.status = "dry-run"
            return report
        if report.disk_needed > report.disk_free:
            raise CondavaultError(
                f"the bundle needs {report.disk_needed} bytes, {report.disk_free} are free", code="disk_full"
            )
        journal = Journal(self.ctx.settings.data_dir / "bundles" / "journal" / f"{m.bundle_id}.jsonl")
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            now = time.perf_counter()
            report.phases[name] = round(now - clock, 3)
            clock = now

        try:
            datas = self._verify(opened, journal, report)
            lap("verify")
            plans, vpayload, spayload = parse_targets(opened, datas)
            lap("parse")
            self._store(opened, plans, report)
            lap("store")
            self._publish(opened, plans, path)
            lap("publish")
            if spayload is not None:  # additive, like `blocklist import`: applying it twice changes nothing
                report.scanning = scanning_bundle.apply(self.ctx, m.origin_key, m.bundle_id, spayload)
                self._finish_target(opened, "scanning", path)
                lap("scanning")
            if vpayload is not None:
                report.vulns = vulns_bundle.apply(self.ctx, m.origin_key, vpayload)
                self._finish_target(opened, "vulns", path)
                lap("vulns")
        except BaseException as exc:  # a rejected bundle's journal goes; an interrupted one's stays (resume)
            self.ahead.discard()  # blobs written ahead that were not committed (e.g. a malformed records file)
            self._request_index()  # channels published before a later step failed are indexed all the same
            journal.close(remove=isinstance(exc, CondavaultError) and exc.code == "bundle_rejected")
            raise
        journal.close(remove=True)
        self._finished = True
        report.seconds = round(time.perf_counter() - started, 3)
        with self.ctx.db.write_session() as s:
            row = s.scalar(select(BundleImport).where(BundleImport.bundle_id == m.bundle_id))
            if row is not None:
                row.summary = json.dumps(report.to_dict(), default=str)
        self._request_index()
        log.info(
            "bundle imported",
            extra={"bundle": m.bundle_id, "records": report.records, "bytes": report.bytes, "seconds": report.seconds},
        )
        return report

    def _is_package(self, opened: Opened, f: FileEntry) -> bool:
        return f.path.endswith((".conda", ".tar.bz2")) and f.path.startswith("channels/")

    # -- step 2 --------------------------------------------------------------------------------------
    def _decide(self, s: Session, opened: Opened) -> None:
        m = opened.manifest
        for target, spec in sorted(m.targets.items()):
            state = s.scalar(
                select(BundleChannelState).where(
                    BundleChannelState.origin_key == m.origin_key, BundleChannelState.target == target
                )
            )
            if state is not None and state.serial > m.serial:
                raise replay_error(m.bundle_id, m.serial, state.bundle_id, state.serial, target)
            base = spec.get("base_watermark")
            if spec.get("kind") == "scanning":
                continue  # always whole (the block list is small and applied additively): no base to match
            gone = spec.get("kind") == "channel" and find_channel(s, str(spec.get("channel"))) is None
            if gone and state is not None:
                state = None  # the channel was deleted here since: its state no longer holds
            if m.parent_id is not None and (state is None or state.watermark != base):
                at = f"at bundle {state.bundle_id}" if state is not None else "has no bundle of this origin"
                raise Conflict(
                    f"bundle {m.bundle_id} applies on top of bundle {m.parent_id}, but {target} {at}: import "
                    f"bundle {m.parent_id} first (or a full bundle)",
                    code="bundle_base_mismatch",
                    needs=m.parent_id,
                    target=target,
                    current=state.bundle_id if state is not None else None,
                )
            if spec.get("kind") == "channel" and m.parent_id is None and state is None:
                ch = find_channel(s, str(spec.get("channel")))
                if ch is not None and s.scalar(select(Record.id).where(Record.channel_id == ch.id).limit(1)):
                    raise Conflict(
                        f"channel {ch.name!r} has records that no bundle of key {m.origin_key} brought: a bundle "
                        "fills only an empty channel or one it filled before",
                        code="channel_not_empty",
                        channel=ch.name,
                    )

    # -- step 3 --------------------------------------------------------------------------------------
    def _verify(self, opened: Opened, journal: Journal, report: ImportReport) -> dict[str, bytes]:
        """Hash every file (packages: and check them as uploads are checked). Returns the bytes of the
        bundle's own data files (records, patches, vulns)."""
        datas: dict[str, bytes] = {}
        ing = self.ctx.ingestor
        pkg_index = self._package_index(opened)

        resuming = bool(journal.done)  # a fresh import skips the look-up (and its stat) per file

        def one(f: FileEntry) -> tuple[FileEntry, os.stat_result | None, bytes | None]:
            path = opened.path_of(f)
            is_data = not self._is_package(opened, f) and not f.path.endswith("/repodata.json")
            if resuming and not is_data and journal.verified(f.path, os.lstat(path), f.sha256):
                return f, None, None
            sha, st, data = hash_file(path)  # one read: hashed, checked and written ahead from the same bytes
            if sha != f.sha256 or st.st_size != f.size or (data is not None and len(data) != f.size):
                raise rejected(f"{f.path}: sha256 {sha} differs from the manifest's {f.sha256} (altered)", path=f.path)
            if f.path in pkg_index:
                rec = pkg_index[f.path]
                # the md5 is not computed: the published record's is the bundle's (signed); the check's is unused
                received = Received(path if data is None else None, st.st_size, "", sha, data)
                item = IngestItem(
                    received,
                    rec["filename"],
                    expected_subdir=rec["subdir"],
                    expected_sha256=f.sha256,
                    expected_size=f.size,
                )
                checked = ing.check(item)
                if checked.error is not None or checked.held is not None:  # a quarantine verdict refuses the bundle
                    err = checked.error or checked.held
                    assert err is not None
                    msg = err.message if isinstance(err, CondavaultError) else str(err)
                    raise rejected(f"{f.path}: {msg}", path=f.path)
                if data is not None:
                    self.ahead.stage(f.sha256, data)  # on the I/O threads (a blob present already is only touched)
                data = None
            return f, st, data

        self.ahead.start()
        try:
            try:
                self._verify_all(opened, one, journal, report, datas, pkg_index)
            finally:
                self.ahead.wait()  # every write ahead finished (or failed)
            self.ahead.check()  # the first write error, if any
        except BaseException:
            self.ahead.discard()
            raise
        return datas

    def _verify_all(
        self,
        opened: Opened,
        one: Callable[[FileEntry], tuple[FileEntry, os.stat_result | None, bytes | None]],
        journal: Journal,
        report: ImportReport,
        datas: dict[str, bytes],
        pkg_index: dict[str, Any],
    ) -> None:
        m = opened.manifest
        total = m.total_bytes
        done_bytes = 0
        pool = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="bundle-verify")
        try:
            for n, (f, st, data) in enumerate(pool.map(one, m.files), 1):
                if st is None:  # verified before an interruption
                    report.resumed_files += 1
                else:
                    report.verified_files += 1
                    if data is not None and f.path not in pkg_index and not f.path.endswith("/repodata.json"):
                        datas[f.path] = data
                    journal.add(f.path, st, f.sha256)
                done_bytes += f.size
                if n % 200 == 0:
                    journal.flush()
                self.progress("verify", done_bytes, total)
                if self.pause_after and n == self.pause_after:
                    journal.flush()
                    log.info("test hook: import paused", extra={"bundle": m.bundle_id, "files": n})
                    time.sleep(3600)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # a refused file stops the rest at once
        journal.flush()

    def _package_index(self, opened: Opened) -> dict[str, dict[str, Any]]:
        """Bundle path -> the first record naming it (read from the records files, verified below)."""
        out: dict[str, dict[str, Any]] = {}
        entries = {f.path: f for f in opened.manifest.files}
        for spec in opened.manifest.targets.values():
            rf = spec.get("records_file")
            if not rf:
                continue
            entry = entries.get(rf)
            if entry is None:
                raise rejected(f"records file {rf} is not listed")
            data = opened.path_of(entry).read_bytes()
            if hashlib.sha256(data).hexdigest() != entry.sha256:
                raise rejected(f"{rf}: sha256 differs from the manifest's (altered)", path=rf)
            for line in data.decode().splitlines():
                doc = json.loads(line)
                if doc.get("file"):
                    out.setdefault(doc["file"], {"filename": doc["filename"], "subdir": doc["subdir"]})
        return out

    # -- step 4 --------------------------------------------------------------------------------------
    def _store(self, opened: Opened, plans: list[ChannelPlan], report: ImportReport) -> None:
        blobs = self.ctx.blobs
        wanted: dict[str, FileEntry] = {}
        entries = {f.path: f for f in opened.manifest.files}
        for plan in plans:
            for doc in plan.records:
                for key in ("file", "sidecar_file"):  # the package, and its attestation sidecar if carried
                    if doc.get(key):
                        e = entries[doc[key]]
                        wanted.setdefault(e.sha256, e)
        self.guard = BlobGuard(self.ctx.db, blobs, new_holder())
        self.pinned = sorted(wanted)
        try:
            self.guard.pin(self.pinned)
            ready = self.ahead.take(wanted)
            self.ahead.discard()  # staged bytes no record names (none in a well-formed bundle)
            staged_shas = {st.sha256 for st in ready}
            # the blobs written ahead while verifying get their names: one durability barrier for all
            report.stored_blobs += sum(1 for new in blobs.commit(ready) if new)
        except BaseException:
            self.ahead.discard()
            self.guard.unpin_now(self.pinned)
            raise
        todo = [e for sha, e in wanted.items() if sha not in staged_shas and not blobs.exists(sha)]
        total = sum(e.size for e in todo)
        done = 0

        def copy(e: FileEntry) -> tuple[Path | bytes, str]:
            fd, tmp = blobs.temp_file()
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, open(opened.path_of(e), "rb") as src:
                while chunk := src.read(1024 * 1024):
                    h.update(chunk)
                    out.write(chunk)
            if h.hexdigest() != e.sha256:  # changed since it was verified
                tmp.unlink(missing_ok=True)
                raise rejected(f"{e.path} changed while it was imported", path=e.path)
            return tmp, e.sha256

        try:
            with ThreadPoolExecutor(HASH_THREADS) as pool:  # large files, and those verified before a resume
                i = 0
                while i < len(todo):
                    j, size = i, 0  # a batch: up to STORE_BATCH files or STORE_BATCH_BYTES, one barrier
                    while j < len(todo) and j - i < STORE_BATCH and (size < STORE_BATCH_BYTES or j == i):
                        size += todo[j].size
                        j += 1
                    batch: list[tuple[Path | bytes, str]] = list(pool.map(copy, todo[i:j]))
                    report.stored_blobs += sum(1 for new in blobs.put_many(batch) if new)
                    done += size
                    self.progress("store", done, total)
                    i = j
        except BaseException:
            self.guard.unpin_now(self.pinned)
            raise

    # -- step 5 --------------------------------------------------------------------------------------
    def _publish(self, opened: Opened, plans: list[ChannelPlan], source: str) -> None:
        m = opened.manifest
        changed: list[tuple[int, set[str]]] = []

        def work(s: Session) -> None:
            changed.clear()
            for plan in plans:
                ch = find_channel(s, plan.name)
                if ch is None:
                    ch = create_channel(
                        s,
                        plan.name,
                        privacy=str(plan.spec.get("privacy") or "private"),
                        description=str(plan.spec.get("description") or ""),
                        created_by=f"bundle:{m.origin_key}",
                    )
                    # a lookup of this name before the import may be cached as "no such channel"
                    self.ctx.events.record(s, ChannelChanged(ch.id, ch.name))
                entries = [
                    records.NewRecord(
                        d["subdir"],
                        d["filename"],
                        d["record"],
                        about=json.loads(d["about"]) if d.get("about") else None,
                        run_exports=json.loads(d["run_exports"]) if d.get("run_exports") is not None else None,
                        paths_summary=json.loads(d["paths_summary"]) if d.get("paths_summary") else None,
                        has_blob=bool(d.get("has_blob")),
                        source_url=d.get("source_url"),
                        force=True,
                        uploaded_by=f"bundle:{m.bundle_id}",
                        indexed_timestamp=int(d["indexed_timestamp"]),
                    )
                    for d in plan.records
                ]
                subdirs = records.sync_records(
                    s, ch, entries, plan.patches, removed=plan.removed, full=bool(plan.spec.get("full"))
                )
                # carried signatures and sidecars (an empty entry clears what a file no longer carries)
                save_trust(s, ch.id, [d.get("trust") or TrustEntry(d["subdir"], d["filename"]) for d in plan.records])
                if subdirs:
                    self.ctx.events.record(s, RecordsChanged(ch.id, tuple(sorted(subdirs)), index=True))
                changed.append((ch.id, subdirs))
                self._set_state(s, m, plan.target, plan.spec)
            if getattr(self, "pinned", None):
                self.guard.unpin(s, self.pinned)
            if not self._later_targets(m):
                self._mark_done(s, opened, source)

        self.ctx.db.run_write(work)
        self._to_index = [(cid, sd) for cid, subdirs in changed for sd in sorted(subdirs)]

    _to_index: list[tuple[int, str]] = []

    def _request_index(self) -> None:
        """Index runs for the published subdirs: asked for once the import's own writes are done (an index
        run of a large subdir in this process would otherwise slow the import's last steps)."""
        todo, self._to_index = self._to_index, []
        for cid, sd in todo:
            self.ctx.request_index(cid, sd)

    @staticmethod
    def _later_targets(m: Any) -> list[str]:
        """Targets applied after the channels' transaction, in this order (the bundle is done after the last)."""
        return [t for t in ("scanning", "vulns") if t in m.targets]

    def _finish_target(self, opened: Opened, target: str, source: str) -> None:
        def work(s: Session) -> None:
            self._set_state(s, opened.manifest, target, opened.manifest.targets[target])
            if self._later_targets(opened.manifest)[-1] == target:
                self._mark_done(s, opened, source)

        self.ctx.db.run_write(work)

    def _set_state(self, s: Session, m: Any, target: str, spec: dict[str, Any]) -> None:
        state = s.scalar(
            select(BundleChannelState).where(
                BundleChannelState.origin_key == m.origin_key, BundleChannelState.target == target
            )
        )
        if state is None:
            state = BundleChannelState(origin_key=m.origin_key, target=target)
            s.add(state)
        state.bundle_id, state.serial, state.watermark = m.bundle_id, m.serial, str(spec["watermark"])[:64]
        state.updated_at = utcnow()

    def _mark_done(self, s: Session, opened: Opened, source: str) -> None:
        m = opened.manifest
        row = s.scalar(select(BundleImport).where(BundleImport.bundle_id == m.bundle_id))
        if row is None:
            row = BundleImport(bundle_id=m.bundle_id, origin_key=m.origin_key)
            s.add(row)
        row.parent_id, row.serial, row.state, row.source = m.parent_id, m.serial, "done", source[:2000]
        row.summary = json.dumps({"targets": list(m.targets)})
        row.finished_at = utcnow()
