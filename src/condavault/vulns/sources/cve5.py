"""CVE JSON 5.x records (cvelistV5 layout, OpenSSL release-metadata ``secjson``) -> :class:`Advisory`.

Version entries follow the CVE schema: ``version`` is the inclusive start, ``lessThan`` /
``lessThanOrEqual`` the end (``*`` = unbounded, ``lessThanOrEqual`` may be a wildcard like ``5.15.*``),
``changes`` switch the status inside the range, ``defaultStatus`` covers everything else (``unknown``
when absent).  GitHub's CNA writes constraints into ``version`` (``">= 2.0.0, < 2.0.7"``); those are
parsed too.

A degenerate entry ``version X, lessThan X`` covers nothing as written; it is read as what it most
plausibly means (:func:`resolve_degenerate`), and the range's ``note`` says so (it ends up in the reason
of a link it decides):

* when the same product also lists ranges with a real lower bound (one range per maintenance line, as
  the OpenSSL CNA writes them), X is the fix of its own release line: OpenSSL's CVE-2023-2650 lists
  ``3.1.1 lessThan 3.1.1`` beside ``3.0.0 lessThan 3.0.9`` and ``1.1.1 lessThan 1.1.1u``, so it reads
  ``>=3.1.0,<3.1.1`` (the line starts at X with its last number set to 0, or without its OpenSSL
  letters: ``1.1.1u`` -> ``1.1.1``);
* otherwise (the curl CNA's way: ``8.4.0 lessThan 8.4.0`` affected plus ``7.69.0 lessThan 7.69.0``
  unaffected) it means "below X", which with "unaffected wins" gives the intended 7.69.0 <= v < 8.4.0.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from condavault.vulns.advisory import Advisory, Affected, Range, Score
from condavault.vulns.scoring import make_score
from condavault.vulns.sources.nvd import split_cpe

_METRIC_VERSIONS = {"cvssV2_0": "2.0", "cvssV3_0": "3.0", "cvssV3_1": "3.1", "cvssV4_0": "4.0"}
_OPEN = {"", "*", "0", "unspecified", "n/a"}
_CONSTRAINT = re.compile(r"^\s*(>=|<=|>|<|=)\s*(\S+)\s*$")
_PYPI_PROJECT = re.compile(r"pypi\.org/project/([^/]+)", re.IGNORECASE)
_LETTERS = re.compile(r"^(\d+(?:\.\d+)+)[a-z]{1,2}$")


def is_cve5(doc: Any) -> bool:
    """True for a CVE JSON 5 record."""
    return isinstance(doc, dict) and (doc.get("dataType") == "CVE_RECORD" or "cveMetadata" in doc)


def parse_cve5(doc: dict[str, Any], source: str = "cve5") -> Advisory:
    """Parse one CVE JSON 5 record (CNA and ADP containers)."""
    meta = doc.get("cveMetadata") or {}
    containers = doc.get("containers") or {}
    cna = containers.get("cna") or {}
    adps = [c for c in containers.get("adp") or () if isinstance(c, dict)]
    affected: list[Affected] = []
    scores: list[Score] = []
    references: list[str] = []
    for container, who in [(cna, "cna"), *((a, "adp") for a in adps)]:
        name = (container.get("providerMetadata") or {}).get("shortName") or who
        for entry in container.get("affected") or ():
            if isinstance(entry, dict):
                parsed = _parse_affected(entry)
                if parsed not in affected:
                    affected.append(parsed)
        for metric in container.get("metrics") or ():
            for key, version in _METRIC_VERSIONS.items():
                data = metric.get(key)
                if isinstance(data, dict):
                    score = make_score(data.get("vectorString"), version, name, data.get("baseScore"), who)
                    if score is not None and score not in scores:
                        scores.append(score)
        for ref in container.get("references") or ():
            url = ref.get("url")
            if url and url not in references:
                references.append(url)
    details = next(
        (d.get("value", "") for d in cna.get("descriptions") or () if str(d.get("lang", "")).startswith("en")),
        "",
    )
    rejected = meta.get("state") == "REJECTED"
    return Advisory(
        id=str(meta.get("cveId", "")),
        summary=cna.get("title") or "",
        details=details,
        published=meta.get("datePublished") or cna.get("datePublic"),
        modified=meta.get("dateUpdated"),
        scores=tuple(scores),
        affected=tuple(affected),
        references=tuple(references),
        sources=(source,),
        withdrawn=(meta.get("dateRejected") or meta.get("dateUpdated") or "rejected") if rejected else None,
    )


def _parse_affected(entry: dict[str, Any]) -> Affected:
    ranges: list[Range] = []
    for version in entry.get("versions") or ():
        if isinstance(version, dict):
            ranges.extend(parse_version_entry(version))
    ranges = resolve_lines(resolve_degenerate(ranges))
    vendor = str(entry.get("vendor") or "")
    product = str(entry.get("product") or "")
    package = str(entry.get("packageName") or "")
    default = str(entry.get("defaultStatus") or "unknown")
    urls = " ".join(str(entry.get(k) or "") for k in ("collectionURL", "repo"))
    pypi = _PYPI_PROJECT.search(urls)
    if pypi or "pypi.org" in urls:
        name = package or (pypi.group(1) if pypi else product)
        return Affected("pypi", vendor, product, name, tuple(ranges), (), default)
    for cpe in entry.get("cpes") or ():
        parts = split_cpe(str(cpe))
        if parts is not None and parts[0] == "a":
            return Affected("cpe", parts[1], parts[2], package, tuple(ranges), (), default)
    return Affected("generic", vendor, product, package, tuple(ranges), (), default)


def parse_version_entry(entry: dict[str, Any]) -> list[Range]:
    """One CVE 5 ``versions[]`` entry -> ranges (several for GitHub-style constraint strings)."""
    status = str(entry.get("status") or "affected")
    scheme = str(entry.get("versionType") or "")
    version = str(entry.get("version") or "").strip()
    less_than = entry.get("lessThan")
    less_equal = entry.get("lessThanOrEqual")
    changes = tuple(
        (str(c.get("at")), str(c.get("status")))
        for c in entry.get("changes") or ()
        if isinstance(c, dict) and c.get("at") is not None
    )
    if less_than is None and less_equal is None:
        if version[:1] in "<>=" and version:
            constraint = _parse_constraint(version, status, scheme)
            return [constraint] if constraint is not None else []
        if version in _OPEN - {"0"}:
            return [Range(status=status, scheme=scheme, changes=changes)] if version == "*" else []
        return [Range.exact(version, status, scheme)]
    lower = None if version in _OPEN else version
    fixed = None if less_than is None or str(less_than).strip() in _OPEN else str(less_than).strip()
    last = None if less_equal is None or str(less_equal).strip() in _OPEN else str(less_equal).strip()
    return [Range(introduced=lower, fixed=fixed, last_affected=last, status=status, scheme=scheme, changes=changes)]


def _line_start(version: str) -> str | None:
    """The first release of ``version``'s line: ``3.1.1`` -> ``3.1.0``, ``1.1.1u`` -> ``1.1.1``; ``None``
    when ``version`` already is one (``3.1.0``) or has no such shape."""
    letters = _LETTERS.match(version)
    if letters is not None:
        return letters.group(1)
    parts = version.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts) or int(parts[-1]) == 0:
        return None
    return ".".join([*parts[:-1], "0"])


def resolve_degenerate(ranges: list[Range]) -> list[Range]:
    """Read ``version X, lessThan X`` ranges of one product (see the module docstring)."""
    degenerate = [r for r in ranges if r.introduced is not None and r.introduced == r.fixed]
    if not degenerate:
        return ranges
    lined = any(r.introduced is not None and r.introduced != r.fixed and r.status == "affected" for r in ranges)
    out = []
    for r in ranges:
        if r not in degenerate:
            out.append(r)
            continue
        x = str(r.fixed)
        start = _line_start(x) if lined and r.status == "affected" else None
        if start is not None:
            note = f"CVE 5 entry 'version {x}, lessThan {x}' read as >={start},<{x} (the fix of its release line)"
            out.append(replace(r, introduced=start, note=note))
        else:
            note = f"CVE 5 entry 'version {x}, lessThan {x}' read as <{x}"
            out.append(replace(r, introduced=None, note=note))
    return out


def _numbers(version: str) -> tuple[int, ...] | None:
    parts = version.split(".")
    return tuple(int(p) for p in parts) if all(p.isdigit() for p in parts) else None


def resolve_lines(ranges: list[Range]) -> list[Range]:
    """Read several affected ranges that all start at 0 as one per release line.

    The protobuf CNA lists ``0 lessThan 4.25.8``, ``0 lessThan 5.29.5`` and ``0 lessThan 6.31.1`` for
    CVE-2025-4565: read literally, 4.25.8 (fixed) would be "below 5.29.5". They mean one fix per release
    line, so each range but the lowest starts where its line does: the coarsest version prefix (major,
    then major.minor ...) that tells the upper bounds apart (``>=5,<5.29.5``, ``>=6,<6.31.1``)."""
    open_ = [
        r
        for r in ranges
        if r.introduced is None
        and r.fixed is not None
        and r.last_affected is None
        and r.status == "affected"
        and not r.note
    ]
    bounds = [_numbers(str(r.fixed)) for r in open_]
    if len(open_) < 2 or any(b is None for b in bounds) or len(set(bounds)) < len(bounds):
        return ranges
    numbers = [b for b in bounds if b is not None]
    depth = next((d for d in range(1, max(map(len, numbers)) + 1) if len({n[:d] for n in numbers}) == len(numbers)), 0)
    if not depth:
        return ranges
    lowest = min(numbers)
    out = []
    for r in ranges:
        if r not in open_ or _numbers(str(r.fixed)) == lowest:
            out.append(r)
            continue
        start = ".".join(str(n) for n in _numbers(str(r.fixed))[:depth])  # type: ignore[index]
        listed = ", ".join(f"<{x.fixed}" for x in open_)
        note = f"CVE 5 ranges all from 0 ({listed}) read one per release line: >={start},<{r.fixed}"
        out.append(replace(r, introduced=start, note=note))
    return out


def _parse_constraint(text: str, status: str, scheme: str) -> Range | None:
    """``">= 2.0.0, < 2.0.7"`` / ``"< 1.26.18"`` / ``"<= 1.2"`` -> a range; ``None`` if unreadable."""
    values: dict[str, Any] = {"status": status, "scheme": scheme}
    for part in text.split(","):
        match = _CONSTRAINT.match(part)
        if match is None:
            return None
        op, value = match.groups()
        if op == "=":
            return Range.exact(value, status, scheme)
        if op in (">=", ">"):
            values["introduced"] = value
            values["introduced_inclusive"] = op == ">="
        elif op == "<":
            values["fixed"] = value
        else:
            values["last_affected"] = value
    return Range(**values)
