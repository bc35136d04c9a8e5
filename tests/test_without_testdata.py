"""A fresh clone without the test data set: the suite says so once and runs what does not need it; the
tests that need it are reported as not run (skipped), never passed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_suite_without_its_test_data(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDAVAULT_", "PYTEST_"))}
    env["CONDAVAULT_TESTDATA"] = str(tmp_path / "no-testdata-here")
    selection = [
        "tests/unit/mirror/test_mirror_plan.py",  # reads repodata from the data set (helper module)
        "tests/functional/test_bulk_upload.py::test_cli_uploads_a_folder_as_one_batch_with_one_index_publish",
        "tests/unit/test_architecture.py",  # needs no data: runs
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--db", "sqlite", *selection],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-2000:]
    assert out.count("the test data set is MISSING") == 1, out[-3000:]
    not_run = re.search(r"(\d+) tests NOT RUN: the test data set is missing", out)
    totals = re.search(r"(\d+) passed, (\d+) skipped", out)
    assert not_run and totals, out[-2000:]
    assert " error" not in out.split("short test summary")[-1], out[-2000:]
    # everything skipped is a test that needs the data, and is said to be not run; the others pass
    assert int(not_run.group(1)) == int(totals.group(2)) >= 2 and int(totals.group(1)) >= 1
