"""Shared fixtures: real servers on SQLite and PostgreSQL, the shared test data set.

The test data set (real packages, repodata, vulnerability records; see README "Test data") is found at
``CONDAVAULT_TESTDATA``, else at ``../shared/testdata`` beside the repository. Without it the suite says
so once, in its header and summary, and runs every test that does not need it; the tests that do need
it (those using the ``testdata``/``packages_dir`` fixtures, and modules marked ``needs_testdata``) are
reported as skipped ("not run"), never passed. ``.ci/run`` refuses to run without it.
"""

from __future__ import annotations

import compileall
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.s3_server import S3Server, start_s3
from tests.support.server import LOGGING_ERRORS, Server, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", REPO.parent / "shared" / "testdata")).resolve()
HAVE_TESTDATA = (TESTDATA / "packages").is_dir()
NEEDS_TESTDATA = ("testdata", "packages_dir")
NOT_RUN = f"not run: needs the test data set, missing at {TESTDATA} (set CONDAVAULT_TESTDATA; README: Test data)"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--db",
        default=os.environ.get("CONDAVAULT_TEST_DB", "sqlite,postgresql"),
        help="database backends for server tests (comma separated: sqlite,postgresql)",
    )
    parser.addoption(
        "--db-matrix",
        choices=("marked", "full"),
        default=os.environ.get("CONDAVAULT_TEST_DB_MATRIX", "marked"),
        help="marked (default): modules marked both_databases run on every --db backend, the others on the "
        "first one; full: every module on every backend",
    )


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        # The suite starts hundreds of Python processes (the CLI, `condavault serve`/`worker`, clients).
        # With PYTHONDONTWRITEBYTECODE set (the development machines' shells set it), none of them caches
        # the bytecode of an editable install's sources: each compiled condavault again (~0.7 s of CPU).
        # Compiling once here writes the caches that every later import reads.
        compileall.compile_dir(REPO / "src", quiet=2, workers=1)
        compileall.compile_dir(REPO / "tests" / "support", quiet=2, workers=1)
    config.addinivalue_line("markers", "needs_testdata: the test reads the shared test data set")
    config.addinivalue_line(
        "markers", "both_databases: the module runs on every --db backend (database-specific code paths)"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if not HAVE_TESTDATA and reporter is not None and not hasattr(session.config, "workerinput"):
        reporter.write_line(
            f"the test data set is MISSING at {TESTDATA}: the tests that need it are not run "
            "(set CONDAVAULT_TESTDATA; README: Test data)",
            yellow=True,
            bold=True,
        )


def pytest_report_header(config: pytest.Config) -> str | None:
    return f"testdata: {TESTDATA}" if HAVE_TESTDATA else None  # missing: said by pytest_sessionstart


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if HAVE_TESTDATA:
        return
    skip = pytest.mark.skip(reason=NOT_RUN)
    for item in items:
        needs = any(f in getattr(item, "fixturenames", ()) for f in NEEDS_TESTDATA)
        if needs or item.get_closest_marker("needs_testdata") is not None:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if HAVE_TESTDATA:
        return
    not_run = [r for r in terminalreporter.stats.get("skipped", []) if "test data" in str(r.longrepr)]
    terminalreporter.write_sep(
        "=", f"{len(not_run)} tests NOT RUN: the test data set is missing at {TESTDATA}", yellow=True, bold=True
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The database matrix. Modules marked ``both_databases`` -- those that reach database-specific code:
    dialect branches (upserts, bulk inserts, array parameters, full-text search, the job queue's
    ``SKIP LOCKED``, LISTEN/NOTIFY), locking and concurrent writers, several processes, migrations, the
    fuzzer (PostgreSQL refuses NUL bytes and out-of-range integers SQLite stores) -- run on every backend
    of ``--db``; the others (HTTP behaviour, access policy, bundles, signatures, the UI, ...) run on the
    first, SQLite by default. ``--db-matrix full`` runs every module on every backend."""
    if "db_backend" in metafunc.fixturenames:
        backends = [b.strip() for b in metafunc.config.getoption("--db").split(",") if b.strip()]
        both = metafunc.definition.get_closest_marker("both_databases") is not None
        if not both and metafunc.config.getoption("--db-matrix") == "marked":
            backends = backends[:1]
        metafunc.parametrize("db_backend", backends, scope="module")


@pytest.fixture(scope="session")
def testdata() -> Path:
    if not HAVE_TESTDATA:  # pragma: no cover - collection marks these tests as not run
        pytest.skip(NOT_RUN)
    return TESTDATA


@pytest.fixture(scope="session")
def packages_dir(testdata: Path) -> Path:
    return testdata / "packages"


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """moto's standalone S3 server, one per session (tests make their own buckets)."""
    handle = start_s3(tmp_path_factory.mktemp("moto"))
    try:
        yield handle
    finally:
        handle.stop()


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
