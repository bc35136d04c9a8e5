"""Fixtures for the mirror policy tests; data helpers live in ``mirror_testdata`` (real testdata,
``CONDAVAULT_TESTDATA``, default ``/work/shared/testdata``)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

try:
    import condavault  # noqa: F401
except ImportError:  # a checkout without an installed package
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))

from mirror_testdata import package_channel, upstream

from condavault.mirror.filters import FileRecord
from condavault.mirror.plan import iter_records


@pytest.fixture
def packages() -> dict[str, dict[str, Any]]:
    """Repodata per subdir built from the index.json of the real packages in testdata/packages."""
    return package_channel()


@pytest.fixture
def records_of() -> Callable[..., list[FileRecord]]:
    """``records_of("defaults-r/linux-64", ...)``: FileRecords of real repodata files."""

    def load(*rels: str) -> list[FileRecord]:
        return [rec for rec, _ in iter_records(upstream(*rels))]

    return load
