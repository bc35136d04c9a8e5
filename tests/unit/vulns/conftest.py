"""Shared fixtures for the vulnerability domain tests (real data from the shared testdata folder)."""

from __future__ import annotations

import pytest
from vulns_testdata import data_path, package_records

from condavault.vulns.advisory import Advisory
from condavault.vulns.mapping import NameMapping
from condavault.vulns.sources import load_path


@pytest.fixture(scope="session")
def all_advisories() -> list[Advisory]:
    """Every advisory in testdata/vulns, unmerged."""
    return list(load_path(data_path("vulns")))


@pytest.fixture(scope="session")
def pypi_mapping() -> NameMapping:
    """Shipped CPE table + the conda-forge parselmouth PyPI mapping."""
    return NameMapping.load(data_path("mappings", "parselmouth", "v0", "conda-forge", "compressed_mapping.json"))


@pytest.fixture(scope="session")
def records() -> list[dict[str, str]]:
    """The testdata package records."""
    return package_records()
