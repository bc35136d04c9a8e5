"""Builders of ``current_repodata.json`` and ``channeldata.json`` (conda-protocol.md §1.2 and §1.3).

Both work from light rows (name, version, build, ...) and load full records only for the few files
they publish, so a 100 k-record channel costs a column scan, not 100 k JSON parses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from condavault.packages.specs import parse_spec, version_key

CHANNELDATA_ABOUT = ("home", "license", "summary", "dev_url", "doc_url", "source_url", "description")
FLAGS = ("activate.d", "deactivate.d", "binary_prefix", "text_prefix", "pre_link", "post_link", "pre_unlink")

# filenames -> their published (patched) records
Loader = Callable[[list[str]], dict[str, dict[str, Any]]]


@dataclass(frozen=True)
class Light:
    filename: str
    name: str
    version: str
    build: str
    build_number: int


def _key(r: Light) -> tuple[Any, int]:
    return version_key(r.version), r.build_number


def _newest_builds(rows: list[Light]) -> list[Light]:
    top = version_key(max(rows, key=_key).version)
    return [r for r in rows if version_key(r.version) == top]


def current_repodata(subdir: str, rows: Iterable[Light], load: Loader) -> dict[str, Any]:
    """Newest version of every name (all its builds); one older non-featured build where every newest
    build carries ``track_features``; then, until nothing is missing, the newest builds satisfying
    each dependency the subset itself cannot satisfy."""
    by_name: dict[str, list[Light]] = defaultdict(list)
    for r in rows:
        by_name[r.name].append(r)
    keep: dict[str, Light] = {}
    for group in by_name.values():
        for r in _newest_builds(group):
            keep[r.filename] = r
    records = load(sorted(keep))
    for group in by_name.values():
        newest = [r for r in group if r.filename in keep]
        if newest and all(records[r.filename].get("track_features") for r in newest):
            others = load([r.filename for r in group if r.filename not in keep])
            plain = [r for r in group if r.filename in others and not others[r.filename].get("track_features")]
            if plain:
                best = max(plain, key=_key)
                keep[best.filename] = best
                records[best.filename] = others[best.filename]
    kept_by_name: dict[str, list[Light]] = defaultdict(list)
    for r in keep.values():
        kept_by_name[r.name].append(r)
    todo = list(keep.values())
    while todo:
        added: list[Light] = []
        for r in todo:
            for dep in records[r.filename].get("depends") or ():
                try:
                    spec = parse_spec(dep)
                except Exception:
                    continue
                if spec.is_virtual or spec.name not in by_name:
                    continue
                # satisfied by a kept record: a check of the few kept builds, not of every build of the name
                if any(spec.matches(k.version, k.build) for k in kept_by_name[spec.name]):
                    continue
                candidates = [c for c in by_name[spec.name] if spec.matches(c.version, c.build)]
                if not candidates:
                    continue
                for c in _newest_builds(candidates):
                    keep[c.filename] = c
                    kept_by_name[c.name].append(c)
                    added.append(c)
        records.update(load([c.filename for c in added]))
        todo = added
    out: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "removed": []}
    for fn in sorted(keep):
        out["packages.conda" if fn.endswith(".conda") else "packages"][fn] = records[fn]
    for fn, rec in list(out["packages.conda"].items()):  # legacy_bz2_md5 from a .tar.bz2 twin
        twin = out["packages"].get(fn[: -len(".conda")] + ".tar.bz2")
        if twin is not None and twin.get("md5"):
            extra = {"legacy_bz2_md5": twin["md5"]}
            if twin.get("size") is not None:
                extra["legacy_bz2_size"] = twin["size"]
            out["packages.conda"][fn] = {**rec, **extra}
    out["repodata_version"] = 1
    return out


@dataclass(frozen=True)
class NameRow:
    subdir: str
    filename: str
    name: str
    version: str
    timestamp: int | None
    run_exports: dict[str, Any] | None
    paths_summary: dict[str, bool] | None


def channeldata(
    rows: Iterable[NameRow], subdirs: Iterable[str], about: Callable[[list[tuple[str, str]]], dict]
) -> dict[str, Any]:
    """``about(keys)`` maps ``(subdir, filename)`` keys to (about.json, record) pairs of the newest files."""
    by_name: dict[str, list[NameRow]] = defaultdict(list)
    for r in rows:
        by_name[r.name].append(r)
    newest = {
        name: max(group, key=lambda r: (version_key(r.version), r.timestamp or 0)) for name, group in by_name.items()
    }
    abouts = about([(r.subdir, r.filename) for r in newest.values()])
    packages: dict[str, Any] = {}
    for name in sorted(by_name):
        group, top = by_name[name], newest[name]
        entry: dict[str, Any] = {
            "subdirs": sorted({r.subdir for r in group}),
            "version": top.version,
            "timestamp": max(_seconds(r.timestamp) for r in group),
            "run_exports": {r.version: r.run_exports for r in group if r.run_exports},
        }
        entry.update({flag: any((r.paths_summary or {}).get(flag) for r in group) for flag in FLAGS})
        info, record = abouts.get((top.subdir, top.filename), ({}, {}))
        for key in CHANNELDATA_ABOUT:
            value = info.get(key) if info.get(key) is not None else record.get(key)
            if value is not None:
                entry[key] = value
        packages[name] = entry
    return {"channeldata_version": 1, "packages": packages, "subdirs": sorted(set(subdirs))}


def _seconds(ts: Any) -> int:
    if not isinstance(ts, int | float):
        return 0
    return int(ts / 1000) if ts > 253402300799 else int(ts)
