"""Pure builders of ``current_repodata.json`` and ``channeldata.json`` (conda-protocol.md §1.2–1.3)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from condavault.packages.specs import parse_spec, version_key

CHANNELDATA_ABOUT = ("home", "license", "summary", "dev_url", "doc_url", "source_url", "description")


@dataclass(frozen=True)
class Rec:
    subdir: str
    filename: str
    record: dict[str, Any]  # patched published record
    about: dict[str, Any] | None = None
    run_exports: dict[str, Any] | None = None
    paths_summary: dict[str, bool] | None = None


def _newest_builds(recs: list[Rec]) -> list[Rec]:
    top = max(recs, key=lambda r: (version_key(str(r.record["version"])), r.record.get("build_number", 0)))
    v = version_key(str(top.record["version"]))
    return [r for r in recs if version_key(str(r.record["version"])) == v]


def current_repodata(subdir: str, recs: Iterable[Rec]) -> dict[str, Any]:
    """Newest version of every name (all its builds), plus the newest record satisfying each dependency
    that the subset itself cannot satisfy (back-filled until nothing is missing), plus one older
    non-featured build where the newest builds all carry ``track_features``."""
    by_name: dict[str, list[Rec]] = defaultdict(list)
    for r in recs:
        by_name[str(r.record["name"])].append(r)
    keep: dict[str, Rec] = {}
    for _name, group in by_name.items():
        newest = _newest_builds(group)
        for r in newest:
            keep[r.filename] = r
        if all(r.record.get("track_features") for r in newest):
            plain = [r for r in group if not r.record.get("track_features")]
            if plain:
                best = max(plain, key=lambda r: version_key(str(r.record["version"])))
                keep[best.filename] = best
    todo = list(keep.values())
    while todo:
        nxt: list[Rec] = []
        for r in todo:
            for dep in r.record.get("depends") or ():
                try:
                    spec = parse_spec(dep)
                except Exception:
                    continue
                if spec.is_virtual or spec.name not in by_name:
                    continue
                kept = [k for k in keep.values() if k.record["name"] == spec.name]
                if any(spec.matches(str(k.record["version"]), str(k.record["build"])) for k in kept):
                    continue
                cands = [
                    c for c in by_name[spec.name] if spec.matches(str(c.record["version"]), str(c.record["build"]))
                ]
                if not cands:
                    continue
                for c in _newest_builds(cands):
                    if c.filename not in keep:
                        keep[c.filename] = c
                        nxt.append(c)
        todo = nxt
    out: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "removed": []}
    for fn in sorted(keep):
        out["packages.conda" if fn.endswith(".conda") else "packages"][fn] = keep[fn].record
    # legacy_bz2_md5 on .conda entries with a .tar.bz2 twin
    for fn, rec in out["packages.conda"].items():
        twin = out["packages"].get(fn[: -len(".conda")] + ".tar.bz2")
        if twin is not None and twin.get("md5"):
            rec = dict(rec)
            rec["legacy_bz2_md5"] = twin["md5"]
            if twin.get("size") is not None:
                rec["legacy_bz2_size"] = twin["size"]
            out["packages.conda"][fn] = rec
    out["repodata_version"] = 1
    return out


def channeldata(recs: Iterable[Rec], subdirs: Iterable[str]) -> dict[str, Any]:
    by_name: dict[str, list[Rec]] = defaultdict(list)
    for r in recs:
        by_name[str(r.record["name"])].append(r)
    packages: dict[str, Any] = {}
    for name in sorted(by_name):
        group = by_name[name]
        newest = max(group, key=lambda r: (version_key(str(r.record["version"])), r.record.get("timestamp") or 0))
        entry: dict[str, Any] = {
            "subdirs": sorted({r.subdir for r in group}),
            "version": str(newest.record["version"]),
            "timestamp": max(_seconds(r.record.get("timestamp")) for r in group),
            "run_exports": {},
        }
        flags = {
            "activate.d": False,
            "deactivate.d": False,
            "binary_prefix": False,
            "text_prefix": False,
            "pre_link": False,
            "post_link": False,
            "pre_unlink": False,
        }
        for r in group:
            for k, v in (r.paths_summary or {}).items():
                if v and k in flags:
                    flags[k] = True
            if r.run_exports:
                entry["run_exports"][str(r.record["version"])] = r.run_exports
        entry.update(flags)
        about = newest.about or {}
        for key in CHANNELDATA_ABOUT:
            value = about.get(key) if about.get(key) is not None else newest.record.get(key)
            if value is not None:
                entry[key] = value
        packages[name] = entry
    return {"channeldata_version": 1, "packages": packages, "subdirs": sorted(set(subdirs))}


def _seconds(ts: Any) -> int:
    if not isinstance(ts, int | float):
        return 0
    return int(ts / 1000) if ts > 253402300799 else int(ts)
