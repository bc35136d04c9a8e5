"""Parsers, loader and alias merging on real CVE 5, NVD and OSV records."""

from __future__ import annotations

import zipfile
from collections import Counter

from vulns_testdata import data_path

from condavault.vulns.advisory import Advisory
from condavault.vulns.sources import load_path, merge_aliases
from condavault.vulns.sources.cve5 import parse_version_entry


def test_every_format_is_recognised(all_advisories: list[Advisory]) -> None:
    by_source = Counter(a.sources[0] for a in all_advisories)
    assert by_source["osv"] == len(list(data_path("vulns", "osv-pypi").rglob("*.yaml")))
    assert by_source["cve5"] == len(list(data_path("vulns", "cve5").rglob("*.json")))
    assert by_source["nvd-1.1"] == 669
    # 23 single-record API files + 13-record page + 2 bare fkie-cad cve objects
    assert by_source["nvd"] == 23 + 13 + 2
    assert all(a.id for a in all_advisories)


def test_json_round_trip(all_advisories: list[Advisory]) -> None:
    for adv in all_advisories:
        assert Advisory.from_json(adv.to_json()) == adv


def test_nvd_zlib_record() -> None:
    path = data_path("vulns", "nvd", "fkie-cad", "CVE-2022", "CVE-2022-374xx", "CVE-2022-37434.json")
    (adv,) = load_path(path)
    assert adv.id == "CVE-2022-37434"
    assert adv.max_score == 9.8
    zlib = [a for a in adv.affected if (a.vendor, a.product) == ("zlib", "zlib")]
    assert len(zlib) == 1 and zlib[0].kind == "cpe"
    assert zlib[0].ranges[0].last_affected == "1.2.12"
    assert zlib[0].ranges[0].introduced is None


def test_nvd_page_and_feed_11() -> None:
    page = list(load_path(data_path("vulns", "nvd", "api-2.0-multi", "nvd-api-2.0-13-records.json")))
    assert len(page) == 13 and page[0].id == "CVE-2026-20912"
    feed = list(load_path(data_path("vulns", "nvd", "feed-1.1", "nvdcve-1.1-test-data.json")))
    assert len(feed) == 669
    gitlab = next(a for a in feed if any(x.product == "gitlab" for x in a.affected))
    rng = next(x for x in gitlab.affected if x.product == "gitlab").ranges[0]
    assert rng.introduced is not None and rng.fixed is not None
    assert any(a.scores for a in feed)


def test_cve5_openssl_ranges() -> None:
    (adv,) = load_path(data_path("vulns", "cve5", "openssl", "CVE-2023-0464.json"))
    (aff,) = adv.affected
    assert (aff.vendor, aff.product, aff.default_status) == ("OpenSSL", "OpenSSL", "unaffected")
    assert {(r.introduced, r.fixed) for r in aff.ranges} == {
        ("3.1.0", "3.1.1"),
        ("3.0.0", "3.0.9"),
        ("1.1.1", "1.1.1u"),
        ("1.0.2", "1.0.2zh"),
    }


def test_cve5_version_entry_shapes() -> None:
    (github,) = parse_version_entry({"version": ">= 2.0.0, < 2.0.7", "status": "affected"})
    assert (github.introduced, github.fixed) == ("2.0.0", "2.0.7")
    (wild,) = parse_version_entry(
        {"version": "5.15.177", "lessThanOrEqual": "5.15.*", "status": "unaffected", "versionType": "semver"}
    )
    assert (wild.introduced, wild.last_affected, wild.status) == ("5.15.177", "5.15.*", "unaffected")
    (unbounded,) = parse_version_entry({"version": "0", "lessThan": "*", "status": "affected"})
    assert unbounded.introduced is None and unbounded.fixed is None
    assert parse_version_entry({"version": "n/a", "status": "affected"}) == []


def test_cve5_pypi_collection_and_cvss4() -> None:
    (adv,) = load_path(data_path("vulns", "cve5", "osv.dev-cve5", "CVE-2025-4565.json"))
    assert any(a.kind == "pypi" and a.package == "protobuf" for a in adv.affected)
    assert any(s.version == "4.0" for s in adv.scores)


def test_zip_and_directory_loading(tmp_path) -> None:
    archive = tmp_path / "feed.zip"
    src = data_path("vulns", "osv-pypi", "flask")
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(src.iterdir()):
            zf.write(path, f"flask/{path.name}")
        zf.writestr("flask/broken.json", "{not json")
    from_zip = [a.id for a in load_path(archive)]
    assert sorted(from_zip) == sorted(a.id for a in load_path(src))
    assert "PYSEC-2018-66" in from_zip


def test_merge_pysec_with_nvd_and_cve5(all_advisories: list[Advisory]) -> None:
    merged = merge_aliases(all_advisories)
    (adv,) = [a for a in merged if "PYSEC-2023-212" in a.ids]
    assert adv.id == "CVE-2023-45803"
    assert {"PYSEC-2023-212", "GHSA-g4mx-q9vg-27p4"} <= set(adv.aliases)
    assert {"cve5", "nvd", "osv"} <= set(adv.sources)
    kinds = {a.kind for a in adv.affected}
    assert {"pypi", "cpe"} <= kinds
    assert adv.max_score is not None
    assert len(merged) < len(all_advisories)
    # every id survives the merge exactly once
    ids = Counter(i for a in merged for i in a.ids)
    assert ids["CVE-2023-45803"] == 1 and ids["PYSEC-2023-212"] == 1


def test_merge_keeps_unrelated_records_apart(all_advisories: list[Advisory]) -> None:
    merged = {a.id: a for a in merge_aliases(all_advisories)}
    assert "CVE-2022-37434" in merged
    assert merged["CVE-2022-37434"].sources == ("nvd",)
