"""``only_signed``: drop files without a valid signature (needs the ``is_signed`` provider)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileRecord, FilterContext

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["SignedFilter"]


class SignedFilter:
    """Asks ``ctx.is_signed(subdir, filename, record)`` and drops unsigned files."""

    name: ClassVar[str] = "only_signed"
    stage: ClassVar[int] = 60
    requires: tuple[str, ...] = ("is_signed",)

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> SignedFilter | None:
        return cls() if cfg.only_signed else None

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        assert ctx.is_signed is not None  # the engine checks `requires`
        if ctx.is_signed(rec.subdir, rec.filename, rec.record):
            return None
        return Decision(False, self.name, "signature required", rec.ident)
