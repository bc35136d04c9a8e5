"""Accuracy on real advisories with default settings, measured by ``condavault cve accuracy`` (the real
CLI, a subprocess) against the labelled set ``benchmarks/vulns_labels.json``: real OSV PyPI advisories
over metadata-only records of the versions they name, and tiny real ``.conda`` builds of openssl, curl,
zlib, sqlite and libxml2 matched through the CVE 5 / NVD CPE data. Goals: PyPI precision and recall
>= 0.99; C libraries precision >= 0.99, recall >= 0.98.

To stay quick the test takes every C library build and every third PyPI version (about 2,200 files);
``benchmarks/bench_vulns_accuracy.py`` measures the whole set (figures in ``docs/performance.md``)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.labelled import LABELS, materialise
from tests.support.server import Server

SOURCES = ("cve5", "nvd", "osv-pypi")


def test_precision_and_recall_meet_the_goals(server: Server, testdata: Path, tmp_path: Path) -> None:
    full = json.loads(LABELS.read_text())
    pypi = [f for f in full["files"] if f["set"] == "pypi"]
    subset = tmp_path / "labels.json"
    subset.write_text(json.dumps({**full, "files": pypi[::3] + [f for f in full["files"] if f["set"] != "pypi"]}))
    labels = materialise(server, tmp_path / "pkgs", subset)
    with server.client() as c:
        r = c.post("/api/cves/sync", json={"sources": [str(testdata / "vulns" / s) for s in SOURCES]})
        assert r.status_code == 200, r.text
    proc = server.cli("cve", "accuracy", str(subset), "--json", "--check", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["missed"] == []
    sets = out["sets"]
    assert sets["pypi"]["files"] == sum(1 for f in labels["files"] if f["set"] == "pypi") > 2000
    assert sets["c-libs"]["files"] == sum(1 for f in labels["files"] if f["set"] == "c-libs") > 80
    assert sets["pypi"]["precision"] >= 0.99 and sets["pypi"]["recall"] >= 0.99, sets["pypi"]
    assert sets["c-libs"]["precision"] >= 0.99 and sets["c-libs"]["recall"] >= 0.98, sets["c-libs"]
    # a labelled set that is wrong about one file shows up as an error, and --check fails on the goal
    broken = json.loads(subset.read_text())
    wrong = next(f for f in broken["files"] if f["name"] == "zlib" and f["version"] == "1.2.11")
    wrong["advisories"] = ["CVE-2014-0160"]  # Heartbleed is OpenSSL's, zlib 1.2.11 has CVE-2022-37434
    broken["goals"]["c-libs"]["recall"] = 1.0
    subset.write_text(json.dumps(broken))
    proc = server.cli("cve", "accuracy", str(subset), "--check", check=False)
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "accuracy by alias group" in proc.stdout and "c-libs" in proc.stdout
    assert "zlib-1.2.11-h0_0.conda" in proc.stdout and "goal missed: c-libs: recall" in proc.stderr
