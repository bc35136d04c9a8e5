"""The streaming repodata reader: same records as json.loads, one at a time; precise errors."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from condavault.channels import repodata_stream
from condavault.channels.repodata_stream import iter_records
from condavault.errors import InvalidRequest


def _expected(doc: dict) -> list[tuple[str, str, object]]:
    return [(k, fn, rec) for k in ("packages", "packages.conda") for fn, rec in (doc.get(k) or {}).items()]


DOC = {
    "info": {"subdir": "noarch", "nested": [1, 2.5, {"x": None}]},
    "packages": {
        "a-1-0.tar.bz2": {
            "name": "a",
            "version": "1",
            "build": "0",
            "size": 12345678901234,
            "note": 'é ünïcode \u2603 \\" quotes',
        }
    },
    "packages.conda": {
        f"b-{i}-0.conda": {
            "name": "b",
            "version": str(i),
            "build": "0",
            "build_number": i,
            "depends": ["a >=1"] * (i % 4),
        }
        for i in range(50)
    },
    "removed": ["x-1-0.tar.bz2"],
    "repodata_version": 1,
}


@pytest.mark.parametrize("read", [1, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_every_record_comes_out_as_json_loads_reads_it(
    monkeypatch: pytest.MonkeyPatch, read: int, indent: int | None
) -> None:
    monkeypatch.setattr(repodata_stream, "READ", read)  # buffer boundaries everywhere
    body = json.dumps(DOC, indent=indent, ensure_ascii=False).encode()
    assert list(iter_records(io.BytesIO(body))) == _expected(DOC)


def test_a_number_split_by_a_read_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repodata_stream, "READ", 1)
    assert list(iter_records(io.BytesIO(b'{"repodata_version": 123456, "packages": {"a-1-0.conda": 1}}'))) == [
        ("packages", "a-1-0.conda", 1)
    ]


def test_real_repodata_reads_like_json_load(testdata: Path) -> None:
    path = next((testdata / "repodata").rglob("repodata.json"))
    with open(path, "rb") as fh:
        got = list(iter_records(fh))
    assert got == _expected(json.loads(path.read_bytes()))


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"[]",
        b"{",
        b'{"packages": {"a-1-0.conda": {"name": "a"}',
        b'{"packages": {"a-1-0.conda" {}}}',
        b'{"packages": {}} x',
        b'{"packages": {}}{}',
        b'{"packages": []}',
        b'{"packages": {1: {}}}',
        b'{"packages": {"a": {"v": nul}}}',
        b"\xff\xfe{}",
        b'{"packages": {"a": {}},}',
    ],
)
def test_what_is_not_one_json_object_is_refused(body: bytes) -> None:
    with pytest.raises(InvalidRequest) as err:
        list(iter_records(io.BytesIO(body)))
    assert err.value.code == "invalid_repodata"


def test_null_sections_and_empty_objects_are_empty() -> None:
    assert list(iter_records(io.BytesIO(b' { "packages" : null , "packages.conda": {} } \n'))) == []
    assert list(iter_records(io.BytesIO(b"{}"))) == []


def test_a_value_larger_than_the_bound_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(repodata_stream, "READ", 1024)
    body = b'{"info": "' + b"x" * 100_000  # never ends: must not be buffered without bound
    with pytest.raises(InvalidRequest, match="too large"):
        list(iter_records(io.BytesIO(body + b'"}'), max_value=10_000))
