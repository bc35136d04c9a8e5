"""What the mirror CVE filters consult: ``ctx.domains.vulns.provider``.

``vuln_links(subdir, filename, record)`` matches an *upstream* record dict on the fly by name + version
against the stored advisories (indexed by conda name, rebuilt when the vulns generation changes), and
applies curation: a per-link decision stored for the same ``subdir/filename`` (in any channel) wins,
then the newest rule (advisory x package x version range), else ``reported``.
``dependency_risk_for(records)`` computes the (solved) dependency-tree risk over the given record universe.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from condavault.channels.models import Record
from condavault.mirror.filters.base import VulnLink
from condavault.vulns import curation, risk, store
from condavault.vulns.advisory import Advisory
from condavault.vulns.matching import Candidate, index_by_conda_name, match_record
from condavault.vulns.models import VulnAdvisory, VulnLinkRow

if TYPE_CHECKING:
    from condavault.db.session import Database
    from condavault.vulns.mapping import NameMapping

FRESHNESS = 1.0  # seconds between generation checks


@dataclass
class _Snapshot:
    generation: int
    index: dict[str, list[Candidate]]
    pk_of: dict[str, int]
    scores: dict[str, float | None]
    rules: dict[tuple[int, str], list[curation.RuleView]]
    per_file: dict[tuple[str, str, str], str]  # (subdir, filename, advisory id) -> curated status
    memo: dict[tuple[str, str], list[Any]]  # (name, version) -> matches (builds share verdicts)


class VulnProvider:
    """The object published as ``ctx.domains.vulns.provider``."""

    def __init__(self, db: Database, mapping: Callable[[], NameMapping]) -> None:
        self._db = db
        self._mapping = mapping
        self._snap: _Snapshot | None = None
        self._checked = 0.0
        self._lock = threading.Lock()

    def invalidate(self) -> None:
        self._checked = 0.0

    def _snapshot(self) -> _Snapshot:
        now = time.monotonic()
        snap = self._snap
        if snap is not None and now - self._checked < FRESHNESS:
            return snap
        with self._lock:
            with self._db.session() as s:
                gen = store.get_generation(s)
                if self._snap is not None and self._snap.generation == gen:
                    self._checked = now
                    return self._snap
                rows = list(
                    s.execute(select(VulnAdvisory.id, VulnAdvisory.advisory_id, VulnAdvisory.data, VulnAdvisory.score))
                )
                advisories = [Advisory.from_json(data) for _, _, data, _ in rows]
                pk_of = {aid: pk for pk, aid, _, _ in rows}
                scores = {aid: score for _, aid, _, score in rows}
                rules = curation.load_rules(s)
                per_file: dict[tuple[str, str, str], str] = {}
                for sd, fn, aid, status in s.execute(
                    select(Record.subdir, Record.filename, VulnAdvisory.advisory_id, VulnLinkRow.status)
                    .join(Record, Record.id == VulnLinkRow.record_id)
                    .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
                    .where(VulnLinkRow.curated_by == "link")
                ):
                    per_file[(sd, fn, aid)] = status
            index = index_by_conda_name(advisories, self._mapping())
            self._snap = _Snapshot(gen, index, pk_of, scores, rules, per_file, {})
            self._checked = now
            return self._snap

    def vuln_links(self, subdir: str, filename: str, record: dict[str, Any]) -> list[VulnLink]:
        """Advisories affecting an upstream record, with curation applied."""
        snap = self._snapshot()
        name = str(record.get("name", ""))
        if name not in snap.index:
            return []
        out = []
        version = str(record.get("version", ""))
        by_id = {c.advisory.id: c.advisory for c in snap.index[name]}
        matches = snap.memo.get((name, version))
        if matches is None:
            priority = self._mapping().feed_priority
            matches = snap.memo[(name, version)] = match_record(
                {"name": name, "version": version}, snap.index, priority
            )
        for m in matches:
            adv = by_id[m.advisory_id]
            status = snap.per_file.get((subdir, filename, adv.id))
            if status is None:
                rule = curation.rule_for(snap.rules, snap.pk_of.get(adv.id, -1), name, version)
                status = rule.status if rule else "reported"
            out.append(VulnLink(adv.id, tuple(adv.aliases), snap.scores.get(adv.id), status, m.kind))
        return out

    def own_score(self, subdir: str, filename: str, record: dict[str, Any]) -> float | None:
        """The worst effective score of the links that count (not cleared / mitigated, not bundled)."""
        scores = [link.score for link in self.vuln_links(subdir, filename, record) if link.counts and link.score]
        return max(scores, default=None)

    def dependency_risk_for(self, records: dict[tuple[str, str], dict]) -> Callable[[str, str], float | None]:
        """Solved dependency-tree risk of each record of ``records`` over that universe (see ``vulns.risk``)."""
        return risk.risk_lookup(records, lambda sd, fn, rec: self.own_score(sd, fn, dict(rec)))
