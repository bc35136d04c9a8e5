"""``channeldata.json`` spliced name by name is byte for byte the file composed from the merged entries."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from condavault.indexing import derived

SUBDIRS = ["noarch", "linux-64"]
ENTRIES: dict[str, Any] = {
    "a": {"version": "1", "x": [1, {"y": "z\n"}]},
    'we"ird': {"k": 'v": 1,\n  "b'},  # a quote in the name, the layout's separator inside a value
    "b": {},
    "zz": {"q": 1, "description": "caf\u00e9 \u2603"},
}


def _check(entries: dict[str, Any], changes: dict[str, Any]) -> None:
    enc = {n: derived.encode_channeldata_entry(e) for n, e in entries.items()}
    data = derived.compose_channeldata(enc, SUBDIRS)
    assert {n: bytes(v) for n, v in derived.channeldata_entries(data)} == enc
    new = {n: None if e is None else derived.encode_channeldata_entry(e) for n, e in changes.items()}
    merged = {n: e for n, e in {**enc, **new}.items() if e is not None}
    spliced = b"".join(bytes(p) for p in derived.splice_channeldata(data, new, SUBDIRS))
    assert spliced == derived.compose_channeldata(merged, SUBDIRS)
    # and both are the file json.dumps writes (compose and splice share their layout code)
    doc = {n: e for n, e in {**entries, **changes}.items() if e is not None}
    reference = {"channeldata_version": 1, "packages": doc, "subdirs": sorted(SUBDIRS)}
    assert spliced == json.dumps(reference, indent=1, sort_keys=True).encode()


@pytest.mark.parametrize(
    "changes",
    [{}, {"a": None}, {"c": {"n": 2}, "b": None, "0": {"m": "x"}}, dict.fromkeys(ENTRIES), {"zz": {"q": 2}}],
)
def test_splice_equals_compose(changes: dict[str, Any]) -> None:
    _check(ENTRIES, changes)
    _check({}, changes)


def test_splice_equals_compose_on_random_changes() -> None:
    rnd = random.Random(7)
    for _ in range(300):
        entries = {f"n{rnd.randint(0, 60)}": {"v": rnd.randint(0, 9)} for _ in range(rnd.randint(0, 25))}
        changes = {
            f"n{rnd.randint(0, 60)}": None if rnd.random() < 0.3 else {"w": rnd.randint(0, 9)}
            for _ in range(rnd.randint(0, 12))
        }
        _check(entries, changes)


def test_a_file_of_another_layout_is_refused() -> None:
    with pytest.raises(ValueError):
        list(derived.channeldata_entries(b'{"channeldata_version": 1, "packages": {"a": {}}, "subdirs": []}'))
