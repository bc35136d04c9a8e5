"""The served advisory as a pure function of the stored per-source records.

Every source keeps its own version of each record it carries (``vuln_source_records``: one row per
source x feed x record id, with its content hash). Records are joined by a persistent **alias graph**:
two records belong to the same advisory when they share an id or alias, transitively (connected
components, :func:`components`). The merged advisory of a component is :func:`merge` of its records,
which depends only on the set of records, never on the order they arrived in; so syncing sources one at
a time, in any order, or all at once gives the same advisories, aliases and links.

Rules of :func:`merge`:

* **one version per record**: when several sources carry the same feed x record id, the newest
  (``modified``) wins, then the greatest content hash (any fixed tie-break keeps the result a function of
  the set);
* **legacy rows** (advisories stored before per-source records existed, feed ``legacy``) take part only
  while no real record describes the advisory;
* **primary id**: the smallest CVE id that is a record's own id, else the smallest CVE alias, else the
  smallest id; every other id is an alias;
* **content**: the union of every live record's affected products (each tagged with its feed, which
  matching uses to prefer one source per conda name), scores (each with version, source and feed),
  references and feeds; the primary record's summary, else the first one in feed order; the longest
  details; the earliest ``published`` and latest ``modified``;
* **withdrawn** records keep their ids in the group but add no products; the advisory is withdrawn when
  every record is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from condavault.vulns.advisory import Advisory

LEGACY = "legacy"
MAX_ID = 100  # the width of the id columns
FEED_ORDER = ("osv", "nvd", "nvd-1.1", "cve5", LEGACY)  # display order only (summary, references)


def content_hash(advisory: Advisory) -> str:
    """sha256 of the normalised JSON."""
    return hashlib.sha256(advisory.to_json().encode()).hexdigest()


@dataclass(frozen=True)
class SourceRecord:
    """One source's version of one record."""

    feed: str
    record_id: str
    content_hash: str
    modified: str
    advisory: Advisory
    data: str = ""  # the normalised JSON (set by :meth:`of`)

    @classmethod
    def of(cls, advisory: Advisory) -> SourceRecord:
        feed = advisory.sources[0] if advisory.sources else ""
        data = advisory.to_json()
        digest = hashlib.sha256(data.encode()).hexdigest()
        return cls(feed, advisory.id, digest, advisory.modified or "", advisory, data)

    @property
    def key(self) -> tuple[str, str]:
        return (self.feed, self.record_id)

    def newer_than(self, other: SourceRecord) -> bool:
        return (self.modified, self.content_hash) > (other.modified, other.content_hash)


def idents(advisory: Advisory) -> set[str]:
    """The upper-cased ids of a record (its id and aliases): the nodes it joins in the alias graph (ids
    longer than 100 characters, which no real scheme has, are left out rather than cut)."""
    return {i.strip().upper() for i in advisory.ids if i and i.strip() and len(i.strip()) <= MAX_ID}


def best_versions(records: Iterable[SourceRecord]) -> list[SourceRecord]:
    """One version per (feed, record id): the newest, ties broken by content hash."""
    best: dict[tuple[str, str], SourceRecord] = {}
    for rec in records:
        held = best.get(rec.key)
        if held is None or rec.newer_than(held):
            best[rec.key] = rec
    return [best[k] for k in sorted(best)]


def components(nodes: Mapping[Any, Iterable[str]]) -> list[set[Any]]:
    """Connected components of records that share an ident (``nodes``: record key -> idents)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for ids in nodes.values():
        ids = sorted(ids)
        for other in ids[1:]:
            ra, rb = find(ids[0]), find(other)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[str, set[Any]] = {}
    loners: list[set[Any]] = []
    for key, ids in nodes.items():
        ids = list(ids)
        if not ids:
            loners.append({key})
            continue
        groups.setdefault(find(ids[0]), set()).add(key)
    return [groups[k] for k in sorted(groups)] + loners


def primary_id(records: Iterable[SourceRecord]) -> str:
    """See the module docstring."""
    records = list(records)
    own = sorted(r.record_id.upper() for r in records if r.record_id.upper().startswith("CVE-"))
    if own:
        return own[0]
    every = sorted({i for r in records for i in idents(r.advisory)})
    cves = [i for i in every if i.startswith("CVE-")]
    return cves[0] if cves else every[0]


def _feed_rank(feed: str) -> int:
    return FEED_ORDER.index(feed) if feed in FEED_ORDER else len(FEED_ORDER)


def merge(records: Iterable[SourceRecord]) -> Advisory:
    """The served advisory of one component (see the module docstring)."""
    chosen = best_versions(records)
    if not chosen:
        raise ValueError("merge() needs at least one record")
    real = [r for r in chosen if r.feed != LEGACY]
    live = real or chosen
    primary = primary_id(chosen)
    ordered = sorted(live, key=lambda r: (r.record_id.upper() != primary, _feed_rank(r.feed), r.record_id))
    spelled: dict[str, str] = {}
    for r in sorted(chosen, key=lambda r: (_feed_rank(r.feed), r.record_id)):
        for ident in r.advisory.ids:
            spelled.setdefault(ident.strip().upper(), ident.strip())
    active = [r for r in ordered if not r.advisory.withdrawn]
    published = [r.advisory.published for r in live if r.advisory.published]
    modified = [r.advisory.modified for r in live if r.advisory.modified]
    withdrawn = None if active else max((r.advisory.withdrawn or "" for r in live), default="") or "withdrawn"

    def union(attr: str, source: list[SourceRecord], sort: bool = False) -> tuple[Any, ...]:
        out: list[Any] = []
        for r in source:
            for value in getattr(r.advisory, attr):
                if value not in out:
                    out.append(value)
        return tuple(sorted(out, key=repr)) if sort else tuple(out)

    return Advisory(
        id=spelled.get(primary, primary),
        aliases=tuple(spelled[i] for i in sorted(spelled) if i != primary),
        summary=next((r.advisory.summary for r in ordered if r.advisory.summary), ""),
        details=max((r.advisory.details for r in ordered), key=len, default=""),
        published=min(published) if published else None,
        modified=max(modified) if modified else None,
        scores=union("scores", active or live, sort=True),
        affected=union("affected", active, sort=True),
        references=union("references", ordered),
        sources=tuple(sorted({r.feed for r in live}, key=_feed_rank)),
        withdrawn=withdrawn,
    )


def merge_all(advisories: Iterable[Advisory]) -> list[Advisory]:
    """Merge loose records in memory (benchmarks, tests): components by alias, then :func:`merge`."""
    records = best_versions(SourceRecord.of(a) for a in advisories)
    by_key = {r.key: r for r in records}
    return [merge(by_key[k] for k in comp) for comp in components({r.key: idents(r.advisory) for r in records})]
