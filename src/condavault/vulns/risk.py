"""Dependency-tree risk: the worst score over a record and everything its run dependencies can resolve to.

Resolution is a **closure over MatchSpecs across all candidate versions** (not a solve): each
``depends`` entry of a record in subdir ``S`` is matched (name + conda version semantics; build-string
constraints are ignored) against every record of the universe in ``S`` and ``noarch`` (every subdir for
a ``noarch`` record), and the record's
risk is the maximum over itself and the risk of every candidate. This is the worst case over every
environment the record could be installed in, so it never under-reports. Cycles are handled by
collapsing strongly connected components (iterative Tarjan).

Only links that still count (not ``cleared`` / ``mitigated``) contribute a score.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rattler import MatchSpec, Version, VersionSpec

from condavault.vulns.matching import parse_version

Key = Any  # any hashable: a record id, or (subdir, filename)


@dataclass(frozen=True)
class Node:
    key: Key
    subdir: str
    name: str
    version: str
    depends: tuple[str, ...]


@dataclass(frozen=True)
class Risk:
    score: float
    via: Key  # the record carrying the worst score (the record itself or a dependency)


@lru_cache(maxsize=65536)
def parse_spec(spec: str) -> tuple[str, VersionSpec | None] | None:
    """(name, version spec or None) of a MatchSpec string; ``None`` when it cannot be parsed."""
    try:
        ms = MatchSpec(spec)
    except Exception:
        name = spec.strip().split(" ", 1)[0]
        return (name.lower(), None) if name else None
    if ms.name is None:
        return None
    name = str(getattr(ms.name, "normalized", ms.name))
    if not ms.version:
        return name, None
    try:
        return name, VersionSpec(str(ms.version))
    except Exception:
        return name, None


def compute(nodes: Iterable[Node], own: Mapping[Key, float | None]) -> dict[Key, Risk]:
    """Risk of every node (nodes without any scored record in their tree are left out)."""
    nodes = list(nodes)
    by_key = {n.key: n for n in nodes}
    by_name: dict[tuple[str, str], list[tuple[Key, Version | None]]] = {}
    subdirs_of: dict[str, set[str]] = {}
    for n in nodes:
        by_name.setdefault((n.subdir, n.name), []).append((n.key, parse_version(n.version)))
        subdirs_of.setdefault(n.name, set()).add(n.subdir)
    cand_cache: dict[tuple[str, str], list[Key]] = {}

    def candidates(subdir: str, spec: str) -> list[Key]:
        ck = (subdir, spec)
        hit = cand_cache.get(ck)
        if hit is not None:
            return hit
        parsed = parse_spec(spec)
        out: list[Key] = []
        if parsed is not None:
            name, vs = parsed
            # a noarch record can be installed on any platform: its candidates are in every subdir
            for sd in subdirs_of.get(name, ()) if subdir == "noarch" else {subdir, "noarch"}:
                for key, v in by_name.get((sd, name), ()):
                    if vs is None or (v is not None and _matches(vs, v)):
                        out.append(key)
        cand_cache[ck] = out
        return out

    edges: dict[Key, list[Key]] = {n.key: [c for d in n.depends for c in candidates(n.subdir, d)] for n in nodes}
    comps = _sccs(list(by_key), edges)
    # comps come out in reverse topological order (a component before those depending on it)
    comp_of: dict[Key, int] = {}
    for i, comp in enumerate(comps):
        for k in comp:
            comp_of[k] = i
    comp_risk: list[Risk | None] = []
    for i, comp in enumerate(comps):
        best: Risk | None = None
        for k in comp:
            s = own.get(k)
            if s is not None and (best is None or s > best.score):
                best = Risk(float(s), k)
            for c in edges[k]:
                j = comp_of[c]
                if j != i:
                    r = comp_risk[j]
                    if r is not None and (best is None or r.score > best.score):
                        best = r
        comp_risk.append(best)
    return {k: comp_risk[comp_of[k]] for k in by_key if comp_risk[comp_of[k]] is not None}  # type: ignore[misc]


def _matches(vs: VersionSpec, v: Version) -> bool:
    try:
        return bool(vs.matches(v))
    except Exception:
        return False


def _sccs(keys: list[Key], edges: Mapping[Key, list[Key]]) -> list[list[Key]]:
    """Tarjan's algorithm without recursion; components in reverse topological order."""
    index: dict[Key, int] = {}
    low: dict[Key, int] = {}
    on_stack: set[Key] = set()
    stack: list[Key] = []
    out: list[list[Key]] = []
    counter = 0
    for root in keys:
        if root in index:
            continue
        work: list[tuple[Key, int]] = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            succ = edges.get(v, ())
            recurse = False
            while i < len(succ):
                w = succ[i]
                i += 1
                if w not in index:
                    work.append((v, i))
                    work.append((w, 0))
                    recurse = True
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            if recurse:
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                out.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return out


def depends_of(record_json: str, fragment: str | None = None) -> tuple[str, ...]:
    """``depends`` of a stored record, preferring the published (patched) fragment."""
    if fragment:
        try:
            rec = json.loads(fragment)
            if isinstance(rec, dict):
                return tuple(rec.get("depends") or ())
        except ValueError:
            pass
    try:
        return tuple(json.loads(record_json).get("depends") or ())
    except ValueError:
        return ()


def risk_lookup(
    records: Mapping[tuple[str, str], Mapping[str, Any]],
    own_score: Callable[[str, str, Mapping[str, Any]], float | None],
) -> dict[tuple[str, str], Risk]:
    """Risk over a universe of upstream records keyed by (subdir, filename) (the mirror's view)."""
    nodes = [
        Node((sd, fn), sd, str(r.get("name", "")), str(r.get("version", "")), tuple(r.get("depends") or ()))
        for (sd, fn), r in records.items()
    ]
    own = {(sd, fn): own_score(sd, fn, r) for (sd, fn), r in records.items()}
    return compute(nodes, own)
