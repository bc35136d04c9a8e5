"""current_repodata's dependency closure looks at the kept builds first: same subset as checking every
build of the dependency's name (the reference below), on real repodata."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from condavault.indexing import derived
from condavault.packages.specs import parse_spec


def _reference_keep(rows: list[derived.Light], records: dict[str, dict[str, Any]]) -> set[str]:
    """The closure as it was written first: every build of the name matched for every dependency."""
    by_name: dict[str, list[derived.Light]] = defaultdict(list)
    for r in rows:
        by_name[r.name].append(r)
    keep = {r.filename: r for g in by_name.values() for r in derived._newest_builds(g)}
    for group in by_name.values():
        newest = [r for r in group if r.filename in keep]
        if newest and all(records[r.filename].get("track_features") for r in newest):
            plain = [r for r in group if r.filename not in keep and not records[r.filename].get("track_features")]
            if plain:
                best = max(plain, key=derived._key)
                keep[best.filename] = best
    todo = list(keep.values())
    while todo:
        added = []
        for r in todo:
            for dep in records[r.filename].get("depends") or ():
                try:
                    spec = parse_spec(dep)
                except Exception:
                    continue
                if spec.is_virtual or spec.name not in by_name:
                    continue
                candidates = [c for c in by_name[spec.name] if spec.matches(c.version, c.build)]
                if not candidates or any(c.filename in keep for c in candidates):
                    continue
                for c in derived._newest_builds(candidates):
                    keep[c.filename] = c
                    added.append(c)
        todo = added
    return set(keep)


@pytest.mark.parametrize(
    "rel", ["defaults-main/noarch", "defaults-r/linux-64", "pytorch/linux-64", "conda-forge-numpy-subset/linux-64"]
)
def test_the_closure_keeps_the_same_records(testdata: Path, rel: str) -> None:
    doc = json.loads((testdata / "repodata" / rel / "repodata.json").read_bytes())
    records = {**doc.get("packages", {}), **doc.get("packages.conda", {})}
    rows = [
        derived.Light(fn, r["name"], str(r["version"]), str(r["build"]), int(r.get("build_number") or 0))
        for fn, r in records.items()
    ]
    out = derived.current_repodata("x", rows, lambda fns: {fn: records[fn] for fn in fns})
    got = {*out["packages"], *out["packages.conda"]}
    assert got == _reference_keep(rows, records)
    assert len(got) <= len(records)
