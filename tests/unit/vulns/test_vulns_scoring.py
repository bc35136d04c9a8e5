"""CVSS vector scoring."""

from __future__ import annotations

import pytest

from condavault.config import load_settings
from condavault.errors import SettingsError
from condavault.vulns.advisory import Score
from condavault.vulns.scoring import base_score, check_preference, detect_version, effective_score, make_score


@pytest.mark.parametrize(
    ("vector", "version", "score"),
    [
        ("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H", "3.1", 9.8),
        ("CVSS:3.0/AV:N/AC:H/PR:N/UI:R/S:U/C:L/I:N/A:N", "3.0", 3.1),
        ("AV:N/AC:L/Au:N/C:N/I:P/A:N", "2.0", 5.0),
        ("(AV:N/AC:L/Au:N/C:P/I:P/A:P)", "2.0", 7.5),
        ("CVSS:4.0/AV:N/AC:L/AT:N/PR:N/UI:N/VC:N/VI:N/VA:H/SC:N/SI:N/SA:N", "4.0", 8.7),
    ],
)
def test_vectors(vector: str, version: str, score: float) -> None:
    assert detect_version(vector) == version
    assert base_score(vector) == score
    made = make_score(vector, source="test")
    assert made is not None and made.score == score and made.version == version


@pytest.mark.parametrize("vector", ["", "garbage", "CVSS:3.1/AV:X", "CVSS:9.9/AV:N", "AV:N/Au:Z", "CVSS:4.0/AV:N/AC:L"])
def test_bad_vectors_do_not_crash(vector: str) -> None:
    assert base_score(vector) is None
    assert make_score(vector) is None


def test_given_score_is_a_fallback() -> None:
    score = make_score("CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:BOGUS", "3.1", given=7.0)
    assert score is not None and score.score == 7.0
    assert make_score(None, "3.1", given=7.0) is None


def _s(version: str, score: float, source: str, type: str, feed: str) -> Score:
    return Score(version, f"vector-{version}", score, source, type, feed)


def test_effective_score_prefers_nvd_v3_then_v4_then_v2_then_others() -> None:
    nvd_v2 = _s("2.0", 10.0, "nvd@nist.gov", "Primary", "nvd")
    nvd_v3 = _s("3.0", 9.8, "nvd@nist.gov", "Primary", "nvd")
    cna_v4 = _s("4.0", 8.2, "Google", "cna", "cve5")
    cna_v31 = _s("3.1", 7.5, "secalert@redhat.com", "Secondary", "nvd")
    assert effective_score([nvd_v2, cna_v4, nvd_v3, cna_v31]) == nvd_v3  # not the maximum (10.0)
    assert effective_score([nvd_v2, cna_v4]) == nvd_v2  # NVD's own v2 before anyone else's v4
    assert effective_score([cna_v4, cna_v31]) == cna_v31  # others: v3.x first
    assert effective_score([cna_v4]) == cna_v4
    assert effective_score([]) is None
    osv = _s("3.1", 5.0, "osv", "", "osv")
    assert effective_score([osv, cna_v4], ("osv:*", "*:*")) == osv
    assert effective_score([osv, cna_v4], ("cna:4.0",)) == cna_v4
    assert effective_score([osv], ("cna:4.0",)) is None


def test_score_preference_is_validated() -> None:
    assert check_preference(["NVD:3.x", "*:*"]) == ("nvd:3.x", "*:*")
    for bad in (["nvd"], ["nist:3.1"], ["nvd:5.0"], []):
        with pytest.raises(ValueError):
            check_preference(bad)
    with pytest.raises(SettingsError, match="bad score preference"):
        load_settings(data_dir="/tmp/x", vulns_score_preference=["nvd:3.9"])
