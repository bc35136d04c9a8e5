"""Version matching with conda semantics, on real records and real package files."""

from __future__ import annotations

import pytest
from rattler import Version
from vulns_testdata import data_path

from condavault.vulns.advisory import Advisory, Affected, Range
from condavault.vulns.mapping import NameMapping
from condavault.vulns.matching import (
    affects,
    index_by_conda_name,
    letter_to_numeric,
    match_advisory,
    match_record,
)
from condavault.vulns.sources import load_path, merge_aliases


def _one(*parts: str) -> Advisory:
    (adv,) = load_path(data_path(*parts))
    return adv


def test_rattler_letter_ordering_and_our_fix() -> None:
    # what conda/rattler does: a trailing letter sorts *before* the bare release
    assert Version("1.1.1t") < Version("1.1.1")
    assert Version("1.0.2zh") < Version("1.0.2")
    # our rewrite restores OpenSSL's order 1.1.1 < 1.1.1a < ... < 1.1.1z < 1.1.1za < 1.1.2
    chain = ["1.1.1", "1.1.1a", "1.1.1t", "1.1.1w", "1.1.1z", "1.1.1za", "1.1.1zb", "1.1.2", "3.0.0"]
    keys = [Version(letter_to_numeric(v)) for v in chain]
    assert keys == sorted(keys) and len(set(map(str, keys))) == len(chain)
    assert letter_to_numeric("1.0.2zh") == "1.0.2.26.8"
    assert letter_to_numeric("3.13.0rc2") == "3.13.0rc2"


def test_zlib_nvd_matches_all_zlib_1_2_11_packages(records: list[dict[str, str]]) -> None:
    adv = _one("vulns", "nvd", "fkie-cad", "CVE-2022", "CVE-2022-374xx", "CVE-2022-37434.json")
    zlib = [r for r in records if r["name"] == "zlib"]
    assert len(zlib) == 8 and {r["version"] for r in zlib} == {"1.2.11"}
    matches = match_advisory(adv, records)
    assert sorted(m.record_key for m in matches) == sorted(r["id"] for r in zlib)
    assert {m.matched_by for m in matches} == {"cpe:zlib:zlib"}
    newer = {"name": "zlib", "version": "1.2.13", "build": "h0", "subdir": "linux-64", "filename": "x"}
    assert match_advisory(adv, [newer]) == []
    assert match_advisory(adv, [{**newer, "version": "1.2.12"}]) != []


def test_flask_pysec(records: list[dict[str, str]], pypi_mapping: NameMapping) -> None:
    advisories = list(load_path(data_path("vulns", "osv-pypi", "flask")))
    pysec = next(a for a in advisories if a.id == "PYSEC-2018-66")
    (flask,) = [r for r in records if r["name"] == "flask"]
    (match,) = match_advisory(pysec, [flask], pypi_mapping)
    assert match.matched_by == "pypi:flask" and match.record_key == flask["id"]
    index = index_by_conda_name(advisories, pypi_mapping)
    hits = {m.advisory_id for m in match_record(flask, index)}
    assert "PYSEC-2018-66" in hits
    assert match_record({**flask, "version": "3.1.1"}, index) == []
    fixed_ids = {m.advisory_id for m in match_record({**flask, "version": "0.12.3"}, index)}
    assert "PYSEC-2018-66" not in fixed_ids and "PYSEC-2019-179" in fixed_ids  # the latter fixed in 1.0


VERSIONS = [
    "1.0.1", "1.0.1f", "1.0.1g", "1.0.2", "1.0.2u", "1.0.2zf", "1.0.2zg", "1.0.2zh", "1.1.0l",
    "1.1.1", "1.1.1k", "1.1.1s", "1.1.1t", "1.1.1w", "1.1.1za", "3.0.0", "3.0.1", "3.0.2", "3.0.6",
    "3.0.7", "3.0.8", "3.0.14", "3.0.15", "3.1.0", "3.1.6", "3.1.7", "3.2.1", "3.3.1", "3.3.2", "3.4.0",
]  # fmt: skip

# Expected affected versions, read off each record's versions[] by hand (defaultStatus unaffected).
OPENSSL_EXPECTED = {
    # 1.0.1 <= v < 1.0.1g (Heartbleed)
    "CVE-2014-0160": {"1.0.1", "1.0.1f"},
    # 3.0.0 <= v < 3.0.7
    "CVE-2022-3602": {"3.0.0", "3.0.1", "3.0.2", "3.0.6"},
    # [3.0.0, 3.0.2), [1.1.1, 1.1.1n), [1.0.2, 1.0.2zd)
    "CVE-2022-0778": {"3.0.0", "3.0.1", "1.1.1", "1.1.1k", "1.0.2", "1.0.2u"},
    # [3.0.0, 3.0.8), [1.1.1, 1.1.1t), [1.0.2, 1.0.2zg)
    "CVE-2023-0286": {
        "3.0.0", "3.0.1", "3.0.2", "3.0.6", "3.0.7", "1.1.1", "1.1.1k", "1.1.1s", "1.0.2", "1.0.2u", "1.0.2zf",
    },
    # [3.1.0, 3.1.1), [3.0.0, 3.0.9), [1.1.1, 1.1.1u), [1.0.2, 1.0.2zh)
    "CVE-2023-0464": {
        "3.1.0", "3.0.0", "3.0.1", "3.0.2", "3.0.6", "3.0.7", "3.0.8", "1.1.1", "1.1.1k", "1.1.1s", "1.1.1t",
        "1.0.2", "1.0.2u", "1.0.2zf", "1.0.2zg",
    },
    # [3.3.0, 3.3.2), [3.2.0, 3.2.3), [3.1.0, 3.1.7), [3.0.0, 3.0.15), [1.1.1, 1.1.1za), [1.0.2, 1.0.2zk)
    "CVE-2024-5535": {
        "3.3.1", "3.2.1", "3.1.0", "3.1.6", "3.0.0", "3.0.1", "3.0.2", "3.0.6", "3.0.7", "3.0.8", "3.0.14",
        "1.1.1", "1.1.1k", "1.1.1s", "1.1.1t", "1.1.1w", "1.0.2", "1.0.2u", "1.0.2zf", "1.0.2zg", "1.0.2zh",
    },
}  # fmt: skip


@pytest.mark.parametrize("cve", sorted(OPENSSL_EXPECTED))
def test_openssl_cve5(cve: str) -> None:
    adv = _one("vulns", "cve5", "openssl", f"{cve}.json")
    recs = [
        {"name": "openssl", "version": v, "build": "h0", "subdir": "linux-64", "filename": f"openssl-{v}.conda"}
        for v in VERSIONS
    ]
    got = {m.record_key.removeprefix("linux-64/openssl-").removesuffix(".conda") for m in match_advisory(adv, recs)}
    assert got == OPENSSL_EXPECTED[cve]


def test_linux_cve5_default_affected_with_wildcards() -> None:
    adv = _one("vulns", "cve5", "cvelistV5", "cves", "2025", "21xxx", "CVE-2025-21631.json")
    git_only, semver = adv.affected
    assert affects(git_only, "6.12") is None  # only git commit ranges: cannot tell
    expected = {"6.12": True, "6.12.5": True, "6.12.10": False, "6.12.99": False, "6.11": False,
                "5.15.177": False, "6.13": False, "6.14.1": False}  # fmt: skip
    assert {v: affects(semver, v) for v in expected} == expected


def test_cve5_changes_and_statuses() -> None:
    log4j_like = Affected(
        "generic",
        "apache",
        "log4j",
        ranges=(
            Range(
                introduced="2.0-beta9",
                fixed="3.0",
                changes=(
                    ("2.3.1", "unaffected"),
                    ("2.4", "affected"),
                    ("2.12.2", "unaffected"),
                    ("2.13.0", "affected"),
                    ("2.15.0", "unaffected"),
                ),
            ),
        ),
        default_status="unaffected",
    )
    expected = {"2.0": True, "2.3.1": False, "2.4": True, "2.12.1": True, "2.12.2": False, "2.14.1": True,
                "2.15.0": False, "2.17.1": False, "1.2": False}  # fmt: skip
    assert {v: affects(log4j_like, v) for v in expected} == expected
    unknown = Affected("generic", "x", "y", ranges=(Range.exact("1.0"),), default_status="unknown")
    assert affects(unknown, "1.0") is True and affects(unknown, "2.0") is None
    assert affects(unknown, "not a version!") is None


def test_nvd_start_excluding_and_exact_cpe() -> None:
    aff = Affected(
        "cpe",
        "v",
        "p",
        ranges=(Range(introduced="1.0", introduced_inclusive=False, last_affected="1.5"), Range.exact("2.0.1")),
    )
    expected = {"1.0": False, "1.0.1": True, "1.5": True, "1.5.1": False, "2.0.1": True, "2.0": False}
    assert {v: affects(aff, v) for v in expected} == expected


def test_osv_events_limit_and_last_affected() -> None:
    aff = Affected(
        "pypi",
        package="p",
        ranges=(Range(introduced="1.0", last_affected="1.2"), Range(introduced="2.0", fixed="2.1", limit="2.0.5")),
    )
    expected = {"0.9": False, "1.0": True, "1.2": True, "1.2.1": False, "2.0.4": True, "2.0.5": False}
    assert {v: affects(aff, v) for v in expected} == expected


def test_pypi_advisory_reaches_renamed_conda_packages(pypi_mapping: NameMapping) -> None:
    (torch_adv,) = load_path(data_path("vulns", "osv-pypi", "torch"))
    (cv_adv,) = load_path(data_path("vulns", "osv-pypi", "opencv-python"))
    torch_fixed = next(e for r in torch_adv.affected[0].ranges for e in (r.fixed,) if e)
    old = [{"name": n, "version": "1.0.0", "build": "0", "subdir": "linux-64", "filename": f"{n}.conda"}
           for n in ("pytorch", "pytorch-cpu", "torch")]  # fmt: skip
    hits = {m.record_key: m.matched_by for m in match_advisory(torch_adv, old, pypi_mapping)}
    assert hits == {"linux-64/pytorch.conda": "pypi:torch", "linux-64/pytorch-cpu.conda": "pypi:torch"}
    assert match_advisory(torch_adv, [{**old[0], "version": torch_fixed}], pypi_mapping) == []
    index = index_by_conda_name([torch_adv, cv_adv], pypi_mapping)
    assert {"pytorch", "pytorch-cpu", "py-opencv", "libopencv"} <= set(index)
    cv_version = cv_adv.affected[0].versions[0]
    rec = {"name": "py-opencv", "version": cv_version, "build": "0", "subdir": "linux-64", "filename": "c"}
    assert [m.advisory_id for m in match_record(rec, index)] == [cv_adv.id]


def test_index_and_match_record_agree_with_match_advisory(
    all_advisories: list[Advisory], records: list[dict[str, str]], pypi_mapping: NameMapping
) -> None:
    merged = merge_aliases(all_advisories)
    index = index_by_conda_name(merged, pypi_mapping)
    by_record = {(m.advisory_id, m.record_key) for r in records for m in match_record(r, index)}
    by_advisory = {(m.advisory_id, m.record_key) for a in merged for m in match_advisory(a, records, pypi_mapping)}
    assert by_record == by_advisory
    assert ("CVE-2022-37434", "linux-64/zlib-1.2.11-h7b6447c_3.conda") in by_record
    assert ("CVE-2018-1000656", "noarch/flask-0.11.1-py_0.tar.bz2") in by_record  # merged PYSEC-2018-66


def test_curl_cna_degenerate_ranges() -> None:
    adv = _one("vulns", "cve5", "cvelistV5", "cves", "2023", "38xxx", "CVE-2023-38545.json")
    (aff,) = adv.affected
    expected = {"7.68.0": False, "7.69.0": True, "8.3.0": True, "8.4.0": None}  # no defaultStatus: unknown
    assert {v: affects(aff, v) for v in expected} == expected


def test_xz_backdoor_merged_from_cve5_and_nvd(all_advisories: list[Advisory]) -> None:
    (adv,) = [a for a in merge_aliases(all_advisories) if a.id == "CVE-2024-3094"]
    assert {"cve5", "nvd"} <= set(adv.sources)
    recs = [
        {"name": n, "version": v, "build": "0", "subdir": "linux-64", "filename": f"{n}-{v}"}
        for n in ("xz", "liblzma")
        for v in ("5.4.6", "5.6.0", "5.6.1", "5.6.2")
    ]
    hits = sorted(m.record_key for m in match_advisory(adv, recs))
    assert hits == ["linux-64/liblzma-5.6.0", "linux-64/liblzma-5.6.1", "linux-64/xz-5.6.0", "linux-64/xz-5.6.1"]
