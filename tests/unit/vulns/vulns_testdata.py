"""Testdata helpers for the vulnerability tests (data read in place, never copied)."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.conftest import NOT_RUN, TESTDATA


def data_path(*parts: str) -> Path:
    """Path inside the test data set (``tests.conftest.TESTDATA``); the test is not run without it."""
    path = TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{NOT_RUN} ({path})")
    return path


def package_records() -> list[dict[str, str]]:
    """Plain records (name, version, build, subdir, filename, id) for every package file in testdata."""
    records = []
    for path in sorted(data_path("packages").glob("*/*")):
        stem = path.name.removesuffix(".conda").removesuffix(".tar.bz2")
        if stem == path.name:
            continue
        name, version, build = stem.rsplit("-", 2)
        subdir = path.parent.name
        records.append(
            {
                "name": name,
                "version": version,
                "build": build,
                "subdir": subdir,
                "filename": path.name,
                "id": f"{subdir}/{path.name}",
            }
        )
    return records
