"""``include_licenses`` / ``exclude_licenses``: license families and SPDX expressions.

An entry is either a family (agpl gpl2 gpl3 lgpl bsd mit apache psf public_domain proprietary other none)
or an SPDX expression. A record's families come from ``license_family`` (``GPL`` counts as both gpl2 and
gpl3, ``CC``/``MOZILLA`` as other), or are guessed from ``license`` when the family is missing; no
license at all is ``none``. An SPDX entry matches a record whose ``license`` parses as SPDX and shares a
license key with it (case-insensitive), so ``GPL-3.0-only`` matches ``MIT OR GPL-3.0-only``.
A file is dropped if ``include_licenses`` is set and nothing in it matches, or if any
``exclude_licenses`` entry matches.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.config import LICENSE_FAMILIES
from condavault.mirror.filters.base import Decision, FileRecord, FilterContext

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["LicenseFilter", "record_families"]

_FAMILY_ALIASES = {
    "gpl": ("gpl2", "gpl3"),
    "cc": ("other",),
    "mozilla": ("other",),
    "public-domain": ("public_domain",),
}
_GUESSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("agpl", re.compile(r"agpl|affero")),
    ("lgpl", re.compile(r"lgpl|lesser general")),
    ("gpl3", re.compile(r"gpl[-\s]?(v)?3|gpl \(>= ?[23]|general public license v3|gplv3")),
    ("gpl2", re.compile(r"gpl[-\s]?(v)?2|gpl \(>= ?2|general public license v2|gplv2")),
    ("gpl2", re.compile(r"\bgpl\b")),
    ("gpl3", re.compile(r"\bgpl\b")),
    ("bsd", re.compile(r"bsd")),
    ("mit", re.compile(r"\bmit\b")),
    ("apache", re.compile(r"apache")),
    ("psf", re.compile(r"\bpsf\b|python software foundation")),
    ("public_domain", re.compile(r"public[-_ ]domain|unlicense|cc0")),
    ("proprietary", re.compile(r"proprietary|commercial")),
)


@lru_cache(maxsize=4096)
def _families(license_family: str | None, license: str | None) -> frozenset[str]:
    if license_family:
        fam = license_family.strip().lower()
        if fam in _FAMILY_ALIASES:
            return frozenset(_FAMILY_ALIASES[fam])
        fam = fam.replace("-", "_")
        return frozenset([fam if fam in LICENSE_FAMILIES else "other"])
    if not license or not license.strip():
        return frozenset(["none"])
    text = license.lower()
    guessed = frozenset(fam for fam, pat in _GUESSES if pat.search(text))
    return guessed or frozenset(["other"])


def record_families(record: dict[str, object]) -> frozenset[str]:
    """The license families a repodata record belongs to."""
    fam, lic = record.get("license_family"), record.get("license")
    return _families(fam if isinstance(fam, str) else None, lic if isinstance(lic, str) else None)


@lru_cache(maxsize=4096)
def _spdx_keys(expression: str | None) -> frozenset[str]:
    if not expression:
        return frozenset()
    from condavault.mirror.config import spdx_licensing

    try:
        licensing = spdx_licensing()
        return frozenset(k.lower() for k in licensing.license_keys(licensing.parse(expression)))
    except Exception:
        return frozenset()


class LicenseFilter:
    """Drops files by license family or SPDX license key."""

    name: ClassVar[str] = "licenses"
    stage: ClassVar[int] = 40
    requires: tuple[str, ...] = ()

    def __init__(self, include: list[str], exclude: list[str]) -> None:
        self.include = [self._entry(e) for e in include]
        self.exclude = [self._entry(e) for e in exclude]

    @staticmethod
    def _entry(entry: str) -> tuple[str, str | None, frozenset[str]]:
        fam = entry.strip().lower().replace("-", "_")
        if fam in LICENSE_FAMILIES:
            return (entry, fam, frozenset())
        return (entry, None, _spdx_keys(entry))

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> LicenseFilter | None:
        if not cfg.include_licenses and not cfg.exclude_licenses:
            return None
        return cls(cfg.include_licenses, cfg.exclude_licenses)

    @staticmethod
    def _matches(entry: tuple[str, str | None, frozenset[str]], rec: FileRecord) -> bool:
        _, fam, keys = entry
        if fam is not None:
            return fam in record_families(rec.record)
        lic = rec.record.get("license")
        return bool(keys & _spdx_keys(lic if isinstance(lic, str) else None))

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        value = f"{rec.ident} license={rec.record.get('license')!r} family={rec.record.get('license_family')!r}"
        for entry in self.exclude:
            if self._matches(entry, rec):
                return Decision(False, "exclude_licenses", entry[0], value)
        if self.include and not any(self._matches(e, rec) for e in self.include):
            return Decision(False, "include_licenses", ",".join(e[0] for e in self.include), value)
        return None
