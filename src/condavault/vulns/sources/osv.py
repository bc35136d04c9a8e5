"""OSV records (JSON from osv.dev, YAML from pypa/advisory-database) -> :class:`Advisory`."""

from __future__ import annotations

from typing import Any

from condavault.vulns.advisory import Advisory, Affected, Range, Score
from condavault.vulns.scoring import make_score

# PyPI and conda packages map to conda names; OSS-Fuzz projects are upstream C/C++ projects (matched by
# name like a CVE 5 product). Every other ecosystem (npm, crates.io, Debian, Alpine ...) names its own
# packages with its own versions: kind "other", never matched (the crates.io "openssl" is not OpenSSL).
_KINDS = {"pypi": "pypi", "conda": "conda", "oss-fuzz": "generic"}
_SEVERITY_VERSIONS = {"CVSS_V2": "2.0", "CVSS_V3": "3.1", "CVSS_V4": "4.0"}


def is_osv(doc: Any) -> bool:
    """True for a dict that looks like an OSV record."""
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("id"), str)
        and "affected" in doc
        and ("modified" in doc or "schema_version" in doc)
        and "containers" not in doc
    )


def parse_osv(doc: dict[str, Any], source: str = "osv") -> Advisory:
    """Parse one OSV record."""
    affected = tuple(_parse_affected(a) for a in doc.get("affected") or () if isinstance(a, dict))
    scores: list[Score] = []
    for sev in doc.get("severity") or ():
        score = make_score(sev.get("score"), _SEVERITY_VERSIONS.get(sev.get("type", "")), source=source)
        if score is not None:
            scores.append(score)
    for a in doc.get("affected") or ():
        for sev in a.get("severity") or ():
            score = make_score(sev.get("score"), _SEVERITY_VERSIONS.get(sev.get("type", "")), source=source)
            if score is not None and score not in scores:
                scores.append(score)
    return Advisory(
        id=doc["id"],
        aliases=tuple(a for a in doc.get("aliases") or () if a != doc["id"]),
        summary=doc.get("summary") or "",
        details=doc.get("details") or "",
        published=_text(doc.get("published")),
        modified=_text(doc.get("modified")),
        scores=tuple(scores),
        affected=affected,
        references=tuple(r["url"] for r in doc.get("references") or () if r.get("url")),
        sources=(source,),
        withdrawn=_text(doc.get("withdrawn")),
    )


def _text(value: Any) -> str | None:
    """Dates may come back from YAML as datetime objects: keep the text form."""
    if value is None:
        return None
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _parse_affected(data: dict[str, Any]) -> Affected:
    package = data.get("package") or {}
    ecosystem = str(package.get("ecosystem", "")).split(":")[0].lower()
    kind = _KINDS.get(ecosystem, "other")
    ranges: list[Range] = []
    for rng in data.get("ranges") or ():
        ranges.extend(events_to_ranges(rng.get("events") or (), str(rng.get("type", ""))))
    return Affected(
        kind=kind,
        vendor="" if kind in ("pypi", "conda") else ecosystem,
        product="" if kind in ("pypi", "conda") else str(package.get("name", "")),
        package=str(package.get("name", "")),
        ranges=tuple(ranges),
        versions=tuple(str(v) for v in data.get("versions") or ()),
        default_status="unaffected",
    )


def events_to_ranges(events: Any, scheme: str) -> list[Range]:
    """Turn OSV events into intervals: each ``introduced`` opens one, the next ``fixed`` /
    ``last_affected`` closes it; ``limit`` caps every interval of the range.  ``introduced: "0"`` is
    unbounded.  Events are taken in file order (OSV writers emit them sorted)."""
    limits = [str(e["limit"]) for e in events if "limit" in e]
    limit = limits[0] if len(limits) == 1 and limits[0] != "*" else None
    ranges: list[Range] = []
    start: str | None = None
    open_ = False
    for event in events:
        if "introduced" in event:
            if open_:
                ranges.append(Range(introduced=start, limit=limit, scheme=scheme))
            value = str(event["introduced"])
            start = None if value in ("0", "") else value
            open_ = True
        elif "fixed" in event or "last_affected" in event:
            if not open_:
                start = None
            fixed = str(event["fixed"]) if "fixed" in event else None
            last = str(event["last_affected"]) if "last_affected" in event else None
            ranges.append(Range(introduced=start, fixed=fixed, last_affected=last, limit=limit, scheme=scheme))
            open_ = False
    if open_:
        ranges.append(Range(introduced=start, limit=limit, scheme=scheme))
    return ranges
