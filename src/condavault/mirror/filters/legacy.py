"""``dedupe_conda_legacy``: skip a ``.tar.bz2`` when its ``.conda`` twin is still kept."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileKey, FileRecord, FilterContext

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["LegacyDedupeFilter"]


class LegacyDedupeFilter:
    """Group filter: drops ``<stem>.tar.bz2`` when ``<stem>.conda`` of the same subdir is kept so far."""

    name: ClassVar[str] = "dedupe_conda_legacy"
    stage: ClassVar[int] = 70
    requires: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> LegacyDedupeFilter | None:
        return cls() if cfg.dedupe_conda_legacy else None

    def select(self, records: list[FileRecord], ctx: FilterContext) -> dict[FileKey, Decision]:
        conda = {(r.subdir, r.stem) for r in records if r.is_conda}
        return {
            r.key: Decision(False, self.name, ".conda twin exists", f"{r.subdir}/{r.stem}.conda")
            for r in records
            if r.filename.endswith(".tar.bz2") and (r.subdir, r.stem) in conda
        }
