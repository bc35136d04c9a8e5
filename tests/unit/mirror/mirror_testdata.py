"""Testdata helpers for the mirror policy tests (real data read in place, never copied).

The data set is found as the whole suite finds it (``tests.conftest.TESTDATA``).
"""

from __future__ import annotations

import copy
import json
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import NOT_RUN, TESTDATA


def data_file(rel: str) -> Path:
    """A path inside the shared test data; the test is skipped if it is missing."""
    path = TESTDATA / rel
    if not path.exists():
        pytest.skip(f"{NOT_RUN} ({path})")
    return path


@cache
def _load_json(rel: str) -> str:
    return data_file(rel).read_text()


def repodata(rel: str) -> dict[str, Any]:
    """A fresh copy of a real repodata file, e.g. ``repodata("defaults-r/linux-64")``."""
    if not rel.endswith(".json"):
        rel = f"{rel}/repodata.json"
    return json.loads(_load_json(f"repodata/{rel}"))


def upstream(*rels: str) -> dict[str, dict[str, Any]]:
    """``{subdir: repodata}`` from several ``channel/subdir`` paths (the subdir is the last part)."""
    return {rel.rstrip("/").split("/")[-1]: repodata(rel) for rel in rels}


@lru_cache(maxsize=1)
def _package_channel() -> dict[str, dict[str, Any]]:
    from conda_package_streaming.package_streaming import stream_conda_info

    sources = json.loads(data_file("SOURCES.json").read_text())
    channel: dict[str, dict[str, Any]] = {}
    for entry in sources:
        if entry.get("kind") != "conda-package":
            continue
        path = data_file(entry["file"])
        index: dict[str, Any] = {}
        for tar, member in stream_conda_info(str(path)):
            if member.name == "info/index.json":
                fh = tar.extractfile(member)
                assert fh is not None
                index = json.load(fh)
                break
        subdir = entry["package"]["subdir"]
        index.setdefault("subdir", subdir)
        index.update(size=entry["size"], sha256=entry["sha256"])
        section = "packages.conda" if path.name.endswith(".conda") else "packages"
        rd = channel.setdefault(subdir, {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}})
        rd[section][path.name] = index
    return channel


def package_channel() -> dict[str, dict[str, Any]]:
    """Repodata per subdir built from the index.json of every real package in ``testdata/packages``."""
    return copy.deepcopy(_package_channel())
