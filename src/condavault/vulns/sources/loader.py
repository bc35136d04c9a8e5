"""Load advisories from files, directories and zip archives, and merge aliases.

Format detection is per document: CVE JSON 5 (``cveMetadata``), NVD (``vulnerabilities``,
``CVE_Items`` or a bare API 2.0 ``cve`` object), OSV (``id`` + ``affected`` + ``modified``) and PyPI <->
conda name mappings (``sources/names.py``).
Files that cannot be read or recognised are skipped with a warning, never raised.
"""

from __future__ import annotations

import json
import logging
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from condavault.errors import InvalidRequest
from condavault.vulns.advisory import Advisory
from condavault.vulns.sources.cve5 import is_cve5, parse_cve5
from condavault.vulns.sources.names import NameEntry, is_name_mapping, parse_name_mapping
from condavault.vulns.sources.nvd import is_nvd, parse_nvd
from condavault.vulns.sources.osv import is_osv, parse_osv

log = logging.getLogger(__name__)

SUFFIXES = (".json", ".yaml", ".yml")
MAX_MEMBER_BYTES = 512 * 1024**2  # one feed file (NVD's yearly files are < 100 MB, parselmouth's ~2 MB)
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
    # records without an id (or with one longer than any real scheme's) cannot be stored; each record's
    # affected entries and scores carry its feed
    yield from (adv.tagged(adv.sources[0] if adv.sources else "") for adv in found if 0 < len(adv.id.strip()) <= 100)


@dataclass
class SourceContent:
    """What one source holds: advisory records and name mapping entries."""

    advisories: list[Advisory] = field(default_factory=list)
    names: list[NameEntry] = field(default_factory=list)
    mapping_files: int = 0


def _decode(data: bytes, name: str) -> Any:
    """JSON, or YAML for ``.yaml``/``.yml`` names; ``None`` (with a warning) when unreadable."""
    try:
        is_yaml = name.lower().endswith((".yaml", ".yml"))
        return yaml.load(data, Loader=_YAML_LOADER) if is_yaml else json.loads(data)
    except (ValueError, yaml.YAMLError) as exc:
        log.warning("skipping unreadable vulnerability file %s: %s", name, exc)
        return None


def _read_into(out: SourceContent, data: bytes, name: str) -> None:
    doc = _decode(data, name)
    if doc is None:
        return
    if is_name_mapping(doc):
        out.names.extend(parse_name_mapping(doc))
        out.mapping_files += 1
        return
    try:
        advisories = list(load_document(doc))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("skipping unreadable vulnerability file %s: %s", name, exc)
        return
    if not advisories:
        log.debug("no advisories recognised in %s", name)
    out.advisories.extend(advisories)


def _files(path: Path) -> Iterator[tuple[bytes, str]]:
    """(bytes, name) of every JSON/YAML file of a file, a directory (recursive, sorted) or a ``.zip``."""
    if path.is_dir():
        for child in sorted(path.rglob("*")):
            if child.is_file() and (child.suffix.lower() in SUFFIXES or child.suffix.lower() == ".zip"):
                yield from _files(child)
    elif path.suffix.lower() == ".zip":
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise InvalidRequest(f"{path.name} is not a zip archive: {exc}", code="invalid_vuln_source") from exc
        with archive:
            for member in sorted(archive.namelist()):
                if member.lower().endswith(SUFFIXES):
                    yield _member(archive, member), f"{path}!{member}"
    elif path.is_file():
        yield path.read_bytes(), str(path)


def _member(archive: zipfile.ZipFile, member: str) -> bytes:
    """One member, refusing what would not fit the limits (a zip bomb answers 400, not a full memory)."""
    info = archive.getinfo(member)
    if info.file_size > MAX_MEMBER_BYTES:
        raise InvalidRequest(
            f"{member} is {info.file_size} bytes uncompressed (at most {MAX_MEMBER_BYTES})", code="invalid_vuln_source"
        )
    try:
        return archive.read(member)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise InvalidRequest(f"cannot read {member}: {exc}", code="invalid_vuln_source") from exc


def read_source(path: str | Path) -> SourceContent:
    """Everything a source folder / zip / file holds (advisories of every format, name mappings)."""
    out = SourceContent()
    for data, name in _files(Path(path)):
        _read_into(out, data, name)
    return out


def load_bytes(data: bytes, name: str) -> Iterator[Advisory]:
    """Decode ``data`` (JSON, or YAML for ``.yaml``/``.yml`` names) and yield its advisories."""
    out = SourceContent()
    _read_into(out, data, name)
    yield from out.advisories


def load_path(path: str | Path) -> Iterator[Advisory]:
    """Yield advisories from a file, a directory (recursive, sorted) or a ``.zip`` archive."""
    for data, name in _files(Path(path)):
        yield from load_bytes(data, name)


def merge_aliases(advisories: Iterable[Advisory]) -> list[Advisory]:
    """Merge loose records that share an id or alias, in memory (``merge.merge_all``)."""
    from condavault.vulns.merge import merge_all

    return merge_all(advisories)
