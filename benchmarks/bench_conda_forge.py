"""The passive (metadata-only) mirror of a synthetic conda-forge (issues 15 and 16).

1. **Upstream**: 3.8 M records (``--scale 1``) over conda-forge's 7 subdirs, the largest 740 k, in
   ``repodata.json.zst`` files generated once (streamed: the generator holds one record at a time) under
   ``--work``. Record shapes are real ones from ``$CONDAVAULT_TESTDATA/repodata`` (depends, constrains,
   licenses, track_features ...), varied in name, version, build, sha256 and md5 so every record is
   unique. A static HTTP server on loopback (its own process) serves them with an ETag and 304s.
2. **condavault**: a real ``condavault serve`` (SQLite by default, ``--db postgresql``); with
   ``--workers 2`` a ``serve --no-worker`` and two ``condavault worker`` processes share the database.
   A passive mirror of the upstream is created and run through the API.
3. **Figures**: wall time of the first run (goal <= 30 min), peak RSS of the server's processes (sum of
   VmRSS sampled every 0.1 s from /proc, and the VmHWM sum at the end; goal <= 2 GB), the no-op re-sync
   (goal <= 30 s), and a count check: each subdir's mirrored ``repodata.json`` (streamed, counted, never
   held) lists every upstream record. ``--kill-one`` (with ``--workers 2``) kills one worker with
   SIGKILL once the first subdir is done: the other finishes its share.

    python benchmarks/bench_conda_forge.py --scale 0.1
    python benchmarks/bench_conda_forge.py                      # 3.8 M records
    python benchmarks/bench_conda_forge.py --workers 2 --kill-one
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
import sys
import threading
import time
from contextlib import suppress
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_foundation import Proc, cpu_seconds, free_port, status_kb

TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata"))
SHAPES = [
    "repodata/pytorch/linux-64/repodata.json",
    "repodata/defaults-r/linux-64/repodata.json",
    "repodata/defaults-legacy-index/linux-64/index4.json",
    "repodata/conda-forge-numpy-subset",
    "repodata/defaults-main",
    "repodata/conda-forge-patch-instructions-20180828",
]
# conda-forge's subdirs and roughly their share of its 3.8 M files (largest first)
SUBDIRS = {
    "linux-64": 740_000,
    "noarch": 700_000,
    "osx-64": 620_000,
    "win-64": 540_000,
    "osx-arm64": 480_000,
    "linux-aarch64": 420_000,
    "linux-ppc64le": 300_000,
}
# conda-forge: ~34 k names for 3.8 M files, a name's builds spread over its platforms. Here the 6 arch
# subdirs share one name space (pkg...-cf<k>), noarch has its own (...-na<k>), 40 records per name in a
# subdir: 740 k / 40 + 700 k / 40 = 36 k names at --scale 1.
PER_NAME = 40
GOALS = {"first_run_s": 1800.0, "peak_rss_mib": 2048.0, "noop_s": 30.0}


def log(msg: str) -> None:
    la = os.getloadavg()
    print(f"[{time.strftime('%H:%M:%S')} load {la[0]:.1f}] {msg}", file=sys.stderr, flush=True)


# -- 1. the synthetic upstream --------------------------------------------------------------------------
def _shape_files() -> list[Path]:
    out: list[Path] = []
    for rel in SHAPES:
        p = TESTDATA / rel
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(p.rglob("repodata.json")))
    return out


def load_shapes() -> list[dict[str, Any]]:
    """Real records (those condavault accepts from an upstream), without their identity fields."""
    from condavault.packages.validation import InvalidIndexJson, check_record

    shapes: list[dict[str, Any]] = []
    for path in _shape_files():
        doc = json.loads(path.read_text())
        if "packages" not in doc and "packages.conda" not in doc:
            doc = {"packages": doc}
        for key in ("packages", "packages.conda"):
            for fn, rec in (doc.get(key) or {}).items():
                if not isinstance(rec, dict):
                    continue
                try:
                    check_record(dict(rec), source="repodata", filename=fn)
                except (InvalidIndexJson, ValueError, TypeError):
                    continue
                shapes.append({k: v for k, v in rec.items() if k not in ("fn", "url", "channel", "subdir")})
    if not shapes:
        raise SystemExit(f"no record shapes under {TESTDATA}/repodata")
    return shapes


def prepare_shapes(shapes: list[dict[str, Any]]) -> list[tuple[str, str | None]]:
    """Each shape as the JSON text of its fields other than the varied ones (``, "k": v, ...``), and
    its noarch kind."""
    varied = {"name", "version", "build", "build_number", "subdir", "sha256", "md5", "size", "timestamp", "noarch"}
    out = []
    for shape in shapes:
        rest = {k: v for k, v in sorted(shape.items()) if k not in varied}
        text = json.dumps(rest)[1:-1]
        out.append((", " + text if text else "", shape.get("noarch") if isinstance(shape.get("noarch"), str) else None))
    return out


def synth_entry(shapes: list[tuple[str, str | None]], sd: str, i: int, n: int) -> tuple[str, str]:
    """The ``"filename": {record}`` text of record ``i`` of ``n`` in ``sd`` (deterministic, unique)."""
    names = max(1, n // PER_NAME)
    rest, noarch = shapes[(i * 7919) % len(shapes)]
    k, j = i % names, i // names
    name = f"pkg{(k * 7919) % 997}-{'na' if sd == 'noarch' else 'cf'}{k}"
    version = f"{j // 6 + 1}.{j % 6}.{k % 10}"
    build = f"h{(k * 2654435761 + j) % 16**8:08x}_{j % 4}"
    ext = ".tar.bz2" if i % 5 == 0 else ".conda"
    fn = f"{name}-{version}-{build}{ext}"
    digest = hashlib.sha256(f"{sd}/{fn}".encode()).hexdigest()
    na = f', "noarch": "{noarch or "python"}"' if sd == "noarch" else ""
    head = (
        f'{{"build": "{build}", "build_number": {j % 4}, "md5": "{digest[:32]}", "name": "{name}", '
        f'"sha256": "{digest}", "size": {1000 + (i * 131) % 5_000_000}, "subdir": "{sd}", '
        f'"timestamp": {1_600_000_000_000 + i * 1000}, "version": "{version}"{na}'
    )
    return fn, f'"{fn}": {head}{rest}}}'


def make_upstream(root: Path, scale: float) -> dict[str, int]:
    """Write ``<root>/<subdir>/repodata.json.zst`` for every subdir (once per scale); the record counts."""
    counts = {sd: max(1, int(n * scale)) for sd, n in SUBDIRS.items()}
    marker = root / "counts.json"
    if marker.is_file() and json.loads(marker.read_text()) == counts:
        return counts
    shapes = prepare_shapes(load_shapes())
    log(f"generating {sum(counts.values()):,} records ({len(shapes)} real shapes) under {root}")
    cctx = zstandard.ZstdCompressor(level=3, threads=1)
    for sd, n in counts.items():
        t0 = time.perf_counter()
        (root / sd).mkdir(parents=True, exist_ok=True)
        tmp = root / sd / "repodata.json.zst.tmp"
        with open(tmp, "wb") as raw, cctx.stream_writer(raw, closefd=False) as out:
            out.write(json.dumps({"info": {"subdir": sd}, "repodata_version": 1})[:-1].encode())
            for section, want_conda in (("packages", False), ("packages.conda", True)):
                out.write(f', "{section}": {{'.encode())
                first = True
                buf: list[str] = []
                for i in range(n):
                    if (i % 5 != 0) != want_conda:
                        continue
                    buf.append(synth_entry(shapes, sd, i, n)[1])
                    if len(buf) >= 10_000:
                        out.write(((" " if first else ", ") + ", ".join(buf)).encode())
                        buf, first = [], False
                if buf:
                    out.write(((" " if first else ", ") + ", ".join(buf)).encode())
                out.write(b"}")
            out.write(b', "removed": []}')
        tmp.replace(root / sd / "repodata.json.zst")
        log(
            f"  {sd}: {n:,} records, {(root / sd / 'repodata.json.zst').stat().st_size / 2**20:.0f} MiB zst, "
            f"{time.perf_counter() - t0:.0f} s"
        )
    marker.write_text(json.dumps(counts))
    return counts


class _Handler(SimpleHTTPRequestHandler):
    """Static files with an ETag (size + mtime) and 304s, like nginx; quiet."""

    def log_message(self, *args: Any) -> None:
        pass

    def send_head(self) -> Any:
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return None
        st = path.stat()
        etag = f'"{st.st_size:x}-{st.st_mtime_ns:x}"'
        if self.headers.get("If-None-Match") == etag:
            self.send_response(304)
            self.send_header("ETag", etag)
            self.end_headers()
            return None
        fh = open(path, "rb")  # noqa: SIM115 - closed by the base class
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(st.st_size))
        self.send_header("ETag", etag)
        self.end_headers()
        return fh


def serve_upstream(root: Path) -> None:
    handler = lambda *a, **kw: _Handler(*a, directory=str(root), **kw)  # noqa: E731
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    print(f"http://127.0.0.1:{srv.server_address[1]}", flush=True)
    srv.serve_forever()


# -- 2. condavault ---------------------------------------------------------------------------------------
class Server:
    """``condavault serve`` (with its worker, or ``--no-worker`` beside ``workers`` worker processes)."""

    def __init__(self, work: Path, db: str, workers: int) -> None:
        import shutil

        self.work = work
        self.data = work / "cv-data"
        shutil.rmtree(self.data, ignore_errors=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
        env.update(
            CONDAVAULT_LOG_LEVEL="INFO",
            CONDAVAULT_LOG_FORMAT="text",
            CONDAVAULT_JOB_LEASE_SECONDS="90",
            CONDAVAULT_UPSTREAM_ALLOW_LOOPBACK="true",
        )
        self.pg_name = None
        if db == "postgresql":
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.support.server import create_pg_database

            url, self.pg_name = create_pg_database()
            env["CONDAVAULT_DATABASE_URL"] = url
        self.env = env
        exe = str(Path(sys.executable).parent / "condavault")
        argv = [exe, "--data-dir", str(self.data), "serve", "--port", str(self.port)]
        if workers:
            argv.append("--no-worker")
        self.proc = Proc(argv, env=env, log_path=work / "condavault.log")
        self._wait_up()
        if db == "postgresql" and (self.data / "condavault.db").exists():
            raise RuntimeError("--db postgresql, but the server made a SQLite database: its URL was not passed")
        self.workers = [
            Proc([exe, "--data-dir", str(self.data), "worker"], env=env, log_path=work / f"worker{i}.log")
            for i in range(workers)
        ]
        self.token = (self.data / "admin-token").read_text().strip()
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=600)

    def _wait_up(self) -> None:
        deadline = time.monotonic() + 120
        while True:
            with suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code < 500:
                    return
            if self.proc.p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"condavault did not start; see {self.work / 'condavault.log'}")
            time.sleep(0.3)

    def procs(self) -> list[Proc]:
        return [self.proc, *self.workers]

    def pids(self) -> list[int]:
        return [pid for p in self.procs() if p.p.poll() is None for pid in p.pids()]

    def stop(self) -> None:
        self.http.close()
        for p in self.procs():
            p.stop()
        if self.pg_name:
            from tests.support.server import drop_pg_database

            drop_pg_database(self.pg_name)


class Sampler(threading.Thread):
    """Sum of VmRSS over the server's processes every 0.1 s; the peak; CPU seconds from /proc."""

    def __init__(self, server: Server) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.peak_kb = 0
        self.hwm_kb = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.1):
            pids = self.server.pids()
            self.peak_kb = max(self.peak_kb, sum(status_kb(p, "VmRSS") for p in pids))
            self.hwm_kb = max(self.hwm_kb, sum(status_kb(p, "VmHWM") for p in pids))

    def stop(self) -> None:
        self._halt.set()


def ok(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r


def run_mirror(srv: Server, name: str, full: bool = False, on_poll: Any = None) -> dict[str, Any]:
    r = ok(srv.http.post(f"/api/mirrors/{name}/runs", params={"full": full}))
    run_id = r.json()["id"]
    last = ""
    while True:
        run = srv.http.get(f"/api/mirrors/{name}/runs/{run_id}").json()
        taken = re.search(r"resumed by run (\d+)", run.get("error") or "")
        if run["status"] == "failed" and taken:  # its worker was killed: the run that took over goes on
            log(f"  run {run_id}: {run['error']}")
            run_id = int(taken.group(1))
            continue
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        if on_poll is not None:
            on_poll(run)
        msg = f"{run['status']} {run['phase']} {run.get('done_items')}"
        if msg != last:
            log(f"  run {run_id}: {msg}")
            last = msg
        time.sleep(1.0)


def latest_run(srv: Server, name: str) -> dict[str, Any]:
    return srv.http.get(f"/api/mirrors/{name}/runs", params={"limit": 1}).json()[0]


def count_published(srv: Server, channel: str, sd: str) -> int:
    """Records in the mirrored ``repodata.json`` of ``sd``: streamed and counted, never held whole."""
    import tempfile

    from condavault.channels.repodata_stream import iter_records

    with tempfile.TemporaryFile() as tmp:
        with httpx.stream("GET", f"{srv.url}/api/repo/{channel}/{sd}/repodata.json.zst", timeout=600) as r:
            r.raise_for_status()
            for chunk in r.iter_raw(1 << 20):
                tmp.write(chunk)
        tmp.seek(0)
        with zstandard.ZstdDecompressor().stream_reader(tmp) as fh:
            return sum(1 for _ in iter_records(fh))  # type: ignore[arg-type]


# -- 3. the run ------------------------------------------------------------------------------------------
def bench(args: argparse.Namespace) -> dict[str, Any]:
    work = args.work.resolve()
    up_root = work / f"upstream-{args.scale:g}"
    counts = make_upstream(up_root, args.scale)
    total = sum(counts.values())
    import subprocess

    upstream = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(up_root)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    assert upstream.stdout is not None
    up_url = upstream.stdout.readline().strip()
    res: dict[str, Any] = {"scale": args.scale, "records": total, "subdirs": counts, "db": args.db}
    res["workers"] = args.workers
    srv = Server(work, args.db, args.workers)
    try:
        ok(srv.http.post("/api/channels", json={"name": "cf", "privacy": "public"}))
        cfg = {
            "name": "conda-forge",
            "upstream": up_url,
            "channel": "cf",
            "subdirs": list(counts),
            "mode": "passive",
            "use_shards": False,
            "streamed": True,
        }
        ok(srv.http.post("/api/mirrors", json=cfg))
        sampler = Sampler(srv)
        sampler.start()
        killed: list[int] = []

        def maybe_kill(run: dict[str, Any]) -> None:
            if not args.kill_one or killed or len(srv.workers) < 2:
                return
            jobs = srv.http.get("/api/jobs", params={"kind": "mirror.subdir", "limit": 50}).json()
            jobs = jobs.get("jobs", jobs) if isinstance(jobs, dict) else jobs
            if any(j["state"] == "succeeded" for j in jobs):
                victim = srv.workers[1]
                log(f"  kill -9 worker 1 (pid {victim.pid})")
                os.kill(victim.pid, signal.SIGKILL)
                victim.p.wait()
                killed.append(victim.pid)

        la0 = os.getloadavg()
        log(f"first run: {total:,} records, {len(counts)} subdirs, db {args.db}, workers {args.workers or 'in serve'}")
        cpu0 = cpu_seconds(srv.pids())
        t0 = time.perf_counter()
        run = run_mirror(srv, "conda-forge", on_poll=maybe_kill)
        first = time.perf_counter() - t0
        cpu1 = cpu_seconds(srv.pids())
        la1 = os.getloadavg()
        sampler.stop()
        if run["status"] != "completed":
            raise RuntimeError(f"first run {run['status']}: {run.get('error')}")
        res["first_run_s"] = first
        res["first_run_cpu_s"] = cpu1 - cpu0 if not killed else None
        res["load_first"] = [la0[0], la1[0]]
        res["peak_rss_mib"] = sampler.peak_kb / 1024
        res["hwm_sum_mib"] = sampler.hwm_kb / 1024
        res["killed"] = bool(killed)
        res["run_counts"] = {k: v for k, v in run["counts"].items() if k != "subdirs"}
        wal = srv.data / "condavault.db-wal"  # its size is its high-water mark: a WAL never reset grows
        res["sqlite_wal_mib"] = wal.stat().st_size / 2**20 if wal.exists() else None
        log(
            f"first run {first:.0f} s, peak RSS {res['peak_rss_mib']:.0f} MiB (VmHWM sum {res['hwm_sum_mib']:.0f}), "
            f"server CPU {res['first_run_cpu_s'] or 0:.0f} s, SQLite WAL {res['sqlite_wal_mib'] or 0:.0f} MiB"
        )
        # count check: every subdir's published repodata lists every upstream record
        res["published"] = {sd: count_published(srv, "cf", sd) for sd in counts}
        res["count_ok"] = res["published"] == counts
        log(f"published counts {'match' if res['count_ok'] else 'DIFFER'}: {res['published']}")
        # the no-op re-sync
        la2 = os.getloadavg()
        t0 = time.perf_counter()
        noop = run_mirror(srv, "conda-forge")
        res["noop_s"] = time.perf_counter() - t0
        res["load_noop"] = [la2[0], os.getloadavg()[0]]
        res["noop_status"] = noop["status"]
        res["noop_unchanged"] = bool(noop["counts"].get("unchanged"))
        log(f"no-op re-sync {res['noop_s']:.1f} s ({noop['status']}, unchanged={res['noop_unchanged']})")
        jobs = srv.http.get("/api/jobs", params={"kind": "mirror.subdir", "limit": 100}).json()
        jobs = jobs.get("jobs", jobs) if isinstance(jobs, dict) else jobs
        res["subdir_jobs"] = [
            {k: (j.get("result") or {}).get(k) for k in ("subdir", "files", "indexed_passive", "present")}
            | {"attempts": j["attempts"], "worker": j.get("worker"), "state": j["state"]}
            | {k: (j.get("result") or {}).get(k) for k in ("fetch_seconds", "import_seconds", "index_seconds")}
            for j in jobs
        ]
    finally:
        srv.stop()
        upstream.terminate()
        upstream.wait()
    return res


def table(res: dict[str, Any]) -> str:
    def met(key: str, value: float) -> str:
        return "met" if value <= GOALS[key] else "**not met**"

    rows = [
        "| measurement | figure | goal | |",
        "|---|---|---|---|",
        f"| first run, {res['records']:,} records / 7 subdirs | {res['first_run_s']:.0f} s "
        f"(load {res['load_first'][0]:.1f} → {res['load_first'][1]:.1f}) | ≤ 1,800 s | "
        f"{met('first_run_s', res['first_run_s'])} |",
        f"| peak RSS, server processes (sum of VmRSS) | {res['peak_rss_mib']:.0f} MiB (VmHWM sum "
        f"{res['hwm_sum_mib']:.0f}) | ≤ 2,048 MiB | {met('peak_rss_mib', res['peak_rss_mib'])} |",
        f"| no-op re-sync | {res['noop_s']:.1f} s (load {res['load_noop'][0]:.1f}) | ≤ 30 s | "
        f"{met('noop_s', res['noop_s'])} |",
        f"| every subdir's repodata lists every record | {'yes' if res['count_ok'] else 'NO'} | all | "
        f"{'met' if res['count_ok'] else '**not met**'} |",
    ]
    head = "| subdir job | records | created | present | attempts | fetch s | import s | index s |"
    lines = ["\n".join(rows), "", head, "|---|---|---|---|---|---|---|---|"]
    for j in sorted(res["subdir_jobs"], key=lambda j: str(j.get("subdir"))):
        lines.append(
            f"| {j.get('subdir')} | {j.get('files') or 0:,} | {j.get('indexed_passive') or 0:,} | "
            f"{j.get('present') or 0:,} | {j['attempts']} | {j.get('fetch_seconds')} | {j.get('import_seconds')} | "
            f"{j.get('index_seconds')} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the 3.8 M records (0.1: 380 k)")
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--workers", type=int, default=0, help="worker processes beside `serve --no-worker` (0: serve's)")
    ap.add_argument("--kill-one", action="store_true", help="kill -9 one worker once a subdir is done")
    ap.add_argument("--work", type=Path, default=Path("/tmp/bench-conda-forge"))
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # internal: the upstream process
    args = ap.parse_args()
    if args.serve:
        serve_upstream(args.serve)
        return
    args.work.mkdir(parents=True, exist_ok=True)
    res = bench(args)
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
