"""``date_from`` / ``date_to``: publish-date window (UTC, both ends inclusive).

Records without a ``timestamp`` cannot be placed in the window and are kept.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileRecord, FilterContext

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["DateFilter"]


class DateFilter:
    """Drops files published before ``date_from`` or after ``date_to``."""

    name: ClassVar[str] = "dates"
    stage: ClassVar[int] = 50
    requires: tuple[str, ...] = ()

    def __init__(self, date_from: dt.date | None = None, date_to: dt.date | None = None) -> None:
        self.date_from = date_from
        self.date_to = date_to

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> DateFilter | None:
        if cfg.date_from is None and cfg.date_to is None:
            return None
        return cls(cfg.date_from, cfg.date_to)

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        ts = rec.timestamp
        if ts is None:
            return None
        day = ts.date()
        if self.date_from is not None and day < self.date_from:
            return Decision(False, "date_from", self.date_from.isoformat(), f"{rec.ident} {day.isoformat()}")
        if self.date_to is not None and day > self.date_to:
            return Decision(False, "date_to", self.date_to.isoformat(), f"{rec.ident} {day.isoformat()}")
        return None
