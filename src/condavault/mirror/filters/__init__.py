"""Mirror filters: the plugin API (re-exported from :mod:`.base`), the registry and ``build_chain``.

Filters come from :data:`BUILTIN_FILTERS` plus the entry-point group ``condavault.mirror_filters.v1``
(each entry point loads a filter class; a plugin reads its settings from ``FilterConfig.plugins[name]``
in ``from_config``). ``build_chain(cfg)`` asks every registered class for an instance and orders the
enabled ones by ``stage``; the engine only dispatches on the protocol a filter implements.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from condavault.mirror.filters.base import (
    Decision,
    ExceptionFilter,
    FileKey,
    FileRecord,
    FilterContext,
    GroupFilter,
    RecordFilter,
    VulnLink,
)
from condavault.mirror.filters.cve import CveFilter
from condavault.mirror.filters.dates import DateFilter
from condavault.mirror.filters.include import IncludeSpecsFilter
from condavault.mirror.filters.latest import KeepLatestFilter
from condavault.mirror.filters.legacy import LegacyDedupeFilter
from condavault.mirror.filters.licenses import LicenseFilter
from condavault.mirror.filters.prerelease import PrereleaseFilter
from condavault.mirror.filters.prune import PruneUnsatisfiableFilter
from condavault.mirror.filters.signed import SignedFilter
from condavault.mirror.filters.size import SizeFilter
from condavault.mirror.filters.specs import ExcludeSpecsFilter, OnlySpecsFilter
from condavault.mirror.filters.subdirs import SubdirFilter

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = [
    "BUILTIN_FILTERS",
    "ENTRY_POINT_GROUP",
    "PLUGIN_API_REVISION",
    "Decision",
    "ExceptionFilter",
    "FileKey",
    "FileRecord",
    "Filter",
    "FilterContext",
    "GroupFilter",
    "RecordFilter",
    "VulnLink",
    "build_chain",
    "registry",
]

PLUGIN_API_REVISION = 1
ENTRY_POINT_GROUP = "condavault.mirror_filters.v1"

Filter = RecordFilter | GroupFilter | ExceptionFilter

BUILTIN_FILTERS: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (
        SubdirFilter,
        OnlySpecsFilter,
        ExcludeSpecsFilter,
        LicenseFilter,
        DateFilter,
        SignedFilter,
        LegacyDedupeFilter,
        PrereleaseFilter,
        SizeFilter,
        CveFilter,
        KeepLatestFilter,
        IncludeSpecsFilter,
        PruneUnsatisfiableFilter,
    )
}


def registry(include_plugins: bool = True) -> dict[str, type[Any]]:
    """Built-in filter classes by name, plus those of installed plugins (a plugin may not shadow one)."""
    found = dict(BUILTIN_FILTERS)
    if include_plugins:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            if ep.name not in found:
                found[ep.name] = ep.load()
    return found


def build_chain(cfg: FilterConfig, filters: dict[str, type[Any]] | None = None) -> list[Filter]:
    """The filters ``cfg`` enables, in stage order (ties keep registry order)."""
    classes = registry() if filters is None else filters
    chain = [f for cls in classes.values() if (f := cls.from_config(cfg)) is not None]
    return sorted(chain, key=lambda f: f.stage)
