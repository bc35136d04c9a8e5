"""only_specs + include_dependencies closure and dependency-consistent pruning on real records."""

from __future__ import annotations

from typing import Any

from mirror_testdata import upstream

from condavault.mirror.closure import RecordIndex, dependency_closure, unsatisfied
from condavault.mirror.config import FilterConfig
from condavault.mirror.filters import FileRecord
from condavault.mirror.filters.matching import is_virtual
from condavault.mirror.plan import compute_plan, iter_records


def _names(keys: set[tuple[str, str]] | list[tuple[str, str]]) -> set[str]:
    return {fn for _, fn in keys}


def test_only_specs_closure_keeps_every_alternative() -> None:
    cfg = FilterConfig(only_specs=["another_dependent"], include_dependencies=True)
    plan = compute_plan(upstream("conda-test-recipes/noarch"), cfg)
    assert _names(plan.kept) == {
        "another_dependent-1.0-0.conda",
        "another_dependent-2.0-0.conda",
        "dependent-1.0-0.conda",
        "dependent-2.0-0.conda",
        "dependency-1.0-0.conda",
        "dependency-2.0-0.conda",
    }
    why = plan.explain("dependency-1.0-0.conda")
    assert why[-1].filter == "include_dependencies" and why[-1].kept
    assert why[-1].rule == "dependent 1.0 0 depends on 'dependency >=1.0,<2.0a0'"
    other = plan.explain("other_dependent")
    assert other == [plan.decisions[("noarch", "other_dependent-1.0-0.conda")]]
    assert other[0].filter == "only_specs" and other[0].rule == "another_dependent" and not other[0].kept


def test_only_specs_without_dependencies() -> None:
    plan = compute_plan(upstream("conda-test-recipes/noarch"), FilterConfig(only_specs=["another_dependent 2.*"]))
    assert _names(plan.kept) == {"another_dependent-2.0-0.conda"}


def test_closure_on_real_packages(packages: dict[str, dict[str, Any]]) -> None:
    cfg = FilterConfig(only_specs=["another_dependent"], include_dependencies=True)
    plan = compute_plan(packages, cfg)
    assert {plan.records[k].name for k in plan.kept} == {"another_dependent", "dependent", "dependency"}
    assert len(plan.kept) == 6


def test_closure_crosses_platform_and_noarch(packages: dict[str, dict[str, Any]]) -> None:
    recs = [r for r, _ in iter_records(packages)]
    # platform record -> noarch dependency (every matching version)
    roots = [r for r in recs if r.name == "depends-run_exports-lib" and r.subdir == "linux-64"]
    pulled = dependency_closure(roots, recs)
    assert {(k[0], recs_by_key(recs)[k].version) for k in pulled} == {("noarch", "1.0"), ("noarch", "2.0")}
    # noarch record -> platform dependency: moto needs mock, which only osx-64 has
    moto = [r for r in recs if r.name == "moto"]
    pulled = dependency_closure(moto, recs)
    assert ("osx-64", "mock-2.0.0-py37_1000.conda") in pulled
    assert ("osx-64", "mock-2.0.0-py37_1000.tar.bz2") in pulled
    assert pulled[("osx-64", "mock-2.0.0-py37_1000.conda")][1] == "mock"


def recs_by_key(recs: list[FileRecord]) -> dict[tuple[str, str], FileRecord]:
    return {r.key: r for r in recs}


def test_closure_on_platform_channel() -> None:
    up = upstream("pixi-dummy-channel-1/linux-64", "pixi-dummy-channel-1/osx-64")
    cfg = FilterConfig(only_specs=["dummy-a", "dummy-g"], include_dependencies=True)
    plan = compute_plan(up, cfg)
    assert {(k[0], plan.records[k].name) for k in plan.kept} == {
        (sd, n) for sd in ("linux-64", "osx-64") for n in ("dummy-a", "dummy-c", "dummy-g", "dummy-b")
    }


def _assert_consistent(kept: list[FileRecord]) -> None:
    index = RecordIndex(kept)
    for rec in kept:
        for dep in rec.depends:
            if not is_virtual(dep):
                assert index.candidates(dep, rec.subdir), (rec.key, dep)


def test_prune_yields_installable_set(packages: dict[str, dict[str, Any]]) -> None:
    plan = compute_plan(packages, FilterConfig(prune_unsatisfiable="drop"))
    kept = [plan.records[k] for k in plan.kept]
    _assert_consistent(kept)
    d = plan.decisions[("noarch", "unsatisfiable-1.0-0.conda")]
    assert (d.kept, d.filter, d.value) == (False, "prune_unsatisfiable", "versioned <1.0")
    # virtual packages are not required to be present
    virt = [r for r in kept if any(is_virtual(x) for x in r.depends)]
    assert virt


def test_prune_cascades_to_a_fixpoint() -> None:
    cfg = FilterConfig(exclude_specs=["dependency"], prune_unsatisfiable="drop")
    plan = compute_plan(upstream("conda-test-recipes/noarch"), cfg)
    for fn in ("dependent-1.0-0.conda", "another_dependent-2.0-0.conda", "other_dependent-1.0-0.conda"):
        assert plan.decisions[("noarch", fn)].filter == "prune_unsatisfiable", fn
    assert plan.decisions[("noarch", "another_dependent-1.0-0.conda")].value == "dependent"
    _assert_consistent([plan.records[k] for k in plan.kept])


def test_prune_flag_mode() -> None:
    cfg = FilterConfig(exclude_specs=["dependency"], prune_unsatisfiable="flag")
    plan = compute_plan(upstream("conda-test-recipes/noarch"), cfg)
    flagged = {d.filename for d in plan.flagged}
    assert {"dependent-1.0-0.conda", "dependent-2.0-0.conda", "unsatisfiable-1.0-0.conda"} <= flagged
    assert "another_dependent-1.0-0.conda" not in flagged  # its dependency is still kept (flagged)
    assert ("noarch", "dependent-1.0-0.conda") in plan.kept


def test_unsatisfied_protected_records_stay() -> None:
    recs = [r for r, _ in iter_records(upstream("conda-test-recipes/noarch")) if r.name != "dependency"]
    protected = frozenset({("noarch", "dependent-2.0-0.conda")})
    out = unsatisfied(recs, protected)
    assert ("noarch", "dependent-2.0-0.conda") in out  # reported ...
    assert ("noarch", "another_dependent-2.0-0.conda") not in out  # ... but still satisfies others
