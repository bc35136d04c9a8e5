"""Dependency-tree risk: the worst score over a record and the records its run dependencies resolve to.

The risk of a record is defined by a **solve**: py-rattler installs the record alone (``name ==version
build``) from its universe (its channel: its subdir + ``noarch``; a ``noarch`` record on every platform
subdir present) on a generic machine of the platform, and the risk is the worst score over the solved
set (the record included). A record whose tree cannot be solved keeps its own score and says why.

Solving every record is the expensive part, so it is bounded first by a cheap **closure over
MatchSpecs across all candidate versions** (:func:`compute`): each ``depends`` entry is matched by name
and conda version semantics against every candidate, cycles collapsed (iterative Tarjan). Any solved
tree is a subset of that closure, so a record whose closure carries no score has no risk and is not
solved; only the others are (:func:`refine`).

Only links that still count (not ``cleared`` / ``mitigated``) contribute a score.
"""

from __future__ import annotations

import json
import weakref
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rattler import MatchSpec, Version, VersionSpec

from condavault.vulns.matching import parse_version
from condavault.vulns.solving import TreeSolver, Universe, Unsolvable, repodata_from_records

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
    score: float | None
    via: Key  # the record carrying the worst score (the record itself or a dependency)
    unsolvable: str | None = None  # why the tree could not be solved (the risk is then the record's own)


Tree = list[Key] | Unsolvable  # the keys of a solved tree, or why there is none


def refine(upper: Mapping[Key, Risk], own: Mapping[Key, float | None], trees: Mapping[Key, Tree]) -> dict[Key, Risk]:
    """Exact risks from solved trees, for the keys of ``upper`` (the closure bound); others have none."""
    out: dict[Key, Risk] = {}
    for key in upper:
        tree = trees.get(key)
        if isinstance(tree, Unsolvable):
            s = own.get(key)
            out[key] = Risk(None if s is None else float(s), key, tree.reason)
            continue
        best: Risk | None = None
        for member in dict.fromkeys([key, *(tree or ())]):
            s = own.get(member)
            if s is not None and (best is None or best.score is None or s > best.score):
                best = Risk(float(s), member)
        if best is not None:
            out[key] = best
    return out


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
    """Closure bound of every node's risk (nodes without any scored record in their closure are left out)."""
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
            if s is not None and (best is None or s > (best.score or 0.0)):
                best = Risk(float(s), k)
            for c in edges[k]:
                j = comp_of[c]
                if j != i:
                    r = comp_risk[j]
                    if r is not None and (best is None or (r.score or 0.0) > (best.score or 0.0)):
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


class RiskLookup:
    """Risk of records of an in-memory universe keyed by (subdir, filename) (the mirror's view).

    The closure bound is computed up front; a record with a bound is solved on its first lookup.
    Call :meth:`close` when done (it also runs when the lookup is garbage-collected or at exit).
    """

    def __init__(
        self,
        records: Mapping[tuple[str, str], Mapping[str, Any]],
        own_score: Callable[[str, str, Mapping[str, Any]], float | None],
        base_url: str = "http://upstream.invalid",
    ) -> None:
        self.records = records
        nodes = [
            Node((sd, fn), sd, str(r.get("name", "")), str(r.get("version", "")), tuple(r.get("depends") or ()))
            for (sd, fn), r in records.items()
        ]
        self.own = {(sd, fn): own_score(sd, fn, r) for (sd, fn), r in records.items()}
        self.upper = compute(nodes, self.own)
        self.exact: dict[Key, Risk | None] = {}
        self._base_url = base_url
        self._solver: TreeSolver | None = None
        self._finalizer: weakref.finalize | None = None

    def __call__(self, subdir: str, filename: str) -> float | None:
        r = self.risk(subdir, filename)
        return r.score if r is not None else None

    def risk(self, subdir: str, filename: str) -> Risk | None:
        key = (subdir, filename)
        if key not in self.upper:
            return None
        if key not in self.exact:
            rec = self.records[key]
            want = (subdir, str(rec.get("name", "")), str(rec.get("version", "")), str(rec.get("build", "")))
            result = self._tree_solver().trees([want])[want]
            tree: Tree = result if isinstance(result, Unsolvable) else [(m.subdir, m.filename) for m in result]
            self.exact[key] = refine({key: self.upper[key]}, self.own, {key: tree}).get(key)
        return self.exact[key]

    def _tree_solver(self) -> TreeSolver:
        if self._solver is None:
            universe = Universe(["upstream"], repodata_from_records(self.records), self._base_url)
            self._solver = TreeSolver(universe, {sd for sd, _ in self.records})
            self._finalizer = weakref.finalize(self, self._solver.close)
        return self._solver

    def close(self) -> None:
        if self._finalizer is not None:
            self._finalizer()


def risk_lookup(
    records: Mapping[tuple[str, str], Mapping[str, Any]],
    own_score: Callable[[str, str, Mapping[str, Any]], float | None],
) -> RiskLookup:
    """Solved risk over a universe of upstream records keyed by (subdir, filename) (the mirror's view)."""
    return RiskLookup(records, own_score)
