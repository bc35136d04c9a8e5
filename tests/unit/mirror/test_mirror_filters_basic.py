"""Per-record filters on real repodata: subdirs, exclude_specs, dates, signed, prerelease, size."""

from __future__ import annotations

import datetime as dt

from mirror_testdata import upstream

from condavault.mirror.filters import FileRecord, FilterContext
from condavault.mirror.filters.dates import DateFilter
from condavault.mirror.filters.prerelease import PrereleaseFilter, is_prerelease
from condavault.mirror.filters.signed import SignedFilter
from condavault.mirror.filters.size import SizeFilter
from condavault.mirror.filters.specs import ExcludeSpecsFilter
from condavault.mirror.filters.subdirs import SubdirFilter
from condavault.mirror.plan import iter_records

CTX = FilterContext()


def records(*rels: str) -> list[FileRecord]:
    return [rec for rec, _ in iter_records(upstream(*rels))]


def test_subdirs() -> None:
    recs = records(*(f"pixi-dummy-channel-1/{s}" for s in ("linux-64", "osx-64", "win-64", "noarch")))
    f = SubdirFilter(["linux-64", "noarch"])
    drops = [d for r in recs if (d := f.decide(r, CTX))]
    assert {d.value for d in drops} == {"osx-64", "win-64"}
    assert all(d.filter == "subdirs" and d.rule == "linux-64,noarch" for d in drops)
    assert all(f.decide(r, CTX) is None for r in recs if r.subdir in ("linux-64", "noarch"))


def test_exclude_specs_version_and_brackets() -> None:
    recs = records("defaults-r/linux-64")
    f = ExcludeSpecsFilter(["r-base <3.4", "*[license_family=AGPL]"])
    drops = {r.filename: d for r in recs if (d := f.decide(r, CTX))}
    r_base = [r for r in recs if r.name == "r-base"]
    old = {r.filename for r in r_base if r.parsed_version < r.parsed_version.__class__("3.4")}
    assert old and old <= set(drops)
    assert all(drops[fn].rule == "r-base <3.4" for fn in old)
    agpl = {r.filename for r in recs if r.record.get("license_family") == "AGPL"}
    assert agpl and {drops[fn].rule for fn in agpl} == {"*[license_family=AGPL]"}
    d = drops[sorted(old)[0]]
    assert d.value.startswith("r-base 3.") and not d.kept


def test_dates_window() -> None:
    recs = records("defaults-r/linux-64")
    f = DateFilter(dt.date(2017, 1, 1), dt.date(2017, 12, 31))
    for r in recs:
        d = f.decide(r, CTX)
        if r.timestamp is None or r.timestamp.year == 2017:
            assert d is None
        else:
            assert d is not None and d.filter == ("date_from" if r.timestamp.year < 2017 else "date_to")
    assert any(f.decide(r, CTX) for r in recs) and any(f.decide(r, CTX) is None for r in recs)


def test_only_signed_uses_provider() -> None:
    recs = records("conda-test-recipes/noarch")
    ctx = FilterContext(is_signed=lambda subdir, fn, rec: rec["name"].startswith("dep"))
    f = SignedFilter()
    kept = {r.name for r in recs if f.decide(r, ctx) is None}
    assert kept == {"dependency", "dependent"}
    assert f.requires == ("is_signed",)


def test_prerelease_rules_and_real_pytorch() -> None:
    assert is_prerelease("1.1a1") and is_prerelease("2.0.0rc1") and is_prerelease("1.0.dev3")
    assert not is_prerelease("1.1.1w") and not is_prerelease("2023c") and not is_prerelease("1.0.post1")
    recs = records("pytorch/linux-64")
    f = PrereleaseFilter()
    dropped = {r.version for r in recs if f.decide(r, CTX)}
    assert dropped == {"0.4rc.0.post1"}


def test_max_size_on_pytorch() -> None:
    recs = records("pytorch/linux-64")
    f = SizeFilter(100_000_000)
    drops = [(r, d) for r in recs if (d := f.decide(r, CTX))]
    assert drops and all(r.record["size"] > 100_000_000 for r, _ in drops)
    assert all(r.record.get("size", 0) <= 100_000_000 for r in recs if not f.decide(r, CTX))
    assert drops[0][1].rule == "100000000"
