"""Vulnerability data in bundles: each source's own records (``vuln_source_records``, as issue 9 keeps
them), the synced name mapping entries and the curation (rules and per-link decisions).

Import stores them exactly as an online sync stores what it fetched -- per source
(``catalog.store_records`` / ``store_name_entries``), re-merged (``catalog.remerge``: the alias graph is
rebuilt from the same records) and re-matched -- so the links equal those of an online sync of the same
sources. Curation follows (rules, then per-link decisions on files present on the receiving side).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from condavault.channels.models import Channel, Record
from condavault.vulns import catalog, curation, store
from condavault.vulns.advisory import Advisory
from condavault.vulns.models import VulnAdvisory, VulnLinkRow, VulnNameEntry, VulnRule, VulnSource, VulnSourceRecord
from condavault.vulns.sources.names import NameEntry

if TYPE_CHECKING:
    from condavault.airgap.export import _Writer
    from condavault.context import Context

PREFIX = "vulns"


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


def export(ctx: Context, w: _Writer, old: dict[str, str] | None) -> tuple[dict[str, Any], dict[str, str]]:
    """Write the vulnerability payload; returns the manifest target and the table of contents."""
    from condavault.airgap.export import watermark

    toc: dict[str, str] = {}
    sources: dict[str, list[str]] = {}
    names: list[str] = []
    rules: list[str] = []
    links: list[str] = []
    with ctx.db.session() as s:
        q = (
            select(
                VulnSource.location,
                VulnSourceRecord.feed,
                VulnSourceRecord.record_id,
                VulnSourceRecord.content_hash,
                VulnSourceRecord.data,
            )
            .join(VulnSource, VulnSource.id == VulnSourceRecord.source_pk)
            .order_by(VulnSource.location, VulnSourceRecord.feed, VulnSourceRecord.record_id)
        )
        for loc, feed, rid, h, data in s.execute(q):
            key = f"rec:{loc}\x00{feed}\x00{rid}"
            toc[key] = h
            sources.setdefault(loc, [])
            if old is None or old.get(key) != h:
                sources[loc].append(data)
        entries: dict[str, list[list[str]]] = {}
        for loc, eco, name, conda, rel in s.execute(
            select(
                VulnSource.location,
                VulnNameEntry.ecosystem,
                VulnNameEntry.name,
                VulnNameEntry.conda_name,
                VulnNameEntry.relation,
            )
            .join(VulnSource, VulnSource.id == VulnNameEntry.source_pk)
            .order_by(VulnSource.location, VulnNameEntry.name, VulnNameEntry.conda_name)
        ):
            entries.setdefault(loc, []).append([eco, name, conda, rel])
        for loc, rows in entries.items():
            toc[f"names:{loc}"] = _digest(rows)
            if old is None or old.get(f"names:{loc}") != toc[f"names:{loc}"]:
                names.append(json.dumps({"source": loc, "entries": rows}))
        for adv_id, package, versions, status, reason in s.execute(
            select(VulnAdvisory.advisory_id, VulnRule.package, VulnRule.versions, VulnRule.status, VulnRule.reason)
            .join(VulnAdvisory, VulnAdvisory.id == VulnRule.advisory_pk)
            .order_by(VulnRule.id)
        ):
            doc = {"advisory": adv_id, "package": package, "versions": versions, "status": status, "reason": reason}
            key = f"rule:{_digest(doc)}"
            toc[key] = "1"
            if old is None or key not in old:
                rules.append(json.dumps(doc))
        for adv_id, chan, sd, fn, status, reason in s.execute(
            select(
                VulnAdvisory.advisory_id,
                Channel.name,
                Record.subdir,
                Record.filename,
                VulnLinkRow.status,
                VulnLinkRow.status_reason,
            )
            .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
            .join(Record, Record.id == VulnLinkRow.record_id)
            .join(Channel, Channel.id == Record.channel_id)
            .where(VulnLinkRow.curated_by == "link")
            .order_by(VulnLinkRow.id)
        ):
            doc = {
                "advisory": adv_id,
                "channel": chan,
                "subdir": sd,
                "filename": fn,
                "status": status,
                "reason": reason,
            }
            key = f"link:{adv_id}\x00{chan}/{sd}/{fn}"
            toc[key] = _digest(status, reason)
            if old is None or old.get(key) != toc[key]:
                links.append(json.dumps(doc))
    files = []
    for i, (loc, datas) in enumerate(sorted(sources.items())):
        head = json.dumps({"source": loc})
        e = w.add_lines(f"{PREFIX}/source-{i:04d}.jsonl", iter([head, *datas]))
        files.append(e.path)
    names_file = w.add_lines(f"{PREFIX}/names.jsonl", iter(names)).path
    rules_file = w.add_lines(f"{PREFIX}/rules.jsonl", iter(rules)).path
    links_file = w.add_lines(f"{PREFIX}/links.jsonl", iter(links)).path
    target = {
        "kind": "vulns",
        "watermark": watermark(toc),
        "base_watermark": watermark(old) if old is not None else None,
        "full": old is None,
        "source_files": files,
        "names_file": names_file,
        "rules_file": rules_file,
        "links_file": links_file,
        "records": sum(len(d) for d in sources.values()),
    }
    return target, toc


@dataclass
class VulnPayload:
    sources: list[tuple[str, list[Advisory]]] = field(default_factory=list)
    names: list[tuple[str, list[NameEntry]]] = field(default_factory=list)
    rules: list[dict[str, Any]] = field(default_factory=list)
    links: list[dict[str, Any]] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(len(a) for _, a in self.sources)


def parse(target: dict[str, Any], read: Any) -> VulnPayload:
    """The payload of a verified bundle (``read(path) -> bytes`` of a listed, verified file)."""
    out = VulnPayload()
    for path in target.get("source_files", []):
        lines = read(path).decode().splitlines()
        if not lines:
            continue
        loc = str(json.loads(lines[0])["source"])[:900]
        out.sources.append((loc, [Advisory.from_json(line) for line in lines[1:] if line]))
    for line in read(target["names_file"]).decode().splitlines():
        if line:
            doc = json.loads(line)
            out.names.append((str(doc["source"])[:900], [NameEntry(n, c, r, e) for e, n, c, r in doc["entries"]]))
    out.rules = [json.loads(x) for x in read(target["rules_file"]).decode().splitlines() if x]
    out.links = [json.loads(x) for x in read(target["links_file"]).decode().splitlines() if x]
    for r in out.rules:
        curation.check_status(r["status"])
        curation.check_versions(r["versions"])
    for r in out.links:
        curation.check_status(r["status"])
    return out


def label(origin_key: str, location: str) -> str:
    """The source's name on the receiving side: where it came from, through which bundle key."""
    return f"bundle:{origin_key}:{location}"


def apply(ctx: Context, origin_key: str, payload: VulnPayload) -> dict[str, Any]:
    """Store, merge and match as an online sync does; then curation. Returns counts."""
    rt = ctx.domains.vulns
    from condavault.vulns.sync import SyncReport

    report = SyncReport()
    mapping_changed = False
    with ctx.db.write_session() as s:
        store.lock_catalog(s)
        touched: set[int] = set()
        for loc, advisories in payload.sources:
            src = catalog.source_pk(s, label(origin_key, loc))
            stored = catalog.store_records(s, src, advisories)
            touched |= stored.touched
            report.records += len(advisories)
            report.records_new += stored.new
            report.records_changed += stored.changed
            report.records_unchanged += stored.unchanged
        for loc, entries in payload.names:
            src = catalog.source_pk(s, label(origin_key, loc))
            mapping_changed = catalog.store_name_entries(s, src, entries) or mapping_changed
        mapping = rt.build_mapping(s) if mapping_changed else rt.mapping()
        merged = catalog.remerge(s, touched, mapping, rt.preference)
        if mapping_changed:
            pks, _names = store.reindex_names(s, mapping)
            store.mark_pending(s, pks)
        report.created, report.updated, report.removed = merged.created, merged.updated, merged.removed
    if mapping_changed:
        rt._mapping_checked = 0.0
    rt._match_pending(report)
    curated = _curate(ctx, payload)
    rt.provider.invalidate()
    out = report.to_dict()
    out["curated"] = curated
    return out


def _curate(ctx: Context, payload: VulnPayload) -> int:
    n = 0
    with ctx.db.write_session() as s:
        for r in payload.rules:
            adv = store.find_advisory(s, r["advisory"])
            if adv is None:
                continue
            exists = s.scalar(
                select(VulnRule.id)
                .where(
                    VulnRule.advisory_pk == adv.id,
                    VulnRule.package == r["package"],
                    VulnRule.versions == r["versions"],
                    VulnRule.status == r["status"],
                )
                .limit(1)
            )
            if exists is None:
                curation.curate_range(s, adv, r["package"], r["versions"], r["status"], r.get("reason") or "", "bundle")
                n += 1
        for r in payload.links:
            adv = store.find_advisory(s, r["advisory"])
            if adv is None:
                continue
            link = s.scalar(
                select(VulnLinkRow)
                .join(Record, Record.id == VulnLinkRow.record_id)
                .join(Channel, Channel.id == Record.channel_id)
                .where(
                    VulnLinkRow.advisory_pk == adv.id,
                    Channel.name == r["channel"],
                    Record.subdir == r["subdir"],
                    Record.filename == r["filename"],
                )
            )
            if link is not None and (link.status, link.status_reason) != (r["status"], r.get("reason") or ""):
                curation.curate_links(s, [link], r["status"], r.get("reason") or "", "bundle")
                n += 1
    return n
