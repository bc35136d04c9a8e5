"""Query parsing and name similarity (pure: no database, no server)."""

from __future__ import annotations

import pytest

from condavault.errors import InvalidRequest
from condavault.search.index import similarity, trigrams
from condavault.search.query import parse, parse_purl
from condavault.search.service import SearchQuery

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)


@pytest.mark.parametrize(
    ("q", "kind"),
    [
        ("zlib", "text"),
        ("jupyter core", "text"),
        ("lossless data compression", "text"),
        ("", "all"),
        ("numpy >=1.20,<2 py39*", "matchspec"),
        ("zlib 1.2.11", "matchspec"),
        ("python 3.11 *cpython", "matchspec"),
        ("conda-forge::numpy", "matchspec"),
        ("numpy[subdir=linux-64]", "matchspec"),
        ("path:lib/libz.so.1", "path"),
        ("sha256:" + "a" * 64, "sha256"),
        ("cve:cve-2022-37434", "cve"),
        ("pkg:conda/main/zlib@1.2.11", "pkg"),
        ("license:MIT", "license"),
        ("has:post-link", "has"),
        ("flask license:BSD", "license"),
    ],
)
def test_query_kinds(q: str, kind: str) -> None:
    assert parse(q).kind == kind


def test_parsed_values() -> None:
    p = parse("numpy >=1.20,<2 py39*")
    assert p.spec is not None and p.spec.name == "numpy"
    assert p.spec.matches("1.21.0", "py39h1234_0") and not p.spec.matches("2.0.0", "py39h1234_0")
    assert not p.spec.matches("1.21.0", "py310h1234_0")
    assert parse("conda-forge::numpy[subdir=linux-64]").spec_channel == "conda-forge"
    assert parse("conda-forge::numpy[subdir=linux-64]").spec_subdir == "linux-64"
    assert parse("cve:cve-2022-37434").cves == ("CVE-2022-37434",)
    assert parse("path:/lib/libz.so.1").paths == ("lib/libz.so.1",)
    assert parse("sha256:" + "AB" * 32).sha256 == ("ab" * 32,)
    assert parse("Jupyter  Core").text == "jupyter core"


def test_purls() -> None:
    assert parse_purl("pkg:conda/main/zlib@1.2.11").channel == "main"
    p = parse_purl("pkg:conda/absl-py@0.4.1?build=py36h06a4308_0&channel=main&subdir=linux-64&type=tar.bz2")
    assert (p.name, p.version, p.channel, p.subdir, p.build) == (
        "absl-py",
        "0.4.1",
        "main",
        "linux-64",
        "py36h06a4308_0",
    )
    assert parse_purl("pkg:conda/zlib?channel=https://conda.anaconda.org/conda-forge").channel == "conda-forge"
    for bad in ("pkg:npm/left-pad", "pkg:conda/", "pkg:conda/a/b/c", "pkg:conda/zlib?subdir=../x"):
        with pytest.raises(InvalidRequest):
            parse_purl(bad)


@pytest.mark.parametrize(
    "q",
    [
        "sha256:12",
        "has:everything",
        "path:",
        "cve:x",
        "pkg:npm/x",
        "numpy >=1.2,,<<",
        "x" * 501,
        "a\x01b",
        "license:" + "x" * 201,
    ],
)
def test_bad_queries(q: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        parse(q)
    assert err.value.code == "invalid_query" and err.value.message


@pytest.mark.parametrize(
    "kw",
    [
        {"sort": "random"},
        {"page": 0},
        {"page": 1001},
        {"per_page": 101},
        {"subdir": "../x"},
        {"channel": ""},
        {"license": "x" * 201},
    ],
)
def test_bad_search_parameters(kw: dict[str, object]) -> None:
    with pytest.raises(InvalidRequest):
        SearchQuery(q="x", **kw)  # type: ignore[arg-type]


def test_similarity_ranks_typos_close() -> None:
    assert similarity("zlibb", "zlib") > similarity("zlibb", "zziplib") >= 0
    assert similarity("jupyter-cor", "jupyter-core") > 0.6
    assert similarity("numpy", "numpy") == 1.0
    assert "  z" in trigrams("zlib")  # padded like pg_trgm: prefixes weigh more
