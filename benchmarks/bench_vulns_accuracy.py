"""Accuracy of the vulnerability links and order independence of syncs, on SQLite and PostgreSQL.

    /work/venv/bin/python benchmarks/bench_vulns_accuracy.py [--db sqlite,postgresql] [--json out.json]

1. **Precision / recall** with default settings (no mapping configured): a real server (uvicorn on
   loopback, ``tests/support/server.py``) gets every file of ``benchmarks/vulns_labels.json`` (6,251
   metadata-only PyPI records, 88 tiny ``.conda`` builds of C libraries uploaded through the ingest path),
   syncs ``testdata/vulns/{cve5,nvd,osv-pypi}`` and runs the real ``condavault cve accuracy`` CLI.
   Goals: PyPI >= 0.99 / 0.99, C libraries >= 0.99 / 0.98.
2. **Re-sync in each of the 6 orders**: a fresh database per order (and one more syncing the three
   folders in one run), the labelled files imported metadata-only, the folders synced one at a time;
   the links (advisory, file, matched_by, reason, kind) and advisories (id, aliases, effective score) of
   every run are compared with the first. Goal: 0 differing links.

There is no peer for this: the figures are absolute (counts, ratios of counts), not timings. The load
(``/proc/loadavg``) is printed with each part because the machine is shared.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.labelled import LABELS, materialise
from tests.support.server import Server, start_server, stop_server

TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata"))
SOURCES = ("cve5", "nvd", "osv-pypi")


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def _sync(server: Server, *sources: str) -> None:
    with server.client() as c:
        r = c.post("/api/cves/sync", json={"sources": [str(TESTDATA / "vulns" / s) for s in sources]})
        assert r.status_code == 200, r.text
        assert c.post("/api/cves/sweep").status_code == 200


def accuracy(backend: str, work: Path) -> dict[str, Any]:
    server, pg = start_server(work / f"acc-{backend}", backend)
    try:
        t0 = time.perf_counter()
        materialise(server, work / f"pkgs-{backend}")
        t1 = time.perf_counter()
        _sync(server, *SOURCES)
        t2 = time.perf_counter()
        proc = server.cli("cve", "accuracy", str(LABELS), "--json", check=False)
        t3 = time.perf_counter()
        out = json.loads(proc.stdout)
        out["seconds"] = {"files": round(t1 - t0, 1), "sync": round(t2 - t1, 1), "accuracy": round(t3 - t2, 1)}
        out["exit"] = proc.returncode
        return out  # type: ignore[no-any-return]
    finally:
        stop_server(server, pg)


def _records_only(work: Path) -> Path:
    """The labelled set with every file a metadata-only record (matching does not read the bytes)."""
    doc = json.loads(LABELS.read_text())
    for f in doc["files"]:
        f["kind"] = "record"
    path = work / "labels-records.json"
    path.write_text(json.dumps(doc))
    return path


def snapshot(server: Server) -> tuple[set[Any], set[Any]]:
    with server.client() as c:
        advisories = {
            (a["id"], tuple(sorted(a["aliases"])), a["score"])
            for a in c.get("/api/cves", params={"limit": 10000}).json()
        }
        rows = c.get("/api/cves/report", params={"risk": False}).json()
    links = {(r["advisory"], r["channel"], r["subdir"], r["filename"], r["matched_by"], r["reason"], r["match_kind"])
             for r in rows}  # fmt: skip
    return advisories, links


def orders(backend: str, work: Path) -> list[dict[str, Any]]:
    labels = _records_only(work)
    runs: list[tuple[str, ...] | None] = [*itertools.permutations(SOURCES), None]
    out: list[dict[str, Any]] = []
    base: tuple[set[Any], set[Any]] | None = None
    for i, order in enumerate(runs):
        server, pg = start_server(work / f"order-{backend}-{i}", backend)
        try:
            materialise(server, work / f"o-{backend}-{i}", labels)
            t = time.perf_counter()
            if order is None:
                _sync(server, *SOURCES)
            for source in order or ():
                _sync(server, source)
            seconds = time.perf_counter() - t
            snap = snapshot(server)
        finally:
            stop_server(server, pg)
        base = base or snap
        out.append(
            {
                "order": " + ".join(order) if order else "all in one run",
                "advisories": len(snap[0]),
                "links": len(snap[1]),
                "differing_links": len(snap[1] ^ base[1]),
                "differing_advisories": len(snap[0] ^ base[0]),
                "sync_seconds": round(seconds, 1),
            }
        )
        print(f"  {backend} {out[-1]}", flush=True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-vacc-") as tmp:
        work = Path(tmp)
        for backend in args.db.split(","):
            before = load()
            acc = accuracy(backend, work)
            perms = orders(backend, work)
            results[backend] = {"load": f"{before} -> {load()}", "accuracy": acc, "orders": perms}
    print("\nvulnerability accuracy (labels: benchmarks/vulns_labels.json, default settings)")
    head = f"{'db':11} | {'set':6} | {'files':>5} | {'TP':>6} | {'FP':>3} | {'FN':>3} | precision | recall"
    print(f"{head} | goal      | load")
    for backend, res in results.items():
        goals = res["accuracy"]["goals"]
        for name, score in res["accuracy"]["sets"].items():
            goal = goals.get(name)
            met = "" if goal is None else (
                "met" if score["precision"] >= goal["precision"] and score["recall"] >= goal["recall"] else "MISSED"
            )  # fmt: skip
            print(
                f"{backend:11} | {name:6} | {score['files']:>5} | {score['true_positives']:>6} | "
                f"{score['false_positives']:>3} | {score['false_negatives']:>3} | {score['precision']:>9.4f} | "
                f"{score['recall']:>6.4f} | {met:9} | {res['load']}"
            )
    print("\nre-sync of cve5, nvd, osv-pypi in each order, fresh database each (goal: 0 differing links)")
    print(f"{'db':11} | {'order':28} | {'advisories':>10} | {'links':>6} | differing links | differing advisories")
    for backend, res in results.items():
        for row in res["orders"]:
            print(
                f"{backend:11} | {row['order']:28} | {row['advisories']:>10} | {row['links']:>6} | "
                f"{row['differing_links']:>15} | {row['differing_advisories']:>20}"
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
