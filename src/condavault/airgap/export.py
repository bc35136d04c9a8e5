"""``condavault bundle export``: channels, mirrors (their channels) and vulnerability data into a signed
bundle folder (format: ``airgap.manifest``).

A full bundle carries every record of each channel; ``--since BUNDLE`` carries what changed since that
earlier export of this server: its table of contents (subdir/filename -> digest of the record's row, and
each subdir's patch instructions) is kept in ``bundle_exports`` and diffed against the channel now. Each
channel's **watermark** is the digest of its whole table of contents: the receiving side stores it, and
an incremental bundle applies only on top of the watermark it was diffed from.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import zstandard
from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.airgap import scanning as scanning_bundle
from condavault.airgap import vulns as vulns_bundle
from condavault.airgap.manifest import MANIFEST, SIGNATURE, FileEntry, Manifest, sign
from condavault.airgap.models import BundleExport
from condavault.channels.models import Channel, Record
from condavault.channels.services import get_channel
from condavault.context import Context
from condavault.errors import Conflict, InvalidRequest, NotFound
from condavault.indexing.models import PublishedFile, SubdirState
from condavault.serving.decompressed import copy_json
from condavault.signing.carry import trust_of
from condavault.signing.keys import load_or_create
from condavault.signing.models import RecordTrust
from condavault.storage.interfaces import BlobStore

Progress = Callable[[str, int, int], None]  # (phase, done, total): bytes while copying files


@dataclass
class ExportReport:
    bundle_id: str
    output: Path
    parent_id: str | None
    files: int = 0
    bytes: int = 0
    records: int = 0
    removed: int = 0
    parts: int = 0
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle_id": self.bundle_id,
            "output": str(self.output),
            "parent_id": self.parent_id,
            "files": self.files,
            "bytes": self.bytes,
            "records": self.records,
            "removed": self.removed,
            "parts": self.parts,
            "targets": self.targets,
            "seconds": self.seconds,
        }


def new_bundle_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def parse_size(text: str) -> int:
    """``4G``, ``700M``, ``1.5GiB``, ``123456`` -> bytes."""
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    try:
        if t and t[-1] in mult:
            return int(float(t[:-1]) * mult[t[-1]])
        return int(t)
    except ValueError:
        raise InvalidRequest(f"bad size {text!r} (e.g. 4G, 700M)", code="invalid_size") from None


def row_digest(
    record: str, about: str | None, run_exports: str | None, paths: str | None, ts: int, has_blob: bool, trust: str = ""
) -> str:
    """A change detector of a record's row (not a security hash: the manifest's sha256 are); ``trust``:
    carried signatures / sidecar (condavault.signing), a change re-exports the row."""
    text = f"{record}\x00{about or ''}\x00{run_exports or ''}\x00{paths or ''}\x00{ts}\x00{int(has_blob)}"
    if trust:
        text += f"\x00{trust}"
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:24]


def watermark(toc: dict[str, str]) -> str:
    body = "\n".join(f"{k}\x00{toc[k]}" for k in sorted(toc))
    return hashlib.sha256(body.encode()).hexdigest()[:32]


_COLS = (
    Record.subdir,
    Record.filename,
    Record.record,
    Record.about,
    Record.run_exports,
    Record.paths_summary,
    Record.indexed_timestamp,
    Record.has_blob,
    Record.sha256,
    Record.size,
    Record.source_url,
    Record.id,
)


def channel_toc(session: Session, channel_id: int) -> tuple[dict[str, str], dict[str, str | None]]:
    """Table of contents of a channel: ``subdir/filename`` -> row digest, and ``patch:<subdir>`` -> digest
    of its patch instructions; and the patch instructions themselves. (Plain SQL, streamed: this reads
    every row of the channel on each export.)"""
    toc: dict[str, str] = {}
    q = (
        select(*_COLS[:8], RecordTrust.signatures, RecordTrust.sidecar_sha256, RecordTrust.status)
        .outerjoin(RecordTrust, RecordTrust.record_id == Record.id)
        .where(Record.channel_id == channel_id)
        .execution_options(yield_per=5000)
    )
    # through the Core connection: the ORM's row loading cost more than the digests (100 k rows: 2.5 s of 3.4)
    for sd, fn, rec, about, rex, paths, ts, has_blob, sigs, sidecar, status in session.connection().execute(q):
        trust = f"{sigs or ''}\x00{sidecar or ''}\x00{status}" if status is not None else ""
        toc[f"{sd}/{fn}"] = row_digest(rec, about, rex, paths, ts, has_blob, trust)
    patches: dict[str, str | None] = {}
    for sd, instructions in session.execute(
        select(SubdirState.subdir, SubdirState.patch_instructions).where(SubdirState.channel_id == channel_id)
    ):
        patches[sd] = instructions
        toc[f"patch:{sd}"] = hashlib.sha256((instructions or "").encode()).hexdigest()[:24]
    return toc, patches


class _Writer:
    """Payload files into the output folder (or its parts), each listed with sha256 and size."""

    def __init__(self, root: Path, split: int | None, progress: Progress | None, total_hint: int) -> None:
        self.root = root
        self.split = split
        self.part = 1 if split else 0
        self.part_used = 0
        self.entries: list[FileEntry] = []
        self.progress = progress
        self.done = 0
        self.total_hint = total_hint
        self._dirs: set[Path] = set()

    def _place(self, rel: str, size: int) -> Path:
        if self.split:
            if size > self.split:
                raise InvalidRequest(
                    f"{rel} ({size} bytes) is larger than --split ({self.split} bytes)", code="split_too_small"
                )
            if self.part_used + size > self.split and self.part_used > 0:
                self.part += 1
                self.part_used = 0
            self.part_used += size
            dest = self.root / f"part-{self.part:03d}" / rel
        else:
            dest = self.root / rel
        if dest.parent not in self._dirs:
            dest.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(dest.parent)
        return dest

    def _tick(self, n: int) -> None:
        self.done += n
        if self.progress is not None:
            self.progress("copy", self.done, self.total_hint)

    def add_bytes(self, rel: str, data: bytes) -> FileEntry:
        dest = self._place(rel, len(data))
        with open(dest, "wb") as fh:
            fh.write(data)
        e = FileEntry(rel, hashlib.sha256(data).hexdigest(), len(data), self.part)
        self.entries.append(e)
        return e

    def add_lines(self, rel: str, lines: Iterator[str]) -> FileEntry:
        return self.add_bytes(rel, "".join(f"{line}\n" for line in lines).encode())

    def add_blob(self, rel: str, blobs: BlobStore, sha256: str, size: int, source: str | None = None) -> FileEntry:
        """A stored blob, copied as is (content-addressed: its sha256 is its name): from its file when the
        store has local paths (a kernel copy), else streamed through the store's ``open``. ``source``: the
        file is a plain JSON index file, decompressed from that zstd blob and hashed here (``sha256`` is
        then its ETag, not its hash)."""
        dest = self._place(rel, size)
        if source is not None:
            sha256 = copy_json(blobs, source, dest)
            if dest.stat().st_size != size:
                raise Conflict(
                    f"the published {rel} does not match its pointer; run `condavault check --repair`",
                    code="index_damaged",
                )
        elif (src := blobs.local_path(sha256)) is not None:
            shutil.copyfile(src, dest)
        else:
            with blobs.open(sha256) as fh, open(dest, "wb") as out:
                shutil.copyfileobj(fh, out, 1024 * 1024)
        e = FileEntry(rel, sha256, size, self.part)
        self.entries.append(e)
        self._tick(size)
        return e


def _resolve_channels(session: Session, channels: list[str], mirrors: list[str]) -> list[Channel]:
    from condavault.mirror.services import get_mirror

    out: dict[str, Channel] = {}
    for name in channels:
        ch = get_channel(session, name)
        out[ch.name] = ch
    for m in mirrors:
        mirror = get_mirror(session, m)
        mch = session.get(Channel, mirror.channel_id)
        assert mch is not None
        out[mch.name] = mch
    return list(out.values())


def _load_base(session: Session, since: str) -> tuple[BundleExport, dict[str, Any]]:
    base = session.scalar(select(BundleExport).where(BundleExport.bundle_id == since))
    if base is None:
        raise NotFound(
            f"no bundle {since!r} was exported by this server (see `condavault bundle status`)",
            code="bundle_not_found",
            bundle=since,
        )
    return base, json.loads(zstandard.ZstdDecompressor().decompress(base.toc))


def export_bundle(
    ctx: Context,
    output: Path,
    *,
    channels: list[str] = (),  # type: ignore[assignment]
    mirrors: list[str] = (),  # type: ignore[assignment]
    vulns: bool = False,
    since: str | None = None,
    split: int | None = None,
    actor: str | None = None,
    progress: Progress | None = None,
    scanning: bool = False,
) -> ExportReport:
    started = time.perf_counter()
    if not channels and not mirrors and not vulns and not scanning:
        raise InvalidRequest(
            "nothing to export: give --channel, --mirror, --vulns or --scanning", code="nothing_to_export"
        )
    output = output.expanduser().absolute()
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise InvalidRequest(f"{output} exists and is not an empty folder", code="output_exists")
    key = load_or_create(ctx.settings)
    bundle_id = new_bundle_id()
    with ctx.db.session() as s:
        chans = [(c.id, c.name, c.privacy, c.description) for c in _resolve_channels(s, list(channels), list(mirrors))]
        base_row, base_toc = _load_base(s, since) if since else (None, {})
    tmp = output.with_name(f".{output.name}.{bundle_id}.partial")
    tmp.mkdir(parents=True)
    report = ExportReport(bundle_id, output, since)
    try:
        manifest, new_toc = _write(ctx, tmp, chans, vulns, base_row, base_toc, split, progress, report, scanning)
        # reserve the serial (this server's export count) and keep the table of contents for --since
        row = BundleExport(
            bundle_id=bundle_id,
            parent_id=since,
            serial=0,
            kinds=" ".join(manifest.kinds),
            summary="{}",
            toc=zstandard.ZstdCompressor(level=3).compress(json.dumps(new_toc).encode()),
            output=str(output),
            created_by=actor,
        )
        with ctx.db.write_session() as s:
            s.add(row)
            s.flush()
            row.serial = row.id
        manifest.bundle_id, manifest.origin_key, manifest.serial = bundle_id, key.public.id, row.id
        manifest.created = datetime.now(UTC).isoformat(timespec="seconds")
        raw = manifest.to_bytes()
        sig = sign(raw, key)
        for d in [tmp / f"part-{i:03d}" for i in range(1, manifest.parts + 1)] if manifest.parts else [tmp]:
            d.mkdir(exist_ok=True)
            (d / MANIFEST).write_bytes(raw)
            (d / SIGNATURE).write_bytes(sig)
        if output.exists():
            output.rmdir()
        os.replace(tmp, output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        with ctx.db.write_session() as s:
            s.query(BundleExport).filter(BundleExport.bundle_id == bundle_id).delete()
        raise
    report.targets = manifest.targets
    report.files = len(manifest.files)
    report.bytes = manifest.total_bytes
    report.parts = manifest.parts
    report.seconds = round(time.perf_counter() - started, 3)
    with ctx.db.write_session() as s:
        s.query(BundleExport).filter(BundleExport.bundle_id == bundle_id).update(
            {"summary": json.dumps(report.to_dict())}
        )
    return report


def _write(
    ctx: Context,
    root: Path,
    chans: list[tuple[int, str, str, str]],
    vulns: bool,
    base_row: BundleExport | None,
    base_toc: dict[str, Any],
    split: int | None,
    progress: Progress | None,
    report: ExportReport,
    scanning: bool = False,
) -> tuple[Manifest, dict[str, Any]]:
    incremental = base_row is not None
    parent = base_row.bundle_id if base_row else None
    manifest = Manifest(bundle_id="", origin_key="", serial=0, created="", parent_id=parent)
    new_toc: dict[str, Any] = {}
    placed: dict[str, str] = {}  # sha256 -> bundle path (each file once across channels)
    plans = []
    total = 0
    with ctx.db.session() as s:
        for cid, name, privacy, description in chans:
            toc, patches = channel_toc(s, cid)
            new_toc[f"channel:{name}"] = toc
            old: dict[str, str] | None = base_toc.get(f"channel:{name}") if incremental else None
            if incremental and old is None:
                raise InvalidRequest(
                    f"channel {name!r} is not in bundle {base_row.bundle_id if base_row else ''}: export it in a full "
                    "bundle first",
                    code="channel_not_in_base",
                    channel=name,
                )
            changed = {k for k, d in toc.items() if not k.startswith("patch:") and (old is None or old.get(k) != d)}
            removed = sorted(k for k in (old or {}) if not k.startswith("patch:") and k not in toc)
            rows: list[Any] = []
            q = select(*_COLS).where(Record.channel_id == cid).order_by(Record.subdir, Record.filename)
            if len(changed) < len(toc) // 2 and changed:
                # few changes (an incremental bundle): fetch only those rows, a subdir at a time
                by_sd: dict[str, list[str]] = {}
                for k in changed:
                    sd, fn = k.split("/", 1)
                    by_sd.setdefault(sd, []).append(fn)
                for sd, fns in sorted(by_sd.items()):
                    for i in range(0, len(fns), 500):
                        part = fns[i : i + 500]
                        rows.extend(s.execute(q.where(Record.subdir == sd, Record.filename.in_(part))).all())
            elif changed:
                rows = [r for r in s.execute(q).all() if f"{r[0]}/{r[1]}" in changed]
            for r in rows:
                if r.has_blob and r.sha256 and r.sha256 not in placed:
                    total += r.size or 0
            published = {}
            if not incremental:
                for sd, sha, size, source in s.execute(
                    select(
                        PublishedFile.subdir, PublishedFile.sha256, PublishedFile.size, PublishedFile.source_sha256
                    ).where(PublishedFile.channel_id == cid, PublishedFile.path == "repodata.json")
                ):
                    published[sd] = (sha, size, source)
            plans.append((name, privacy, description, toc, old, patches, rows, removed, published))
        trusts = trust_of(s, [r.id for plan in plans for r in plan[6]])
        s.expunge_all()
    w = _Writer(root, split, progress, total)
    for name, privacy, description, toc, old, patches, rows, removed, published in plans:
        base = f"channels/{name}"
        lines = []
        for r in rows:
            trust = trusts.get(r.id)
            extra: dict[str, Any] = {}
            if trust is not None:  # carried signatures and the CEP 50 sidecar, byte for byte
                has_sidecar = bool(trust.sidecar_sha256 and ctx.blobs.exists(trust.sidecar_sha256))
                extra["trust"] = {
                    "signatures": trust.signatures,
                    "signed_record": trust.signed_record,
                    "sidecar_sha256": trust.sidecar_sha256 if has_sidecar else None,
                    "status": trust.status,
                    "method": trust.method,
                    "identity": trust.identity,
                    "detail": trust.detail,
                }
                if has_sidecar and trust.sidecar_sha256:
                    spath = placed.get(trust.sidecar_sha256)
                    if spath is None:
                        spath = f"{base}/{r.subdir}/{r.filename}.sigs.{trust.sidecar_sha256}"
                        w.add_blob(
                            spath,
                            ctx.blobs,
                            trust.sidecar_sha256,
                            int(trust.sidecar_size or ctx.blobs.size(trust.sidecar_sha256)),
                        )
                        placed[trust.sidecar_sha256] = spath
                    extra["sidecar_file"] = spath
            path = None
            if r.has_blob and r.sha256:
                path = placed.get(r.sha256)
                if path is None:
                    path = f"{base}/{r.subdir}/{r.filename}"
                    w.add_blob(path, ctx.blobs, r.sha256, int(r.size or 0))
                    placed[r.sha256] = path
            lines.append(
                json.dumps(
                    {
                        "subdir": r.subdir,
                        "filename": r.filename,
                        "record": r.record,
                        "about": r.about,
                        "run_exports": r.run_exports,
                        "paths_summary": r.paths_summary,
                        "indexed_timestamp": r.indexed_timestamp,
                        "has_blob": bool(r.has_blob),
                        "source_url": r.source_url,
                        "file": path,
                        **extra,
                    },
                    separators=(",", ":"),
                )
            )
        records_file = w.add_lines(f"{base}/records.jsonl", iter(lines))
        removed_file = w.add_lines(f"{base}/removed.jsonl", (json.dumps(k) for k in removed))
        patches_file = w.add_bytes(f"{base}/patches.json", json.dumps(patches, sort_keys=True).encode())
        for sd, (sha, size, source) in sorted(published.items()):
            w.add_blob(f"{base}/{sd}/repodata.json", ctx.blobs, sha, size, source)
        manifest.targets[f"channel:{name}"] = {
            "kind": "channel",
            "channel": name,
            "privacy": privacy,
            "description": description,
            "watermark": watermark(toc),
            "base_watermark": watermark(old) if old is not None else None,
            "full": not incremental,
            "records": len(rows),
            "removed": len(removed),
            "total_records": sum(1 for k in toc if not k.startswith("patch:")),
            "records_file": records_file.path,
            "removed_file": removed_file.path,
            "patches_file": patches_file.path,
        }
        report.records += len(rows)
        report.removed += len(removed)
    if chans:
        manifest.kinds.append("channels")
    if vulns:
        old_v = base_toc.get("vulns") if incremental else None
        target, vtoc = vulns_bundle.export(ctx, w, old_v)
        new_toc["vulns"] = vtoc
        manifest.targets["vulns"] = target
        manifest.kinds.append("vulns")
    if scanning:  # the whole block list (and ClamAV database) every time: small, and applied additively
        target, stoc = scanning_bundle.export(ctx, w)
        new_toc["scanning"] = stoc
        manifest.targets["scanning"] = target
        manifest.kinds.append("scanning")
    manifest.files = w.entries
    manifest.parts = w.part if split else 0
    return manifest, new_toc
