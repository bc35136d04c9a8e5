"""``current_repodata.json`` kept up to date name by name (issue 15), equal byte for byte to
:func:`condavault.indexing.derived.current_repodata` of every live record.

A name's part of current_repodata is its **base** (newest builds, a feature fallback) plus its
**back-filled** records: the newest builds matching some followed dependency spec that the base does not
satisfy. What a spec back-fills depends only on the records of the name it targets, so each evaluated spec
is cached (a :class:`_Node`) until that name's records change. Per run:

1. each changed name's base and the specs of its base records are computed from its rows;
2. the followed specs are walked from the bases' specs (cached nodes: dictionary look-ups; new or
   invalidated ones: a version check against the target's base, and only for a spec the base does not
   satisfy, the target's rows);
3. the names whose set of back-filled files changed are returned: with the changed names, they are the
   only names whose entries are written anew (into their bucket, :mod:`condavault.indexing.buckets`).

Memory: per name the (version, build) pairs of its base and its base's specs; per followed spec a small
node. Never the records.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from condavault.indexing import derived
from condavault.indexing.builder import RecordRow
from condavault.packages.specs import parse_spec

# names -> their rows (live and removed); names without rows may be left out
Fetch = Callable[[set[str]], dict[str, list[RecordRow]]]


@dataclass(frozen=True)
class _Name:
    vb: tuple[tuple[str, str], ...]  # (version, build) of the base's records
    base: tuple[str, ...]  # the base's filenames
    specs: tuple[str, ...]  # followed specs of the base's records (distinct)


@dataclass(frozen=True)
class _Node:
    target: str
    backfill: tuple[str, ...]  # filenames added; () when the target is absent, satisfied, or nothing matches
    specs: tuple[str, ...]  # followed specs of those records


def _lights(rows: Iterable[RecordRow]) -> list[derived.Light]:
    return sorted(
        (derived.Light(r.filename, r.name, r.version, r.build, r.build_number) for r in rows if not r.removed),
        key=lambda r: r.filename,
    )


def _loader(rows: Iterable[RecordRow]) -> derived.Loader:
    by_fn = {r.filename: r.fragment for r in rows if not r.removed}

    def load(filenames: list[str]) -> dict[str, dict[str, Any]]:
        return {fn: json.loads(by_fn[fn]) for fn in filenames if fn in by_fn}

    return load


def _distinct(specs: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(specs)))


class Closure:
    """What this process knows of one subdir's current_repodata."""

    def __init__(self) -> None:
        self.names: dict[str, _Name] = {}
        self.nodes: dict[str, _Node] = {}
        self.by_target: dict[str, set[str]] = defaultdict(set)
        self.extra: dict[str, tuple[str, ...]] = {}  # name -> its back-filled files now published

    def set_name(self, name: str, rows: list[RecordRow]) -> None:
        """``name``'s records changed (or are seen for the first time): its base anew, its nodes dropped."""
        lights = _lights(rows)
        for spec in self.by_target.pop(name, ()):
            self.nodes.pop(spec, None)
        if not lights:
            self.names.pop(name, None)
            return
        base, records = derived.base_of(lights, _loader(rows))
        self.names[name] = _Name(
            tuple((r.version, r.build) for r in base),
            tuple(r.filename for r in base),
            _distinct(d for r in base for d in derived.usable_specs(records[r.filename])),
        )

    def _node(self, spec_text: str, rows: dict[str, list[RecordRow]] | None) -> _Node | None:
        """Evaluate a spec; None when it needs its target's rows and ``rows`` does not have them."""
        spec = parse_spec(spec_text)
        target = self.names.get(spec.name)
        if target is None or derived.satisfied(spec, target.vb):
            return _Node(spec.name, (), ())
        if rows is None or spec.name not in rows:
            return None
        group = rows[spec.name]
        added = derived.backfill(_lights(group), spec)
        records = _loader(group)([r.filename for r in added])
        return _Node(
            spec.name,
            tuple(sorted(records)),
            _distinct(d for rec in records.values() for d in derived.usable_specs(rec)),
        )

    def resolve(self, rows: dict[str, list[RecordRow]], fetch: Fetch) -> set[str]:
        """Walk the followed specs; returns the names whose back-filled files changed. ``rows``: rows in
        hand (the changed names'); rows fetched here are added to it."""
        active: set[str] = set()
        for n in self.names.values():
            active.update(n.specs)
        frontier = set(active)
        extra: dict[str, set[str]] = defaultdict(set)
        while frontier:
            pending: list[str] = []
            for spec in frontier:
                if spec not in self.nodes:
                    node = self._node(spec, rows)
                    if node is None:
                        pending.append(spec)
                    else:
                        self._cache(spec, node)
            if pending:
                wanted = {parse_spec(s).name for s in pending} - set(rows)
                if wanted:
                    got = fetch(wanted)
                    rows.update({n: got.get(n, []) for n in wanted})
                for spec in pending:
                    node = self._node(spec, rows)
                    assert node is not None  # its target's rows are in hand now
                    self._cache(spec, node)
            found: set[str] = set()
            for spec in frontier:
                node = self.nodes[spec]
                if node.backfill:
                    extra[node.target].update(node.backfill)
                    found.update(s for s in node.specs if s not in active)
            active |= found
            frontier = found
        for spec in [s for s in self.nodes if s not in active]:  # keep the cache to the followed specs
            node = self.nodes.pop(spec)
            self.by_target[node.target].discard(spec)
        new = {n: tuple(sorted(fns)) for n, fns in extra.items()}
        changed = {n for n in set(new) | set(self.extra) if new.get(n, ()) != self.extra.get(n, ())}
        self.extra = new
        return changed

    def _cache(self, spec: str, node: _Node) -> None:
        self.nodes[spec] = node
        self.by_target[node.target].add(spec)

    def entries(self, name: str, rows: list[RecordRow]) -> tuple[list[bytes], list[bytes]]:
        """``name``'s ``"fn":{...}`` entries of current_repodata's ``packages`` and ``packages.conda``."""
        info = self.names.get(name)
        if info is None:
            return [], []
        keep = {*info.base, *self.extra.get(name, ())}
        records = _loader(rows)(sorted(keep))
        tar: list[bytes] = []
        conda: list[bytes] = []
        for fn, rec in derived.name_entries(records):
            entry = f"{json.dumps(fn)}:{json.dumps(rec, separators=(',', ':'))}".encode()
            (conda if fn.endswith(".conda") else tar).append(entry)
        return tar, conda
