"""``include_specs``: exceptions that re-admit files any earlier filter dropped."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileRecord, FilterContext
from condavault.mirror.filters.matching import first_match

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["IncludeSpecsFilter"]


class IncludeSpecsFilter:
    """Re-admits a dropped file matching one of ``specs``. Re-admitted files are protected: later stages
    (``prune_unsatisfiable``) may flag them but not drop them."""

    name: ClassVar[str] = "include_specs"
    stage: ClassVar[int] = 900
    requires: tuple[str, ...] = ()

    def __init__(self, specs: list[str]) -> None:
        self.specs = list(specs)

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> IncludeSpecsFilter | None:
        return cls(cfg.include_specs) if cfg.include_specs else None

    def readmit(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        spec = first_match(self.specs, rec)
        return None if spec is None else Decision(True, self.name, spec, rec.ident)
