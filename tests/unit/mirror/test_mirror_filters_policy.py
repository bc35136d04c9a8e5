"""Licenses, legacy dedupe, keep-latest and CVE filters on real records."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from mirror_testdata import data_file

from condavault.mirror.filters import FileRecord, FilterContext, VulnLink
from condavault.mirror.filters.cve import CveFilter
from condavault.mirror.filters.latest import KeepLatestFilter, build_variant
from condavault.mirror.filters.legacy import LegacyDedupeFilter
from condavault.mirror.filters.licenses import LicenseFilter, record_families
from condavault.mirror.plan import iter_records

CTX = FilterContext()
Records = Callable[..., list[FileRecord]]


def test_license_families_exclude(records_of: Records) -> None:
    recs = records_of("defaults-r/linux-64")
    f = LicenseFilter([], ["gpl3"])
    for r in recs:
        d = f.decide(r, CTX)
        fam = r.record.get("license_family")
        if fam == "GPL3":
            assert d is not None and d.filter == "exclude_licenses" and d.rule == "gpl3"
        if fam in ("MIT", "BSD", "GPL2"):
            assert d is None


def test_license_include_and_guessing(records_of: Records) -> None:
    recs = records_of("defaults-r/linux-64")
    f = LicenseFilter(["mit", "public_domain"], [])
    kept = [r for r in recs if f.decide(r, CTX) is None]
    assert kept and all(record_families(r.record) & {"mit", "public_domain"} for r in kept)
    assert record_families({"license": "GPL (>= 3)"}) >= {"gpl3"}
    assert record_families({"license": "MIT + file LICENSE"}) == {"mit"}
    assert record_families({}) == {"none"}
    assert record_families({"license_family": "Public-Domain"}) == {"public_domain"}


def test_license_spdx(packages: dict[str, dict[str, Any]]) -> None:
    recs = [r for r, _ in iter_records(packages)]
    f = LicenseFilter([], ["GPL-3.0-or-later"])
    drops = {r.name: d for r in recs if (d := f.decide(r, CTX))}
    gpl3_later = {r.name for r in recs if r.record.get("license") == "GPL-3.0-or-later"}
    assert gpl3_later and gpl3_later <= set(drops)
    assert drops[next(iter(gpl3_later))].rule == "GPL-3.0-or-later"
    inc = LicenseFilter(["Apache-2.0 OR BSD-3-Clause"], [])
    kept = {r.record.get("license") for r in recs if inc.decide(r, CTX) is None}
    assert kept == {"Apache-2.0", "BSD-3-Clause"}


def test_dedupe_conda_legacy(packages: dict[str, dict[str, Any]]) -> None:
    recs = [r for r, _ in iter_records(packages)]
    out = LegacyDedupeFilter().select(recs, CTX)
    assert ("linux-64", "zlib-1.2.11-h7b6447c_3.tar.bz2") in out
    assert ("linux-64", "zlib-1.2.11-h7b6447c_3.conda") not in out
    stems = {(r.subdir, r.stem) for r in recs if r.is_conda}
    assert all(k[1].endswith(".tar.bz2") and (k[0], k[1][: -len(".tar.bz2")]) in stems for k in out)
    d = out[("linux-64", "zlib-1.2.11-h7b6447c_3.tar.bz2")]
    assert d.value == "linux-64/zlib-1.2.11-h7b6447c_3.conda" and not d.kept
    # without its .conda twin the legacy file stays
    alone = [r for r in recs if r.filename != "zlib-1.2.11-h7b6447c_3.conda"]
    assert ("linux-64", "zlib-1.2.11-h7b6447c_3.tar.bz2") not in LegacyDedupeFilter().select(alone, CTX)


def test_build_variant() -> None:
    assert build_variant("py310h1234_0") == "py310"
    assert build_variant("h7f8727e_2") == ""
    assert build_variant("r3.4.1_0") == "r3.4.1"
    assert build_variant("mro343_0") == "mro343"
    assert build_variant("0") == ""


def test_keep_latest_defaults_r(records_of: Records) -> None:
    recs = records_of("defaults-r/linux-64")
    out = KeepLatestFilter(2).select(recs, CTX)
    by_name: dict[str, list[FileRecord]] = defaultdict(list)
    for r in recs:
        by_name[r.name].append(r)
    for name, group in by_name.items():
        kept = {r.parsed_version for r in group if r.key not in out}
        newest = sorted({r.parsed_version for r in group}, reverse=True)[:2]
        assert kept == set(newest), name
    r_base = [r for r in by_name["r-base"] if r.key not in out]
    assert {r.version for r in r_base} == {"3.5.0", "3.4.3"}
    dropped = next(d for k, d in out.items() if k[1].startswith("r-base-3.3"))
    assert dropped.filter == "keep_latest" and dropped.rule == "count=2"


def test_keep_latest_per_variant(records_of: Records) -> None:
    recs = [r for r in records_of("defaults-r/linux-64") if r.name == "r-base"]
    out = KeepLatestFilter(1, per_variant=True).select(recs, CTX)
    variants = {build_variant(r.build) for r in recs}
    kept = [r for r in recs if r.key not in out]
    assert {build_variant(r.build) for r in kept} == variants
    assert len({(build_variant(r.build), r.version) for r in kept}) == len(variants)


def _zlib_score() -> float:
    nvd = json.loads(data_file("vulns/nvd/fkie-cad/CVE-2022/CVE-2022-374xx/CVE-2022-37434.json").read_text())
    return float(nvd["metrics"]["cvssMetricV31"][0]["cvssData"]["baseScore"])


def _links(status: str) -> Callable[[str, str, dict[str, Any]], list[VulnLink]]:
    score = _zlib_score()

    def provider(subdir: str, filename: str, record: dict[str, Any]) -> list[VulnLink]:
        if record["name"] == "zlib" and record["version"] == "1.2.11":
            return [VulnLink("CVE-2022-37434", ("GHSA-cfmr-vrgj-vqwv",), score, status)]
        return []

    return provider


@pytest.mark.parametrize(
    ("kwargs", "status", "dropped_by"),
    [
        ({"threshold": 7.0}, "active", "cve_score_threshold"),
        ({"threshold": 7.0}, "mitigated", None),
        ({"threshold": 7.0}, "cleared", None),
        ({"threshold": 9.9}, "active", None),
        ({"threshold": 7.0, "exceptions": ["cve-2022-37434"]}, "active", None),
        ({"threshold": 7.0, "exceptions": ["GHSA-CFMR-VRGJ-VQWV"]}, "active", None),
        ({"statuses": ["disputed"]}, "disputed", "exclude_cve_statuses"),
        ({"statuses": ["disputed"]}, "active", None),
        ({"non_curated": True}, "reported", "exclude_non_curated_cve"),
        ({"non_curated": True}, "active", None),
    ],
)
def test_cve_filter(
    packages: dict[str, dict[str, Any]], kwargs: dict[str, Any], status: str, dropped_by: str | None
) -> None:
    recs = [r for r, _ in iter_records(packages)]
    ctx = FilterContext(vuln_links=_links(status))
    f = CveFilter(**kwargs)
    drops = {r.key: d for r in recs if (d := f.decide(r, ctx))}
    zlib = {r.key for r in recs if r.name == "zlib"}
    assert len(zlib) == 8
    if dropped_by is None:
        assert not drops
    else:
        assert set(drops) == zlib
        d = next(iter(drops.values()))
        assert d.filter == dropped_by and "CVE-2022-37434" in d.value and "score=9.8" in d.value


def test_dependency_risk(packages: dict[str, dict[str, Any]]) -> None:
    recs = [r for r, _ in iter_records(packages)]
    ctx = FilterContext(dependency_risk=lambda subdir, fn: 8.0 if fn.startswith("flask-") else None)
    f = CveFilter(max_dependency_risk=5)
    assert f.requires == ("dependency_risk",)
    drops = [d for r in recs if (d := f.decide(r, ctx))]
    assert [d.filter for d in drops] == ["max_dependency_risk"]
    assert drops[0].value == "flask 0.11.1 py_0 risk=8"
