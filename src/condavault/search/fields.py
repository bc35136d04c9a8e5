"""Record-level queries (MatchSpec, ``path:``, ``sha256:``, ``cve:``, ``pkg:``, ``license:``, ``has:``):
the matching records, grouped into packages."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, Integer, func, or_, select
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record
from condavault.packages.specs import version_key
from condavault.search import query as qp
from condavault.search.common import MAX_RECORDS, Pkg, glob_like, one_of, within
from condavault.search.index import chunks
from condavault.search.models import SearchFile
from condavault.search.shape import record_cols
from condavault.search.text import text_candidates
from condavault.vulns.models import VulnAdvisory, VulnAdvisoryId, VulnLinkRow, counting_clause


def record_conditions(s: Session, parsed: qp.Parsed) -> tuple[list[ColumnElement[bool]], dict[str, Any]]:
    R = Record
    conds: list[ColumnElement[bool]] = []
    info: dict[str, Any] = {}
    if parsed.spec is not None:
        name = parsed.spec.name
        conds.append(R.name.like(glob_like(name), escape="\\") if "*" in name else R.name == name)
        if parsed.spec_subdir:
            conds.append(R.subdir == parsed.spec_subdir)
    # files resolve to package digests first (their own indexes), then records by digest
    for i, p in enumerate(parsed.paths):
        holders = list(s.scalars(select(SearchFile.package_sha256).where(SearchFile.path == p).limit(MAX_RECORDS)))
        conds.append(one_of(s, R.sha256, holders, key=f"path_holders_{i}"))
        info["matched"] = f"path:{p}"
    for i, h in enumerate(parsed.sha256):
        found = select(SearchFile.package_sha256).where(SearchFile.sha256 == h).limit(MAX_RECORDS)
        holders = list(s.scalars(found))
        conds.append(one_of(s, R.sha256, [h, *holders], key=f"sha_holders_{i}"))
    for c in parsed.cves:
        adv = select(VulnAdvisory.id).where(
            or_(
                VulnAdvisory.advisory_id == c,
                VulnAdvisory.id.in_(select(VulnAdvisoryId.advisory_pk).where(VulnAdvisoryId.ident == c)),
            )
        )
        conds.append(R.id.in_(select(VulnLinkRow.record_id).where(VulnLinkRow.advisory_pk.in_(adv), counting_clause())))
        info["matched"] = f"cve:{c}"
    for pu in parsed.purls:
        conds.append(R.name == pu.name)
        if pu.version:
            conds.append(R.version == pu.version)
        if pu.subdir:
            conds.append(R.subdir == pu.subdir)
        if pu.build:
            conds.append(R.build == pu.build)
        if pu.channel:
            info.setdefault("channels", set()).add(pu.channel)
    for lic in parsed.licenses:
        conds.append(func.lower(R.license).like(glob_like(lic.lower()), escape="\\"))
    for flag in parsed.has:
        keys = qp.HAS[flag]
        if keys is None:
            conds.append(R.id.in_(select(VulnLinkRow.record_id).where(counting_clause())))
        else:
            conds.append(or_(*(R.paths_summary.like(f'%"{k}": true%') for k in keys)))
    return conds, info


def record_candidates(s: Session, parsed: qp.Parsed, ids: list[int]) -> tuple[list[Pkg], bool]:
    R = Record
    conds, info = record_conditions(s, parsed)
    if info.get("channels"):
        names = {c: n for c, n in s.execute(select(Channel.id, Channel.name).where(Channel.id.in_(ids)))}
        ids = [cid for cid in ids if names.get(cid) in info["channels"]]
        if not ids:
            return [], False
    if parsed.text:  # free text next to field terms: only packages the text finds
        text_pkgs, _ = text_candidates(s, qp.Parsed(text=parsed.text), ids)
        keys = {(p.channel_id, p.name) for p in text_pkgs}
        if not keys:
            return [], False
        conds.append(R.name.in_(sorted({n for _, n in keys})))
    else:
        keys = None
    stmt = (
        select(*record_cols())
        .where(within(s, R.channel_id, ids), R.removed.is_(False), *conds)
        .order_by(R.id.desc())
        .limit(MAX_RECORDS + 1)
    )
    rows = s.execute(stmt).all()
    capped = len(rows) > MAX_RECORDS
    rows = rows[:MAX_RECORDS]
    spec = parsed.spec
    if spec is not None:
        rows = [r for r in rows if spec.matches(r.version, r.build)]
    grouped: dict[tuple[int, str], list[Any]] = defaultdict(list)
    for r in rows:
        if keys is None or (r.channel_id, r.name) in keys:
            grouped[(r.channel_id, r.name)].append(r)
    scores = record_scores(s, [r.id for rs in grouped.values() for r in rs])
    out = []
    for (cid, name), rs in grouped.items():
        best = max(rs, key=lambda r: (version_key(r.version), r.timestamp or 0, r.id))
        mx = max((scores[r.id] for r in rs if r.id in scores), default=None)
        out.append(
            Pkg(
                cid,
                name,
                0.0,
                {r.subdir for r in rs},
                best.license,
                mx,
                best.timestamp or 0,
                records=rs,
                matched=info.get("matched"),
            )
        )
    return out, capped


def record_scores(s: Session, record_ids: Sequence[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    # one expanding parameter: the ids are bound as they are, not coerced one by one into the statement
    for part in chunks(list(record_ids)):
        for rid, score in s.execute(
            select(VulnLinkRow.record_id, func.max(VulnAdvisory.score))
            .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
            .where(one_of(s, VulnLinkRow.record_id, list(part), key="rids", kind=Integer), counting_clause())
            .group_by(VulnLinkRow.record_id)
        ):
            if score is not None:
                out[rid] = float(score)
    return out
