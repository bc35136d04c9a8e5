"""Package downloads from an S3 blob store: presigned redirect vs streamed through condavault (issue 16).

Starts moto's standalone S3 server and two ``condavault serve`` processes (SQLite, production logging)
on one bucket each -- one with ``s3_serve_mode = "redirect"``, one with ``"stream"`` -- uploads the same
packages (incompressible payloads of 100 KiB, 1 MiB and 16 MiB) to both, then downloads each package
``--rounds`` times with ``--concurrency`` clients for three paths, side by side in one run:

* **redirect**: GET on condavault (authorised, audited) -> 307 -> GET of the presigned URL on the store;
* **stream**: GET on condavault, which reads the object from the store and streams it;
* **direct**: GET of a presigned URL on the store alone (the floor: what the store itself costs).

Every body is checked against its sha256. Prints one table (req/s, MB/s, median ms, ratio to stream)
and the load average before and after. moto is a slow S3 (Python, one process): it bounds every path,
so the ratios say what condavault adds, not what a real S3 or MinIO would deliver.

Usage: ``python benchmarks/bench_s3.py [--rounds 40] [--concurrency 8] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.packages import file_member, make_conda
from tests.support.s3_server import start_s3
from tests.support.serve_process import start_serve

SIZES = {"100KiB": 100 * 1024, "1MiB": 1024 * 1024, "16MiB": 16 * 1024 * 1024}


def _packages(folder: Path) -> dict[str, Path]:
    out = {}
    for label, size in SIZES.items():
        payload = os.urandom(size)  # incompressible: the package is about this size
        out[label] = make_conda(
            folder, f"bench-{label.lower()}", "1.0", "0", pkg_members=[file_member("share/blob.bin", payload)], level=1
        )
    return out


def _timed(client: httpx.Client, url: str, sha: str) -> float:
    t = time.perf_counter()
    r = client.get(url, follow_redirects=True)
    took = time.perf_counter() - t
    if r.status_code != 200 or hashlib.sha256(r.content).hexdigest() != sha:
        raise RuntimeError(f"{url}: {r.status_code}, wrong bytes")
    return took


def _measure(urls: list[str], sha: str, rounds: int, concurrency: int, headers: dict[str, str]) -> dict[str, float]:
    clients = [httpx.Client(headers=headers, timeout=120) for _ in range(concurrency)]
    try:
        for c in clients:
            _timed(c, urls[0], sha)  # warm: connections, caches
        jobs = [(clients[i % concurrency], urls[i % len(urls)]) for i in range(rounds)]
        t = time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            lat = list(pool.map(lambda j: _timed(j[0], j[1], sha), jobs))
        wall = time.perf_counter() - t
    finally:
        for c in clients:
            c.close()
    return {"rps": rounds / wall, "median_ms": statistics.median(lat) * 1000, "wall": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40, help="downloads per package and path")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        root = Path(tmp)
        s3 = start_s3(root / "moto")
        servers = []
        try:
            (root / "pkgs").mkdir()
            pkgs = _packages(root / "pkgs")
            for mode in ("redirect", "stream"):
                srv = start_serve(
                    root / mode, "sqlite", **s3.settings(s3.new_bucket(), s3_serve_mode=mode), log_level="WARNING"
                )
                servers.append(srv)
                with srv.client() as c:
                    assert c.post("/api/channels", json={"name": "bench"}).status_code == 201
                    for p in pkgs.values():
                        r = c.post("/api/channels/bench/files", params={"filename": p.name}, content=p.read_bytes())
                        assert r.status_code == 200, r.text
            redirect, stream = servers
            rows: list[dict[str, Any]] = []
            for label, p in pkgs.items():
                data = p.read_bytes()
                sha = hashlib.sha256(data).hexdigest()
                auth = {"Authorization": f"Bearer {redirect.token}"}
                path = f"/api/repo/bench/noarch/{p.name}"
                with httpx.Client(headers=auth) as c:
                    presigned = c.get(redirect.url + path).headers["location"]
                results = {
                    "redirect": _measure([redirect.url + path], sha, args.rounds, args.concurrency, auth),
                    "stream": _measure(
                        [stream.url + path],
                        sha,
                        args.rounds,
                        args.concurrency,
                        {"Authorization": f"Bearer {stream.token}"},
                    ),
                    "direct": _measure([presigned], sha, args.rounds, args.concurrency, {}),
                }
                for mode, res in results.items():
                    rows.append(
                        {
                            "size": label,
                            "mode": mode,
                            "bytes": len(data),
                            **res,
                            "mb_s": res["rps"] * len(data) / 1e6,
                            "vs_stream": res["rps"] / results["stream"]["rps"],
                        }
                    )
        finally:
            for srv in servers:
                srv.stop()
            s3.stop()
    load_after = os.getloadavg()
    print(
        f"package downloads, {args.rounds} per row, {args.concurrency} concurrent clients; "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)"
    )
    print(f"{'size':>7} {'path':>9} {'req/s':>8} {'MB/s':>8} {'median ms':>10} {'vs stream':>10}")
    for r in rows:
        print(
            f"{r['size']:>7} {r['mode']:>9} {r['rps']:8.1f} {r['mb_s']:8.1f} {r['median_ms']:10.1f} "
            f"{r['vs_stream']:9.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "load": [load_before, load_after]}, indent=1))


if __name__ == "__main__":
    main()
