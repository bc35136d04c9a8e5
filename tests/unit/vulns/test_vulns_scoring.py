"""CVSS vector scoring."""

from __future__ import annotations

import pytest

from condavault.vulns.scoring import base_score, detect_version, make_score


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
