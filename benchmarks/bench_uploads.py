"""Bulk uploads beside "copy into a folder + one rattler-index run" (issue 11, finding 8).

    .venv/bin/python benchmarks/bench_uploads.py [--files 1000] [--rounds 3] [--db sqlite,postgresql]
                                                 [--workers 1] [--per-file 200] [--json out.json]

N tiny valid ``.conda`` files (``_synth.py``, conda-forge-like names and dependencies; a new set of files
for every case and round, so the server stores bytes it has not seen) are uploaded into
an empty channel of a fresh ``condavault serve`` (one process, or ``--workers N`` processes as operations.md
advises for a machine with N cores; on SQLite or a fresh PostgreSQL
database), and the clock stops when the upload command has returned and ``linux-64/repodata.json`` lists
every file ("uploaded and served"):

* **serial CLI** -- one ``condavault upload CHANNEL <N files>`` (one upload batch: the CLI's defaults,
  256 files per request, 4 requests in flight, the index published once at the end);
* **8 parallel clients** -- eight API clients at once (threads of this process, like the issue's "8
  parallel API clients"), N/8 files each, each its own upload batch (64 files per request, then commit);
* **one request per file** (``--per-file M``, for reference: the path every upload took before batches)
  -- M files, one ``POST /api/channels/{c}/files`` each, waiting for the index each time, 8 clients.

The peer, in the same run on the same files: copy them into ``<folder>/linux-64`` and run
``rattler.index.index_fs`` once (py-rattler, the same engine as ``rattler-index``; it writes
``repodata.json``, ``.zst`` and shards, as condavault does). The peer and condavault run alternately,
``--rounds`` times; the table gives medians (and the ratio of the best rounds), with the load average
at the start and end of each measurement (the machine is shared and noisy). Also printed: the CPU
seconds each side used (condavault: the server process plus its clients; the peer: this process's
rattler threads), which other load on the machine disturbs far less than wall time. Goal: condavault
at most 1.5x the peer's time; bar: 3x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _synth import make_conda, synth_names  # noqa: E402

WORK = HERE / ".work"
CLI = [sys.executable, "-m", "condavault"]
PG_ADMIN = os.environ.get("CONDAVAULT_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def make_file_sets(folder: Path, n: int, sets: int) -> list[list[Path]]:
    """``sets`` sets of ``n`` files, no two alike (one listing of ``n * sets`` records, sliced): every
    measurement uploads bytes the server has not stored yet (a blob seen before is only touched, not
    written, which a repeated round would otherwise measure)."""
    marker = folder / f".done-{n}x{sets}"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        listing = synth_names(n * sets)
        for i in range(sets):
            (folder / f"set-{i}").mkdir(parents=True)
            for name, version, build, deps in listing[i * n : (i + 1) * n]:
                make_conda(folder / f"set-{i}", name, version, build, "linux-64", deps)
        marker.touch()
    return [sorted((folder / f"set-{i}").glob("*.conda")) for i in range(sets)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``condavault serve`` in a subprocess on a fresh data folder (and a fresh PostgreSQL database)."""

    def __init__(self, root: Path, db: str, workers: int = 1) -> None:
        self.data = root / f"data-{db}"
        shutil.rmtree(self.data, ignore_errors=True)
        self.pg: str | None = None
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
        env["CONDAVAULT_LOG_LEVEL"] = "WARNING"
        if db == "postgresql":
            import psycopg

            self.pg = f"cvbench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'CREATE DATABASE "{self.pg}"')
            base = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
            env["CONDAVAULT_DATABASE_URL"] = f"{base}/{self.pg}"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--data-dir", str(self.data), "--port", str(port), "--workers", str(workers)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if (self.data / "admin-token").exists() and httpx.get(f"{self.url}/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.token = (self.data / "admin-token").read_text().strip()
        self.env = {**env, "CONDAVAULT_URL": self.url, "CONDAVAULT_TOKEN": self.token}
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=600)

    def channel(self) -> str:
        name = f"b{uuid.uuid4().hex[:8]}"
        self.http.post("/api/channels", json={"name": name}).raise_for_status()
        return name

    def served(self, channel: str) -> int:
        r = self.http.get(f"/api/repo/{channel}/linux-64/repodata.json")
        return len(r.json().get("packages.conda", {})) if r.status_code == 200 else 0

    def cpu(self) -> float:
        """CPU seconds the server used so far (user + system): its process and every live descendant
        (the worker processes of ``--workers N``), with the waited-for children counted by the kernel."""
        stats: dict[int, list[str]] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stats[int(entry.name)] = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
        tree, todo = set(), [self.proc.pid]
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo += [p for p, f in stats.items() if int(f[1]) == pid and p not in tree]
        ticks = sum(
            int(stats[p][11]) + int(stats[p][12]) + int(stats[p][13]) + int(stats[p][14]) for p in tree if p in stats
        )
        return ticks / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=60)
        if self.pg:
            import psycopg

            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg}" WITH (FORCE)')


def self_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


Timing = tuple[float, float]  # wall seconds, CPU seconds


def run_peer(files: list[Path], root: Path) -> Timing:
    import rattler
    from rattler import Platform

    folder = root / f"peer-{uuid.uuid4().hex[:6]}"
    cpu = self_cpu()
    t = time.perf_counter()
    (folder / "linux-64").mkdir(parents=True)
    for f in files:
        shutil.copy(f, folder / "linux-64" / f.name)
    asyncio.run(rattler.index.index_fs(folder, target_platform=Platform("linux-64")))
    took = time.perf_counter() - t
    cpu = self_cpu() - cpu
    listed = json.loads((folder / "linux-64" / "repodata.json").read_text())
    assert len(listed.get("packages.conda", {})) == len(files), "the peer did not index every file"
    shutil.rmtree(folder)
    return took, cpu


def run_cli(server: Server, files: list[Path]) -> Timing:
    """One ``condavault upload`` of every file."""
    channel = server.channel()
    cpu, server_cpu = children_cpu(), server.cpu()
    t = time.perf_counter()
    p = subprocess.run([*CLI, "upload", channel, *map(str, files)], env=server.env, capture_output=True)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    took = time.perf_counter() - t
    cpu = children_cpu() - cpu + server.cpu() - server_cpu
    assert server.served(channel) == len(files), "not every file is served"
    return took, cpu


def run_api_clients(server: Server, files: list[Path], clients: int) -> Timing:
    """``clients`` API clients at once, each its own upload batch of len(files)/clients files."""
    channel = server.channel()
    groups = [files[i::clients] for i in range(clients)]

    def client(group: list[Path]) -> None:
        with httpx.Client(base_url=server.url, headers=server.http.headers, timeout=600) as c:
            batch = c.post(f"/api/channels/{channel}/uploads").json()["id"]
            for i in range(0, len(group), 64):
                part = [("file", (f.name, f.read_bytes(), "application/octet-stream")) for f in group[i : i + 64]]
                r = c.post(f"/api/channels/{channel}/uploads/{batch}/files", files=part)
                r.raise_for_status()
                assert all(x["status"] == "created" for x in r.json()["files"]), r.text[:500]
            c.post(f"/api/channels/{channel}/uploads/{batch}/commit").raise_for_status()

    cpu, server_cpu = self_cpu(), server.cpu()
    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, groups))
    took = time.perf_counter() - t
    cpu = self_cpu() - cpu + server.cpu() - server_cpu
    assert server.served(channel) == len(files), "not every file is served"
    return took, cpu


def run_per_file(server: Server, files: list[Path], clients: int) -> float:
    """The path before batches: one request per file, each waiting for the index."""
    channel = server.channel()

    def one(f: Path) -> None:
        r = server.http.post(f"/api/channels/{channel}/files", params={"filename": f.name}, content=f.read_bytes())
        r.raise_for_status()

    t = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(one, files))
    took = time.perf_counter() - t
    assert server.served(channel) == len(files)
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--per-file", type=int, default=0, help="also time M files uploaded one request each")
    ap.add_argument("--workers", type=int, default=1, help="condavault serve --workers N (web + job processes)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="uploads-", dir=WORK))
    # a fresh set per (case, round) on each server, and one for --per-file (sets repeat across databases:
    # each database has a server of its own)
    file_sets = make_file_sets(WORK / "upload-files", args.files, 2 * args.rounds + 1)
    files = file_sets[0]
    results: dict[str, Any] = {"files": len(files), "rounds": [], "cpus": os.cpu_count(), "workers": args.workers}
    rows = []
    try:
        for db in [d.strip() for d in args.db.split(",") if d.strip()]:
            server = Server(root, db, args.workers)
            try:
                for c, (label, fn) in enumerate(
                    (
                        ("serial CLI", lambda fs, s=server: run_cli(s, fs)),
                        ("8 parallel API clients", lambda fs, s=server: run_api_clients(s, fs, 8)),
                    )
                ):
                    ours: list[Timing] = []
                    peer: list[Timing] = []
                    loads: list[float] = []
                    for r in range(args.rounds):
                        loads.append(os.getloadavg()[0])
                        fs = file_sets[c * args.rounds + r]
                        p = run_peer(fs, root)  # interleaved: both see the same moment of the machine
                        o = fn(fs)
                        loads.append(os.getloadavg()[0])
                        ours.append(o)
                        peer.append(p)
                        log(
                            f"{db} {label} round {r + 1} (load {loads[-2]:.1f} at start): condavault {o[0]:.2f} s "
                            f"(cpu {o[1]:.2f} s), peer {p[0]:.2f} s (cpu {p[1]:.2f} s): {o[0] / p[0]:.2f}x"
                        )
                        results["rounds"].append(
                            {"db": db, "case": label, "condavault": o, "peer": p, "load": loads[-2:]}
                        )
                    rows.append((db, label, ours, peer, loads))
                if args.per_file:
                    took = run_per_file(server, file_sets[-1][: args.per_file], 8)
                    log(f"{db} one request per file: {args.per_file} files in {took:.2f} s")
                    results.setdefault("per_file", {})[db] = {"files": args.per_file, "seconds": took}
            finally:
                server.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"\n{len(files)} small .conda files, uploaded and served "
        f"({args.rounds} rounds, peer and condavault alternately; condavault serve --workers {args.workers})\n"
    )
    print(
        "| database | case | condavault: median wall (CPU) | copy + rattler-index: median wall (CPU) | median ratio "
        "| ratio of bests | median CPU ratio | goal <= 1.5x (bar 3x) | load (min-max) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for db, label, ours, peer, loads in rows:
        med = statistics.median(o[0] / p[0] for o, p in zip(ours, peer, strict=True))
        cpu = statistics.median(o[1] / p[1] for o, p in zip(ours, peer, strict=True))
        best = min(o[0] for o in ours) / min(p[0] for p in peer)
        goal = "met" if med <= 1.5 else ("missed; under the bar" if med <= 3 else "missed")
        ow, oc = statistics.median(o[0] for o in ours), statistics.median(o[1] for o in ours)
        pw, pc = statistics.median(p[0] for p in peer), statistics.median(p[1] for p in peer)
        print(
            f"| {db} | {label} | {ow:.2f} s ({oc:.2f} s) | {pw:.2f} s ({pc:.2f} s) | {med:.2f}x | {best:.2f}x | "
            f"{cpu:.2f}x | {goal} | {min(loads):.1f}-{max(loads):.1f} |"
        )
    for db, pf in results.get("per_file", {}).items():
        print(
            f"\none request per file ({db}, 8 clients): {pf['files']} files in {pf['seconds']:.2f} s "
            f"({pf['files'] / pf['seconds']:.0f} files/s)"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
