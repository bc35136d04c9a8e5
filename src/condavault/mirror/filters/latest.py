"""``keep_latest``: keep the N newest versions of each package (conda version order, ``rattler.Version``).

Groups are per subdir and name; with ``per_variant`` also per build variant, the build string with its
trailing build number and hash removed (``py310h1234_0`` -> ``py310``, ``r3.4.1_0`` -> ``r3.4.1``,
``h7f8727e_2`` -> ``""``). Every build of a kept version is kept; ``1.1`` and ``1.1.0`` are one version.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileKey, FileRecord, FilterContext

if TYPE_CHECKING:
    from rattler import Version

    from condavault.mirror.config import FilterConfig

__all__ = ["KeepLatestFilter", "build_variant"]

_NUMBER = re.compile(r"_\d+$")
_HASH = re.compile(r"_?h[0-9a-f]{4,}$")


def build_variant(build: str) -> str:
    """The build string without trailing build number and hash."""
    if build.isdigit():
        return ""
    return _HASH.sub("", _NUMBER.sub("", build))


class KeepLatestFilter:
    """Group filter: drops every version older than the ``count`` newest of its group."""

    name: ClassVar[str] = "keep_latest"
    stage: ClassVar[int] = 110
    requires: tuple[str, ...] = ()

    def __init__(self, count: int, per_variant: bool = False) -> None:
        self.count = count
        self.per_variant = per_variant
        self._rule = f"count={count}" + (" per_variant" if per_variant else "")

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> KeepLatestFilter | None:
        kl = cfg.keep_latest
        return None if kl is None else cls(kl.count, kl.per_variant)

    def _group(self, rec: FileRecord) -> tuple[str, str, str]:
        return (rec.subdir, rec.name.lower(), build_variant(rec.build) if self.per_variant else "")

    def select(self, records: list[FileRecord], ctx: FilterContext) -> dict[FileKey, Decision]:
        groups: dict[tuple[str, str, str], list[FileRecord]] = defaultdict(list)
        for rec in records:
            groups[self._group(rec)].append(rec)
        out: dict[FileKey, Decision] = {}
        for group in groups.values():
            versions: set[Version] = set()
            for rec in group:
                try:
                    versions.add(rec.parsed_version)
                except Exception:
                    continue  # an unparseable version is never "old"
            if len(versions) <= self.count:
                continue
            keep = set(sorted(versions, reverse=True)[: self.count])
            for rec in group:
                try:
                    old = rec.parsed_version not in keep
                except Exception:
                    old = False
                if old:
                    out[rec.key] = Decision(False, self.name, self._rule, rec.ident)
        return out
