"""``prune_unsatisfiable``: drop (or flag) kept files whose dependencies the policy removed."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from condavault.mirror.closure import unsatisfied
from condavault.mirror.filters.base import Decision, FileKey, FileRecord, FilterContext

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["PruneUnsatisfiableFilter"]


class PruneUnsatisfiableFilter:
    """Runs last, to a fixpoint: a kept file with a non-virtual dependency no kept file satisfies is
    dropped (``drop``) or kept with a flag (``flag``). The decision's value is the unsatisfied spec.

    Files re-admitted by ``include_specs`` (``ctx.protected``) are explicit admin intent: they are only
    flagged, and they still count as satisfying others.
    """

    name: ClassVar[str] = "prune_unsatisfiable"
    stage: ClassVar[int] = 1000
    requires: tuple[str, ...] = ()

    def __init__(self, mode: Literal["drop", "flag"] = "drop") -> None:
        self.mode = mode

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> PruneUnsatisfiableFilter | None:
        return None if cfg.prune_unsatisfiable is None else cls(cfg.prune_unsatisfiable)

    def select(self, records: list[FileRecord], ctx: FilterContext) -> dict[FileKey, Decision]:
        protected = ctx.protected if self.mode == "drop" else frozenset(r.key for r in records)
        out: dict[FileKey, Decision] = {}
        for key, spec in unsatisfied(records, protected).items():
            drop = self.mode == "drop" and key not in ctx.protected
            out[key] = Decision(not drop, self.name, f"unsatisfied dependency ({self.mode})", spec, flag=not drop)
        return out
