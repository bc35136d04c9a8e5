"""Shaping a page of results: the build each package shows, its summary, CVE count and worst score."""

from __future__ import annotations

import fnmatch
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from condavault.channels.models import Record
from condavault.packages.specs import version_key
from condavault.search import query as qp
from condavault.search.common import Pkg
from condavault.search.index import chunks
from condavault.search.models import SearchFile, SearchPackage
from condavault.vulns.models import VulnAdvisory, VulnLinkRow, counting_clause


def record_cols() -> tuple[Any, ...]:
    """The columns of a record that a result shows (read once by record-level queries, kept in ``Pkg``)."""
    R = Record
    return (
        R.id,
        R.channel_id,
        R.name,
        R.version,
        R.build,
        R.build_number,
        R.subdir,
        R.license,
        R.timestamp,
        R.filename,
        R.sha256,
    )


def shape(
    s: Session,
    page: list[Pkg],
    channels: dict[int, str],
    parsed: qp.Parsed,
    subdir: str | None,
    lic: str | None,
) -> list[dict[str, Any]]:
    if not page:
        return []
    R = Record
    cols = record_cols()
    # the candidate records of each package on the page (record-level queries read them already)
    cand: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for p in page:
        if p.records is not None:
            cand[(p.channel_id, p.name)].extend(p.records)
    text_pkgs = [p for p in page if p.records is None]
    if text_pkgs and subdir is None and lic is None:  # the newest build, as the document says
        latest = [p.latest_id for p in text_pkgs if p.latest_id is not None]
        for row in s.execute(select(*cols).where(R.id.in_(latest), R.removed.is_(False))):
            cand[(row.channel_id, row.name)].append(row)
        text_pkgs = [p for p in text_pkgs if (p.channel_id, p.name) not in cand]
    if text_pkgs:  # filtered (or a stale document): the builds of these packages, chosen below
        wanted = {(p.channel_id, p.name) for p in text_pkgs}
        stmt = select(*cols).where(
            R.name.in_(sorted({n for _, n in wanted})),
            R.channel_id.in_(sorted({c for c, _ in wanted})),
            R.removed.is_(False),
        )
        for row in s.execute(stmt):
            if (row.channel_id, row.name) in wanted:
                cand[(row.channel_id, row.name)].append(row)
    docs: dict[tuple[int, str], tuple[str, str | None]] = {}
    doc_ids = [p.doc_id for p in page if p.doc_id is not None]
    if doc_ids:
        P = SearchPackage
        for c, n, summ, lic_ in s.execute(select(P.channel_id, P.name, P.summary, P.license).where(P.id.in_(doc_ids))):
            docs[(c, n)] = (summ, lic_)
    rec_keys = {(p.channel_id, p.name) for p in page if p.doc_id is None}
    if rec_keys:
        P = SearchPackage
        for c, n, summ, lic_ in s.execute(
            select(P.channel_id, P.name, P.summary, P.license).where(
                P.name.in_(sorted({n for _, n in rec_keys})), P.channel_id.in_(sorted({c for c, _ in rec_keys}))
            )
        ):
            if (c, n) in rec_keys:
                docs[(c, n)] = (summ, lic_)
    chosen: dict[tuple[int, str], Any] = {}  # Any: a Row of ``cols``
    for p in page:
        rs = cand.get((p.channel_id, p.name), [])
        keep = [
            r
            for r in rs
            if (subdir is None or r.subdir == subdir)
            and (lic is None or fnmatch.fnmatchcase((r.license or "").lower(), lic))
        ] or rs
        if keep:
            chosen[(p.channel_id, p.name)] = max(
                keep, key=lambda r: (version_key(r.version), r.build_number, r.timestamp or 0, r.id)
            )
    rids = [r.id for r in chosen.values()]
    cves: Counter[int] = Counter()
    maxes: dict[int, float] = {}
    for part in chunks(rids):
        for rid, n_links, mx in s.execute(
            select(VulnLinkRow.record_id, func.count(), func.max(VulnAdvisory.score))
            .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
            .where(VulnLinkRow.record_id.in_(part), counting_clause())
            .group_by(VulnLinkRow.record_id)
        ):
            cves[rid] = int(n_links)
            if mx is not None:
                maxes[rid] = float(mx)
    hits = file_hits(s, [r.sha256 for r in chosen.values() if r.sha256], parsed)
    out = []
    for p in page:
        r = chosen.get((p.channel_id, p.name))
        summary, doc_lic = docs.get((p.channel_id, p.name), ("", None))
        if r is None:  # the records went away between the two queries: show the document
            out.append(
                {
                    "channel": channels[p.channel_id],
                    "name": p.name,
                    "version": None,
                    "build": None,
                    "subdir": None,
                    "summary": summary,
                    "license": doc_lic,
                    "max_score": None,
                    "cves": 0,
                    "timestamp": None,
                    "filename": None,
                    "sha256": None,
                    "matched": p.matched,
                    "score": p.score,
                    "builds": 0,
                }
            )
            continue
        matched = p.matched
        if r.sha256 in hits:
            matched = hits[r.sha256]
        out.append(
            {
                "channel": channels[p.channel_id],
                "name": p.name,
                "version": r.version,
                "build": r.build,
                "subdir": r.subdir,
                "summary": summary,
                "license": r.license or doc_lic,
                "max_score": maxes.get(r.id),
                "cves": cves.get(r.id, 0),
                "timestamp": r.timestamp,
                "filename": r.filename,
                "sha256": r.sha256,
                "matched": matched,
                "score": round(p.score, 3),
                "builds": len(p.records if p.records is not None else cand.get((p.channel_id, p.name), [])),
            }
        )
    return out


def file_hits(s: Session, shas: list[str], parsed: qp.Parsed) -> dict[str, str]:
    """For ``sha256:`` queries: which file of a shown package carries the digest (``sha256:<path>``)."""
    out: dict[str, str] = {}
    for h in parsed.sha256:
        for pkg, path in s.execute(
            select(SearchFile.package_sha256, SearchFile.path).where(
                SearchFile.sha256 == h, SearchFile.package_sha256.in_(shas)
            )
        ):
            out.setdefault(pkg, f"path:{path}")
    return out
