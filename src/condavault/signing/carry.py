"""Carrying upstream signatures and attestation sidecars into a channel, and reading them back.

A mirror run (active or passive), a bundle import and a copy/move all end here: :func:`save` writes one
:class:`~condavault.signing.models.RecordTrust` row per record that has something to carry and marks the
package names whose ``signatures`` changed dirty, so the next index run publishes them. Sidecar bytes go to
the blob store unchanged (their sha256 is the record's ``attestations_sha256``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from condavault.channels.models import Record
from condavault.db.base import utcnow
from condavault.indexing.builder import fragment_digest
from condavault.indexing.dirty import mark_dirty
from condavault.packages.metadata import record_json
from condavault.signing.models import RecordTrust
from condavault.signing.sigstore import IdentityRule, verify_sidecar
from condavault.signing.trust import (
    MAX_SIDECAR,
    NONE,
    Outcome,
    combine,
    is_signatures_entry,
    normalise_key,
    verify_content_trust,
)

if TYPE_CHECKING:
    from condavault.db.session import Database
    from condavault.mirror.plan import Plan
    from condavault.mirror.upstream import Upstream
    from condavault.storage.interfaces import BlobStore

__all__ = ["TrustEntry", "carry_from_upstream", "copy_trust", "save", "signatures_json", "signed_provider", "trust_of"]

log = logging.getLogger(__name__)
HEX64 = re.compile(r"^[0-9a-f]{64}$")
SIDECAR_FETCHES = 8


def _read_blob(blobs: BlobStore, sha256: str) -> bytes:
    """The bytes of a small stored blob (a sidecar), from any backend."""
    with blobs.open(sha256) as f:
        return f.read(MAX_SIDECAR + 1)


def signatures_json(entry: Mapping[str, Any]) -> str:
    """One file's ``signatures`` entry as stored and published: every key and value unchanged."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass
class TrustEntry:
    subdir: str
    filename: str
    signatures: str | None = None
    sidecar_sha256: str | None = None
    sidecar_size: int | None = None
    outcome: Outcome = NONE
    signed_record: str | None = None  # the upstream record the signatures cover

    @property
    def empty(self) -> bool:
        """Nothing carried and nothing to report (a failed sidecar fetch is kept as an outcome)."""
        return self.signatures is None and self.sidecar_sha256 is None and self.outcome.status == "none"


def save(session: Session, channel_id: int, entries: Iterable[TrustEntry]) -> int:
    """Write (or clear, for an empty entry) the trust rows of these files; returns how many changed.
    Files the channel does not hold are skipped."""
    by_subdir: dict[str, dict[str, TrustEntry]] = defaultdict(dict)
    for e in entries:
        by_subdir[e.subdir][e.filename] = e
    changed = 0
    now = utcnow()
    for sd, wanted in by_subdir.items():
        dirty: set[str] = set()
        names = sorted(wanted)
        for i in range(0, len(names), 500):
            q = (
                select(Record.id, Record.filename, Record.name, Record.fragment, Record.record, RecordTrust)
                .outerjoin(RecordTrust, RecordTrust.record_id == Record.id)
                .where(Record.channel_id == channel_id, Record.subdir == sd, Record.filename.in_(names[i : i + 500]))
            )
            for rid, fn, name, fragment, record, row in session.execute(q).all():
                e = wanted[fn]
                if e.empty:
                    if row is not None:
                        session.execute(delete(RecordTrust).where(RecordTrust.record_id == rid))
                        if row.signatures:
                            dirty.add(name)
                        changed += 1
                    continue
                digest = fragment_digest(fragment) if e.signed_record and _unpatched(fragment, record) else None
                if row is not None and (
                    row.signatures,
                    row.signed_record,
                    row.fragment_digest,
                    row.sidecar_sha256,
                    row.status,
                    row.identity,
                    row.detail,
                ) == (
                    e.signatures,
                    e.signed_record,
                    digest,
                    e.sidecar_sha256,
                    e.outcome.status,
                    e.outcome.identity,
                    e.outcome.detail,
                ):
                    continue
                if row is None:
                    row = RecordTrust(record_id=rid)
                    session.add(row)
                if (row.signatures, row.signed_record, row.fragment_digest) != (e.signatures, e.signed_record, digest):
                    dirty.add(name)
                row.signatures = e.signatures
                row.signed_record = e.signed_record
                row.fragment_digest = digest
                row.sidecar_sha256 = e.sidecar_sha256
                row.sidecar_size = e.sidecar_size
                row.status = e.outcome.status
                row.method = e.outcome.method
                row.identity = e.outcome.identity
                row.detail = e.outcome.detail
                row.checked_at = now
                changed += 1
        if dirty:
            session.flush()
            mark_dirty(session, channel_id, sd, dirty)
    return changed


def _unpatched(fragment: str, record: str) -> bool:
    """Whether the published fragment is the stored record itself (no repodata patch changed it)."""
    published = json.loads(fragment)
    published.pop("indexed_timestamp", None)
    return bool(published == json.loads(record))


def trust_of(session: Session, record_ids: Iterable[int]) -> dict[int, RecordTrust]:
    ids = list(record_ids)
    out: dict[int, RecordTrust] = {}
    for i in range(0, len(ids), 500):
        for row in session.scalars(select(RecordTrust).where(RecordTrust.record_id.in_(ids[i : i + 500]))):
            out[row.record_id] = row
    return out


def copy_trust(session: Session, target_channel_id: int, rows: Iterable[Record]) -> int:
    """Give the copies of ``rows`` in the target channel the trust rows of the originals (a copy or move of a
    file keeps its signatures and sidecar). Only a target with the same sha256 gets them."""
    rows = list(rows)
    found = trust_of(session, [r.id for r in rows])
    entries = []
    for r in rows:
        t = found.get(r.id)
        if t is None:
            continue
        e = TrustEntry(
            r.subdir,
            r.filename,
            t.signatures,
            t.sidecar_sha256,
            t.sidecar_size,
            Outcome(t.status, t.method, t.identity, t.detail),
            t.signed_record,
        )
        entries.append((r.sha256, e))
    if not entries:
        return 0
    same = {
        (sd, fn)
        for sd, fn, sha in session.execute(
            select(Record.subdir, Record.filename, Record.sha256).where(
                Record.channel_id == target_channel_id,
                Record.filename.in_(sorted({e.filename for _, e in entries})),
            )
        )
        if any(e.subdir == sd and e.filename == fn and src == sha for src, e in entries)
    }
    return save(session, target_channel_id, [e for _, e in entries if (e.subdir, e.filename) in same])


def upstream_signatures(repodata: Mapping[str, Any]) -> dict[str, Any]:
    sigs = repodata.get("signatures")
    return sigs if isinstance(sigs, dict) else {}


SidecarCheck = Callable[[str, str, dict[str, Any]], Outcome]


def signed_provider(
    upstream: Mapping[str, Mapping[str, Any]], keys: Iterable[str], sidecar_check: SidecarCheck | None = None
) -> Callable[[str, str, dict[str, Any]], bool]:
    """``is_signed`` for the ``only_signed`` filter: a file counts when a trusted key's conda-content-trust
    signature over its upstream record verifies, or (with ``sidecar_check``) when its CEP 50 sidecar holds
    Sigstore attestations that verify under the mirror's identity rules."""
    trusted = {normalise_key(k) for k in keys}
    sigs = {sd: upstream_signatures(data) for sd, data in upstream.items()}

    def is_signed(subdir: str, filename: str, record: dict[str, Any]) -> bool:
        entry = sigs.get(subdir, {}).get(filename)
        if entry is not None and trusted and verify_content_trust(record, entry, trusted).status == "verified":
            return True
        if sidecar_check is None or record.get("attestations_sha256") is None:
            return False
        return sidecar_check(subdir, filename, record).status == "verified"

    return is_signed


@dataclass
class SidecarVerifier:
    """Fetches and verifies sidecars for the ``only_signed`` filter while a plan is computed (in a worker
    thread: fetches run on the event loop), and keeps what it fetched for :func:`carry_from_upstream`, so a
    run fetches each sidecar once. A sidecar already in the blob store is read from there."""

    blobs: BlobStore
    up: Upstream | None
    loop: asyncio.AbstractEventLoop | None
    root: Path | None
    rules: Sequence[IdentityRule]
    fetched: dict[tuple[str, str], tuple[bytes | None, Outcome]] = field(default_factory=dict)

    def check(self, subdir: str, filename: str, record: dict[str, Any]) -> Outcome:
        key = (subdir, filename)
        if key in self.fetched:
            return self.fetched[key][1]
        att = record.get("attestations_sha256")
        if not isinstance(att, str) or not HEX64.match(att):
            out = Outcome("failed", "sigstore", None, "attestations_sha256 is not 64 lowercase hex digits")
            self.fetched[key] = (None, out)
            return out
        data = self.read(subdir, filename, att)
        if data is None:
            out = Outcome("failed", "sigstore", None, "advertised sidecar not retrievable")
        else:
            out = verify_sidecar(data, att, filename, record.get("sha256"), self.root, self.rules)
        self.fetched[key] = (data, out)
        return out

    def read(self, subdir: str, filename: str, att: str) -> bytes | None:
        if self.blobs.exists(att) and self.blobs.size(att) <= MAX_SIDECAR:
            return _read_blob(self.blobs, att)
        if self.up is None or self.loop is None:
            return None
        up = self.up

        async def get() -> bytes | None:
            data = await up.fetch_small(subdir, f"{filename}.sigs.{att}", MAX_SIDECAR)
            if data is None:
                data = await up.fetch_small(subdir, f"{filename}.sigs", MAX_SIDECAR)
            return data

        try:
            return asyncio.run_coroutine_threadsafe(get(), self.loop).result(timeout=300)
        except Exception as exc:
            log.info("attestation sidecar not fetched", extra={"file": filename, "error": str(exc)[:200]})
            return None


async def carry_from_upstream(
    db: Database,
    blobs: BlobStore,
    channel_id: int,
    up: Upstream,
    plan: Plan,
    upstream: Mapping[str, Mapping[str, Any]],
    keys: Iterable[str],
    root: Path | None = None,
    rules: Sequence[IdentityRule] = (),
    prefetched: Mapping[tuple[str, str], tuple[bytes | None, Outcome]] | None = None,
) -> dict[str, int]:
    """After a mirror run's apply phase: the signatures and sidecars of every kept file, saved per record.
    A sidecar already held with the same hash is not fetched again (it is verified again from the blob store
    when a trust root is configured: the policy may have changed); one the plan fetched is not either."""
    trusted = {normalise_key(k) for k in keys}
    prefetched = prefetched or {}
    sigs = {sd: upstream_signatures(data) for sd, data in upstream.items()}
    kept = sorted(plan.kept)
    loop = asyncio.get_running_loop()

    def existing() -> dict[tuple[str, str], RecordTrust]:
        with db.session() as s:
            q = (
                select(Record.subdir, Record.filename, RecordTrust)
                .join(RecordTrust, RecordTrust.record_id == Record.id)
                .where(Record.channel_id == channel_id)
            )
            out = {(sd, fn): row for sd, fn, row in s.execute(q).all()}
            s.expunge_all()
            return out

    have = await loop.run_in_executor(None, existing)
    entries: list[TrustEntry] = []
    wanted: dict[tuple[str, str], str] = {}
    wanted_data: dict[tuple[str, str], bytes] = {}
    reverify: set[tuple[str, str]] = set()
    for key in kept:
        rec = plan.records[key].record
        entry = sigs.get(key[0], {}).get(key[1])
        att = rec.get("attestations_sha256")
        if entry is None and att is None:
            if key in have:
                entries.append(TrustEntry(*key))  # no longer signed upstream
            continue
        e = TrustEntry(*key)
        outcomes = []
        if entry is not None:
            if is_signatures_entry(entry):
                e.signatures = signatures_json(entry)
                e.signed_record = record_json(rec)
            outcomes.append(verify_content_trust(rec, entry, trusted))
        if isinstance(att, str) and HEX64.match(att):
            e.sidecar_sha256 = att
            old = have.get(key)
            pre = prefetched.get(key)
            if pre is not None and pre[0] is not None:
                wanted_data[key] = pre[0]
                wanted[key] = att
            elif old is not None and old.sidecar_sha256 == att and blobs.exists(att):
                e.sidecar_size = old.sidecar_size
                if root is not None:
                    wanted[key] = att  # read back from the blob store and verified again
                    reverify.add(key)
                else:
                    outcomes.append(
                        Outcome(old.status, old.method, old.identity, old.detail)
                        if old.method == "sigstore"
                        else Outcome("unverified", "sigstore")
                    )
            else:
                wanted[key] = att
        elif att is not None:
            outcomes.append(Outcome("failed", "sigstore", None, "attestations_sha256 is not 64 lowercase hex digits"))
        e.outcome = combine(*outcomes)
        entries.append(e)

    limit = asyncio.Semaphore(SIDECAR_FETCHES)
    by_key = {(e.subdir, e.filename): e for e in entries}
    fetched = failed = 0

    async def one(key: tuple[str, str], att: str) -> None:
        nonlocal fetched, failed
        e = by_key[key]
        rec = plan.records[key].record
        data: bytes | None = wanted_data.get(key)
        if data is None and key in reverify and blobs.exists(att):
            data = await loop.run_in_executor(None, _read_blob, blobs, att)
        async with limit:
            try:
                if data is None:
                    data = await up.fetch_small(key[0], f"{key[1]}.sigs.{att}", MAX_SIDECAR)
                if data is None:  # an upstream serving only the mutable URL
                    data = await up.fetch_small(key[0], f"{key[1]}.sigs", MAX_SIDECAR)
            except Exception as exc:  # recorded as the file's outcome; the run goes on
                data = None
                log.info("attestation sidecar not fetched", extra={"file": key[1], "error": str(exc)})
        if data is None:
            failed += 1
            e.sidecar_sha256 = None
            e.outcome = combine(e.outcome, Outcome("failed", "sigstore", None, "advertised sidecar not retrievable"))
            return
        pre = prefetched.get(key)
        if pre is not None and pre[0] is data:
            out = pre[1]
        else:
            out = await loop.run_in_executor(None, verify_sidecar, data, att, key[1], rec.get("sha256"), root, rules)
        if len(data) > MAX_SIDECAR or hashlib.sha256(data).hexdigest() != att:  # never stored nor served
            failed += 1
            e.sidecar_sha256 = None
        else:
            if not blobs.exists(att):
                await loop.run_in_executor(None, blobs.put_bytes, data, att)
                fetched += 1
            e.sidecar_size = len(data)
        e.outcome = combine(e.outcome, out)

    await asyncio.gather(*(one(k, a) for k, a in wanted.items()))

    def write() -> int:
        with db.write_session() as s:
            return save(s, channel_id, entries)

    changed = await loop.run_in_executor(None, write)
    return {"trust_changed": changed, "sidecars_fetched": fetched, "sidecars_failed": failed}
