"""Labelled precision/recall of :func:`affects` over every OSV record in testdata.

Labels are built straight from the raw YAML (not from our parser):

* every version listed in ``versions`` must be affected;
* every ``fixed`` version must not be affected;
* a version just below a non-zero ``introduced`` (``X.dev0``) must not be affected;
* a ``last_affected`` version must be affected.

Negative labels that a PEP 440 reading of the *same* record puts inside another of its intervals, or
that are listed in ``versions``, are dropped as contradictory (the record says both).
"""

from __future__ import annotations

import yaml
from packaging.version import InvalidVersion
from packaging.version import Version as Pep440
from vulns_testdata import data_path

from condavault.vulns.matching import affects
from condavault.vulns.sources.osv import parse_osv


def _pep440(text: str) -> Pep440 | None:
    try:
        return Pep440(text)
    except InvalidVersion:
        return None


def _intervals(affected: dict) -> list[tuple[str | None, str | None, bool]]:
    """(introduced, end, end_inclusive) per ECOSYSTEM interval of the raw record."""
    out: list[tuple[str | None, str | None, bool]] = []
    for rng in affected.get("ranges") or ():
        if rng.get("type") == "GIT":
            continue
        start: str | None = None
        for event in rng.get("events") or ():
            if "introduced" in event:
                start = None if str(event["introduced"]) == "0" else str(event["introduced"])
            elif "fixed" in event:
                out.append((start, str(event["fixed"]), False))
            elif "last_affected" in event:
                out.append((start, str(event["last_affected"]), True))
    return out


def _inside_any(version: str, intervals: list[tuple[str | None, str | None, bool]]) -> bool:
    v = _pep440(version)
    if v is None:
        return True  # cannot tell: treat as contradictory, drop
    for start, end, inclusive in intervals:
        lo = _pep440(start) if start else None
        hi = _pep440(end) if end else None
        if (start and lo is None) or (end and hi is None):
            return True
        if (lo is None or v >= lo) and (hi is None or (v <= hi if inclusive else v < hi)):
            return True
    return False


def _labels() -> list[tuple[str, dict, str, bool]]:
    labels: list[tuple[str, dict, str, bool]] = []
    for path in sorted(data_path("vulns", "osv-pypi").rglob("*.yaml")):
        raw = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        for index, affected in enumerate(raw["affected"]):
            listed = [str(v) for v in affected.get("versions") or ()]
            intervals = _intervals(affected)
            for version in listed:
                labels.append((raw["id"], {"raw": raw, "index": index}, version, True))
            for rng in affected.get("ranges") or ():
                if rng.get("type") == "GIT":
                    continue
                for event in rng.get("events") or ():
                    if "last_affected" in event:
                        labels.append((raw["id"], {"raw": raw, "index": index}, str(event["last_affected"]), True))
                    negatives = []
                    if "fixed" in event:
                        negatives.append(str(event["fixed"]))
                    if "introduced" in event and str(event["introduced"]) != "0":
                        negatives.append(f"{event['introduced']}.dev0")
                    for neg in negatives:
                        if neg not in listed and not _inside_any(neg, intervals):
                            labels.append((raw["id"], {"raw": raw, "index": index}, neg, False))
    return labels


def test_osv_precision_and_recall_are_perfect() -> None:
    labels = _labels()
    assert len(labels) > 3000
    parsed: dict[str, object] = {}
    tp = fp = fn = tn = 0
    errors = []
    for adv_id, ref, version, expected in labels:
        adv = parsed.setdefault(adv_id, parse_osv(ref["raw"]))
        got = affects(adv.affected[ref["index"]], version)  # type: ignore[attr-defined]
        if expected and got is True:
            tp += 1
        elif expected:
            fn += 1
            errors.append((adv_id, version, expected, got))
        elif got is True:
            fp += 1
            errors.append((adv_id, version, expected, got))
        else:
            tn += 1
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    assert tn > 500
    assert (precision, recall) == (1.0, 1.0), errors[:20]
