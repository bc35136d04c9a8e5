"""The scanning stage's cost on upload, beside the same uploads with scanning off (issue 14).

    .venv/bin/python benchmarks/bench_scanning.py [--rounds 2] [--big 6] [--big-mb 16] [--json out.json]

Two ``condavault serve`` processes on SQLite, one with scanning on (the default: structure, paths.json,
install-time properties, the shipped YARA rules, the block list) and one with ``CONDAVAULT_SCANNING=false``
(the peer: the same server without the stage). In the same run, on the same files, each gets:

* **per file**: every real testdata package (``$CONDAVAULT_TESTDATA/packages``, 302 files, ~6 MB),
  one ``POST /api/channels/{c}/files`` each, 4 clients at once;
* **per MB**: ``--big`` synthetic ``.conda`` packages of ``--big-mb`` MB of payload each (text and
  binary files, zstd level 3), one request each.

Figures: wall seconds and the server's CPU seconds (user+system, from /proc), per file and per MB, and the
ratio scan/off (goal <= 1.5x). Each figure is the best of ``--rounds`` fresh channels. Then the false
positives: every testdata package's stored verdict (``GET /api/channels/{c}/scanning/files/...``) must be
``clean``, and no upload may be quarantined.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import sys
import tarfile
import tempfile
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import zstandard

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench_uploads  # noqa: E402

TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata")) / "packages"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def _start(root: Path, scanning: bool) -> bench_uploads.Server:
    """bench_uploads.Server with CONDAVAULT_SCANNING set for the server process."""
    real_popen = bench_uploads.subprocess.Popen

    def popen(args: Any, env: dict[str, str] | None = None, **kw: Any) -> Any:
        env = dict(env or {})
        env["CONDAVAULT_SCANNING"] = "true" if scanning else "false"
        return real_popen(args, env=env, **kw)

    bench_uploads.subprocess.Popen = popen  # type: ignore[assignment,misc]
    try:
        return bench_uploads.Server(root / ("scan" if scanning else "off"), "sqlite")
    finally:
        bench_uploads.subprocess.Popen = real_popen  # type: ignore[misc]


def big_packages(folder: Path, n: int, mb: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(14)
    words = ["".join(rnd.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rnd.randint(2, 9))) for _ in range(4000)]
    out = []
    for i in range(n):
        files: dict[str, bytes] = {}
        size = 0
        j = 0
        while size < mb * 1024 * 1024:
            if j % 2:
                data = rnd.randbytes(1024 * 1024)
                name = f"lib/libbig{j}.so"
            else:
                data = " ".join(rnd.choice(words) for _ in range(200_000)).encode()[: 1024 * 1024]
                name = f"lib/python3.12/site-packages/big/mod{j}.py"
            files[name] = data
            size += len(data)
            j += 1
        idx = {
            "name": f"bigpkg{i}",
            "version": "1.0",
            "build": "0",
            "build_number": 0,
            "depends": [],
            "subdir": "linux-64",
            "license": "MIT",
            "timestamp": 1700000000000,
        }
        paths = {
            "paths_version": 1,
            "paths": [
                {"_path": p, "path_type": "hardlink", "sha256": hashlib.sha256(d).hexdigest(), "size_in_bytes": len(d)}
                for p, d in files.items()
            ],
        }
        cctx = zstandard.ZstdCompressor(level=3)
        info = cctx.compress(
            _tar({"info/index.json": json.dumps(idx).encode(), "info/paths.json": json.dumps(paths).encode()})
        )
        pkg = cctx.compress(_tar(files))
        stem = f"bigpkg{i}-1.0-0"
        path = folder / f"{stem}.conda"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
            zf.writestr("metadata.json", json.dumps({"conda_pkg_format_version": 2}))
            zf.writestr(f"info-{stem}.tar.zst", info)
            zf.writestr(f"pkg-{stem}.tar.zst", pkg)
        out.append(path)
    return out


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def upload_all(
    server: bench_uploads.Server, channel: str, files: list[Path], clients: int
) -> tuple[float, float, dict[str, int]]:
    codes: dict[str, int] = {}

    def one(path: Path) -> None:
        data = path.read_bytes()
        params = {"filename": path.name}
        r = server.http.post(f"/api/channels/{channel}/files", params=params, content=data)
        key = str(r.status_code) if r.status_code < 400 else f"{r.status_code}:{r.json()['error']['code']}"
        codes[key] = codes.get(key, 0) + 1

    cpu = server.cpu()
    t = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, files))
    return time.perf_counter() - t, server.cpu() - cpu, codes


def false_positives(server: bench_uploads.Server, channel: str, files: list[Path]) -> dict[str, Any]:
    flagged = {}
    for p in files:
        r = server.http.get(f"/api/channels/{channel}/scanning/files/{p.parent.name}/{p.name}")
        if r.status_code != 200:
            continue
        scan = r.json()["scan"] or {}
        if scan.get("verdict") != "clean":
            flagged[p.name] = scan.get("rule")
    return flagged


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--big", type=int, default=6)
    ap.add_argument("--big-mb", type=int, default=16)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    real = sorted(p for p in TESTDATA.rglob("*") if p.name.endswith((".conda", ".tar.bz2")))
    real_mb = sum(p.stat().st_size for p in real) / 1e6
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp:
        root = Path(tmp)
        big = big_packages(root / "big" / "linux-64", args.big, args.big_mb)
        big_mb = sum(p.stat().st_size for p in big) / 1e6
        log(f"{len(real)} testdata files ({real_mb:.1f} MB), {len(big)} synthetic ({big_mb:.1f} MB)")
        servers = {"scan": _start(root, True), "off": _start(root, False)}
        res: dict[str, dict[str, list[tuple[float, float]]]] = {k: {"files": [], "mb": []} for k in servers}
        codes: dict[str, dict[str, int]] = {}
        fp: dict[str, Any] = {}
        try:
            for rnd in range(args.rounds):
                for kind in ("off", "scan") if rnd % 2 else ("scan", "off"):
                    s = servers[kind]
                    ch = s.channel()
                    w, c, codes[kind] = upload_all(s, ch, real, args.clients)
                    res[kind]["files"].append((w, c))
                    log(f"round {rnd} {kind}: testdata {w:.2f}s wall {c:.2f}s cpu {codes[kind]}")
                    if kind == "scan" and rnd == 0:
                        fp = false_positives(s, ch, real)
                    ch2 = s.channel()
                    w, c, cb = upload_all(s, ch2, big, 1)
                    res[kind]["mb"].append((w, c))
                    log(f"round {rnd} {kind}: big {w:.2f}s wall {c:.2f}s cpu {cb}")
        finally:
            for s in servers.values():
                s.close()
    best = {k: {m: (min(x[0] for x in v[m]), min(x[1] for x in v[m])) for m in v} for k, v in res.items()}
    rows = []
    for metric, (unit, n) in {"files": ("ms/file", len(real)), "mb": ("ms/MB", big_mb)}.items():
        for i, what in enumerate(("wall", "server CPU")):
            scan, off = best["scan"][metric][i] * 1000 / n, best["off"][metric][i] * 1000 / n
            rows.append(
                (
                    f"upload {what} {unit}" + (" (testdata)" if metric == "files" else " (synthetic)"),
                    scan,
                    off,
                    scan / off,
                )
            )
    print("| metric | scanning on | scanning off | ratio | goal | met? |")
    print("|---|---|---|---|---|---|")
    for name, scan, off, ratio in rows:
        print(f"| {name} | {scan:.1f} | {off:.1f} | {ratio:.2f}x | <= 1.5x | {'yes' if ratio <= 1.5 else 'no'} |")
    quarantined = sum(v for k, v in codes.get("scan", {}).items() if "quarantined" in k)
    print(
        f"| false positives on {len(real)} testdata packages (not clean / quarantined) | {len(fp)} / {quarantined}"
        f" | - | - | 0 | {'yes' if not fp and not quarantined else 'no'} |"
    )
    if fp:
        print("flagged:", json.dumps(fp, indent=1))
    if args.json:
        args.json.write_text(json.dumps({"best": best, "codes": codes, "false_positives": fp, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
