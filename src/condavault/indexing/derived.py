"""Builders of ``current_repodata.json`` and ``channeldata.json`` (conda-protocol.md §1.2 and §1.3).

``current_repodata.json`` of a subdir, defined so that it does not depend on the order records are read
in, and so that it can be kept up to date name by name (:mod:`condavault.indexing.current`):

* the **base** of a name: all builds of its newest version; where every one of them carries
  ``track_features``, also the newest build without (ties: the greatest filename);
* a dependency spec of a kept record that no base record of its name satisfies is **back-filled** with
  the newest builds of that name matching it; the back-filled records' dependencies are followed the same
  way, until nothing new is added (satisfaction is always checked against the base, so the result is the
  same whatever order the specs are visited in). Unparsable and virtual (``__glibc``) specs are skipped;
* entries are ordered by package name, then filename (as in ``repodata.json``); a ``.conda`` entry gets
  ``legacy_bz2_md5`` (and ``legacy_bz2_size``) from its ``.tar.bz2`` twin of the same name when the twin is
  kept too.

Both builders work from light rows (name, version, build, ...) and load full records only for the files
they look into, so a 100 k-record channel costs a column scan, not 100 k JSON parses.
"""

from __future__ import annotations

import heapq
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from condavault.packages.specs import ParsedSpec, parse_spec, version_key

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


def usable_specs(record: dict[str, Any]) -> list[str]:
    """The record's dependency specs current_repodata follows: parsable, not virtual."""
    out: list[str] = []
    for dep in record.get("depends") or ():
        if not isinstance(dep, str):
            continue
        try:
            spec = parse_spec(dep)
        except Exception:
            continue
        if not spec.is_virtual:
            out.append(dep)
    return out


def base_of(group: list[Light], load: Loader) -> tuple[list[Light], dict[str, dict[str, Any]]]:
    """A name's base (see the module's docstring) and the records of those files."""
    if not group:
        return [], {}
    newest = _newest_builds(group)
    records = load([r.filename for r in newest])
    base = [r for r in newest if r.filename in records]
    if base and all(records[r.filename].get("track_features") for r in base):
        others = load([r.filename for r in group if r.filename not in records])
        plain = [r for r in group if r.filename in others and not others[r.filename].get("track_features")]
        if plain:
            best = max(plain, key=lambda r: (*_key(r), r.filename))
            base.append(best)
            records[best.filename] = others[best.filename]
    return base, records


def satisfied(spec: ParsedSpec, base: Iterable[tuple[str, str]]) -> bool:
    """Whether a (version, build) of the name's base matches ``spec``."""
    return any(spec.matches(v, b) for v, b in base)


def backfill(group: list[Light], spec: ParsedSpec) -> list[Light]:
    """The newest builds of the name that match ``spec`` (none if nothing does)."""
    candidates = [c for c in group if spec.matches(c.version, c.build)]
    return _newest_builds(candidates) if candidates else []


def name_entries(records: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """One name's kept records as ``(filename, record)`` in filename order, ``.conda`` ones with their
    ``.tar.bz2`` twin's ``legacy_bz2_md5`` / ``legacy_bz2_size``."""
    out: list[tuple[str, dict[str, Any]]] = []
    for fn in sorted(records):
        rec = records[fn]
        if fn.endswith(".conda"):
            twin = records.get(fn[: -len(".conda")] + ".tar.bz2")
            if twin is not None and twin.get("md5"):
                extra = {"legacy_bz2_md5": twin["md5"]}
                if twin.get("size") is not None:
                    extra["legacy_bz2_size"] = twin["size"]
                rec = {**rec, **extra}
        out.append((fn, rec))
    return out


def current_repodata(subdir: str, rows: Iterable[Light], load: Loader) -> dict[str, Any]:
    """``current_repodata.json`` of every live record of a subdir, from scratch (the reference the
    incremental form in :mod:`condavault.indexing.current` must equal byte for byte)."""
    by_name: dict[str, list[Light]] = defaultdict(list)
    for r in sorted(rows, key=lambda r: r.filename):
        by_name[r.name].append(r)
    records: dict[str, dict[str, Any]] = {}
    base: dict[str, list[tuple[str, str]]] = {}
    keep: dict[str, set[str]] = {}
    for name, group in by_name.items():
        kept, recs = base_of(group, load)
        records.update(recs)
        base[name] = [(r.version, r.build) for r in kept]
        keep[name] = {r.filename for r in kept}
    active = {d for fns in keep.values() for fn in fns for d in usable_specs(records[fn])}
    todo = sorted(active)
    while todo:
        found: list[str] = []
        for dep in todo:
            spec = parse_spec(dep)
            if spec.name not in by_name or satisfied(spec, base[spec.name]):
                continue
            added = backfill(by_name[spec.name], spec)
            records.update(load([r.filename for r in added if r.filename not in records]))
            for r in added:
                if r.filename not in records:
                    continue
                keep[spec.name].add(r.filename)
                for d in usable_specs(records[r.filename]):
                    if d not in active:
                        active.add(d)
                        found.append(d)
        todo = found
    out: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}, "removed": []}
    for name in sorted(keep):
        for fn, rec in name_entries({fn: records[fn] for fn in keep[name]}):
            out["packages.conda" if fn.endswith(".conda") else "packages"][fn] = rec
    out["repodata_version"] = 1
    return out


def encode_current(doc: dict[str, Any]) -> bytes:
    """The bytes of ``current_repodata.json``."""
    return json.dumps(doc, separators=(",", ":")).encode()


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
    # the newest file of a name: ties (the same version and time in two subdirs) broken by subdir and
    # filename, so the result does not depend on the order rows are read in
    newest = {
        name: max(group, key=lambda r: (version_key(r.version), r.timestamp or 0, r.subdir, r.filename))
        for name, group in by_name.items()
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


def encode_channeldata_entry(entry: dict[str, Any]) -> bytes:
    """One package's entry as it appears in ``channeldata.json`` (indent 1, at the depth of ``packages``)."""
    # JSON strings hold no raw newline: every newline of the dump is the layout's, so re-indenting is safe
    return json.dumps(entry, indent=1, sort_keys=True).replace("\n", "\n  ").encode()


def compose_channeldata(entries: dict[str, bytes], subdirs: Iterable[str]) -> bytes:
    """``json.dumps({"channeldata_version": 1, "packages": ..., "subdirs": ...}, indent=1, sort_keys=True)``
    from entries encoded by :func:`encode_channeldata_entry` (one copy of the file in memory, no dicts)."""
    return b"".join(_channeldata_pieces(((n, entries[n]) for n in sorted(entries)), subdirs))


def _channeldata_pieces(
    entries: Iterable[tuple[str, bytes | memoryview]], subdirs: Iterable[str]
) -> Iterator[bytes | memoryview]:
    """The file's layout around ``entries`` (encoded, in name order), piece by piece."""
    first = True
    for name, entry in entries:
        yield b'{\n "channeldata_version": 1,\n "packages": {\n  ' if first else b",\n  "
        first = False
        yield json.dumps(name).encode() + b": "
        yield entry
    tail = json.dumps(sorted(set(subdirs)), indent=1).replace("\n", "\n ").encode()
    yield (b'{\n "channeldata_version": 1,\n "packages": {}' if first else b"\n }") + b',\n "subdirs": ' + tail + b"\n}"


def channeldata_entries(data: bytes) -> Iterator[tuple[str, memoryview]]:
    """The encoded entries of a file :func:`compose_channeldata` wrote, in its (name) order, as views into
    ``data`` (no copies). Entries are found by the layout: a name is the only string that starts a line after
    exactly two spaces (an entry's own lines are indented deeper, and JSON strings hold no raw newline).
    ValueError: not such a file."""
    head = b'\n "packages": '
    start, end = data.find(head), data.rfind(b',\n "subdirs": ')
    if start < 0 or end < 0:
        raise ValueError("not a channeldata.json written by condavault")
    view = memoryview(data)
    body = view[start + len(head) : end]
    if body == b"{}":
        return
    if not (bytes(body[:5]) == b'{\n  "' and bytes(body[-3:]) == b"\n }"):
        raise ValueError("not a channeldata.json written by condavault")
    pos, stop = start + len(head) + 5, end - 3  # after the first name's opening quote; before "\n }"
    while True:
        # the name's JSON string (its opening quote is behind pos; the file is ASCII: ensure_ascii)
        name, after = json.decoder.scanstring(data[pos : pos + 1024].decode("ascii"), 0)  # type: ignore[attr-defined]
        if data[pos + after : pos + after + 2] != b": ":
            raise ValueError("not a channeldata.json written by condavault")
        nxt = data.find(b',\n  "', pos + after, stop)
        yield name, view[pos + after + 2 : nxt if nxt >= 0 else stop]
        if nxt < 0:
            return
        pos = nxt + 5


def splice_channeldata(
    data: bytes, changed: dict[str, bytes | None], subdirs: Iterable[str]
) -> Iterator[bytes | memoryview]:
    """The pieces of :func:`compose_channeldata`'s file for the entries of ``data`` (such a file) with those of
    ``changed`` put in (None: the entry removed): the same bytes as composing the merged entries, without
    copying the unchanged ones."""
    fresh: list[tuple[str, bytes | memoryview]] = sorted((n, e) for n, e in changed.items() if e is not None)
    drop = set(changed)
    merged: Iterator[tuple[str, bytes | memoryview]] = heapq.merge(
        ((n, e) for n, e in channeldata_entries(data) if n not in drop), fresh, key=lambda item: item[0]
    )
    return _channeldata_pieces(merged, subdirs)


def _seconds(ts: Any) -> int:
    if not isinstance(ts, int | float):
        return 0
    return int(ts / 1000) if ts > 253402300799 else int(ts)
