"""Metadata-only import of real repodata, and real conda-forge patch instructions applied as conda-index does."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import Server


def test_defaults_r_round_trips_record_for_record(shared_server: Server, testdata: Path) -> None:
    original = json.loads((testdata / "repodata/defaults-r/linux-64/repodata.json").read_text())
    shared_server.channel("defaults-r")
    proc = shared_server.cli(
        "import-repodata", "defaults-r", "linux-64", str(testdata / "repodata/defaults-r/linux-64/repodata.json")
    )
    assert "4211" in proc.stdout
    with shared_server.client(None) as c:
        served = c.get("/api/repo/defaults-r/linux-64/repodata.json").json()
    assert served["info"] == {"subdir": "linux-64"}
    assert len(served["packages"]) == len(original["packages"]) == 4211
    for fn, rec in original["packages"].items():
        out = dict(served["packages"][fn])
        assert isinstance(out.pop("indexed_timestamp"), int)
        expected = dict(rec)
        expected.setdefault("subdir", "linux-64")
        assert out == expected, fn
    # metadata-only: indexed, but no bytes on this server
    with shared_server.client(None) as c:
        r = c.get(f"/api/repo/defaults-r/linux-64/{next(iter(original['packages']))}")
        assert r.status_code == 404 and r.json()["error"]["code"] == "file_not_available"
    # importing the same file again changes nothing
    proc = shared_server.cli(
        "import-repodata", "defaults-r", "linux-64", str(testdata / "repodata/defaults-r/linux-64/repodata.json")
    )
    assert "'created': 0" in proc.stdout


# --- conda-index's documented patch semantics, written out independently as the reference ----------------
def _merge_or_update(base: dict[str, Any], new: dict[str, Any], add_missing_keys: bool = True) -> dict[str, Any]:
    if base == new:
        return base
    for key, value in new.items():
        if key in base or add_missing_keys:
            base_value = base.get(key, value)
            if hasattr(value, "keys"):
                base[key] = _merge_or_update(base_value, value)
            else:
                base[key] = value  # lists and scalars are replaced (merge=False)
    return base


def _conda_index_apply(repodata: dict[str, Any], instructions: dict[str, Any]) -> dict[str, Any]:
    repodata = copy.deepcopy(repodata)
    repodata.setdefault("removed", [])
    _merge_or_update(repodata["packages"], instructions.get("packages", {}), add_missing_keys=False)
    conda_fixes = {k.replace(".tar.bz2", ".conda"): v for k, v in instructions.get("packages", {}).items()}
    _merge_or_update(repodata["packages.conda"], conda_fixes, add_missing_keys=False)
    _merge_or_update(repodata["packages.conda"], instructions.get("packages.conda", {}), add_missing_keys=False)
    for fn in instructions.get("revoke", ()):
        for key in ("packages", "packages.conda"):
            if fn.endswith(".tar.bz2") and key == "packages.conda":
                fn = fn.replace(".tar.bz2", ".conda")
            if fn in repodata[key]:
                repodata[key][fn]["revoked"] = True
                repodata[key][fn]["depends"].append("package_has_been_revoked")
    for fn in instructions.get("remove", ()):
        for key in ("packages", "packages.conda"):
            if fn.endswith(".tar.bz2") and key == "packages.conda":
                fn = fn.replace(".tar.bz2", ".conda")
            if repodata[key].pop(fn, None):
                repodata["removed"].append(fn)
    repodata["removed"].sort()
    return repodata


def _synthetic_repodata(subdir: str, instructions: dict[str, Any]) -> dict[str, Any]:
    """Records for every filename the instructions name (plus .conda twins of every third, and bystanders)."""
    names = sorted(
        {*instructions.get("packages", {}), *instructions.get("remove", []), *instructions.get("revoke", [])}
    )
    repodata: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}
    for i, fn in enumerate([*names, "bystander-1.0-0.tar.bz2"]):
        stem = fn[: -len(".tar.bz2")]
        name, version, build = stem.rsplit("-", 2)
        rec = {
            "name": name,
            "version": version,
            "build": build,
            "build_number": 0,
            "subdir": subdir,
            "depends": ["python >=2.7"],
            "license": "BSD",
            "features": "old",
            "md5": "0" * 32,
            "sha256": f"{i:064x}",
            "size": 1000 + i,
            "timestamp": 1500000000000,
        }
        repodata["packages"][fn] = rec
        if i % 3 == 0:
            repodata["packages.conda"][f"{stem}.conda"] = dict(rec, size=500 + i)
    return repodata


@pytest.mark.parametrize("subdir", ["linux-64", "osx-64", "win-64", "noarch"])
def test_conda_forge_patch_instructions_apply_like_conda_index(
    shared_server: Server, testdata: Path, subdir: str
) -> None:
    instructions = json.loads(
        (testdata / f"repodata/conda-forge-patch-instructions-20180828/{subdir}/patch_instructions.json").read_text()
    )
    if subdir == "linux-64":  # the 2018 files carry no revokes or packages.conda entries: add some
        instructions = dict(instructions)
        some = sorted(instructions["packages"])[:5]
        instructions["revoke"] = some[:2]
        instructions["packages.conda"] = {some[3].replace(".tar.bz2", ".conda"): {"license": "MIT", "new_key": [1]}}
    channel = f"patched-{subdir}"
    shared_server.channel(channel)
    repodata = _synthetic_repodata(subdir, instructions)
    with shared_server.client() as c:
        assert c.post(f"/api/channels/{channel}/subdirs/{subdir}/import", json=repodata).status_code == 200
        r = c.put(f"/api/channels/{channel}/subdirs/{subdir}/patch-instructions", json=instructions)
        assert r.status_code == 200, r.text
        served = c.get(f"/api/repo/{channel}/{subdir}/repodata.json").json()
    expected = _conda_index_apply(repodata, instructions)
    for key in ("packages", "packages.conda"):
        got = {fn: {k: v for k, v in rec.items() if k != "indexed_timestamp"} for fn, rec in served[key].items()}
        assert got == expected[key], key
    assert served["removed"] == expected["removed"]
    if instructions.get("remove"):
        assert served["removed"], "removals must be listed"
    # removing the instructions restores the unpatched records
    with shared_server.client() as c:
        c.put(f"/api/channels/{channel}/subdirs/{subdir}/patch-instructions", json={})
        restored = c.get(f"/api/repo/{channel}/{subdir}/repodata.json").json()
    assert {
        fn: {k: v for k, v in r.items() if k != "indexed_timestamp"} for fn, r in restored["packages"].items()
    } == repodata["packages"]
