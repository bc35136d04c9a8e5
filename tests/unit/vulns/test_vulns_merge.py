"""The merged advisory is a pure function of the stored per-source records (order never matters)."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

from condavault.vulns.advisory import Advisory, Affected, Range
from condavault.vulns.merge import LEGACY, SourceRecord, best_versions, components, idents, merge, merge_all


def _records(all_advisories: list[Advisory], ident: str) -> list[SourceRecord]:
    return [SourceRecord.of(a) for a in all_advisories if ident in {i.upper() for i in a.ids}]


def test_merge_of_a_real_component_ignores_order(all_advisories: list[Advisory]) -> None:
    records = _records(all_advisories, "CVE-2023-45803")  # OSV, NVD and two CVE 5 copies
    assert {r.feed for r in records} == {"osv", "nvd", "cve5"} and len(records) >= 4
    results = {merge(order).to_json() for order in itertools.permutations(records)}
    assert len(results) == 1
    merged = merge(records)
    assert merged.id == "CVE-2023-45803" and {"PYSEC-2023-212", "GHSA-g4mx-q9vg-27p4"} <= set(merged.aliases)
    assert {a.source for a in merged.affected} == {"osv", "nvd", "cve5"}  # every feed's products, tagged


def test_merge_all_of_the_testdata_ignores_order(all_advisories: list[Advisory]) -> None:
    expected = sorted(a.to_json() for a in merge_all(all_advisories))
    rnd = random.Random(9)
    for _ in range(3):
        shuffled = list(all_advisories)
        rnd.shuffle(shuffled)
        assert sorted(a.to_json() for a in merge_all(shuffled)) == expected


def test_one_version_per_record_newest_wins() -> None:
    old = Advisory("CVE-2020-1", modified="2020-01-01", summary="old", sources=("nvd",))
    new = replace(old, modified="2021-01-01", summary="new")
    assert [r.advisory.summary for r in best_versions([SourceRecord.of(new), SourceRecord.of(old)])] == ["new"]
    assert [r.advisory.summary for r in best_versions([SourceRecord.of(old), SourceRecord.of(new)])] == ["new"]
    same_day = replace(old, summary="other")  # same modified: the content hash decides, whatever the order
    a = best_versions([SourceRecord.of(old), SourceRecord.of(same_day)])
    b = best_versions([SourceRecord.of(same_day), SourceRecord.of(old)])
    assert a == b and len(a) == 1


def test_primary_id_legacy_and_withdrawn() -> None:
    pysec = Advisory("PYSEC-2023-1", aliases=("GHSA-aaaa-bbbb-cccc", "CVE-2023-9"), sources=("osv",))
    assert merge([SourceRecord.of(pysec)]).id == "CVE-2023-9"  # a lone PYSEC is keyed by its CVE alias
    ghsa = Advisory("GHSA-aaaa-bbbb-cccc", sources=("osv",))
    assert merge([SourceRecord.of(ghsa), SourceRecord.of(replace(pysec, aliases=()))]).id == "GHSA-aaaa-bbbb-cccc"
    product = Affected("cpe", "zlib", "zlib", ranges=(Range(fixed="1.2.13"),), source="nvd")
    real = Advisory("CVE-2023-9", affected=(product,), sources=("nvd",))
    legacy = Advisory("CVE-2023-9", summary="stale", affected=(replace(product, source=LEGACY),), sources=(LEGACY,))
    merged = merge([SourceRecord.of(legacy), SourceRecord.of(real)])
    assert merged.sources == ("nvd",) and merged.summary == ""  # legacy rows only serve until a real one arrives
    assert merge([SourceRecord.of(legacy)]).summary == "stale"
    gone = replace(pysec, withdrawn="2024-01-01", affected=(replace(product, source="osv"),))
    merged = merge([SourceRecord.of(gone), SourceRecord.of(real)])
    assert merged.withdrawn is None and merged.affected == (product,)  # a withdrawn record adds no product
    assert merge([SourceRecord.of(gone)]).withdrawn == "2024-01-01"


def test_components_join_through_any_shared_id() -> None:
    nodes = {1: {"A", "B"}, 2: {"B", "C"}, 3: {"D"}, 4: {"C"}, 5: set()}
    assert sorted(map(sorted, components(nodes))) == [[1, 2, 4], [3], [5]]
    assert idents(Advisory("cve-2020-1", aliases=(" ghsa-x ",))) == {"CVE-2020-1", "GHSA-X"}
