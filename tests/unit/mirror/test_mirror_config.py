"""Mirror config: strict keys, value checks, YAML round trip."""

from __future__ import annotations

import datetime as dt

import pytest

from condavault.mirror.config import (
    FilterConfig,
    KeepLatest,
    MirrorConfig,
    MirrorConfigError,
    dump_yaml,
    load_yaml,
    parse_size,
)

BASE = """
name: cf-mirror
upstream: https://conda.anaconda.org/conda-forge
channel: conda-forge
subdirs: [linux-64, noarch]
"""


def test_minimal_defaults() -> None:
    cfg = load_yaml(BASE)
    assert cfg.mode == "active" and cfg.on_remove == "remove" and cfg.verify_tls
    assert cfg.filters == FilterConfig()


@pytest.mark.parametrize(
    ("extra", "key"),
    [("colour: blue\n", "colour"), ("filters:\n  only_spec: [zlib]\n", "filters.only_spec")],
)
def test_unknown_key_is_named(extra: str, key: str) -> None:
    with pytest.raises(MirrorConfigError) as err:
        load_yaml(BASE + extra)
    assert f"unknown key '{key}'" in err.value.message
    assert key in err.value.details["keys"]


def test_keep_latest_nested_unknown_key() -> None:
    with pytest.raises(MirrorConfigError, match=r"filters\.keep_latest\.per_build"):
        load_yaml(BASE + "filters:\n  keep_latest: {count: 2, per_build: true}\n")


def test_values_are_normalised() -> None:
    cfg = load_yaml(
        BASE
        + """cron: "0 3 * * *"
filters:
  keep_latest: 3
  max_size: 50MB
  date_from: 2018-01-01
  include_licenses: [mit, public-domain, Apache-2.0 OR MIT]
  cve_score_exceptions: [cve-2022-37434]
  exclude_cve_statuses: [active, reported]
"""
    )
    f = cfg.filters
    assert f.keep_latest == KeepLatest(count=3)
    assert f.max_size == 50_000_000
    assert f.date_from == dt.date(2018, 1, 1)
    assert f.cve_score_exceptions == ["CVE-2022-37434"]
    assert parse_size("1GiB") == 2**30 and parse_size(10) == 10


@pytest.mark.parametrize(
    ("snippet", "needle"),
    [
        ('cron: "every day"\n', "cron"),
        ("filters:\n  include_licenses: [not a license!!]\n", "include_licenses"),
        ("filters:\n  exclude_cve_statuses: [fixed]\n", "exclude_cve_statuses"),
        ("filters:\n  max_size: lots\n", "max_size"),
        ("filters:\n  exclude_specs: ['numpy >=>1']\n", "exclude_specs"),
        ("filters:\n  include_dependencies: true\n", "only_specs"),
        ("filters:\n  prune_unsatisfiable: maybe\n", "prune_unsatisfiable"),
        ("upstream_username: bob\n", "upstream_password"),
        ("filters:\n  subdirs: [win-64]\n", "win-64"),
        ("filters:\n  date_from: 2020-01-02\n  date_to: 2020-01-01\n", "date_from"),
    ],
)
def test_bad_values(snippet: str, needle: str) -> None:
    with pytest.raises(MirrorConfigError, match=needle):
        load_yaml(BASE + snippet)


def test_upstream_forms() -> None:
    assert MirrorConfig(name="m", upstream="/srv/channels/main/", channel="c", subdirs=["noarch"]).upstream
    assert MirrorConfig(name="m", upstream="file:///srv/x", channel="c", subdirs=["noarch"])
    with pytest.raises(ValueError, match="upstream"):
        MirrorConfig(name="m", upstream="ftp://x/y", channel="c", subdirs=["noarch"])


def test_not_a_mapping() -> None:
    with pytest.raises(MirrorConfigError, match="mapping"):
        load_yaml("- a\n- b\n")
    with pytest.raises(MirrorConfigError, match="YAML"):
        load_yaml("name: [unclosed\n")


def test_round_trip_omits_defaults() -> None:
    text = BASE + (
        "mode: passive\nupstream_token: t0k\nfilters:\n  only_specs: [another_dependent]\n"
        "  include_dependencies: true\n  keep_latest: {count: 2, per_variant: true}\n"
        "  date_to: 2024-12-31\n  max_size: 1.5GB\n  prune_unsatisfiable: flag\n"
        "  cve_score_threshold: 7\n"
    )
    cfg = load_yaml(text)
    dumped = dump_yaml(cfg)
    assert "verify_tls" not in dumped and "on_remove" not in dumped and "exclude_specs" not in dumped
    assert load_yaml(dumped) == cfg
    assert "t0k" not in repr(cfg)
