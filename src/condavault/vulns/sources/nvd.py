"""NVD records -> :class:`Advisory`.

Handles the CVE API 2.0 response (``{"vulnerabilities": [{"cve": ...}]}``, pages or single-CVE
files), bare API 2.0 ``cve`` objects (fkie-cad/nvd-json-data-feeds layout) and the legacy JSON 1.1
data feed (``CVE_Items``).  Every vulnerable ``cpeMatch`` of every configuration node (whatever the
``operator``; negated nodes are skipped) contributes a range to the :class:`Affected` of its
``vendor:product``; platform-only entries (``vulnerable: false``) are ignored.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from condavault.vulns.advisory import Advisory, Affected, Range, Score
from condavault.vulns.scoring import make_score

_CPE_SPLIT = re.compile(r"(?<!\\):")
_API_METRICS = {"cvssMetricV2": "2.0", "cvssMetricV30": "3.0", "cvssMetricV31": "3.1", "cvssMetricV40": "4.0"}


def split_cpe(cpe: str) -> tuple[str, str, str, str, str] | None:
    """``cpe:2.3:part:vendor:product:version:update:...`` -> (part, vendor, product, version, update).

    CPE 2.2 URIs (``cpe:/a:vendor:product:version``) are accepted too; escapes are removed.
    """
    if cpe.startswith("cpe:2.3:"):
        fields = _CPE_SPLIT.split(cpe)[2:]
    elif cpe.startswith("cpe:/"):
        fields = cpe[5:].split(":")
    else:
        return None
    fields = [f.replace("\\", "") for f in fields] + ["*"] * 5
    return fields[0], fields[1].lower(), fields[2].lower(), fields[3], fields[4]


def is_nvd(doc: Any) -> bool:
    """True for any NVD layout handled here."""
    if not isinstance(doc, dict):
        return False
    if "CVE_Items" in doc:
        return True
    vulns = doc.get("vulnerabilities")
    if isinstance(vulns, list) and (not vulns or (isinstance(vulns[0], dict) and "cve" in vulns[0])):
        return True
    return is_nvd_cve(doc)


def is_nvd_cve(doc: Any) -> bool:
    """True for a bare API 2.0 ``cve`` object."""
    return (
        isinstance(doc, dict)
        and str(doc.get("id", "")).startswith("CVE-")
        and any(k in doc for k in ("sourceIdentifier", "vulnStatus", "configurations"))
        and "affected" not in doc
    )


def parse_nvd(doc: dict[str, Any]) -> Iterator[Advisory]:
    """Yield the advisories of any NVD layout."""
    if "CVE_Items" in doc:
        for item in doc["CVE_Items"]:
            yield parse_feed11_item(item)
    elif isinstance(doc.get("vulnerabilities"), list):
        for item in doc["vulnerabilities"]:
            if isinstance(item, dict) and isinstance(item.get("cve"), dict):
                yield parse_nvd_cve(item["cve"])
    elif is_nvd_cve(doc):
        yield parse_nvd_cve(doc)


def parse_nvd_cve(cve: dict[str, Any]) -> Advisory:
    """Parse one API 2.0 ``cve`` object."""
    scores: list[Score] = []
    for key, version in _API_METRICS.items():
        for metric in (cve.get("metrics") or {}).get(key) or ():
            data = metric.get("cvssData") or {}
            score = make_score(
                data.get("vectorString"),
                version,
                metric.get("source", ""),
                data.get("baseScore"),
                metric.get("type", ""),
            )
            if score is not None and score not in scores:
                scores.append(score)
    matches = [
        match
        for config in cve.get("configurations") or ()
        for node in config.get("nodes") or ()
        if not node.get("negate")
        for match in node.get("cpeMatch") or ()
    ]
    status = str(cve.get("vulnStatus", ""))
    return Advisory(
        id=str(cve["id"]),
        details=_english(cve.get("descriptions")),
        published=cve.get("published"),
        modified=cve.get("lastModified"),
        scores=tuple(scores),
        affected=cpe_matches_to_affected(matches, uri_key="criteria"),
        references=_urls(cve.get("references")),
        sources=("nvd",),
        withdrawn=(cve.get("lastModified") or "rejected") if status == "Rejected" else None,
    )


def parse_feed11_item(item: dict[str, Any]) -> Advisory:
    """Parse one legacy JSON 1.1 feed ``CVE_Items`` entry."""
    cve = item.get("cve") or {}
    impact = item.get("impact") or {}
    scores: list[Score] = []
    for key, inner in (("baseMetricV3", "cvssV3"), ("baseMetricV2", "cvssV2")):
        data = (impact.get(key) or {}).get(inner) or {}
        score = make_score(
            data.get("vectorString"), data.get("version"), "nvd@nist.gov", data.get("baseScore"), "Primary"
        )
        if score is not None:
            scores.append(score)
    matches: list[dict[str, Any]] = []
    stack = list((item.get("configurations") or {}).get("nodes") or ())
    while stack:
        node = stack.pop(0)
        if node.get("negate"):
            continue
        matches.extend(node.get("cpe_match") or ())
        stack.extend(node.get("children") or ())
    return Advisory(
        id=str((cve.get("CVE_data_meta") or {}).get("ID", "")),
        details=_english((cve.get("description") or {}).get("description_data")),
        published=item.get("publishedDate"),
        modified=item.get("lastModifiedDate"),
        scores=tuple(scores),
        affected=cpe_matches_to_affected(matches, uri_key="cpe23Uri"),
        references=_urls((cve.get("references") or {}).get("reference_data")),
        sources=("nvd-1.1",),
    )


def cpe_matches_to_affected(matches: list[dict[str, Any]], uri_key: str) -> tuple[Affected, ...]:
    """Group vulnerable ``cpeMatch`` entries by vendor:product into :class:`Affected` objects."""
    grouped: dict[tuple[str, str], list[Range]] = {}
    for match in matches:
        if not match.get("vulnerable", True):
            continue
        parts = split_cpe(str(match.get(uri_key, "")))
        if parts is None:
            continue
        _part, vendor, product, version, update = parts
        rng = _cpe_range(match, version, update)
        if rng is None:
            continue
        ranges = grouped.setdefault((vendor, product), [])
        if rng not in ranges:
            ranges.append(rng)
    return tuple(
        Affected(kind="cpe", vendor=v, product=p, ranges=tuple(r), default_status="unaffected")
        for (v, p), r in grouped.items()
    )


def _cpe_range(match: dict[str, Any], version: str, update: str) -> Range | None:
    start_in, start_ex = match.get("versionStartIncluding"), match.get("versionStartExcluding")
    end_in, end_ex = match.get("versionEndIncluding"), match.get("versionEndExcluding")
    if any(v is not None for v in (start_in, start_ex, end_in, end_ex)):
        return Range(
            introduced=start_in if start_in is not None else start_ex,
            introduced_inclusive=start_ex is None,
            fixed=end_ex,
            last_affected=end_in,
            scheme="cpe",
        )
    if version == "*":
        return Range(scheme="cpe")
    if version in ("-", ""):
        return None  # "not applicable": cannot be tested against package versions
    if update not in ("*", "-", ""):
        version = f"{version}{update}" if update[0].isalpha() else f"{version}.{update}"
    return Range.exact(version, scheme="cpe")


def _english(descriptions: Any) -> str:
    for desc in descriptions or ():
        if str(desc.get("lang", "")).startswith("en"):
            return str(desc.get("value", ""))
    return ""


def _urls(references: Any) -> tuple[str, ...]:
    urls: list[str] = []
    for ref in references or ():
        url = ref.get("url")
        if url and url not in urls:
            urls.append(url)
    return tuple(urls)
