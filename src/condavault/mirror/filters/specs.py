"""``only_specs`` (+ ``include_dependencies``) and ``exclude_specs``: MatchSpec allow- and deny-lists."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.closure import dependency_closure
from condavault.mirror.filters.base import Decision, FileKey, FileRecord, FilterContext
from condavault.mirror.filters.matching import first_match

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["ExcludeSpecsFilter", "OnlySpecsFilter"]


class OnlySpecsFilter:
    """Keeps only files matching one of ``specs``; with ``include_dependencies`` also every file any of
    them may transitively depend on (all alternatives, see :mod:`condavault.mirror.closure`)."""

    name: ClassVar[str] = "only_specs"
    stage: ClassVar[int] = 20
    requires: tuple[str, ...] = ()

    def __init__(self, specs: list[str], include_dependencies: bool = False) -> None:
        self.specs = list(specs)
        self.include_dependencies = include_dependencies

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> OnlySpecsFilter | None:
        return cls(cfg.only_specs, cfg.include_dependencies) if cfg.only_specs else None

    def select(self, records: list[FileRecord], ctx: FilterContext) -> dict[FileKey, Decision]:
        roots = [r for r in records if first_match(self.specs, r) is not None]
        root_keys = {r.key for r in roots}
        out: dict[FileKey, Decision] = {}
        if self.include_dependencies:
            by_key = {r.key: r for r in records}
            for key, (parent, dep) in dependency_closure(roots, records).items():
                if key not in root_keys:
                    rule = f"{parent.ident} depends on {dep!r}"
                    out[key] = Decision(True, "include_dependencies", rule, by_key[key].ident)
        rule = " | ".join(self.specs)
        for rec in records:
            if rec.key not in root_keys and rec.key not in out:
                out[rec.key] = Decision(False, self.name, rule, rec.ident)
        return out


class ExcludeSpecsFilter:
    """Drops files matching any of ``specs`` (name, version, build, ``[key=value]`` brackets, globs)."""

    name: ClassVar[str] = "exclude_specs"
    stage: ClassVar[int] = 30
    requires: tuple[str, ...] = ()

    def __init__(self, specs: list[str]) -> None:
        self.specs = list(specs)

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> ExcludeSpecsFilter | None:
        return cls(cfg.exclude_specs) if cfg.exclude_specs else None

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        spec = first_match(self.specs, rec)
        return None if spec is None else Decision(False, self.name, spec, rec.ident)
