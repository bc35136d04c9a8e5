"""Decide which conda records an advisory affects, with conda version semantics (py-rattler).

Pure functions, no I/O.  :func:`affects` evaluates one :class:`Affected` against one version and
returns ``True`` / ``False`` / ``None`` (cannot tell: no evaluable range, unparseable version, or a
CVE 5 ``defaultStatus`` of ``unknown``).  Rules, in order:

1. a version listed in ``versions`` (OSV) is affected;
2. ``GIT`` ranges are ignored; a range whose bounds cannot be parsed is ignored;
3. a version covered by an ``unaffected`` range (after CVE 5 ``changes``) is not affected, even if
   an ``affected`` range covers it too (explicit fixes/backports are the more specific statement);
4. a version covered by an ``affected`` range is affected;
5. otherwise ``default_status`` decides (``unaffected`` for OSV and NVD, as given for CVE 5).

OpenSSL letter releases: conda (and rattler) orders ``1.1.1t`` *before* ``1.1.1`` because a
trailing letter is a pre-release-like string segment (verified with rattler 0.28: ``1.0.2a < 1.0.2u
< 1.0.2zh < 1.0.2 < 1.0.3`` and ``1.1.1a < 1.1.1w < 1.1.1``).  That is wrong for OpenSSL, where
``1.1.1 < 1.1.1a < ... < 1.1.1z < 1.1.1za``.  So when an affected entry uses letter releases (its
product is ``openssl`` or one of its bounds looks like ``1.1.1u`` / ``1.0.2zh``), both the bounds and
the tested version are rewritten before comparing: each trailing letter becomes a numeric segment
(``a`` = 1 ... ``z`` = 26), e.g. ``1.1.1t`` -> ``1.1.1.20`` and ``1.0.2zh`` -> ``1.0.2.26.8``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from rattler import Version, VersionSpec

from condavault.vulns.advisory import Advisory, Affected, Range
from condavault.vulns.mapping import NameMapping

_LETTER = re.compile(r"^(\d+(?:\.\d+)+)([a-z]{1,2})$")
_AMBIGUOUS = {"a", "b", "c", "rc"}  # could be pre-release markers outside OpenSSL
_LETTER_PRODUCTS = {"openssl"}


@dataclass(frozen=True)
class Verdict:
    """Result of evaluating one version: ``result`` (True/False/None) and a human readable reason."""

    result: bool | None
    reason: str


@dataclass(frozen=True)
class Match:
    """An advisory that affects a record."""

    advisory_id: str
    record_key: str
    matched_by: str
    reason: str


@lru_cache(maxsize=65536)
def parse_version(text: str) -> Version | None:
    """A rattler :class:`Version`, or ``None`` when the string is not a conda version."""
    try:
        return Version(text.strip())
    except Exception:  # rattler raises its own exception types
        return None


def letter_to_numeric(version: str) -> str:
    """``1.1.1t`` -> ``1.1.1.20``; ``1.0.2zh`` -> ``1.0.2.26.8``; other strings unchanged."""
    match = _LETTER.match(version.strip().lower())
    if match is None:
        return version
    base, letters = match.groups()
    return ".".join([base, *(str(ord(ch) - ord("a") + 1) for ch in letters)])


def uses_letter_releases(affected: Affected) -> bool:
    """True when ``affected`` should be compared with OpenSSL-style letter releases."""
    if affected.kind == "pypi":
        return False
    names = {affected.product.lower(), affected.package.lower()}
    if names & _LETTER_PRODUCTS:
        return True
    bounds = [b for r in affected.ranges for b in (r.introduced, r.fixed, r.last_affected) if b]
    for bound in (*bounds, *affected.versions):
        match = _LETTER.match(bound.strip().lower())
        if match is not None and match.group(2) not in _AMBIGUOUS:
            return True
    return False


def _le_bound(v: Version, bound: str, conv: Callable[[str], str]) -> bool | None:
    """``v <= bound``, where ``bound`` may be a wildcard like ``5.15.*``."""
    if bound.endswith(".*"):
        prefix = parse_version(conv(bound[:-2]))
        if prefix is None:
            return None
        return v < prefix or VersionSpec(f"{prefix}.*").matches(v)
    parsed = parse_version(conv(bound))
    return None if parsed is None else v <= parsed


def _range_status(rng: Range, v: Version, conv: Callable[[str], str]) -> str | None:
    """The status ``rng`` gives ``v``; ``""`` when not covered; ``None`` when not evaluable."""
    if rng.introduced is not None:
        low = parse_version(conv(rng.introduced))
        if low is None:
            return None
        if (v < low) if rng.introduced_inclusive else (v <= low):
            return ""
    for upper in (rng.fixed, rng.limit):
        if upper is not None:
            high = parse_version(conv(upper))
            if high is None:
                return None
            if v >= high:
                return ""
    if rng.last_affected is not None:
        below = _le_bound(v, rng.last_affected, conv)
        if below is None:
            return None
        if not below:
            return ""
    status = rng.status
    changes = [(parse_version(conv(at)), st) for at, st in rng.changes]
    known = [(at, st) for at, st in changes if at is not None]
    for at, st in sorted(known, key=lambda c: c[0]):
        if v >= at:
            status = st
    return status


@lru_cache(maxsize=8192)
def _listed(versions: tuple[str, ...], letters: bool) -> frozenset[Version]:
    """The parsed ``versions`` of an affected entry (rattler versions hash consistently with ``==``)."""
    conv = letter_to_numeric if letters else str
    return frozenset(p for p in (parse_version(conv(x)) for x in versions) if p is not None)


def explain(affected: Affected, version: str) -> Verdict:
    """Evaluate ``version`` against ``affected`` (see the module docstring for the rules)."""
    letters = uses_letter_releases(affected)
    conv: Callable[[str], str] = letter_to_numeric if letters else str
    v = parse_version(conv(version))
    if v is None:
        return Verdict(None, f"version {version!r} is not a conda version")
    if affected.versions and (version in affected.versions or v in _listed(affected.versions, letters)):
        return Verdict(True, f"{version} is listed as affected")
    usable = bool(affected.versions)
    affected_by: Range | None = None
    for rng in affected.ranges:
        if rng.scheme.lower() == "git":
            continue
        status = _range_status(rng, v, conv)
        if status is None:
            continue
        usable = True
        if status == "unaffected":
            return Verdict(False, f"{version} is in unaffected range {rng.describe()}")
        if status == "affected" and affected_by is None:
            affected_by = rng
    if affected_by is not None:
        return Verdict(True, f"{version} is in affected range {affected_by.describe()}")
    if not usable:
        return Verdict(None, "no version information that conda versions can be tested against")
    if affected.default_status == "affected":
        return Verdict(True, f"{version} is not in any listed range; default status is affected")
    if affected.default_status == "unaffected":
        return Verdict(False, f"{version} is not in any affected range")
    return Verdict(None, f"{version} is not in any listed range; default status is unknown")


def affects(affected: Affected, version: str) -> bool | None:
    """``True`` if ``version`` is affected, ``False`` if not, ``None`` if it cannot be told."""
    return explain(affected, version).result


def record_key(record: Mapping[str, Any]) -> str:
    """The id the caller passed (``id`` or ``key``), else ``subdir/filename``."""
    for key in ("id", "key"):
        if record.get(key) is not None:
            return str(record[key])
    return f"{record.get('subdir', '')}/{record.get('filename', '')}"


def _first_match(advisory: Advisory, affected: Iterable[Affected], record: Mapping[str, Any]) -> Match | None:
    for aff in affected:
        verdict = explain(aff, str(record["version"]))
        if verdict.result is True:
            return Match(advisory.id, record_key(record), aff.label, f"{record['name']} {verdict.reason}")
    return None


def match_advisory(
    advisory: Advisory, records: Iterable[Mapping[str, Any]], mapping: NameMapping | None = None
) -> list[Match]:
    """All records (plain mappings with ``name``, ``version``, ...) affected by ``advisory``.

    Withdrawn advisories match nothing.  ``mapping`` defaults to the shipped CPE table only.
    """
    if advisory.withdrawn:
        return []
    mapping = mapping or NameMapping.default()
    by_name: dict[str, list[Affected]] = {}
    for aff in advisory.affected:
        for name in mapping.conda_names_for(aff):
            by_name.setdefault(name, []).append(aff)
    matches: list[Match] = []
    for record in records:
        candidates = by_name.get(str(record.get("name", "")))
        if candidates:
            match = _first_match(advisory, candidates, record)
            if match is not None:
                matches.append(match)
    return matches


def index_by_conda_name(advisories: Iterable[Advisory], mapping: NameMapping) -> dict[str, list[Advisory]]:
    """Conda name -> advisories naming it, each narrowed to the affected entries mapping to that name.

    Withdrawn advisories are left out.  Feed the result to :func:`match_record` so a new record is
    tested only against the advisories that can concern it.
    """
    index: dict[str, list[Advisory]] = {}
    for advisory in advisories:
        if advisory.withdrawn:
            continue
        per_name: dict[str, list[Affected]] = {}
        for aff in advisory.affected:
            for name in mapping.conda_names_for(aff):
                per_name.setdefault(name, []).append(aff)
        for name, affs in per_name.items():
            index.setdefault(name, []).append(replace(advisory, affected=tuple(affs)))
    return index


def match_record(
    record: Mapping[str, Any],
    advisories_by_name: Mapping[str, list[Advisory]],
    mapping: NameMapping | None = None,
) -> list[Match]:
    """Advisories (from :func:`index_by_conda_name`) that affect one record.

    Pass ``mapping`` when the index holds un-narrowed advisories; affected entries that do not map
    to the record's name are then skipped.
    """
    name = str(record.get("name", ""))
    matches: list[Match] = []
    for advisory in advisories_by_name.get(name, ()):
        affected = advisory.affected
        if mapping is not None:
            affected = tuple(a for a in affected if name in mapping.conda_names_for(a))
        match = _first_match(advisory, affected, record)
        if match is not None:
            matches.append(match)
    return matches
