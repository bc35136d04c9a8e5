"""CVSS vector -> base score, using the ``cvss`` library.

Bad or unknown vectors never raise: :func:`base_score` returns ``None`` and :func:`make_score` falls
back to the score given by the source (or returns ``None`` so the caller skips the entry).
"""

from __future__ import annotations

import logging

import cvss
from cvss.exceptions import CVSSError

from condavault.vulns.advisory import Score

log = logging.getLogger(__name__)


def detect_version(vector: str) -> str | None:
    """The CVSS version of ``vector``: ``"2.0"``, ``"3.0"``, ``"3.1"``, ``"4.0"`` or ``None``."""
    vector = vector.strip()
    for prefix, version in (("CVSS:3.0/", "3.0"), ("CVSS:3.1/", "3.1"), ("CVSS:4.0/", "4.0")):
        if vector.startswith(prefix):
            return version
    if vector.startswith("CVSS:"):
        return None
    body = vector.removeprefix("(").removesuffix(")")
    if "AV:" in body and "Au:" in body:
        return "2.0"
    return None


def base_score(vector: str, version: str | None = None) -> float | None:
    """Base score of a CVSS v2 / v3.x / v4 vector, ``None`` if it cannot be computed."""
    version = version or detect_version(vector)
    try:
        if version == "2.0":
            body = vector.strip().removeprefix("(").removesuffix(")")
            return float(cvss.CVSS2(body).scores()[0])
        if version in ("3.0", "3.1"):
            return float(cvss.CVSS3(vector.strip()).scores()[0])
        if version == "4.0":
            return float(cvss.CVSS4(vector.strip()).base_score)
    except (CVSSError, ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        log.debug("cannot score CVSS vector %r: %s", vector, exc)
    return None


def make_score(
    vector: str | None,
    version: str | None = None,
    source: str = "",
    given: float | None = None,
    type: str = "",
) -> Score | None:
    """Build a :class:`Score`; the computed score wins over ``given``, missing both gives ``None``."""
    if not vector or not isinstance(vector, str):
        return None
    version = detect_version(vector) or version
    if version not in ("2.0", "3.0", "3.1", "4.0"):
        return None
    computed = base_score(vector, version)
    value = computed if computed is not None else given
    if value is None:
        return None
    try:
        return Score(version=version, vector=vector.strip(), score=float(value), source=source, type=type)
    except (TypeError, ValueError):
        return None


# -- the effective score ----------------------------------------------------------------------------

DEFAULT_PREFERENCE = ("nvd:3.x", "nvd:4.0", "nvd:2.0", "*:3.x", "*:4.0", "*:2.0")
_WHO = ("nvd", "cna", "adp", "osv", "*")
_VERSIONS = {"3.x": ("3.1", "3.0"), "3.1": ("3.1",), "3.0": ("3.0",), "4.0": ("4.0",), "2.0": ("2.0",),
             "*": ("3.1", "3.0", "4.0", "2.0")}  # fmt: skip


def check_preference(preference: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Validate a score preference (``vulns_score_preference``); raises ``ValueError`` on a bad entry."""
    out = []
    for item in preference:
        who, _, version = str(item).strip().lower().partition(":")
        if who not in _WHO or version not in _VERSIONS:
            raise ValueError(
                f"bad score preference {item!r}: use WHO:VERSION, WHO one of {', '.join(_WHO)}, "
                f"VERSION one of {', '.join(_VERSIONS)} (e.g. 'nvd:3.x')"
            )
        out.append(f"{who}:{version}")
    if not out:
        raise ValueError("the score preference needs at least one entry (e.g. '*:*')")
    return tuple(out)


def _is(who: str, score: Score) -> bool:
    nvd_feed = score.feed.startswith("nvd")
    if who == "*":
        return True
    if who == "nvd":  # NVD's own (primary) score
        return nvd_feed and (score.type == "Primary" or score.source == "nvd@nist.gov")
    if who == "cna":  # the CNA: a CVE 5 CNA container, or the CNA's score as NVD carries it (Secondary)
        return score.type == "cna" or (nvd_feed and score.type == "Secondary")
    if who == "adp":
        return score.type == "adp"
    return score.feed == "osv"


def effective_score(
    scores: tuple[Score, ...] | list[Score], preference: tuple[str, ...] = DEFAULT_PREFERENCE
) -> Score | None:
    """The one score thresholds use: the first preference entry (``WHO:VERSION``) some score fits;
    within one entry the newer CVSS version, then the higher score. ``None`` when nothing fits.

    WHO is ``nvd`` (NVD's primary score), ``cna`` (the CNA's, from CVE 5 or as NVD's secondary),
    ``adp`` (a CVE 5 ADP such as CISA), ``osv`` or ``*``; VERSION is ``3.x``, ``3.1``, ``3.0``,
    ``4.0``, ``2.0`` or ``*``. The default prefers NVD's v3.x, then NVD's v4.0, then NVD's v2, then any
    source's v3.x, v4.0, v2.0: CVE-2018-14618 scores 9.8 (NVD v3.0), not its v2 10.0; CVE-2025-4565
    scores NVD's 5.3 (v3.1), not the CNA's v4.0 8.2."""
    for item in preference:
        who, _, version = item.partition(":")
        versions = _VERSIONS[version]
        fits = [s for s in scores if s.version in versions and _is(who, s)]
        if fits:
            return max(fits, key=lambda s: (-versions.index(s.version), s.score))
    return None
