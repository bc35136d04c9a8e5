"""Read side: advisory lists, details, links per file/channel, history, and the cached dependency-tree risk.

Every function that returns records takes ``channel_ids``, the channels the caller may read; nothing
of another channel is ever returned.

The risk cache lives in ``vuln_record_state.risk`` and is valid for the fingerprint stored in
``vuln_channel_risk`` (the change sequence of every subdir of the channel, and the vulns generation): a
change to the channel's records or to any advisory, link or curation makes it stale and the next read
recomputes the channel. Recomputing re-solves only when the records changed: solved trees are kept per
process for the channel's record fingerprint, so a curation or advisory change costs no solve.
"""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record
from condavault.db.base import table as db_table
from condavault.db.base import utcnow
from condavault.indexing.models import SubdirState
from condavault.vulns import catalog, risk, services, solving, store
from condavault.vulns.advisory import Advisory
from condavault.vulns.mapping import NameMapping
from condavault.vulns.models import (
    VulnAdvisory,
    VulnAdvisoryId,
    VulnAdvisoryName,
    VulnChannelRisk,
    VulnCurationEvent,
    VulnLinkRow,
    VulnRecordState,
    VulnRule,
    counting_clause,
    counts,
)

REPORT_COLUMNS = [
    "channel",
    "subdir",
    "filename",
    "name",
    "version",
    "build",
    "advisory",
    "aliases",
    "score",
    "status",
    "match_kind",
    "curated_by",
    "status_reason",
    "risk",
    "risk_via",
]


def advisory_summary(row: VulnAdvisory, adv: Advisory | None = None, files: int | None = None) -> dict[str, Any]:
    adv = adv or Advisory.from_json(row.data)
    out = {
        "id": row.advisory_id,
        "aliases": list(adv.aliases),
        "summary": adv.summary,
        "score": row.score,
        "score_version": row.score_version,
        "score_source": row.score_source,
        "max_score": row.max_score,
        "published": row.published,
        "modified": row.modified,
        "withdrawn": row.withdrawn,
    }
    if files is not None:
        out["files"] = files
    return out


def advisory_detail(
    session: Session, row: VulnAdvisory, channel_ids: Collection[int], with_locations: bool = False
) -> dict[str, Any]:
    """One advisory; ``records`` lists the per-source versions it is merged from, with the source's
    location only for ``with_locations`` (system administrators: locations may be internal URLs)."""
    adv = Advisory.from_json(row.data)
    links = link_rows(session, channel_ids, advisory_pk=row.id)
    out = advisory_summary(row, adv, len(links))
    out.update(
        details=adv.details,
        scores=[s.__dict__ for s in adv.scores],
        affected=[
            {
                "kind": a.kind,
                "vendor": a.vendor,
                "product": a.product,
                "package": a.package,
                "ranges": [r.describe() for r in a.ranges],
                "versions": list(a.versions),
                "default_status": a.default_status,
            }
            for a in adv.affected
        ],
        references=list(adv.references),
        sources=list(adv.sources),
        records=[
            r if with_locations else {k: v for k, v in r.items() if k != "source"}
            for r in catalog.record_versions(session, row.id)
        ],
        conda_names=sorted(
            session.scalars(select(VulnAdvisoryName.name).where(VulnAdvisoryName.advisory_pk == row.id))
        ),
        rules=[
            {
                "id": r.id,
                "package": r.package,
                "versions": r.versions,
                "status": r.status,
                "reason": r.reason,
                "created_by": r.created_by,
                "created_at": r.created_at.isoformat(),
            }
            for r in session.scalars(select(VulnRule).where(VulnRule.advisory_pk == row.id).order_by(VulnRule.id))
        ],
        affected_files=links,
    )
    return out


def list_advisories(
    session: Session,
    channel_ids: Collection[int],
    *,
    q: str | None = None,
    package: str | None = None,
    channel_id: int | None = None,
    min_score: float | None = None,
    linked: bool = False,
    limit: int = 100,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Advisories, optionally only those linked to files of a package / channel (readable ones only)."""
    visible = [c for c in channel_ids if channel_id is None or c == channel_id]
    counts_q = (
        select(VulnLinkRow.advisory_pk, func.count(VulnLinkRow.id))
        .join(Record, Record.id == VulnLinkRow.record_id)
        .where(Record.channel_id.in_(visible or [-1]))
        .group_by(VulnLinkRow.advisory_pk)
    )
    if package:
        counts_q = counts_q.where(Record.name == package)
    counts = dict(session.execute(counts_q).all())  # type: ignore[arg-type]
    stmt = select(VulnAdvisory)
    if q:
        stmt = stmt.where(VulnAdvisory.id.in_(store.search_pks(session, q) or [-1]))
    if package or channel_id is not None or linked:
        stmt = stmt.where(VulnAdvisory.id.in_(list(counts) or [-1]))
    if min_score is not None:
        stmt = stmt.where(VulnAdvisory.score >= min_score)
    stmt = stmt.order_by(VulnAdvisory.score.desc().nulls_last(), VulnAdvisory.advisory_id).limit(limit).offset(offset)
    return [advisory_summary(r, files=counts.get(r.id, 0)) for r in session.scalars(stmt)]


def link_rows(
    session: Session,
    channel_ids: Collection[int],
    *,
    advisory_pk: int | None = None,
    record_ids: Iterable[int] | None = None,
    package: str | None = None,
) -> list[dict[str, Any]]:
    """Links (one row per advisory x file) in readable channels, newest-first by score."""
    stmt = (
        select(VulnLinkRow, VulnAdvisory, Record, Channel.name, VulnRecordState.risk, VulnRecordState.risk_via)
        .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
        .join(Record, Record.id == VulnLinkRow.record_id)
        .join(Channel, Channel.id == Record.channel_id)
        .outerjoin(VulnRecordState, VulnRecordState.record_id == Record.id)
        .where(Record.channel_id.in_(list(channel_ids) or [-1]))
    )
    if advisory_pk is not None:
        stmt = stmt.where(VulnLinkRow.advisory_pk == advisory_pk)
    if record_ids is not None:
        stmt = stmt.where(Record.id.in_(list(record_ids) or [-1]))
    if package:
        stmt = stmt.where(Record.name == package)
    stmt = stmt.order_by(Channel.name, Record.subdir, Record.filename, VulnAdvisory.advisory_id)
    out = []
    aliases_of: dict[int, list[str]] = {}  # parse each advisory's JSON once, not once per link
    for link, adv, rec, chan, rsk, via in session.execute(stmt):
        aliases = aliases_of.get(adv.id)
        if aliases is None:
            aliases = aliases_of[adv.id] = list(json.loads(adv.data).get("aliases", []))
        out.append(
            {
                "link_id": link.id,
                "channel": chan,
                "subdir": rec.subdir,
                "filename": rec.filename,
                "name": rec.name,
                "version": rec.version,
                "build": rec.build,
                "advisory": adv.advisory_id,
                "aliases": aliases,
                "score": adv.score,
                "score_version": adv.score_version,
                "status": link.status,
                "counts": counts(link.status, link.match_kind),
                "curated_by": link.curated_by,
                "status_reason": link.status_reason,
                "updated_by": link.updated_by,
                "matched_by": link.matched_by,
                "match_kind": link.match_kind,
                "reason": link.reason,
                "evidence": json.loads(link.evidence) if link.evidence else None,
                "risk": rsk,
                "risk_via": via,
            }
        )
    return out


def history(
    session: Session, channel_ids: Collection[int], advisory_id: str | None = None, limit: int = 500
) -> list[dict[str, Any]]:
    stmt = select(VulnCurationEvent).order_by(VulnCurationEvent.id.desc()).limit(limit)
    if advisory_id:  # events are kept under the id the advisory had then: any of its ids now
        ids = {advisory_id}
        pk = session.scalar(select(VulnAdvisory.id).where(VulnAdvisory.advisory_id == advisory_id))
        if pk is not None:
            ids |= set(session.scalars(select(VulnAdvisoryId.ident).where(VulnAdvisoryId.advisory_pk == pk)))
        stmt = stmt.where(func.upper(VulnCurationEvent.advisory_id).in_(sorted(i.upper() for i in ids)))
    allowed = set(channel_ids)
    out = []
    for e in session.scalars(stmt):
        if e.channel_id is not None and e.channel_id not in allowed:
            continue
        out.append(
            {
                "id": e.id,
                "advisory": e.advisory_id,
                "scope": e.scope,
                "target": e.target,
                "before": e.before,
                "after": e.after,
                "reason": e.reason,
                "actor": e.actor,
                "at": e.at.isoformat(),
                "link_id": e.link_id,
                "rule_id": e.rule_id,
            }
        )
    return out


def to_csv(rows: list[dict[str, Any]], columns: list[str] = REPORT_COLUMNS) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    for r in rows:
        w.writerow(
            [" ".join(r[c]) if isinstance(r.get(c), list) else ("" if r.get(c) is None else r.get(c)) for c in columns]
        )
    return buf.getvalue()


# -- dependency-tree risk cache ---------------------------------------------------------------------


def records_fingerprint(session: Session, channel_id: int) -> str:
    """Changes with every upload, removal, import or patch of the channel (its subdirs' change sequences)."""
    rows = session.execute(
        select(SubdirState.subdir, SubdirState.change_seq)
        .where(SubdirState.channel_id == channel_id)
        .order_by(SubdirState.subdir)
    )
    return ",".join(f"{sd}={seq}" for sd, seq in rows)


def fingerprint(session: Session, channel_id: int) -> str:
    return f"{records_fingerprint(session, channel_id)}:{store.get_generation(session)}"


class _TreeCache:
    """Solved trees per (channel, records fingerprint), for a few channels, in this process."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._trees: OrderedDict[tuple[int, str], dict[int, risk.Tree]] = OrderedDict()

    def get(self, channel_id: int, records_fp: str) -> dict[int, risk.Tree]:
        with self._lock:
            key = (channel_id, records_fp)
            trees = self._trees.pop(key, None)
            if trees is None:
                for k in [k for k in self._trees if k[0] == channel_id]:
                    del self._trees[k]
                trees = {}
            self._trees[key] = trees
            while len(self._trees) > self.size:
                self._trees.popitem(last=False)
            return trees

    def clear(self) -> None:
        with self._lock:
            self._trees.clear()


TREES = _TreeCache()


def solve_trees(
    session: Session, channel_id: int, wanted: dict[int, tuple[str, str, str, str]], ids: dict[tuple[str, str], int]
) -> dict[int, risk.Tree]:
    """Solve the tree of each record id in ``wanted`` (subdir, name, version, build) over its channel."""
    from condavault.vulns.envcheck import channel_repodata

    name = session.scalar(select(Channel.name).where(Channel.id == channel_id)) or str(channel_id)
    subdirs = {sd for sd, _ in ids}
    source = lambda _n, sd: channel_repodata(session, channel_id, sd)  # noqa: E731
    out: dict[int, risk.Tree] = {}
    universe = solving.Universe([name], source, "http://condavault.invalid/api/repo")
    with solving.TreeSolver(universe, subdirs) as solver:
        trees = solver.trees(list(wanted.values()))
    for rid, want in wanted.items():
        tree = trees[want]
        out[rid] = (
            tree
            if isinstance(tree, solving.Unsolvable)
            else [ids[(m.subdir, m.filename)] for m in tree if (m.subdir, m.filename) in ids]
        )
    return out


def _unmatched(session: Session, channel_id: int) -> list[int]:
    return services.unmatched_record_ids(session, 10**9, channel_id)


def risk_is_fresh(session: Session, channel_id: int) -> bool:
    """Whether the cached risk of the channel is current (a read-only check before taking a write lock)."""
    cached = session.get(VulnChannelRisk, channel_id)
    return (
        cached is not None
        and cached.fingerprint == fingerprint(session, channel_id)
        and not _unmatched(session, channel_id)
    )


@dataclass
class _RiskInputs:
    """What a risk computation reads: the records (as closure nodes), their own scores, the bound."""

    info: dict[int, str]  # record id -> "subdir/name-version-build"
    keys: dict[int, tuple[str, str, str, str]]  # record id -> (subdir, name, version, build)
    ids: dict[tuple[str, str], int]  # (subdir, filename) -> record id
    own: dict[int, float]
    upper: dict[int, risk.Risk]  # the closure bound: only these records need a solve

    @classmethod
    def read(cls, session: Session, channel_id: int) -> _RiskInputs:
        nodes = []
        info: dict[int, str] = {}
        keys: dict[int, tuple[str, str, str, str]] = {}
        ids: dict[tuple[str, str], int] = {}
        for rid, sd, fn, name, version, build, rec_json, frag in session.execute(
            select(
                Record.id,
                Record.subdir,
                Record.filename,
                Record.name,
                Record.version,
                Record.build,
                Record.record,
                Record.fragment,
            ).where(Record.channel_id == channel_id, Record.removed.is_(False))
        ):
            nodes.append(risk.Node(rid, sd, name, version, risk.depends_of(rec_json, frag)))
            info[rid] = f"{sd}/{name}-{version}-{build}"
            keys[rid] = (sd, name, version, build)
            ids[(sd, fn)] = rid
        own: dict[int, float] = {}
        for rid, score in session.execute(
            select(VulnLinkRow.record_id, func.max(VulnAdvisory.score))
            .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
            .join(Record, Record.id == VulnLinkRow.record_id)
            .where(Record.channel_id == channel_id, counting_clause())
            .group_by(VulnLinkRow.record_id)
        ):
            if score is not None:
                own[rid] = float(score)
        return cls(info, keys, ids, own, risk.compute(nodes, own))

    def solve_missing(self, session: Session, channel_id: int) -> dict[int, risk.Tree]:
        """The solved trees of the bounded records: cached ones, the others solved now (and cached)."""
        trees = TREES.get(channel_id, records_fingerprint(session, channel_id))
        missing = {rid: self.keys[rid] for rid in self.upper if rid not in trees}
        if missing:
            trees.update(solve_trees(session, channel_id, missing, self.ids))
        return trees


def presolve_channel_risk(session: Session, channel_id: int) -> None:
    """Solve what a risk recomputation will need, in a read-only session, so that the write
    transaction of :func:`ensure_channel_risk` does not hold the database's write lock while solving."""
    _RiskInputs.read(session, channel_id).solve_missing(session, channel_id)


def ensure_channel_risk(session: Session, channel_id: int, mapping: NameMapping, force: bool = False) -> bool:
    """Recompute the risk of every record of the channel if its fingerprint changed; True if recomputed."""
    pending = _unmatched(session, channel_id)
    if pending:
        services.match_records(session, pending, mapping)
    # records no advisory maps to have no state row yet: give them one to hold their (inherited) risk
    bare = session.scalars(
        select(Record.id)
        .outerjoin(VulnRecordState, VulnRecordState.record_id == Record.id)
        .where(Record.channel_id == channel_id, VulnRecordState.record_id.is_(None))
    )
    now = utcnow()
    rows = [{"record_id": rid, "channel_id": channel_id, "matched_at": now} for rid in bare]
    store.insert_ignore(session, VulnRecordState.__table__, rows)  # type: ignore[arg-type]
    fp = fingerprint(session, channel_id)
    cached = session.get(VulnChannelRisk, channel_id)
    if cached is not None and cached.fingerprint == fp and not force:
        return False
    started = time.perf_counter()
    inputs = _RiskInputs.read(session, channel_id)
    info = inputs.info
    result = risk.refine(inputs.upper, inputs.own, inputs.solve_missing(session, channel_id))
    params: list[dict[str, Any]] = [{"rid": rid, "r_risk": None, "r_via": None} for rid in info]
    for p in params:
        r = result.get(p["rid"])
        if r is not None:
            via = info.get(r.via, str(r.via))
            if r.unsolvable:
                via = f"{via} (dependencies not solvable: {r.unsolvable})"
            p["r_risk"], p["r_via"] = r.score, via[:300]
    table = db_table(VulnRecordState)
    stmt = (
        update(table)
        .where(table.c.record_id == bindparam("rid"))
        .values(risk=bindparam("r_risk"), risk_via=bindparam("r_via"))
    )
    for part in store.chunks(params, 2000):
        session.connection().execute(stmt, list(part))
    seconds = time.perf_counter() - started
    fp = fingerprint(session, channel_id)
    if cached is None:  # another replica may insert it at the same time
        row = {"channel_id": channel_id, "fingerprint": fp, "computed_at": utcnow(), "seconds": seconds}
        store.insert_ignore(session, VulnChannelRisk.__table__, [row])  # type: ignore[arg-type]
    session.execute(
        update(VulnChannelRisk)
        .where(VulnChannelRisk.channel_id == channel_id)
        .values(fingerprint=fp, computed_at=utcnow(), seconds=seconds)
    )
    return True


# -- SBOM of one package file -----------------------------------------------------------------------


def resolved_closure(session: Session, rec: Record) -> tuple[list[Record], dict[int, list[int]]]:
    """The file and the records its run dependencies resolve to in its channel (a py-rattler solve),
    with edges from each record to the solved records its ``depends`` name.

    When the tree cannot be solved, the file alone (the SBOM still lists its own advisories).
    """
    ids = {
        (sd, fn): rid
        for rid, sd, fn in session.execute(
            select(Record.id, Record.subdir, Record.filename).where(
                Record.channel_id == rec.channel_id, Record.removed.is_(False)
            )
        )
    }
    ids.setdefault((rec.subdir, rec.filename), rec.id)
    tree = solve_trees(session, rec.channel_id, {rec.id: (rec.subdir, rec.name, rec.version, rec.build)}, ids)[rec.id]
    members = [rec.id] + ([] if isinstance(tree, solving.Unsolvable) else [m for m in tree if m != rec.id])
    rows = {r.id: r for r in session.scalars(select(Record).where(Record.id.in_(members)))}
    by_name = {r.name: r.id for r in rows.values()}
    edges: dict[int, list[int]] = {}
    for rid, r in rows.items():
        deps = []
        for spec in risk.depends_of(r.record, r.fragment):
            parsed = risk.parse_spec(spec)
            if parsed is not None and parsed[0] in by_name and by_name[parsed[0]] != rid:
                deps.append(by_name[parsed[0]])
        edges[rid] = deps
    return [rows[m] for m in members if m in rows], edges


def package_dict(rec: Record, channel: str) -> dict[str, Any]:
    return {
        "name": rec.name,
        "version": rec.version,
        "build": rec.build,
        "subdir": rec.subdir,
        "filename": rec.filename,
        "channel": channel,
        "sha256": rec.sha256,
        "license": rec.license,
    }


def advisories_by_id(session: Session, ids: Iterable[str]) -> dict[str, Advisory]:
    out: dict[str, Advisory] = {}
    for part in store.chunks(sorted(set(ids))):
        for aid, data in session.execute(
            select(VulnAdvisory.advisory_id, VulnAdvisory.data).where(VulnAdvisory.advisory_id.in_(part))
        ):
            out[aid] = Advisory.from_json(data)
    return out


def package_sbom(session: Session, rec: Record, channel: str, channel_ids: Collection[int]) -> dict[str, Any]:
    from condavault.vulns import sbom

    records, edges = resolved_closure(session, rec)
    pkgs = {r.id: package_dict(r, channel) for r in records}
    refs = {rid: sbom.component(p)["bom-ref"] for rid, p in pkgs.items()}
    links = link_rows(session, channel_ids, record_ids=list(pkgs))
    ref_of_file = {(p["subdir"], p["filename"]): refs[rid] for rid, p in pkgs.items()}
    pairs = [(ref_of_file[(lk["subdir"], lk["filename"])], lk) for lk in links]
    advisories = advisories_by_id(session, [lk["advisory"] for lk in links])
    deps = {refs[rid]: [refs[d] for d in ds] for rid, ds in edges.items()}
    bom = sbom.document(list(pkgs.values()), pairs, advisories, root=pkgs[rec.id], dependencies=deps, name=rec.filename)
    from condavault.signing.service import sbom_properties

    bom["metadata"]["component"]["properties"].extend(sbom_properties(session, rec.id))  # signature outcome
    return bom
