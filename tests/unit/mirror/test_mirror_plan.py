"""compute_plan: order, include_specs exceptions, explain, add/remove sets, providers, plugins."""

from __future__ import annotations

import time
from typing import Any, ClassVar

import pytest
from mirror_testdata import upstream

from condavault.mirror import filters as filters_mod
from condavault.mirror.closure import RecordIndex
from condavault.mirror.config import FilterConfig, MirrorConfigError
from condavault.mirror.filters import (
    BUILTIN_FILTERS,
    Decision,
    ExceptionFilter,
    FileRecord,
    FilterContext,
    GroupFilter,
    RecordFilter,
    build_chain,
)
from condavault.mirror.filters.matching import is_virtual
from condavault.mirror.plan import compute_plan

R_BASE_332 = ("linux-64", "r-base-3.3.2-0.tar.bz2")


def test_include_specs_readmits_exclude_specs_drop() -> None:
    cfg = FilterConfig(exclude_specs=["r-base <3.4"], include_specs=["r-base 3.3.2"])
    plan = compute_plan(upstream("defaults-r/linux-64"), cfg)
    assert R_BASE_332 in plan.kept
    steps = plan.explain("r-base-3.3.2-0.tar.bz2")
    assert [(d.kept, d.filter, d.rule) for d in steps] == [
        (False, "exclude_specs", "r-base <3.4"),
        (True, "include_specs", "r-base 3.3.2"),
    ]
    assert steps[0].value == "r-base 3.3.2 0"
    assert plan.decisions[R_BASE_332] == steps[1]
    assert ("linux-64", "r-base-3.3.1-1.tar.bz2") in plan.dropped
    assert ("linux-64", "r-base-3.3.2-1.tar.bz2") in plan.kept  # both builds of 3.3.2
    assert plan.counts["include_specs"] == 2


def test_include_specs_readmits_license_drop() -> None:
    up = upstream("defaults-r/linux-64")
    agpl = sorted(fn for fn, r in up["linux-64"]["packages"].items() if r.get("license_family") == "AGPL")
    name = up["linux-64"]["packages"][agpl[0]]["name"]
    cfg = FilterConfig(exclude_licenses=["agpl"], include_specs=[name])
    plan = compute_plan(up, cfg)
    steps = plan.explain(agpl[0])
    assert [(d.kept, d.filter) for d in steps] == [(False, "exclude_licenses"), (True, "include_specs")]
    assert steps[0].rule == "agpl" and "family='AGPL'" in steps[0].value
    others = [fn for fn in agpl if up["linux-64"]["packages"][fn]["name"] != name]
    assert all(plan.decisions[("linux-64", fn)].filter == "exclude_licenses" for fn in others)


def test_exceptions_are_not_pruned_only_flagged() -> None:
    cfg = FilterConfig(
        exclude_specs=["dependency", "dependent 1.*"], include_specs=["dependent 1.0"], prune_unsatisfiable="drop"
    )
    plan = compute_plan(upstream("conda-test-recipes/noarch"), cfg)
    d = plan.decisions[("noarch", "dependent-1.0-0.conda")]
    assert d.kept and d.flag and d.filter == "prune_unsatisfiable" and d.value == "dependency >=1.0,<2.0a0"
    assert [x.filter for x in plan.explain("dependent-1.0-0.conda")] == [
        "exclude_specs",
        "include_specs",
        "prune_unsatisfiable",
    ]
    # the protected record still satisfies its dependents; dependent 2.0 has no exception and is pruned
    assert plan.decisions[("noarch", "dependent-2.0-0.conda")].filter == "prune_unsatisfiable"
    assert ("noarch", "another_dependent-1.0-0.conda") in plan.kept


def test_explain_names_filter_rule_value() -> None:
    cfg = FilterConfig(exclude_specs=["r-base <3.4"], keep_latest=1)
    plan = compute_plan(upstream("defaults-r/linux-64"), cfg)
    by_name = plan.explain("r-base")
    assert {d.filename for d in by_name} == {fn for (_, fn), r in plan.records.items() if r.name == "r-base"}
    (d,) = plan.explain("linux-64/r-base-3.4.2-haf99962_0.tar.bz2")
    assert (d.kept, d.filter, d.rule, d.value) == (False, "keep_latest", "count=1", "r-base 3.4.2 haf99962_0")
    (d,) = plan.explain("r-base-3.5.0-h1c2f66e_1.tar.bz2")
    assert (d.kept, d.filter) == (True, "default")
    (d,) = plan.explain("r-base-3.1.2-0.tar.bz2")
    assert (d.filter, d.rule, d.value) == ("exclude_specs", "r-base <3.4", "r-base 3.1.2 0")
    assert plan.explain("no-such-package") == []


def test_existing_and_removed_upstream() -> None:
    up = upstream("conda-test-recipes/noarch")
    up["noarch"]["removed"] = ["versioned-1.0-0.conda"]
    existing = {
        ("noarch", "versioned-1.0-0.conda"),
        ("noarch", "gone-1.0-0.conda"),
        ("noarch", "pip-99.99.99-py399_0.conda"),
    }
    plan = compute_plan(up, FilterConfig(exclude_specs=["pip"]), existing=existing)
    assert plan.decisions[("noarch", "versioned-1.0-0.conda")].filter == "upstream_removed"
    assert ("noarch", "versioned-1.0-0.conda") not in plan.to_add
    assert plan.to_remove == sorted(existing)
    assert len(plan.to_add) == len(plan.kept) == 30
    # an exception cannot bring back a file upstream removed
    plan = compute_plan(up, FilterConfig(include_specs=["versioned"]))
    assert ("noarch", "versioned-1.0-0.conda") not in plan.kept


@pytest.mark.parametrize(
    "cfg",
    [
        FilterConfig(cve_score_threshold=7.0),
        FilterConfig(exclude_cve_statuses=["active"]),
        FilterConfig(exclude_non_curated_cve=True),
        FilterConfig(max_dependency_risk=3.0),
        FilterConfig(only_signed=True),
    ],
)
def test_missing_provider_is_a_config_error(cfg: FilterConfig) -> None:
    with pytest.raises(MirrorConfigError, match="provider"):
        compute_plan(upstream("conda-test-recipes/noarch"), cfg)


def test_build_chain_order_and_protocols() -> None:
    cfg = FilterConfig(
        subdirs=["linux-64"],
        only_specs=["r-base"],
        include_dependencies=True,
        exclude_specs=["x"],
        include_specs=["y"],
        exclude_licenses=["agpl"],
        date_to="2020-01-01",
        only_signed=True,
        dedupe_conda_legacy=True,
        exclude_prereleases=True,
        max_size=10,
        cve_score_threshold=5,
        keep_latest=2,
        prune_unsatisfiable="flag",
    )
    chain = build_chain(cfg)
    assert [f.name for f in chain] == list(BUILTIN_FILTERS)
    assert all(isinstance(f, RecordFilter | GroupFilter | ExceptionFilter) for f in chain)
    assert build_chain(FilterConfig()) == []


class _NoTestPackages:
    """A plugin filter, known to the engine only through the registry."""

    name: ClassVar[str] = "no_test_packages"
    stage: ClassVar[int] = 55
    requires: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> _NoTestPackages | None:
        return cls() if cfg.plugins.get(cls.name, {}).get("enabled") else None

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        return Decision(False, self.name, "name contains 'test'", rec.ident) if "test" in rec.name else None


def test_plugin_from_entry_points(monkeypatch: pytest.MonkeyPatch) -> None:
    class EP:
        name = "no_test_packages"

        @staticmethod
        def load() -> type[Any]:
            return _NoTestPackages

    monkeypatch.setattr(
        filters_mod, "entry_points", lambda group: [EP] if group == filters_mod.ENTRY_POINT_GROUP else []
    )
    assert "no_test_packages" in filters_mod.registry()
    cfg = FilterConfig(plugins={"no_test_packages": {"enabled": True}}, include_specs=["small-executable"])
    plan = compute_plan(upstream("conda-test-recipes/noarch"), cfg)
    assert plan.dropped_counts == {}  # nothing in this channel has "test" in its name
    plan = compute_plan(upstream("conda-test/noarch", "conda-test/linux-64"), cfg)
    assert plan.dropped_counts.get("no_test_packages", 0) > 0


def test_defaults_r_with_eight_filters_and_pruning() -> None:
    up = upstream("defaults-r/linux-64")
    cfg = FilterConfig(
        subdirs=["linux-64"],
        exclude_specs=["r-base <3.3"],
        exclude_licenses=["agpl", "proprietary"],
        date_from="2016-01-01",
        dedupe_conda_legacy=True,
        exclude_prereleases=True,
        max_size="80MB",
        keep_latest={"count": 2, "per_variant": True},
        include_specs=["r-base 3.2.2"],
        prune_unsatisfiable="drop",
    )
    started = time.perf_counter()
    plan = compute_plan(up, cfg, existing=set())
    elapsed = time.perf_counter() - started
    print(
        f"\ndefaults-r linux-64: {len(plan.decisions)} files, {len(plan.kept)} kept in {elapsed:.3f}s; "
        f"dropped per filter {plan.dropped_counts}"
    )
    assert len(plan.decisions) == 4211
    assert sum(plan.counts.values()) == 4211
    assert set(plan.to_add) == plan.kept
    kept = [plan.records[k] for k in plan.kept]
    index = RecordIndex(kept)
    for r in kept:
        if not plan.decisions[r.key].flag:  # flagged: protected include_specs exceptions
            assert all(is_virtual(d) or index.candidates(d, r.subdir) for d in r.depends), r.key
    assert {d.filter for d in plan.flagged} <= {"prune_unsatisfiable"}
