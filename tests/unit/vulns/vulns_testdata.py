"""Testdata helpers for the vulnerability tests (data read in place, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def data_path(*parts: str) -> Path:
    """Path inside the testdata folder (``CONDAVAULT_TESTDATA``, default ``/work/shared/testdata``)."""
    root = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata"))
    path = root.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"testdata not available: {path}")
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
