"""``exclude_prereleases``: drop versions with a pre-release marker.

Markers (in the version's main part, before ``+``): ``dev``, ``alpha``, ``beta``, ``rc``, ``pre``,
``preview``, or a single ``a``/``b``/``c`` followed by a number (``1.0a1``). Letter suffixes that are
releases, like openssl ``1.1.1w`` or tzdata ``2023c``, are kept, and so is ``post``.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileRecord, FilterContext

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["PrereleaseFilter", "is_prerelease"]

_MARKER = re.compile(r"(?<![a-z])(dev|alpha|beta|rc|pre|preview)(?![a-z])|(?<![a-z])[abc](?=\d)")


def is_prerelease(version: str) -> bool:
    """Whether a conda version string denotes a pre-release."""
    main = version.split("+", 1)[0].lower()
    if "!" in main:
        main = main.split("!", 1)[1]
    return _MARKER.search(main) is not None


class PrereleaseFilter:
    """Drops pre-release versions."""

    name: ClassVar[str] = "exclude_prereleases"
    stage: ClassVar[int] = 80
    requires: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> PrereleaseFilter | None:
        return cls() if cfg.exclude_prereleases else None

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        if is_prerelease(rec.version):
            return Decision(False, self.name, "pre-release version", rec.ident)
        return None
