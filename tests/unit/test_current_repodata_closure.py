"""current_repodata.json on real repodata: the builder equals a naive reading of its definition, does not
depend on the order the records are read in, and the incremental form (``current.Closure``, name by name)
gives the same bytes as the builder after every change."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from condavault.indexing import current, derived
from condavault.indexing.builder import RecordRow
from condavault.packages.specs import ParsedSpec, parse_spec, version_key

SUBDIRS = ["defaults-main/noarch", "defaults-r/linux-64", "pytorch/linux-64", "conda-forge-numpy-subset/linux-64"]


def _load(testdata: Path, rel: str) -> dict[str, dict[str, Any]]:
    doc = json.loads((testdata / "repodata" / rel / "repodata.json").read_bytes())
    return {**doc.get("packages", {}), **doc.get("packages.conda", {})}


def _lights(records: dict[str, dict[str, Any]]) -> list[derived.Light]:
    return [
        derived.Light(fn, r["name"], str(r["version"]), str(r["build"]), int(r.get("build_number") or 0))
        for fn, r in records.items()
    ]


def _reference_keep(records: dict[str, dict[str, Any]]) -> set[str]:
    """The definition read naively: every record's version compared, every kept record's specs followed."""
    by_name: dict[str, list[str]] = defaultdict(list)
    for fn, r in records.items():
        by_name[r["name"]].append(fn)
    vk = {fn: version_key(str(r["version"])) for fn, r in records.items()}
    base: dict[str, set[str]] = {}
    for name, fns in by_name.items():
        top = max(vk[fn] for fn in fns)
        newest = {fn for fn in fns if vk[fn] == top}
        if all(records[fn].get("track_features") for fn in newest):
            plain = [fn for fn in fns if fn not in newest and not records[fn].get("track_features")]
            if plain:
                newest.add(max(plain, key=lambda fn: (vk[fn], int(records[fn].get("build_number") or 0), fn)))
        base[name] = newest
    keep = set().union(*base.values())
    seen: set[str] = set()
    changed = True
    while changed:
        changed = False
        for fn in sorted(keep):
            for dep in records[fn].get("depends") or ():
                if dep in seen:
                    continue
                seen.add(dep)
                try:
                    spec = parse_spec(dep)
                except Exception:
                    continue
                if spec.is_virtual or spec.name not in by_name:
                    continue

                def ok(f: str, spec: ParsedSpec = spec) -> bool:
                    return spec.matches(str(records[f]["version"]), str(records[f]["build"]))

                if any(ok(f) for f in base[spec.name]):
                    continue
                cands = [f for f in by_name[spec.name] if ok(f)]
                if cands:
                    top = max(vk[f] for f in cands)
                    new = {f for f in cands if vk[f] == top} - keep
                    if new:
                        keep |= new
                        changed = True
    return keep


def _build(records: dict[str, dict[str, Any]], lights: list[derived.Light]) -> bytes:
    return derived.encode_current(
        derived.current_repodata("x", lights, lambda fns: {fn: records[fn] for fn in fns if fn in records})
    )


def _rows(records: dict[str, dict[str, Any]], names: set[str]) -> dict[str, list[RecordRow]]:
    out: dict[str, list[RecordRow]] = defaultdict(list)
    for fn, r in records.items():
        if r["name"] in names:
            out[r["name"]].append(
                RecordRow(
                    fn,
                    r["name"],
                    json.dumps(r),
                    False,
                    None,
                    version=str(r["version"]),
                    build=str(r["build"]),
                    build_number=int(r.get("build_number") or 0),
                )
            )
    return dict(out)


def _incremental(closure: current.Closure, records: dict[str, dict[str, Any]], changed: set[str]) -> bytes:
    """Apply a change of ``changed`` names to ``closure`` and compose the file from every name's entries."""
    rows = _rows(records, changed)
    for n in changed:
        closure.set_name(n, rows.get(n, []))
    closure.resolve(rows, lambda names: _rows(records, names))
    names = sorted({r["name"] for r in records.values()})
    every = _rows(records, set(names))
    tar = [e for n in names for e in closure.entries(n, every[n])[0]]
    conda = [e for n in names for e in closure.entries(n, every[n])[1]]
    head, mid, tail = (
        b'{"info":{"subdir":"x"},"packages":{',
        b'},"packages.conda":{',
        b'},"removed":[],"repodata_version":1}',
    )
    return head + b",".join(tar) + mid + b",".join(conda) + tail


@pytest.mark.parametrize("rel", SUBDIRS)
def test_the_builder_keeps_what_the_definition_says_in_any_order(testdata: Path, rel: str) -> None:
    records = _load(testdata, rel)
    lights = _lights(records)
    data = _build(records, lights)
    out = json.loads(data)
    got = {*out["packages"], *out["packages.conda"]}
    assert got == _reference_keep(records)
    assert len(got) <= len(records)
    for seed in (1, 2):
        shuffled = list(lights)
        random.Random(seed).shuffle(shuffled)
        assert _build(records, shuffled) == data


@pytest.mark.parametrize("rel", SUBDIRS)
def test_the_incremental_form_equals_the_builder_after_every_change(testdata: Path, rel: str) -> None:
    records = _load(testdata, rel)
    closure = current.Closure()
    names = sorted({r["name"] for r in records.values()})
    assert _incremental(closure, records, set(names)) == _build(records, _lights(records))
    rng = random.Random(15)
    by_name: dict[str, list[str]] = defaultdict(list)
    for fn, r in records.items():
        by_name[r["name"]].append(fn)
    popular = sorted(by_name, key=lambda n: -len(by_name[n]))[:3]
    for step in range(6):
        # drop the newest version of a name (older builds come forward, back-fills move), or a whole name
        name = popular[step % 3] if step < 3 else rng.choice(names)
        fns = by_name[name]
        if not fns:
            continue
        top = max(version_key(str(records[fn]["version"])) for fn in fns)
        gone = [fn for fn in fns if version_key(str(records[fn]["version"])) == top] if step % 2 == 0 else fns
        for fn in gone:
            del records[fn]
        by_name[name] = [fn for fn in fns if fn not in gone]
        assert _incremental(closure, records, {name}) == _build(records, _lights(records))


@pytest.mark.parametrize("n", [0, 1, 5])
def test_channeldata_composed_from_encoded_entries_equals_one_dump(n: int) -> None:
    entries = {
        f"pkg-{i}\u00e9": {
            "subdirs": ["linux-64", "noarch"],
            "version": f"{i}.0",
            "run_exports": {f"{i}.0": {"weak": [f"pkg-{i} >={i}"]}} if i % 2 else {},
            "description": 'two\nlines "quoted"',
            "binary_prefix": bool(i % 2),
            "timestamp": i,
        }
        for i in reversed(range(n))
    }
    subdirs = ["noarch", "linux-64"] if n else []
    doc = {"channeldata_version": 1, "packages": entries, "subdirs": sorted(subdirs)}
    encoded = {k: derived.encode_channeldata_entry(v) for k, v in entries.items()}
    assert derived.compose_channeldata(encoded, subdirs) == json.dumps(doc, indent=1, sort_keys=True).encode()
