"""Load advisories from files, directories and zip archives, and merge aliases.

Format detection is per document: CVE JSON 5 (``cveMetadata``), NVD (``vulnerabilities``,
``CVE_Items`` or a bare API 2.0 ``cve`` object) and OSV (``id`` + ``affected`` + ``modified``).
Files that cannot be read or recognised are skipped with a warning, never raised.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

from condavault.vulns.advisory import Advisory
from condavault.vulns.sources.cve5 import is_cve5, parse_cve5
from condavault.vulns.sources.nvd import is_nvd, parse_nvd
from condavault.vulns.sources.osv import is_osv, parse_osv

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".yaml", ".yml")
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_document(doc: Any) -> Iterator[Advisory]:
    """Yield the advisories of one decoded JSON/YAML document (a record, a page or a list)."""
    if isinstance(doc, list):
        for item in doc:
            yield from load_document(item)
        return
    found: Iterable[Advisory] = ()
    if is_cve5(doc):
        found = (parse_cve5(doc),)
    elif is_nvd(doc):
        found = parse_nvd(doc)
    elif is_osv(doc):
        found = (parse_osv(doc),)
    yield from (adv for adv in found if adv.id)  # records without an id cannot be stored


def load_bytes(data: bytes, name: str) -> Iterator[Advisory]:
    """Decode ``data`` (JSON, or YAML for ``.yaml``/``.yml`` names) and yield its advisories."""
    try:
        is_yaml = name.lower().endswith((".yaml", ".yml"))
        doc = yaml.load(data, Loader=_YAML_LOADER) if is_yaml else json.loads(data)
        advisories = list(load_document(doc))
    except (ValueError, yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        log.warning("skipping unreadable vulnerability file %s: %s", name, exc)
        return
    if not advisories:
        log.debug("no advisories recognised in %s", name)
    yield from advisories


def load_path(path: str | Path) -> Iterator[Advisory]:
    """Yield advisories from a file, a directory (recursive, sorted) or a ``.zip`` archive."""
    path = Path(path)
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and (child.suffix.lower() in SUFFIXES or child.suffix.lower() == ".zip"):
                yield from load_path(child)
    elif path.suffix.lower() == ".zip":
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if member.lower().endswith(SUFFIXES):
                    yield from load_bytes(archive.read(member), f"{path}!{member}")
    elif path.is_file():
        yield from load_bytes(path.read_bytes(), str(path))


def merge_aliases(advisories: Iterable[Advisory]) -> list[Advisory]:
    """Merge advisories that share an id or alias (connected components over id + aliases).

    The merged advisory takes a CVE id as primary id (the id of a CVE/NVD record if there is one,
    else the smallest CVE alias, else the first id seen), keeps every other id as an alias, unions
    affected products, scores, references and sources, and keeps the earliest ``published`` and
    latest ``modified`` dates.  A lone PYSEC/GHSA record with a CVE alias is re-keyed to that CVE too,
    so the primary id does not change when the CVE's own record arrives later.  Output order follows
    the first appearance of each component.
    """
    items = list(advisories)
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for adv in items:
        for other in adv.aliases:
            ra, rb = find(adv.id), find(other)
            if ra != rb:
                parent[rb] = ra
        find(adv.id)
    groups: dict[str, list[Advisory]] = {}
    for adv in items:
        groups.setdefault(find(adv.id), []).append(adv)
    return [_merge_group(group) for group in groups.values()]


def _merge_group(group: list[Advisory]) -> Advisory:
    if len(group) == 1 and (group[0].id.startswith("CVE-") or not any(i.startswith("CVE-") for i in group[0].ids)):
        return group[0]
    ids: list[str] = []
    for adv in group:
        for ident in adv.ids:
            if ident not in ids:
                ids.append(ident)
    own_cves = sorted({a.id for a in group if a.id.startswith("CVE-")})
    all_cves = sorted(i for i in ids if i.startswith("CVE-"))
    primary = own_cves[0] if own_cves else all_cves[0] if all_cves else ids[0]
    ordered = sorted(group, key=lambda a: a.id != primary)  # records of the primary id first

    def union(attr: str) -> tuple[Any, ...]:
        out: list[Any] = []
        for adv in ordered:
            for value in getattr(adv, attr):
                if value not in out:
                    out.append(value)
        return tuple(out)

    published = [a.published for a in group if a.published]
    modified = [a.modified for a in group if a.modified]
    return Advisory(
        id=primary,
        aliases=tuple(i for i in ids if i != primary),
        summary=next((a.summary for a in ordered if a.summary), ""),
        details=max((a.details for a in ordered), key=len, default=""),
        published=min(published) if published else None,
        modified=max(modified) if modified else None,
        scores=union("scores"),
        affected=union("affected"),
        references=union("references"),
        sources=union("sources"),
        withdrawn=group[0].withdrawn if all(a.withdrawn for a in group) else None,
    )
