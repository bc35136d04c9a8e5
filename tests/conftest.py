"""Shared fixtures: real servers on SQLite and PostgreSQL, the shared testdata folder."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import LOGGING_ERRORS, Server, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", REPO.parent / "shared" / "testdata")).resolve()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db", default=os.environ.get("CONDAVAULT_TEST_DB", "sqlite,postgresql"),
        help="database backends for server tests (comma separated: sqlite,postgresql)",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "db_backend" in metafunc.fixturenames:
        backends = [b.strip() for b in metafunc.config.getoption("--db").split(",") if b.strip()]
        metafunc.parametrize("db_backend", backends, scope="module")


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not (TESTDATA / "packages").is_dir():
        raise RuntimeError(f"testdata not found at {TESTDATA}; set CONDAVAULT_TESTDATA")
    return TESTDATA


@pytest.fixture(scope="session")
def packages_dir(testdata: Path) -> Path:
    return testdata / "packages"


@pytest.fixture
def server(tmp_path: Path, db_backend: str) -> Iterator[Server]:
    """A fresh server per test (its own data folder and database)."""
    handle, pg = start_server(tmp_path / "data", db_backend)
    try:
        yield handle
    finally:
        stop_server(handle, pg)


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory, db_backend: str) -> Iterator[Server]:
    """One server per test module; tests must use their own channel names."""
    handle, pg = start_server(tmp_path_factory.mktemp("data"), db_backend)
    try:
        yield handle
    finally:
        stop_server(handle, pg)


@pytest.fixture(autouse=True)
def _no_logging_errors() -> Iterator[None]:
    """Fail the test during which a test server's production logging hit an error (a bad ``extra=``,
    a format string that does not match its arguments ...), including errors of module-scoped servers
    set up for it; such errors never reach a caller."""
    yield
    errors = list(LOGGING_ERRORS)
    LOGGING_ERRORS.clear()
    assert not errors, f"logging errors during the test: {errors}"
