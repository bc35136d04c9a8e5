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
        return Score(version=version, vector=vector.strip(), score=float(value), source=source)
    except (TypeError, ValueError):
        return None
