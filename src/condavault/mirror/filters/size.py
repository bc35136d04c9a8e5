"""``max_size``: drop files larger than N bytes (records without ``size`` are kept)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileRecord, FilterContext

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["SizeFilter"]


class SizeFilter:
    """Drops files whose ``size`` exceeds ``max_size``."""

    name: ClassVar[str] = "max_size"
    stage: ClassVar[int] = 90
    requires: tuple[str, ...] = ()

    def __init__(self, max_size: int) -> None:
        self.max_size = max_size

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> SizeFilter | None:
        return None if cfg.max_size is None else cls(cfg.max_size)

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        size = rec.record.get("size")
        if isinstance(size, int) and size > self.max_size:
            return Decision(False, self.name, str(self.max_size), f"{rec.ident} size={size}")
        return None
