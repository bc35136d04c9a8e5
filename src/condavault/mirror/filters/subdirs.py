"""``subdirs``: keep only files of the listed platforms (plus nothing else; list ``noarch`` explicitly)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileRecord, FilterContext

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig


class SubdirFilter:
    """Drops files whose subdir is not in the allow-list."""

    name: ClassVar[str] = "subdirs"
    stage: ClassVar[int] = 10
    requires: tuple[str, ...] = ()

    def __init__(self, subdirs: list[str]) -> None:
        self.subdirs = frozenset(subdirs)
        self._rule = ",".join(sorted(self.subdirs))

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> SubdirFilter | None:
        return None if cfg.subdirs is None else cls(cfg.subdirs)

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        if rec.subdir in self.subdirs:
            return None
        return Decision(False, self.name, self._rule, rec.subdir)
