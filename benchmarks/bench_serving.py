"""Issue 15, the serving hot path: condavault beside Debian's nginx on the same files, in the same run.

    .venv/bin/python benchmarks/bench_serving.py [--records 10000] [--seconds 5] [--rounds 2]
        [--conns 16] [--solves 5] [--package-mb 16] [--workers 1] [--json out.json]

One ``condavault serve`` (``--workers``; SQLite) with a public channel of ``--records`` synthetic
conda-forge-like records (``_synth``) in linux-64 and one ``--package-mb`` package; its published files
(``repodata.json.zst``, the shard index, every shard, the package) are copied into the root of an nginx
(one worker, ``sendfile on``). Then, condavault and nginx alternately (best of ``--rounds``):

- **304 of repodata.json.zst**: wrk with ``If-None-Match`` (``--conns`` connections, one thread);
- **cached shard GET**: wrk on one shard;
- **package download**: wrk, 4 connections, MB/s and server CPU per MB;
- **cold py-rattler solve via shards**: a restarted condavault (empty caches; nginx has none) and a
  fresh client cache, ``rattler.solve`` of one name with a deep dependency closure through
  ``repodata_shards.msgpack.zst`` (wall time, median of ``--solves``); the same solve again with the
  server warm; and once more after a publish into the channel (a small noarch package) dropped the
  server's lookup caches of the channel (the running server's cold case).

Server CPU per request is utime + stime from ``/proc/<pid>/stat`` of the server's processes (or of
nginx's master and worker) over the run, less the server's idle CPU rate measured for 2 s just before
(condavault's job threads and audit writer poll; after the import the benchmark first waits until that
rate is below 5 % of a core), divided by the requests wrk counted. The load average is
printed at the start and end of each measurement: the machine is shared, compare ratios of one run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import msgpack
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_foundation as bf
from _synth import conda_bytes
from bench_foundation import SUBDIR, WRK_LUA, Condavault, Nginx, cpu_seconds, ensure_debs, machine, raise_nofile

CHANNEL = "bench"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def synth(n: int) -> dict[str, dict[str, Any]]:
    from bench_scale import synth_records

    out = dict(synth_records(n))
    out["libgcc-ng-12.0.0-h0_0.conda"] = {
        "name": "libgcc-ng",
        "version": "12.0.0",
        "build": "h0_0",
        "build_number": 0,
        "depends": [],
        "license": "MIT",
        "subdir": SUBDIR,
        "timestamp": 1700000000000,
        "sha256": "f" * 64,
        "md5": "f" * 32,
        "size": 1000,
    }
    return out


def idle_rate(pids: list[int], seconds: float = 2.0) -> float:
    """CPU seconds per second the server spends with no request (job threads, the audit writer, ...)."""
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / seconds


def quiesce(pids: list[int], limit: float = 0.05, timeout: float = 300) -> float:
    """Wait until the server's background work (the index slow lane after an import) has settled."""
    deadline = time.monotonic() + timeout
    rate = idle_rate(pids)
    while rate > limit and time.monotonic() < deadline:
        rate = idle_rate(pids)
    return rate


def run_wrk(url: str, *, conns: int, seconds: int, script: Path | None, pids: list[int]) -> dict[str, float]:
    """wrk, and the server's CPU over the run less its idle rate measured just before (background)."""
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s"]
    if script:
        argv += ["-s", str(script)]
    idle = idle_rate(pids)
    before = cpu_seconds(pids)
    t = time.monotonic()
    out = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout
    cpu = max(0.0, cpu_seconds(pids) - before - idle * (time.monotonic() - t))
    res: dict[str, float] = {"non2xx": 0.0, "bytes": 0.0}
    for line in out.splitlines():
        line = line.strip()
        if " requests in " in line:  # "12345 requests in 5.00s, 1.23MB read"
            parts = line.split()
            res["requests"] = float(parts[0])
            res["wall"] = float(parts[3].rstrip("s,"))
            size = parts[4]
            for unit, mult in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024), ("B", 1)):
                if size.endswith(unit):
                    res["bytes"] = float(size[: -len(unit)]) * mult
                    break
        elif line.startswith("Non-2xx or 3xx responses:"):
            res["non2xx"] = float(line.split()[-1])
    res["rps"] = res["requests"] / res["wall"]
    res["mbps"] = res["bytes"] / res["wall"] / 1e6
    res["cpu_s"] = cpu
    res["idle_cpu"] = idle
    res["cpu_us"] = cpu / max(res["requests"], 1) * 1e6
    res["cpu_ms_per_mb"] = cpu * 1e3 / max(res["bytes"] / 1e6, 1e-9)
    return res


def mirror_to(root: Path, base: str) -> dict[str, str]:
    """Copy what condavault publishes for the channel into nginx's root; returns the paths used."""
    paths = {}
    with httpx.Client(timeout=600) as c:

        def copy(rel: str) -> bytes:
            r = c.get(f"{base}/api/repo/{CHANNEL}/{rel}")
            r.raise_for_status()
            dest = root / "api" / "repo" / CHANNEL / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(r.content)
            return r.content

        copy(f"{SUBDIR}/repodata.json.zst")
        for sub in (SUBDIR, "noarch"):
            raw = copy(f"{sub}/repodata_shards.msgpack.zst")
            index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(raw), raw=False)
            for name, digest in index["shards"].items():
                rel = f"{sub}/shards/{digest.hex()}.msgpack.zst"
                copy(rel)
                if sub == SUBDIR and name == "pkg00001":
                    paths["shard"] = rel
    for d in [root, *root.rglob("*")]:
        os.chmod(d, 0o755 if d.is_dir() else 0o644)
    return paths


def closure_root(records: dict[str, dict[str, Any]]) -> str:
    """The name with the largest dependency closure (the solve fetches one shard per name in it)."""
    deps: dict[str, set[str]] = {}
    for rec in records.values():
        deps.setdefault(rec["name"], set()).update(d.split()[0] for d in rec["depends"])
    best, size = "", -1
    for name in sorted(deps)[:200]:
        seen, todo = {name}, [name]
        while todo:
            for d in deps.get(todo.pop(), ()):
                if d not in seen:
                    seen.add(d)
                    todo.append(d)
        if len(seen) > size:
            best, size = name, len(seen)
    return best


def solve(url: str, spec: str, cache: Path) -> tuple[float, int]:
    from rattler import Channel, ChannelConfig, Gateway, SourceConfig
    from rattler import solve as rsolve

    async def go() -> tuple[float, int]:
        cfg = SourceConfig(sharded_enabled=True, zstd_enabled=False, bz2_enabled=False)
        gateway = Gateway(cache_dir=cache, default_config=cfg)
        t = time.perf_counter()
        recs = await rsolve(
            sources=[Channel(url, ChannelConfig())],
            specs=[spec],
            gateway=gateway,
            platforms=[SUBDIR, "noarch"],
            virtual_packages=[],
        )
        return time.perf_counter() - t, len(recs)

    return asyncio.run(go())


class Server:
    """A condavault that can be restarted on its data folder (cold caches)."""

    def __init__(self, work: Path, workers: int) -> None:
        self.work, self.workers = work, workers
        self.cv = Condavault(work, workers)

    def restart(self) -> None:
        self.cv.stop()
        self.cv = Condavault(self.work, self.workers)


def measure(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    res: dict[str, Any] = {"machine": machine(), "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    records = synth(args.records)
    srv = Server(work, args.workers)
    ngx = None
    try:
        cv = srv.cv
        cv.channel(CHANNEL)
        items = sorted(records.items())
        log(f"importing {len(items):,} records")
        for i in range(0, len(items), 10_000):
            body = {"info": {"subdir": SUBDIR}, "packages.conda": dict(items[i : i + 10_000])}
            cv.http.post(f"/api/channels/{CHANNEL}/subdirs/{SUBDIR}/import", json=body).raise_for_status()
        data, _ = conda_bytes("payload", "1.0", "h0_0", SUBDIR, payload_bytes=args.package_mb * 1_000_000)
        pkg = f"{SUBDIR}/payload-1.0-h0_0.conda"
        cv.http.post(
            f"/api/channels/{CHANNEL}/files", params={"filename": "payload-1.0-h0_0.conda"}, content=data
        ).raise_for_status()
        log("waiting for the index")
        deadline = time.monotonic() + 600
        while b"payload-1.0-h0_0" not in httpx.get(cv.repo(CHANNEL, f"{SUBDIR}/repodata.json"), timeout=600).content:
            if time.monotonic() > deadline:
                raise RuntimeError("the index never listed the package")
            time.sleep(0.5)
        root = work / "static"
        paths = mirror_to(root, cv.url)
        dest = root / "api" / "repo" / CHANNEL / pkg
        dest.write_bytes(data)
        os.chmod(dest, 0o644)
        del data
        bf.NGINX_CONF = bf.NGINX_CONF.replace("worker_processes 2;", "worker_processes 1;")
        ngx = Nginx(work, root)
        spec = closure_root(records)
        res["spec"] = spec
        peers = {
            "condavault": (lambda: srv.cv.url, lambda: srv.cv.proc.pids()),
            "nginx": (lambda: ngx.url, lambda: ngx.proc.pids()),
        }
        for who, (url, _pids) in peers.items():
            u = f"{url()}/api/repo/{CHANNEL}/{SUBDIR}/repodata.json.zst"
            etag = httpx.head(u, timeout=60).headers["etag"]
            (work / f"{who}-304.lua").write_text(WRK_LUA.format(etag=etag))
            if httpx.get(u, headers={"If-None-Match": etag}, timeout=60).status_code != 304:
                raise RuntimeError(f"{who} does not answer 304")
        log(f"server idle CPU after the import settled: {quiesce(srv.cv.proc.pids()):.3f} s/s")
        tests = [
            ("304 repodata.json.zst", f"{SUBDIR}/repodata.json.zst", True, args.conns),
            ("cached shard GET", paths["shard"], False, args.conns),
            (f"package download ({args.package_mb} MB)", pkg, False, 4),
        ]
        for label, rel, inm, conns in tests:
            row: dict[str, Any] = {"load_start": load()}
            for rnd in range(args.rounds):
                for who, (url, pids) in peers.items():
                    u = f"{url()}/api/repo/{CHANNEL}/{rel}"
                    httpx.get(u, timeout=60)  # warm
                    r = run_wrk(
                        u,
                        conns=conns,
                        seconds=args.seconds,
                        script=work / f"{who}-304.lua" if inm else None,
                        pids=pids(),
                    )
                    log(
                        f"{label} {who} round {rnd + 1}: {r['rps']:,.0f} req/s {r['mbps']:,.0f} MB/s "
                        f"{r['cpu_us']:.1f} us CPU/req, non-2xx/3xx {r['non2xx']:.0f}, load {load()}"
                    )
                    if r["rps"] > row.get(who, {}).get("rps", -1):
                        row[who] = r
            row["load_end"] = load()
            res[label] = row
        log(f"cold solves of {spec!r}")
        row = {"load_start": load(), "condavault": [], "condavault_warm": [], "nginx": []}
        for i in range(args.solves):
            srv.restart()
            quiesce(srv.cv.proc.pids())
            before = cpu_seconds(srv.cv.proc.pids())
            t, n = solve(srv.cv.repo(CHANNEL, "").rstrip("/"), spec, work / f"gw-cv-{i}")
            row["condavault"].append(t)
            row.setdefault("cv_cpu", []).append(cpu_seconds(srv.cv.proc.pids()) - before)
            tw, _ = solve(srv.cv.repo(CHANNEL, "").rstrip("/"), spec, work / f"gw-cvw-{i}")
            row["condavault_warm"].append(tw)
            # caches invalidated by a publish into the channel (a running server, its lookups cold)
            fn = f"cold{i}-1.0-h0_0.conda"
            data, _ = conda_bytes(f"cold{i}", "1.0", "h0_0", "noarch")
            srv.cv.http.post(f"/api/channels/{CHANNEL}/files", params={"filename": fn}, content=data).raise_for_status()
            while fn.encode() not in httpx.get(srv.cv.repo(CHANNEL, "noarch/repodata.json"), timeout=60).content:
                time.sleep(0.2)
            quiesce(srv.cv.proc.pids())
            before = cpu_seconds(srv.cv.proc.pids())
            tc, _ = solve(srv.cv.repo(CHANNEL, "").rstrip("/"), spec, work / f"gw-cvc-{i}")
            row.setdefault("condavault_invalidated", []).append(tc)
            row.setdefault("cvi_cpu", []).append(cpu_seconds(srv.cv.proc.pids()) - before)
            before = cpu_seconds(ngx.proc.pids())
            tn, nn = solve(f"{ngx.url}/api/repo/{CHANNEL}", spec, work / f"gw-ngx-{i}")
            row["nginx"].append(tn)
            row.setdefault("ngx_cpu", []).append(cpu_seconds(ngx.proc.pids()) - before)
            row["records"] = n
            log(
                f"solve {i + 1}: condavault restarted {t:.3f} s, warm {tw:.3f} s, invalidated {tc:.3f} s, "
                f"nginx {tn:.3f} s "
                f"({n} records, load {load()})"
            )
            if n != nn:
                raise RuntimeError(f"different solutions: {n} vs {nn} records")
        row["load_end"] = load()
        res["cold py-rattler solve via shards"] = row
    finally:
        if ngx is not None:
            ngx.stop()
        srv.cv.stop()
    return res


def table(res: dict[str, Any]) -> str:
    lines = [
        f"Measured {res['when']} on {res['machine']}.",
        "",
        "| request | condavault req/s | nginx req/s | ratio (goal >= 0.3x) | condavault CPU/req | nginx CPU/req "
        "| CPU ratio (goal <= 3x) | load start -> end |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, row in res.items():
        if not isinstance(row, dict) or "nginx" not in row or label.startswith("cold"):
            continue
        a, b = row["condavault"], row["nginx"]
        extra = ""
        if label.startswith("package"):
            extra = (
                f" ({a['mbps']:,.0f} vs {b['mbps']:,.0f} MB/s; CPU/MB {a['cpu_ms_per_mb']:.2f} ms vs "
                f"{b['cpu_ms_per_mb']:.2f} ms)"
            )
        lines.append(
            f"| {label}{extra} | {a['rps']:,.0f} | {b['rps']:,.0f} | {a['rps'] / b['rps']:.2f}x "
            f"| {a['cpu_us']:.1f} µs | {b['cpu_us']:.1f} µs | {a['cpu_us'] / max(b['cpu_us'], 0.01):.1f}x "
            f"| {row['load_start']} -> {row['load_end']} |"
        )
    s = res.get("cold py-rattler solve via shards")
    if s:
        med = {k: statistics.median(s[k]) for k in ("condavault", "condavault_warm", "condavault_invalidated", "nginx")}
        lines += [
            "",
            f"Cold py-rattler solve via shards of `{res['spec']}` ({s['records']} records in the solution), "
            f"median of {len(s['nginx'])}, load {s['load_start']} -> {s['load_end']}:",
            "",
            "| server | solve wall time | ratio to nginx (goal <= 1.2x) | server CPU per solve |",
            "|---|---|---|---|",
            f"| condavault, restarted (cold caches) | {med['condavault']:.3f} s | "
            f"{med['condavault'] / med['nginx']:.2f}x | {statistics.median(s['cv_cpu']) * 1e3:.0f} ms |",
            f"| condavault, caches invalidated by a publish | {med['condavault_invalidated']:.3f} s | "
            f"{med['condavault_invalidated'] / med['nginx']:.2f}x | {statistics.median(s['cvi_cpu']) * 1e3:.0f} ms |",
            f"| condavault, warm | {med['condavault_warm']:.3f} s | {med['condavault_warm'] / med['nginx']:.2f}x | |",
            f"| nginx | {med['nginx']:.3f} s | 1.00x | {statistics.median(s['ngx_cpu']) * 1e3:.0f} ms |",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--solves", type=int, default=5)
    ap.add_argument("--package-mb", type=int, default=16)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    raise_nofile()
    ensure_debs()
    work = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    log(f"load average at start: {os.getloadavg()}")
    try:
        res = measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    log(f"load average at end: {os.getloadavg()}")
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
