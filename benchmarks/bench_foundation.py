"""The foundation's benchmark: hosted-channel indexing and serving, each beside a peer in the same run.

    /work/venv/bin/python benchmarks/bench_foundation.py [--quick] [--json out.json] [--write-doc]
        [--serve-workers 1,2] [--uploads 20] [--clients 1000] [--big-mb 50] [--skip-serve] [--keep]

1. Index update latency after one upload into a subdir of 10 k and 100 k records (``--quick``: 1 k and
   10 k): from the start of ``POST /api/channels/{c}/files`` until ``repodata.json`` served over HTTP
   contains the new file (p50/p95 over ``--uploads`` uploads), beside rattler-index
   (``rattler.index.index_fs``) adding one file to the same channel on disk and re-running.
2. Serving beside Debian's nginx (2 workers, same files): ``repodata.json.zst`` 304 revalidations
   (wrk + If-None-Match), 50 MB package download MB/s (wrk), 1,000 concurrent asyncio/httpx clients.
   Serving is measured for each ``condavault serve --workers N`` of ``--serve-workers``.
3. Peak server RSS (VmHWM, summed over the server's processes) while seeding, indexing and serving
   the largest subdir (one process), and while serving with ``--workers 2``.

Ratios, not absolute times, are the point: the peers run on the same (shared, noisy) machine in
the same run. wrk and nginx are installed with apt-get when missing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import platform
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _synth import conda_bytes, record_of, synth_names

SUBDIR = "linux-64"
REPO_ROOT = Path(__file__).resolve().parents[1]
PERF_DOC = REPO_ROOT / "docs" / "performance.md"
SECTION = "## Hosted channels (foundation)"


# -- helpers ------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    if not v:
        return float("nan")
    k = (len(v) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def raise_nofile() -> int:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 65536
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def ensure_debs() -> None:
    """wrk and nginx from Debian, installed here when missing (the benchmark runs as root)."""
    missing = [
        pkg
        for tool, pkg in (("wrk", "wrk"), ("nginx", "nginx-light"))
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if not missing:
        return
    log(f"installing {' '.join(missing)} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    # Debian's package starts a system nginx on port 80; we run our own, so stop that one
    with suppress(Exception):
        subprocess.run(["service", "nginx", "stop"], check=False, capture_output=True)


def machine() -> str:
    mem = 0
    with suppress(OSError), open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    cpu = ""
    with suppress(OSError), open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} CPUs ({cpu}), {mem / 1024:.1f} GiB RAM, {platform.system()} {platform.release()}"


# -- synthetic channel ----------------------------------------------------------------------------------
def _write_one(args: tuple[str, str, str, str, list[str]]) -> tuple[str, dict[str, Any]]:
    folder, name, version, build, deps = args
    data, idx = conda_bytes(name, version, build, SUBDIR, deps)
    fn = f"{name}-{version}-{build}.conda"
    with open(os.path.join(folder, fn), "wb") as fh:
        fh.write(data)
    return fn, record_of(data, idx)


def make_channel_dir(root: Path, n: int) -> dict[str, dict[str, Any]]:
    """``root/linux-64`` with ``n`` tiny valid .conda files (+ empty noarch); returns fn -> record."""
    sd = root / SUBDIR
    sd.mkdir(parents=True, exist_ok=True)
    (root / "noarch").mkdir(exist_ok=True)
    jobs = [(str(sd), *t) for t in synth_names(n)]
    pool = multiprocessing.get_context("fork").Pool(os.cpu_count() or 2)
    try:
        out = dict(pool.imap_unordered(_write_one, jobs, chunksize=500))
    finally:  # close + join: terminate() can kill a worker holding the task queue's lock and hang
        pool.close()
        pool.join()
    return out


# -- processes ------------------------------------------------------------------------------------------
class Proc:
    """A child process we started: stopped by its own pid (and process group) only."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None, log_path: Path | None = None) -> None:
        self.log_path = log_path
        out = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
        self.p = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.p.pid

    def pids(self) -> list[int]:
        """This process and its descendants (uvicorn workers)."""
        out = [self.pid]
        frontier = [self.pid]
        while frontier:
            pid = frontier.pop()
            with suppress(OSError):
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with suppress(OSError), open(f"/proc/{pid}/task/{tid}/children") as fh:
                        kids = [int(x) for x in fh.read().split()]
                        out.extend(kids)
                        frontier.extend(kids)
        return out

    def stop(self) -> None:
        if self.p.poll() is None:
            with suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.p.wait()


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far (from /proc; a process gone meanwhile counts 0)."""
    ticks = 0
    for pid in pids:
        with suppress(OSError), open(f"/proc/{pid}/stat") as fh:
            parts = fh.read().rsplit(")", 1)[1].split()
            ticks += int(parts[11]) + int(parts[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int, key: str) -> int:
    with suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


class RssSampler(threading.Thread):
    """Samples the server's VmRSS (sum over its processes) and remembers the peak; VmHWM at the end."""

    def __init__(self, proc: Proc) -> None:
        super().__init__(daemon=True)
        self.proc = proc
        self.peak_rss_kb = 0
        self.phase_peaks: dict[str, int] = {}
        self.phase = "start"
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.1):
            rss = sum(status_kb(p, "VmRSS") for p in self.proc.pids())
            self.peak_rss_kb = max(self.peak_rss_kb, rss)
            self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), rss)

    def hwm_kb(self) -> tuple[int, int]:
        """(largest single-process VmHWM, sum of VmHWM over the server's processes)."""
        vals = [status_kb(p, "VmHWM") for p in self.proc.pids()]
        return max(vals, default=0), sum(vals)

    def stop(self) -> None:
        self._halt.set()


class Condavault:
    def __init__(self, work: Path, workers: int) -> None:
        self.data = work / "cv-data"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
        # BENCH_SERVER_LOG_LEVEL=INFO: the server's log says what each index and slow-lane run did
        env.update(
            CONDAVAULT_LOG_LEVEL=os.environ.get("BENCH_SERVER_LOG_LEVEL", "WARNING"), CONDAVAULT_LOG_FORMAT="text"
        )
        exe = shutil.which("condavault") or str(Path(sys.executable).parent / "condavault")
        argv = [exe, "--data-dir", str(self.data), "serve", "--port", str(self.port)]
        if workers > 1:
            argv += ["--workers", str(workers)]
        self.proc = Proc(argv, env=env, log_path=work / "condavault.log")
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"condavault did not start; see {work / 'condavault.log'}")
            time.sleep(0.2)
        self.token = (self.data / "admin-token").read_text().strip()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=600)

    def channel(self, name: str) -> None:
        r = self.http.post("/api/channels", json={"name": name, "privacy": "public"})
        if r.status_code != 201:
            raise RuntimeError(r.text)

    def repo(self, channel: str, path: str) -> str:
        return f"{self.url}/api/repo/{channel}/{path}"

    def stop(self) -> None:
        self.http.close()
        self.proc.stop()


# -- 1. index update latency ---------------------------------------------------------------------------
def seed_condavault(cv: Condavault, channel: str, records: dict[str, dict[str, Any]], chunk: int = 10_000) -> float:
    cv.channel(channel)
    items = sorted(records.items())
    t = time.perf_counter()
    for i in range(0, len(items), chunk):
        body = {"info": {"subdir": SUBDIR}, "packages": {}, "packages.conda": dict(items[i : i + chunk])}
        r = cv.http.post(f"/api/channels/{channel}/subdirs/{SUBDIR}/import", json=body)
        r.raise_for_status()
    return time.perf_counter() - t


def upload_latencies(cv: Condavault, channel: str, n_records: int, uploads: int, work: Path) -> dict[str, Any]:
    """Time upload → repodata.json over HTTP lists the file, ``uploads`` times."""
    n_names = max(1, n_records // 20)
    url = cv.repo(channel, f"{SUBDIR}/repodata.json")
    r = httpx.get(url, timeout=600)
    r.raise_for_status()
    etag = r.headers["etag"]
    totals, posts, fetches, sizes = [], [], [], []
    with httpx.Client(timeout=600) as anon:
        for i in range(uploads):
            name = f"pkg{(i * 7) % n_names:05d}"
            data, _ = conda_bytes(name, f"99.{i}.0", "h0_0", SUBDIR, ["libgcc-ng >=12"])
            fn = f"{name}-99.{i}.0-h0_0.conda"
            t0 = time.perf_counter()
            r = cv.http.post(f"/api/channels/{channel}/files", params={"filename": fn}, content=data)
            r.raise_for_status()
            t1 = time.perf_counter()
            needle = f'"{fn}":'.encode()
            while True:
                resp = anon.get(url, headers={"If-None-Match": etag})
                if resp.status_code == 200:
                    etag = resp.headers["etag"]
                    if needle in resp.content:
                        break
                elif resp.status_code != 304:
                    raise RuntimeError(f"GET repodata.json: {resp.status_code}")
                if time.perf_counter() - t0 > 300:
                    raise RuntimeError(f"{fn} never appeared in repodata.json")
                time.sleep(0.02)  # gentle: the poller must not starve the indexer of the GIL
            t2 = time.perf_counter()
            totals.append(t2 - t0)
            posts.append(t1 - t0)
            fetches.append(t2 - t1)
            sizes.append(len(resp.content))
    return {
        "p50": pct(totals, 0.5),
        "p95": pct(totals, 0.95),
        "post_p50": pct(posts, 0.5),
        "fetch_p50": pct(fetches, 0.5),
        "repodata_bytes": sizes[-1],
        "samples": totals,
    }


def rattler_index(
    channel_dir: Path, force: bool = False, max_parallel: int | None = None, write_shards: bool | None = None
) -> float:
    """One ``index_fs`` run. ``max_parallel`` bounds its concurrent reads of packages (128 is no slower
    than its default at 6 k records, measured). Its shards are written all at once whatever it is: past
    ~100 k records that fails at this machine's hard open-file limit (20,000, which root cannot raise
    here), so larger runs pass ``write_shards=False`` -- less work for rattler-index than for us."""
    from rattler import Subdir
    from rattler.index import index_fs

    t = time.perf_counter()
    asyncio.run(
        index_fs(
            channel_dir,
            target_platform=Subdir(SUBDIR),
            force=force,
            max_parallel=max_parallel,
            write_shards=write_shards,
        )
    )
    return time.perf_counter() - t


def rattler_latencies(
    channel_dir: Path, n_records: int, reps: int, max_parallel: int | None = None, write_shards: bool | None = None
) -> dict[str, Any]:
    n_names = max(1, n_records // 20)
    times = []
    for i in range(reps):
        name = f"pkg{(i * 11) % n_names:05d}"
        t0 = time.perf_counter()
        data, _ = conda_bytes(name, f"98.{i}.0", "h0_0", SUBDIR, ["libgcc-ng >=12"])
        fn = f"{name}-98.{i}.0-h0_0.conda"
        (channel_dir / SUBDIR / fn).write_bytes(data)
        rattler_index(channel_dir, max_parallel=max_parallel, write_shards=write_shards)
        times.append(time.perf_counter() - t0)
        if fn.encode() not in (channel_dir / SUBDIR / "repodata.json").read_bytes():
            raise RuntimeError("rattler-index did not add the file")
    return {"p50": pct(times, 0.5), "p95": pct(times, 0.95), "samples": times}


# -- 2. serving -----------------------------------------------------------------------------------------
NGINX_CONF = """
worker_processes 2;
daemon off;
master_process on;
user root root;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 8192; multi_accept on; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    keepalive_timeout 120s;
    types {{ application/zstd zst; application/json json; application/octet-stream conda; }}
    default_type application/octet-stream;
    client_body_temp_path {dir}/tmp; proxy_temp_path {dir}/tmp; fastcgi_temp_path {dir}/tmp;
    uwsgi_temp_path {dir}/tmp; scgi_temp_path {dir}/tmp;
    server {{
        listen 127.0.0.1:{port} backlog=4096 reuseport;
        root {root};
        location / {{ add_header Cache-Control "public, max-age=30"; }}
    }}
}}
"""


class Nginx:
    def __init__(self, work: Path, root: Path) -> None:
        self.dir = work / "nginx"
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=self.dir, port=self.port, root=root))
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = Proc([nginx, "-c", str(conf), "-p", str(self.dir)], log_path=self.dir / "stdout.log")
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(self.url + "/", timeout=2)
                break
            except httpx.HTTPError:
                if self.proc.p.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start: {(self.dir / 'error.log').read_text()}")
                time.sleep(0.1)

    def stop(self) -> None:
        self.proc.stop()


WRK_LUA = """
wrk.method = "GET"
wrk.headers["If-None-Match"] = '{etag}'
local codes = {{}}
response = function(status, headers, body)
  if status ~= 304 then
    wrk.thread:set("bad", (wrk.thread:get("bad") or 0) + 1)
  end
end
"""


def wrk(url: str, *, threads: int, conns: int, seconds: int, script: Path | None = None) -> dict[str, float]:
    argv = ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    if script:
        argv += ["-s", str(script)]
    out = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout
    res: dict[str, float] = {"errors": 0.0}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(line.split()[1])
        elif line.startswith("Transfer/sec:"):
            v = line.split()[1]
            mult = {"B": 1e-6, "KB": 1024 / 1e6, "MB": 1024**2 / 1e6, "GB": 1024**3 / 1e6}
            for unit in ("GB", "MB", "KB", "B"):
                if v.endswith(unit):
                    res["mbps"] = float(v[: -len(unit)]) * mult[unit]
                    break
        elif line.startswith("Non-2xx or 3xx responses:"):
            res["non2xx"] = float(line.split()[-1])
        elif line.startswith("Socket errors:"):
            parts = line.replace(",", "").split()
            res["errors"] = float(sum(int(parts[i + 1]) for i in range(2, len(parts) - 1, 2)))
        elif line.startswith("50%"):
            res["lat_p50"] = line.split()[1]
        elif line.startswith("99%"):
            res["lat_p99"] = line.split()[1]
    return res


def best_of(fn, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    runs = [fn() for _ in range(n)]
    key = "rps" if "rps" in runs[0] else "mbps"
    return max(runs, key=lambda r: r.get("mbps" if key == "mbps" else "rps", 0))


async def _crowd(url: str, n: int, size: int, sha: str, timeout: float) -> dict[str, Any]:
    go = asyncio.Event()
    tls = ssl.create_default_context()  # one for all clients (httpx builds one per client otherwise: slow)
    errors: list[str] = []
    lat: list[float] = []

    async def one(i: int) -> None:
        try:
            async with httpx.AsyncClient(timeout=timeout, verify=tls, limits=httpx.Limits(max_connections=1)) as c:
                await go.wait()
                t = time.perf_counter()
                h = hashlib.sha256()
                got = 0
                async with c.stream("GET", url) as r:
                    if r.status_code != 200:
                        errors.append(f"status {r.status_code}")
                        return
                    async for chunk in r.aiter_raw(1 << 20):
                        h.update(chunk)
                        got += len(chunk)
                if got != size or h.hexdigest() != sha:
                    errors.append("bad bytes")
                    return
                lat.append(time.perf_counter() - t)
        except Exception as exc:
            errors.append(type(exc).__name__)

    tasks = [asyncio.create_task(one(i)) for i in range(n)]
    await asyncio.sleep(0.5)
    t0 = time.perf_counter()
    go.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    kinds: dict[str, int] = {}
    for e in errors:
        kinds[e] = kinds.get(e, 0) + 1
    return {
        "clients": n,
        "errors": len(errors),
        "error_kinds": kinds,
        "wall_s": wall,
        "p50_s": pct(lat, 0.5),
        "p95_s": pct(lat, 0.95),
        "mbps": n * size / wall / 1e6 if wall else 0.0,
    }


def crowd(url: str, n: int, size: int, sha: str, timeout: float = 300.0) -> dict[str, Any]:
    return asyncio.run(_crowd(url, n, size, sha, timeout))


# -- table ----------------------------------------------------------------------------------------------
def fmt_s(v: float) -> str:
    return f"{v * 1000:.0f} ms" if v < 10 else f"{v:.1f} s"


def build_rows(res: dict[str, Any]) -> list[list[str]]:
    rows: list[list[str]] = []
    for size, r in res["index"].items():
        cv, rt = r["condavault"], r["rattler"]
        ratio = rt["p50"] / cv["p50"]
        label = f"{int(size) // 1000} k"
        rows.append(
            [
                f"index update after 1 upload, {label} records: p50 (p95)",
                f"{fmt_s(cv['p50'])} ({fmt_s(cv['p95'])})",
                f"rattler-index {fmt_s(rt['p50'])} ({fmt_s(rt['p95'])})",
                f"{ratio:.1f}× faster",
                "≤ 1 s p50 at 100 k; ≥ 30× rattler" if int(size) >= 100_000 else "≥ 30× rattler",
                ("yes" if ratio >= 30 and (int(size) < 100_000 or cv["p50"] <= 1.0) else "no"),
            ]
        )
    serve = res.get("serve") or {}
    for key in sorted(k for k in serve if k.startswith("workers=")):
        s, w = serve[key], key.split("=")[1]
        a, b = s["revalidate"]["condavault"], s["revalidate"]["nginx"]
        ratio = a["rps"] / b["rps"]
        rows.append(
            [
                f"repodata.json.zst 304 revalidations, req/s (serve --workers {w})",
                f"{a['rps']:,.0f}",
                f"nginx {b['rps']:,.0f}",
                f"{ratio:.2f}×",
                "≥ 0.2× nginx",
                "yes" if ratio >= 0.2 else "no",
            ]
        )
        a, b = s["download"]["condavault"], s["download"]["nginx"]
        ratio = a["mbps"] / b["mbps"]
        rows.append(
            [
                f"{serve['big_mb']} MB package download, MB/s (serve --workers {w})",
                f"{a['mbps']:,.0f}",
                f"nginx {b['mbps']:,.0f}",
                f"{ratio:.2f}×",
                "≥ 0.3× nginx",
                "yes" if ratio >= 0.3 else "no",
            ]
        )
        a, b = s["crowd"]["condavault"], s["crowd"]["nginx"]
        rows.append(
            [
                f"{a['clients']:,} concurrent clients downloading {serve['crowd_mb']} MB: errors, wall "
                f"(serve --workers {w})",
                f"{a['errors']} errors, {a['wall_s']:.1f} s",
                f"nginx {b['errors']} errors, {b['wall_s']:.1f} s",
                f"{b['wall_s'] / a['wall_s']:.2f}× speed",
                "0 errors",
                "yes" if a["errors"] == 0 else "no",
            ]
        )
    for key in sorted(res.get("memory") or {}):
        m, w = res["memory"][key], key.split("=")[1]
        mb = m["hwm_kb"] / 1024
        what = "indexing + serving" if w == "1" else "serving"
        rows.append(
            [
                f"peak server RSS (VmHWM, {m['processes']} processes summed), {what} "
                f"{m['records'] // 1000} k records (serve --workers {w})",
                f"{mb:,.0f} MB",
                "—",
                "—",
                "< 500 MB",
                "yes" if mb < 500 else "no",
            ]
        )
    return rows


def render(rows: list[list[str]]) -> str:
    head = ["metric", "condavault", "peer", "ratio", "goal", "met?"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def write_doc(table: str, res: dict[str, Any], command: str) -> None:
    extra = []
    for size, r in res["index"].items():
        cv = r["condavault"]
        extra.append(
            f"- {int(size) // 1000} k records: upload request {fmt_s(cv['post_p50'])} p50 + fetching "
            f"repodata.json ({cv['repodata_bytes'] / 1e6:.1f} MB) {fmt_s(cv['fetch_p50'])} p50; seeding "
            f"metadata-only import {r['seed_s']:.1f} s; rattler-index first full index "
            f"{r['rattler_full_s']:.1f} s."
        )
    for key, m in (res.get("memory") or {}).items():
        extra.append(
            f"- sampled RSS peaks by phase, {key} (MB): "
            + ", ".join(f"{k} {v / 1024:.0f}" for k, v in m["phase_peaks_kb"].items())
        )
    body = (
        f"{SECTION}\n\n"
        f"Measured {res['date']} on {res['machine']}; condavault on SQLite (index latency with the default "
        f"one-process `serve`), nginx {res.get('nginx_version', '')} with 2 workers serving the same files, "
        f"wrk and an asyncio httpx crowd as clients (all on the same machine).\n\n"
        f"Command: `{command}`\n\n{table}\n\n" + "\n".join(extra) + "\n"
    )
    text = PERF_DOC.read_text() if PERF_DOC.exists() else "# Performance\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + (text[nxt + 1 :] if nxt != -1 else "")
        text = text.replace(body + "## ", body + "\n## ")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    PERF_DOC.parent.mkdir(parents=True, exist_ok=True)
    PERF_DOC.write_text(text)


# -- main -----------------------------------------------------------------------------------------------
def prepare_serving(cv: Condavault, big_chan: str, root: Path, big_mb: int, crowd_mb: int) -> dict[str, Any]:
    """Upload the big and the crowd packages, then copy what condavault serves into nginx's root."""
    cv.channel("benchbig")
    files = {}
    for label, mb in (("big", big_mb), ("crowd", crowd_mb)):
        data, _ = conda_bytes(f"payload{label}", "1.0", "h0_0", SUBDIR, payload_bytes=mb * 1_000_000)
        fn = f"payload{label}-1.0-h0_0.conda"
        r = cv.http.post("/api/channels/benchbig/files", params={"filename": fn}, content=data)
        r.raise_for_status()
        sha = hashlib.sha256(data).hexdigest()
        files[label] = {"path": f"benchbig/{SUBDIR}/{fn}", "size": len(data), "sha256": sha}
        del data
    files["zst"] = {"path": f"{big_chan}/{SUBDIR}/repodata.json.zst"}
    for f in files.values():
        dest = root / "api" / "repo" / f["path"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        with httpx.stream("GET", cv.repo(*f["path"].split("/", 1)), timeout=600) as r, open(dest, "wb") as fh:
            r.raise_for_status()
            for chunk in r.iter_bytes(1 << 20):
                fh.write(chunk)
    for d in [root, *root.rglob("*")]:
        os.chmod(d, 0o755 if d.is_dir() else 0o644)
    return files


def measure_serving(
    cv_url: str, nginx_url: str, files: dict[str, Any], work: Path, wrk_s: int, clients: int
) -> dict[str, Any]:
    """304s, big download and the crowd, condavault and nginx alternately (best of two rounds each)."""
    out: dict[str, Any] = {"revalidate": {}, "download": {}, "crowd": {}}
    peers = (("condavault", cv_url), ("nginx", nginx_url))
    zst = "/api/repo/" + files["zst"]["path"]
    for label, base in peers:
        etag = httpx.head(base + zst, timeout=30).headers["etag"]
        (work / f"inm-{label}.lua").write_text(WRK_LUA.format(etag=etag))
        check = httpx.get(base + zst, headers={"If-None-Match": etag}, timeout=30)
        if check.status_code != 304:
            raise RuntimeError(f"{label} answered {check.status_code} to If-None-Match")
    for rnd in range(2):
        for label, base in peers:
            r = wrk(base + zst, threads=1, conns=64, seconds=wrk_s, script=work / f"inm-{label}.lua")
            log(f"  wrk 304s {label} round {rnd + 1}: {r.get('rps', 0):,.0f} req/s")
            if r.get("rps", 0) > out["revalidate"].get(label, {}).get("rps", -1):
                out["revalidate"][label] = r
    big = "/api/repo/" + files["big"]["path"]
    for rnd in range(2):
        for label, base in peers:
            r = wrk(base + big, threads=1, conns=4, seconds=wrk_s)
            log(f"  wrk download {label} round {rnd + 1}: {r.get('mbps', 0):,.0f} MB/s")
            if r.get("mbps", 0) > out["download"].get(label, {}).get("mbps", -1):
                out["download"][label] = r
    f = files["crowd"]
    for label, base in peers:
        out["crowd"][label] = crowd(base + "/api/repo/" + f["path"], clients, f["size"], f["sha256"])
        c = out["crowd"][label]
        log(f"  {clients} clients {label}: {c['errors']} errors {c['error_kinds']}, {c['wall_s']:.1f} s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (1 k / 10 k records, shorter runs)")
    ap.add_argument("--json", type=Path, help="also dump every measurement as JSON here")
    ap.add_argument("--uploads", type=int, default=None, help="uploads per size (default 20; quick 10)")
    ap.add_argument(
        "--serve-workers",
        default="1,2",
        help="comma-separated `serve --workers N` configurations to measure serving with (default 1,2)",
    )
    ap.add_argument("--wrk-seconds", type=int, default=None, help="seconds per wrk run (default 10; quick 5)")
    ap.add_argument("--clients", type=int, default=1000, help="concurrent downloading clients (default 1000)")
    ap.add_argument("--big-mb", type=int, default=50, help="size of the big package (default 50 MB)")
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--write-doc", action="store_true", help=f"write the table into docs/{PERF_DOC.name}")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop our servers
    signal.signal(signal.SIGINT, signal.default_int_handler)

    sizes = [1_000, 10_000] if args.quick else [10_000, 100_000]
    uploads = args.uploads or (10 if args.quick else 20)
    wrk_s = args.wrk_seconds or (5 if args.quick else 10)
    serve_workers = [int(w) for w in args.serve_workers.split(",") if w.strip()]
    raise_nofile()
    ensure_debs()
    work = Path(tempfile.mkdtemp(prefix="cv-bench-"))
    os.chmod(work, 0o755)
    log(f"work folder {work}")
    res: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "index": {},
        "serve": {},
        "memory": {},
    }
    with suppress(Exception):
        nginx_v = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr
        res["nginx_version"] = nginx_v.strip().split("/")[-1]
    cv: Condavault | None = None
    nginx: Nginx | None = None
    sampler: RssSampler | None = None
    try:
        # Phase 1: one process (the default `serve`): index latency, then serving, RSS throughout.
        cv = Condavault(work, 1)
        sampler = RssSampler(cv.proc)
        sampler.start()
        for n in sizes:
            log(f"== {n} records: writing {n} .conda files")
            chan_dir = work / f"rattler-{n}"
            records = make_channel_dir(chan_dir, n)
            sampler.phase = f"seed {n // 1000}k"
            log("seeding condavault (metadata-only import)")
            seed_s = seed_condavault(cv, f"bench{n}", records)
            del records
            log(f"  seeded in {seed_s:.1f} s; rattler-index full run")
            full_s = rattler_index(chan_dir, force=True)
            log(f"  rattler-index full run {full_s:.1f} s")
            sampler.phase = f"uploads {n // 1000}k"
            cvr = upload_latencies(cv, f"bench{n}", n, uploads, work)
            log(f"  condavault p50 {cvr['p50']:.3f} s p95 {cvr['p95']:.3f} s")
            sampler.phase = "idle"
            reps = min(10, uploads) if n <= 10_000 else 3  # rattler-index runs are long: fewer samples
            rtr = rattler_latencies(chan_dir, n, reps)
            log(f"  rattler-index p50 {rtr['p50']:.3f} s p95 {rtr['p95']:.3f} s")
            res["index"][str(n)] = {"condavault": cvr, "rattler": rtr, "seed_s": seed_s, "rattler_full_s": full_s}
            shutil.rmtree(chan_dir, ignore_errors=True)

        if not args.skip_serve:
            root = work / "www"
            sampler.phase = "upload big"
            files = prepare_serving(cv, f"bench{sizes[-1]}", root, args.big_mb, 1)
            res["serve"]["big_mb"], res["serve"]["crowd_mb"] = args.big_mb, 1
            nginx = Nginx(work, root)
            cur_w = 1
            for w in serve_workers:
                if w != cur_w:
                    res["memory"][f"workers={cur_w}"] = memory(sampler, sizes[-1])
                    sampler.stop()
                    cv.stop()
                    cv = None
                    cv = Condavault(work, w)
                    sampler = RssSampler(cv.proc)
                    sampler.start()
                    cur_w = w
                sampler.phase = f"serving (workers={w})"
                log(f"== serving: condavault --workers {w} vs nginx (2 workers)")
                res["serve"][f"workers={w}"] = measure_serving(cv.url, nginx.url, files, work, wrk_s, args.clients)
            res["memory"][f"workers={cur_w}"] = memory(sampler, sizes[-1])
        else:
            res["memory"]["workers=1"] = memory(sampler, sizes[-1])
    finally:
        if sampler:
            sampler.stop()
        if nginx:
            nginx.stop()
        if cv:
            cv.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    rows = build_rows(res)
    table = render(rows)
    print(table)
    res["table"] = table
    command = "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str))
    if args.write_doc:
        write_doc(table, res, command)


def memory(sampler: RssSampler, records: int) -> dict[str, Any]:
    hwm_max, hwm_sum = sampler.hwm_kb()
    return {
        "records": records,
        "processes": len(sampler.proc.pids()),
        "hwm_kb": hwm_sum,
        "hwm_max_process_kb": hwm_max,
        "sampled_peak_rss_kb": sampler.peak_rss_kb,
        "phase_peaks_kb": dict(sampler.phase_peaks),
    }


if __name__ == "__main__":
    main()
