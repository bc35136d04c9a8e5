"""Dependency closure and dependency-consistent pruning over repodata records (pure, no I/O).

Where a dependency may be satisfied:

* a platform record (``linux-64``) by records of its own subdir or ``noarch``;
* a ``noarch`` record pulled in by a platform record by that platform or ``noarch``; a ``noarch`` root
  is followed once per platform present in the pool (``noarch`` alone if there is none).

Every record matching a dependency's MatchSpec is taken -- all the alternatives a solver could pick, not
just the newest. Virtual packages (``__glibc``, ``__cuda`` ...) are ignored. Records are indexed by
``(subdir, name)`` first so each MatchSpec is only evaluated against records of the right name.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from condavault.mirror.filters.base import FileKey, FileRecord
from condavault.mirror.filters.matching import is_virtual, matches, parse_spec, spec_name

__all__ = ["Pulled", "RecordIndex", "dependency_closure", "unsatisfied"]

NOARCH = "noarch"

Pulled = tuple[FileRecord, str]
"""Why a record was pulled into a closure: the parent record and the dependency spec it matched."""


class RecordIndex:
    """Records by ``(subdir, lower-cased name)``, with memoised MatchSpec look-ups."""

    def __init__(self, records: Iterable[FileRecord]) -> None:
        self._by: dict[tuple[str, str], dict[FileKey, FileRecord]] = defaultdict(dict)
        for rec in records:
            self._by[(rec.subdir, rec.name.lower())][rec.key] = rec
        self.platforms = sorted({s for s, _ in self._by if s != NOARCH})
        self._memo: dict[str | None, dict[tuple[str, str], list[FileRecord]]] = defaultdict(dict)

    def discard(self, rec: FileRecord) -> None:
        """Remove ``rec`` (used by the pruning fixpoint); forgets memoised look-ups of its name."""
        name = rec.name.lower()
        self._by[(rec.subdir, name)].pop(rec.key, None)
        self._memo.pop(name, None)

    def _subdirs_for(self, subdir: str) -> tuple[str, ...]:
        if subdir == NOARCH:
            return (NOARCH, *self.platforms)
        return (subdir, NOARCH)

    def candidates(self, spec: str, subdir: str) -> list[FileRecord]:
        """Records that satisfy ``spec`` for a record of ``subdir`` (see the module docstring)."""
        name = spec_name(spec)
        memo = self._memo[name]
        found = memo.get((spec, subdir))
        if found is not None:
            return found
        found = []
        if name is not None:
            for sd in self._subdirs_for(subdir):
                found.extend(r for r in self._by.get((sd, name), {}).values() if matches(spec, r))
        memo[(spec, subdir)] = found
        return found


def dependency_closure(roots: Iterable[FileRecord], pool: Iterable[FileRecord]) -> dict[FileKey, Pulled]:
    """Every record of ``pool`` that ``roots`` may transitively need, with the first reason found.

    Roots themselves are not in the result unless another root needs them.
    """
    index = RecordIndex(pool)
    pulled: dict[FileKey, Pulled] = {}
    seen: set[tuple[FileKey, str]] = set()
    stack: list[tuple[FileRecord, str]] = []
    for root in roots:
        contexts = (index.platforms or [NOARCH]) if root.subdir == NOARCH else [root.subdir]
        stack.extend((root, c) for c in contexts)
    while stack:
        rec, platform = stack.pop()
        if (rec.key, platform) in seen:
            continue
        seen.add((rec.key, platform))
        for dep in rec.depends:
            if is_virtual(dep) or parse_spec(dep) is None:
                continue
            for cand in index.candidates(dep, platform):
                pulled.setdefault(cand.key, (rec, dep))
                if (cand.key, platform) not in seen:
                    stack.append((cand, platform))
    return pulled


def unsatisfied(records: Iterable[FileRecord], protected: frozenset[FileKey] = frozenset()) -> dict[FileKey, str]:
    """Records with a (non-virtual) dependency that no record of the set satisfies, to a fixpoint.

    Returns ``{key: first unsatisfied spec}``. Found records are removed from the set and their reverse
    dependencies re-checked, since dropping one can make others unsatisfiable. ``protected`` records are
    reported but stay in the set (they still satisfy others). Unparseable dependency specs count as
    unsatisfied; specs with a glob name are not checked.
    """
    alive = {r.key: r for r in records}
    index = RecordIndex(alive.values())
    rdeps: dict[str, set[FileKey]] = defaultdict(set)
    for rec in alive.values():
        for dep in rec.depends:
            name = spec_name(dep)
            if name is not None:
                rdeps[name].add(rec.key)
    result: dict[FileKey, str] = {}
    queue = list(alive)
    while queue:
        key = queue.pop()
        found = alive.get(key)
        if found is None or key in result:
            continue
        rec = found
        bad = _first_unsatisfied(rec, index)
        if bad is None:
            continue
        result[key] = bad
        if key in protected:
            continue
        del alive[key]
        index.discard(rec)
        queue.extend(k for k in rdeps.get(rec.name.lower(), ()) if k in alive and k not in result)
    return result


def _first_unsatisfied(rec: FileRecord, index: RecordIndex) -> str | None:
    for dep in rec.depends:
        if is_virtual(dep):
            continue
        if parse_spec(dep) is None:
            return dep
        if spec_name(dep) is None:
            continue
        if not index.candidates(dep, rec.subdir):
            return dep
    return None
