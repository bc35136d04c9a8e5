"""Normalised vulnerability advisories.

Every source format (CVE JSON 5, NVD API 2.0 / legacy 1.1 feed, OSV) is parsed into the same frozen
dataclasses defined here.  The model is deliberately small but expressive enough for all of them:

* OSV ``ranges`` (``introduced`` / ``fixed`` / ``last_affected`` / ``limit`` events) become one
  :class:`Range` per ``introduced`` event; OSV ``versions`` stay in :attr:`Affected.versions`.
* CVE 5 ``versions[]`` entries become one :class:`Range` each: ``version`` is the inclusive lower
  bound, ``lessThan`` the exclusive upper bound (``fixed``), ``lessThanOrEqual`` the inclusive upper
  bound (``last_affected``, which may be a wildcard such as ``5.15.*``), ``status`` is kept per range
  and ``changes`` as ``(at, status)`` pairs.  An entry without an upper bound is an exact version
  (``introduced == last_affected``).  ``defaultStatus`` is :attr:`Affected.default_status`.
* NVD ``cpeMatch`` entries become ranges with ``versionStart{In,Ex}cluding`` (lower bound and
  :attr:`Range.introduced_inclusive`) and ``versionEnd{In,Ex}cluding`` (``last_affected`` / ``fixed``);
  an exact version in the CPE string becomes an exact range.

``None`` bounds are unbounded.  Advisories are stored as JSON by the database layer, hence
:meth:`Advisory.to_json` / :meth:`Advisory.from_json`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal

ScoreVersion = Literal["2.0", "3.0", "3.1", "4.0"]
AffectedKind = Literal["cpe", "pypi", "conda", "generic", "other"]
Status = Literal["affected", "unaffected", "unknown"]


@dataclass(frozen=True)
class Score:
    """One CVSS score: ``version`` of the CVSS standard, the vector, its base score and who gave it.

    ``source`` is who scored (NVD's ``source`` e-mail, a CVE 5 container's short name, ``osv``),
    ``type`` what role the scorer has in the record (NVD ``Primary`` / ``Secondary``, CVE 5 ``cna`` /
    ``adp``) and ``feed`` which record kind carried it (``nvd``, ``nvd-1.1``, ``cve5``, ``osv``; set by
    the loader). ``scoring.effective_score`` picks one of an advisory's scores by these.
    """

    version: str
    vector: str
    score: float
    source: str = ""
    type: str = ""
    feed: str = ""


@dataclass(frozen=True)
class Range:
    """A version interval with one status.

    ``introduced`` is the lower bound (inclusive unless ``introduced_inclusive`` is false); ``fixed`` is
    an exclusive and ``last_affected`` an inclusive upper bound; ``limit`` is an extra exclusive cap
    (OSV).  ``scheme`` records the source's version type (``ECOSYSTEM``, ``SEMVER``, ``GIT``,
    ``semver``, ``custom``, ``git``, ``cpe`` ...); ``GIT`` / ``git`` ranges cannot be evaluated against
    package versions.  ``changes`` are CVE 5 status changes ``(at, status)`` inside the range.
    """

    introduced: str | None = None
    fixed: str | None = None
    last_affected: str | None = None
    limit: str | None = None
    introduced_inclusive: bool = True
    status: str = "affected"
    scheme: str = ""
    changes: tuple[tuple[str, str], ...] = ()
    note: str = ""  # how an odd source entry was read (shown in the reason of a link it decides)

    @classmethod
    def exact(cls, version: str, status: str = "affected", scheme: str = "") -> Range:
        """A range holding exactly one version."""
        return cls(introduced=version, last_affected=version, status=status, scheme=scheme)

    def describe(self) -> str:
        """Short human readable form, e.g. ``>=1.0,<1.2.3``."""
        parts = []
        if self.introduced is not None:
            if self.introduced == self.last_affected:
                return f"=={self.introduced}"
            parts.append((">=" if self.introduced_inclusive else ">") + self.introduced)
        if self.fixed is not None:
            parts.append("<" + self.fixed)
        if self.last_affected is not None:
            parts.append("<=" + self.last_affected)
        if self.limit is not None:
            parts.append("<" + self.limit)
        text = ",".join(parts) or "*"
        return text if self.status == "affected" else f"{text} ({self.status})"


@dataclass(frozen=True)
class Affected:
    """One affected product.

    ``kind`` says how to map it to conda names: ``cpe`` (``vendor``/``product`` from a CPE), ``pypi``
    (``package`` is a PyPI name), ``conda`` (``package`` is a conda name), ``generic`` (CVE 5
    vendor/product/packageName, OSV OSS-Fuzz projects) or ``other`` (another ecosystem's package, e.g.
    an npm or Debian one: never mapped to conda names).  A version is affected when it is in
    ``versions`` or covered by an ``affected`` range; versions covered by nothing get
    ``default_status``.
    """

    kind: str
    vendor: str = ""
    product: str = ""
    package: str = ""
    ranges: tuple[Range, ...] = ()
    versions: tuple[str, ...] = ()
    default_status: str = "unaffected"
    source: str = ""  # the record kind it came from (``nvd``, ``cve5``, ``osv`` ...), set by the loader

    @property
    def label(self) -> str:
        """``kind:vendor:product`` for CPEs, ``kind:package`` otherwise (used as ``matched_by``)."""
        if self.kind == "cpe" or (self.kind == "generic" and not self.package):
            return f"{self.kind}:{self.vendor}:{self.product}"
        return f"{self.kind}:{self.package}"


@dataclass(frozen=True)
class Advisory:
    """A normalised advisory (one CVE, PYSEC, GHSA ... possibly merged from several sources)."""

    id: str
    aliases: tuple[str, ...] = ()
    summary: str = ""
    details: str = ""
    published: str | None = None
    modified: str | None = None
    scores: tuple[Score, ...] = ()
    affected: tuple[Affected, ...] = ()
    references: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    withdrawn: str | None = None

    @property
    def ids(self) -> tuple[str, ...]:
        """The primary id followed by all aliases."""
        return (self.id, *self.aliases)

    @property
    def max_score(self) -> float | None:
        """The highest base score over all CVSS versions and sources, ``None`` without scores."""
        return max((s.score for s in self.scores), default=None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (what ``dataclasses.asdict`` gives, built without its deep copies)."""
        out = dict(self.__dict__)
        out["scores"] = [dict(s.__dict__) for s in self.scores]
        out["affected"] = [{**a.__dict__, "ranges": [dict(r.__dict__) for r in a.ranges]} for a in self.affected]
        return out

    def to_json(self) -> str:
        """Serialise to a JSON string (stable key order)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def tagged(self, feed: str) -> Advisory:
        """This record with ``feed`` set on every affected entry and score (see :class:`Score`)."""
        return replace(
            self,
            affected=tuple(replace(a, source=feed) for a in self.affected),
            scores=tuple(replace(s, feed=feed) for s in self.scores),
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Advisory:
        """Inverse of :meth:`to_dict`."""
        affected = tuple(
            Affected(
                kind=a["kind"],
                vendor=a.get("vendor", ""),
                product=a.get("product", ""),
                package=a.get("package", ""),
                ranges=tuple(_range_from_dict(r) for r in a.get("ranges", ())),
                versions=tuple(a.get("versions", ())),
                default_status=a.get("default_status", "unaffected"),
                source=a.get("source", ""),
            )
            for a in data.get("affected", ())
        )
        return cls(
            id=data["id"],
            aliases=tuple(data.get("aliases", ())),
            summary=data.get("summary", ""),
            details=data.get("details", ""),
            published=data.get("published"),
            modified=data.get("modified"),
            scores=tuple(Score(**s) for s in data.get("scores", ())),
            affected=affected,
            references=tuple(data.get("references", ())),
            sources=tuple(data.get("sources", ())),
            withdrawn=data.get("withdrawn"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Advisory:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))


def _range_from_dict(data: dict[str, Any]) -> Range:
    values = dict(data)
    values["changes"] = tuple(tuple(c) for c in values.get("changes", ()))
    return Range(**values)
