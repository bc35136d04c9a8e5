"""Hostile clients: peak server RSS while anonymous clients stream endless bodies at every route.

A real ``condavault serve`` (production settings: JSON logs at INFO, default limits and timeouts) gets a
public channel with one package. Then ``--clients`` anonymous clients (20) each walk every route of the
OpenAPI schema plus the repo paths, in a loop for ``--seconds`` (30), sending an endless chunked body to
each, while one normal client (repodata GET, channel list, a password login) measures latency. The
server's RSS is sampled every 50 ms; the figure is its peak over the idle RSS measured after a warm-up
(every route once, then 5 s of four normal clients).

The peer is the same program before this change (``--baseline REF``, default ``main``: its ``src/`` from
``git archive``), run the same way in the same run; it is stopped early if its RSS passes ``--rss-cap``
(1.5 GB) so the shared machine survives it.

    /work/venv/bin/python benchmarks/bench_hostile.py [--quick] [--db postgresql] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", REPO.parent / "shared" / "testdata"))
PKG = TESTDATA / "packages" / "noarch" / "dependency-1.0-0.conda"
CHUNK = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    port: int
    token: str
    url: str


def start(src: Path, work: Path, db_url: str | None) -> Server:
    data = work / "data"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
    env.update(PYTHONPATH=str(src), CONDAVAULT_LOG_FORMAT="json", CONDAVAULT_LOG_LEVEL="INFO")
    if db_url:
        env["CONDAVAULT_DATABASE_URL"] = db_url
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - the child writes it
    proc = subprocess.Popen(
        [sys.executable, "-m", "condavault", "serve", "--data-dir", str(data), "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=work,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    token = (data / "admin-token").read_text().strip()
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
        c.post("/api/channels", json={"name": "bench"}).raise_for_status()
        c.post("/api/channels/bench/files", params={"filename": PKG.name}, content=PKG.read_bytes()).raise_for_status()
        c.post("/api/users", json={"username": "normal", "password": "normal-password"}).raise_for_status()
    return Server(proc, port, token, url)


def routes(url: str) -> list[tuple[str, str]]:
    spec = httpx.get(f"{url}/api/openapi.json").json()
    out = [("GET", "/api/repo/bench/noarch/repodata.json"), ("GET", f"/api/repo/bench/noarch/{PKG.name}")]
    for path, ops in spec["paths"].items():
        for method in ops:
            concrete = path.replace("{name}", "bench").replace("{subdir}", "noarch")
            while "{" in concrete:
                a, b = concrete.index("{"), concrete.index("}")
                concrete = concrete[:a] + "x" + concrete[b + 1 :]
            out.append((method.upper(), concrete))
    return out


@dataclass
class Attack:
    requests: int = 0
    bytes_sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def attacker(port: int, targets: list[tuple[str, str]], stop: threading.Event, out: Attack, offset: int) -> None:
    i = offset
    while not stop.is_set():
        method, path = targets[i % len(targets)]
        i += 1
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode()
        sent, status = 0, "none"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.sendall(head)
                while not stop.is_set():
                    if select.select([s], [], [], 0)[0]:
                        break
                    s.sendall(CHUNK)
                    sent += len(CHUNK)
                s.settimeout(5)
                first = s.recv(64)
                status = first.split(b" ", 2)[1].decode() if first.startswith(b"HTTP/") else "closed"
        except OSError as exc:
            status = type(exc).__name__
        with out.lock:
            out.requests += 1
            out.bytes_sent += sent
            out.statuses[status] = out.statuses.get(status, 0) + 1


def normal_client(url: str, stop: threading.Event, latencies: list[float], failures: list[str]) -> None:
    with httpx.Client(base_url=url, timeout=30) as c:
        while not stop.is_set():
            started = time.monotonic()
            try:
                for r in (
                    c.get("/api/repo/bench/noarch/repodata.json"),
                    c.get("/api/channels"),
                    c.post(
                        "/api/auth/login",
                        json={"username": "normal", "password": "normal-password", "issue_token": False},
                    ),
                ):
                    if r.status_code != 200:
                        failures.append(f"{r.request.url.path}: {r.status_code}")
            except httpx.HTTPError as exc:
                failures.append(type(exc).__name__)
            latencies.append(time.monotonic() - started)
            stop.wait(0.2)


def measure(label: str, src: Path, args: argparse.Namespace, db_url: str | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-hostile-{label}-"))
    server = start(src, work, db_url)
    try:
        targets = routes(server.url)
        with httpx.Client(base_url=server.url, timeout=30) as c:  # warm-up: every route once, normally
            for method, path in targets:
                c.request(method, path)
        # then what the normal client does, from a few threads (argon2 keeps ~19 MiB per malloc arena), so
        # "idle" is the server as normal clients leave it and the peak above it is the attack's
        base_lat: list[float] = []
        stop = threading.Event()
        warm = [threading.Thread(target=normal_client, args=(server.url, stop, base_lat, [])) for _ in range(4)]
        for t in warm:
            t.start()
        time.sleep(5)
        stop.set()
        for t in warm:
            t.join()
        time.sleep(1.0)
        idle = rss_kib(server.proc.pid)
        attack = Attack()
        stop = threading.Event()
        latencies: list[float] = []
        failures: list[str] = []
        threads = [
            threading.Thread(target=attacker, args=(server.port, targets, stop, attack, i * 7), daemon=True)
            for i in range(args.clients)
        ]
        threads.append(threading.Thread(target=normal_client, args=(server.url, stop, latencies, failures)))
        load_before = load()
        for th in threads:
            th.start()
        peak, capped = idle, False
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            peak = max(peak, rss_kib(server.proc.pid))
            if peak > args.rss_cap * 1024:
                capped = True
                break
            time.sleep(0.05)
        stop.set()
        for th in threads:
            th.join(timeout=30)
        after = rss_kib(server.proc.pid)
        return {
            "label": label,
            "idle_mb": idle / 1024,
            "peak_mb": peak / 1024,
            "peak_over_idle_mb": (peak - idle) / 1024,
            "after_mb": after / 1024,
            "capped": capped,
            "attack_requests": attack.requests,
            "attack_gb_sent": attack.bytes_sent / 1e9,
            "statuses": attack.statuses,
            "normal_requests": len(latencies),
            "normal_failures": len(failures),
            "failure_kinds": sorted(set(failures)),
            "normal_p50_ms": 1000 * statistics.median(latencies) if latencies else None,
            "normal_max_ms": 1000 * max(latencies) if latencies else None,
            "idle_p50_ms": 1000 * statistics.median(base_lat) if base_lat else None,
            "load_before": load_before,
            "load_after": load(),
        }
    finally:
        server.proc.kill()
        server.proc.wait()
        shutil.rmtree(work, ignore_errors=True)


def baseline_src(ref: str) -> Path:
    out = Path(tempfile.mkdtemp(prefix="bench-hostile-baseline-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "src"


def pg_database() -> tuple[str, str]:
    import uuid

    import psycopg

    name = f"bench_hostile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}", name


def drop_pg(name: str) -> None:
    import psycopg

    with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--baseline", default="main", help="git ref of the peer (the code before this change)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument("--rss-cap", type=int, default=1536, help="MB at which the peer is stopped")
    ap.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    ap.add_argument("--quick", action="store_true", help="10 clients for 10 s")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.clients, args.seconds = 10, 10.0
    runs = []
    for label, src in [("condavault", REPO / "src"), *([] if args.no_baseline else [("baseline", None)])]:
        db_url, pg_name = pg_database() if args.db == "postgresql" else (None, None)
        try:
            runs.append(measure(label, src or baseline_src(args.baseline), args, db_url))
        finally:
            if pg_name:
                drop_pg(pg_name)
    cur = runs[0]
    base = runs[1] if len(runs) > 1 else None
    print(f"\n{args.clients} anonymous clients x {args.seconds:.0f} s of endless bodies at every route ({args.db})")
    print("| metric | condavault | peer (before) | ratio | goal | met? |")
    print("|---|---|---|---|---|---|")

    def row(name: str, key: str, goal: str, ok: bool | None, fmt: str = "{:.1f}") -> None:
        c = cur[key]
        b = base[key] if base else None
        ratio = f"{b / c:.1f}x" if base and isinstance(c, int | float) and c and b is not None else "–"
        cs = fmt.format(c) if c is not None else "–"
        bs = (
            fmt.format(b) + (" (stopped at cap)" if base and base["capped"] and key.startswith("peak") else "")
            if b is not None
            else "–"
        )
        print(f"| {name} | {cs} | {bs} | {ratio} | {goal} | {'yes' if ok else 'no' if ok is not None else '–'} |")

    row("peak RSS over idle (MB)", "peak_over_idle_mb", "< 50", cur["peak_over_idle_mb"] < 50)
    row("idle RSS (MB)", "idle_mb", "", None)
    row("RSS after the attack (MB)", "after_mb", "", None)
    row("attack bytes sent (GB)", "attack_gb_sent", "", None, "{:.2f}")
    row("attack requests answered", "attack_requests", "", None, "{:d}")
    row("normal client p50 (ms)", "normal_p50_ms", "", None)
    row("normal client max (ms)", "normal_max_ms", "< 5000", (cur["normal_max_ms"] or 0) < 5000)
    row("normal client failures", "normal_failures", "0", cur["normal_failures"] == 0, "{:d}")
    print(
        f"\nload (1 min) before/after: condavault {cur['load_before']}/{cur['load_after']}"
        + (f", peer {base['load_before']}/{base['load_after']}" if base else "")
    )
    print("attack answers:", cur["statuses"], "| peer:", base["statuses"] if base else "–")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=1))


if __name__ == "__main__":
    main()
