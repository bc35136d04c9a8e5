"""Web UI figures: server time of the package page of a package with 5,000 files (goal <= 100 ms), and of
the other main pages, on SQLite and PostgreSQL.

A real server (uvicorn on loopback, production logging at WARNING) gets one channel with a 5,000-file
package (``info/paths.json`` lists every file with its sha256 and size) among 200 other packages, some
depending on it, and 5 channels of the real ``defaults-r`` linux-64 repodata (4,211 records each,
metadata-only) for the dependants scan; each page is fetched ``--rounds`` times by one client after a
warm-up, and the table shows p50 / p95 of the time from request to the last byte. No peer: no other
conda server renders such a page.

    python benchmarks/bench_ui.py [--rounds 40] [--db sqlite,postgresql] [--json FILE]
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
import zipfile
from pathlib import Path
from typing import Any

import httpx
import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.packages import _tar, file_member, index_json, info_members, make_conda  # noqa: E402
from tests.support.server import start_server, stop_server  # noqa: E402

GOAL_MS = 100.0
TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", ROOT.parent / "shared" / "testdata"))
R_CHANNELS = 5


def big_package(dest: Path, files: int) -> Path:
    """A .conda whose paths.json lists ``files`` files (all present in the pkg tar)."""
    members = [
        file_member(f"lib/python3.12/site-packages/big/mod{i:05d}.py", f"x = {i}\n".encode()) for i in range(files)
    ]
    paths = {
        "paths_version": 1,
        "paths": [
            {
                "_path": m[0].name,
                "path_type": "hardlink",
                "sha256": hashlib.sha256(m[1]).hexdigest(),
                "size_in_bytes": len(m[1]),
            }
            for m in members
        ],
    }
    idx = index_json("bigpkg", "1.0", "0", "noarch", depends=["python"])
    info = [m for m in info_members(idx) if m[0].name != "info/paths.json"]
    info.append(file_member("info/paths.json", json.dumps(paths).encode()))
    cctx = zstandard.ZstdCompressor(level=3)
    path = dest / "bigpkg-1.0-0.conda"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
        zf.writestr("info-bigpkg-1.0-0.tar.zst", cctx.compress(_tar(info)))
        zf.writestr("pkg-bigpkg-1.0-0.tar.zst", cctx.compress(_tar(members)))
    return path


def timed(client: httpx.Client, url: str, rounds: int) -> list[float]:
    for _ in range(3):
        assert client.get(url).status_code == 200, url
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        r = client.get(url)
        r.read()
        out.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, url
    return out


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def run(backend: str, rounds: int, work: Path) -> dict[str, list[float]]:
    server, pg = start_server(work / f"data-{backend}", backend)
    try:
        server.channel("bench")
        pkgs = work / f"pkgs-{backend}"
        pkgs.mkdir()
        assert server.upload("bench", big_package(pkgs, 5000)).status_code in (200, 201)
        for i in range(200):
            deps = ["bigpkg >=1"] if i % 10 == 0 else []
            p = make_conda(pkgs, f"other{i:03d}", "1.0", "0", index_extra={"depends": deps})
            assert server.upload("bench", p, wait=False).status_code in (200, 201)
        rd = json.loads((TESTDATA / "repodata" / "defaults-r" / "linux-64" / "repodata.json").read_text())
        for i in range(R_CHANNELS):  # metadata-only records of real shapes, for the dependants scan
            server.channel(f"r{i}")
            with server.client() as c:
                assert c.post(f"/api/channels/r{i}/subdirs/linux-64/import", json=rd).status_code == 200
        server.ctx.settle()
        with httpx.Client(base_url=server.url, timeout=60) as c:
            page = c.get("/channels/bench/packages/bigpkg").text
            assert page.count("site-packages/big/mod") == 500
            assert "other000" in c.get("/channels/bench/packages/bigpkg/dependants?part=true").text
            urls = {
                "package page, 5,000-file package (files 1-500)": "/channels/bench/packages/bigpkg",
                "same, files 4,501-5,000": "/channels/bench/packages/bigpkg?files_page=10",
                "its dependants (20; every readable record scanned)": (
                    "/channels/bench/packages/bigpkg/dependants?part=true"
                ),
                "package page, small package": "/channels/bench/packages/other001",
                f"package page r-base ({R_CHANNELS} x 4,211 real records)": "/channels/r0/packages/r-base",
                f"dependants of r-base (all {R_CHANNELS} channels)": (
                    "/channels/r0/packages/r-base/dependants?part=true"
                ),
                "dependants of r-ggplot2": "/channels/r0/packages/r-ggplot2/dependants?part=true",
                "channel page (201 packages)": "/channels/bench",
                "search results (text)": "/search?q=other",
                "which package provides": "/provides?path=lib/python3.12/site-packages/big/mod04999.py",
                "home": "/",
            }
            return {name: timed(c, url, rounds) for name, url in urls.items()}
    finally:
        stop_server(server, pg)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for backend in [b.strip() for b in args.db.split(",") if b.strip()]:
            results[backend] = run(backend, args.rounds, Path(d))
    print(f"{'page':52} | {'db':10} | {'p50 ms':>7} | {'p95 ms':>7} | goal")
    print("-" * 95)
    for backend, pages in results.items():
        for name, values in pages.items():
            goal = f"<= {GOAL_MS:.0f} ms: {'met' if p95(values) <= GOAL_MS else 'NOT met'}" if "5,000" in name else ""
            print(f"{name:52} | {backend:10} | {statistics.median(values):7.1f} | {p95(values):7.1f} | {goal}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
