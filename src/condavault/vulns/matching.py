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

A merged advisory may describe one conda name through several feeds (OSV's PyPI entry, NVD's CPE
configuration, a CNA's CVE 5 entry). They are not unioned: the feeds are asked one at a time in
``NameMapping.feed_priority`` order (default ``osv``, ``nvd``, ``nvd-1.1``, ``cve5``: ecosystem data
first, then NIST's analysed CPE configurations, then the CNA's free-form entries) and the first feed
whose entries can tell (affected *or* not affected) decides. So the CNA's "curl 7.61.1 affected" in
CVE-2018-14618's CVE 5 record does not override NVD's ``< 7.61.1``, and the link's reason names the feed.

A conda name reached only through a **bundled** copy (``inkscape`` bundles PyPI ``lxml``) is not
version-tested (the copy's version is not known): it gets a link of kind ``bundled`` whose reason says
so, which does not count as the package's own vulnerability until a curator sets it ``active``.

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
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from rattler import Version, VersionSpec

from condavault.vulns.advisory import Advisory, Affected, Range
from condavault.vulns.mapping import FEED_PRIORITY, NameMapping

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
    """An advisory that affects a record; ``kind`` ``bundled`` when found through a bundled copy."""

    advisory_id: str
    record_key: str
    matched_by: str
    reason: str
    kind: str = "direct"


@dataclass(frozen=True)
class Candidate:
    """An advisory narrowed to the affected entries of one conda name (:func:`candidates_for`)."""

    advisory: Advisory
    kind: str = "direct"
    via: str = ""


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
    changes = [(at, st) for at, st in ((parse_version(conv(a)), s) for a, s in rng.changes) if at is not None]
    for at, st in sorted(changes, key=lambda c: c[0]):
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
        note = f" ({affected_by.note})" if affected_by.note else ""
        return Verdict(True, f"{version} is in affected range {affected_by.describe()}{note}")
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


def _feed_rank(feed: str, priority: Sequence[str]) -> int:
    return priority.index(feed) if feed in priority else len(priority)


def _direct_match(
    advisory: Advisory, affected: Iterable[Affected], record: Mapping[str, Any], priority: Sequence[str]
) -> Match | None:
    """Evaluate the record against the affected entries of one conda name, one feed at a time in
    ``priority`` order: the first feed whose entries can tell (affected or not) decides."""
    version = str(record["version"])
    feed: str | None = None
    told = False
    for aff in sorted(affected, key=lambda a: (_feed_rank(a.source, priority), a.source)):  # stable per feed
        if aff.source != feed:
            if told:  # the previous feed could tell: not affected
                return None
            feed = aff.source
        verdict = explain(aff, version)
        if verdict.result is True:
            where = f" (per {feed}: {aff.label})" if feed else ""
            return Match(advisory.id, record_key(record), aff.label, f"{record['name']} {verdict.reason}{where}")
        told = told or verdict.result is False
    return None


def _bundled_match(candidate: Candidate, record: Mapping[str, Any]) -> Match:
    aff = candidate.advisory.affected[0]
    ranges = "; ".join(
        dict.fromkeys(r.describe() for a in candidate.advisory.affected for r in a.ranges if r.status == "affected")
    )
    reason = (
        f"{candidate.via}: the version of that copy is not known, so the advisory's affected versions"
        f"{f' ({ranges})' if ranges else ''} were not tested; not counted as {record['name']}'s own "
        "vulnerability unless a curator confirms it"
    )
    return Match(candidate.advisory.id, record_key(record), f"bundled:{aff.label}", reason, "bundled")


def evaluate(candidate: Candidate, record: Mapping[str, Any], priority: Sequence[str] = FEED_PRIORITY) -> Match | None:
    """The match of one indexed advisory on one record (``name``, ``version``), or ``None``."""
    if candidate.kind == "bundled":
        return _bundled_match(candidate, record)
    return _direct_match(candidate.advisory, candidate.advisory.affected, record, priority)


def candidates_for(advisory: Advisory, mapping: NameMapping) -> dict[str, Candidate]:
    """Conda name -> the advisory narrowed to the affected entries that map to that name.

    A name some entry maps to directly is matched on those entries only; a name reached only through a
    bundled copy (``bundles`` mapping entries, when ``mapping.match_bundled``) is a bundled candidate.
    Withdrawn advisories have none."""
    if advisory.withdrawn:
        return {}
    direct: dict[str, list[Affected]] = {}
    bundled: dict[str, tuple[list[Affected], str]] = {}
    for aff in advisory.affected:
        for name, target in mapping.targets(aff).items():
            if target.kind == "direct":
                direct.setdefault(name, []).append(aff)
            elif mapping.match_bundled:
                bundled.setdefault(name, ([], target.via))[0].append(aff)
    out = {name: Candidate(replace(advisory, affected=tuple(affs)), "direct") for name, affs in direct.items()}
    for name, (affs, via) in bundled.items():
        if name not in out:
            out[name] = Candidate(replace(advisory, affected=tuple(affs)), "bundled", via)
    return out


def match_advisory(
    advisory: Advisory, records: Iterable[Mapping[str, Any]], mapping: NameMapping | None = None
) -> list[Match]:
    """All records (plain mappings with ``name``, ``version``, ...) affected by ``advisory``.

    Withdrawn advisories match nothing.  ``mapping`` defaults to the shipped tables.
    """
    mapping = mapping or NameMapping.default()
    by_name = candidates_for(advisory, mapping)
    matches: list[Match] = []
    for record in records:
        candidate = by_name.get(str(record.get("name", "")))
        if candidate is not None:
            match = evaluate(candidate, record, mapping.feed_priority)
            if match is not None:
                matches.append(match)
    return matches


def index_by_conda_name(advisories: Iterable[Advisory], mapping: NameMapping) -> dict[str, list[Candidate]]:
    """Conda name -> candidates (:func:`candidates_for`) of every advisory naming it.

    Feed the result to :func:`match_record` so a new record is tested only against the advisories that
    can concern it.
    """
    index: dict[str, list[Candidate]] = {}
    for advisory in advisories:
        for name, candidate in candidates_for(advisory, mapping).items():
            index.setdefault(name, []).append(candidate)
    return index


def match_record(
    record: Mapping[str, Any],
    candidates_by_name: Mapping[str, list[Candidate]],
    priority: Sequence[str] = FEED_PRIORITY,
) -> list[Match]:
    """Advisories (from :func:`index_by_conda_name`) that affect one record."""
    matches: list[Match] = []
    for candidate in candidates_by_name.get(str(record.get("name", "")), ()):
        match = evaluate(candidate, record, priority)
        if match is not None:
            matches.append(match)
    return matches
