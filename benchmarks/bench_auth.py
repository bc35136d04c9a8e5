"""Access-control figures: 304 revalidations (private channel + token in the URL vs public) and the
cost of the download audit (no loss at 1,000 downloads/s; throughput with audit on vs off).

Runs real ``condavault serve`` processes and loads them with ``wrk`` (Debian package) and an
httpx/asyncio loop for the fixed-rate run.

    python benchmarks/bench_auth.py [--duration 8] [--connections 32] [--rounds 6]
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

ROOT = Path(__file__).resolve().parents[1]
TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", ROOT.parent / "shared" / "testdata"))
PKG = TESTDATA / "packages" / "noarch" / "dependency-1.0-0.conda"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Serve:
    """``condavault serve`` in a subprocess with its own data folder."""

    def __init__(self, workdir: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.data = workdir / f"data-{self.port}"
        full = {k: v for k, v in os.environ.items() if not k.startswith("CONDAVAULT_")}
        full.update({"CONDAVAULT_DATA_DIR": str(self.data), "CONDAVAULT_LOG_LEVEL": "WARNING", **env})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "condavault", "serve", "--port", str(self.port)],
            env=full,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise RuntimeError("server did not start")
        self.token = (self.data / "admin-token").read_text().strip()
        self.admin = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.token}"}, timeout=60)

    def setup(self) -> dict[str, str]:
        """A public and a private channel with one package, a reader's token for the private one."""
        a = self.admin
        for name, privacy in (("pub", "public"), ("priv", "private")):
            a.post("/api/channels", json={"name": name, "privacy": privacy}).raise_for_status()
            a.post(
                f"/api/channels/{name}/files", params={"filename": PKG.name}, content=PKG.read_bytes()
            ).raise_for_status()
        a.post("/api/users", json={"username": "reader"}).raise_for_status()
        a.post("/api/channels/priv/grants", json={"role": "viewer", "user": "reader"}).raise_for_status()
        r = a.post("/api/tokens", json={"user": "reader", "scopes": [{"scope": "read"}]})
        r.raise_for_status()
        token = r.json()["token"]
        etag = a.get("/api/repo/pub/noarch/repodata.json").headers["etag"]
        etag_priv = httpx.get(f"{self.url}/api/repo/t/{token}/priv/noarch/repodata.json").headers["etag"]
        return {"token": token, "etag": etag, "etag_priv": etag_priv}

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def downloads_counted(self) -> int:
        text = httpx.get(f"{self.url}/metrics").text
        m = re.search(r"^condavault_package_downloads_total (\S+)$", text, re.M)
        return int(float(m.group(1))) if m else 0

    def audit_rows(self, channel: str) -> int:
        r = self.admin.get("/api/audit/downloads", params={"channel": channel, "limit": 1_000_000})
        r.raise_for_status()
        return len(r.json())

    def stop(self) -> None:
        self.admin.close()
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wrk(url: str, duration: int, connections: int, headers: dict[str, str] | None = None) -> tuple[float, int]:
    """Requests per second and total requests."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if bad:
        raise RuntimeError(f"{bad.group(1)} failed responses from {url}")
    return rps, total


def fixed_rate(url: str, rate: int, seconds: float, threads: int = 8) -> int:
    """Send ``rate`` GETs per second for ``seconds`` (paced, keep-alive, stdlib http.client so the
    load generator stays cheap); returns how many got a 200."""
    parts = urlsplit(url)
    n = int(rate * seconds)
    counts = [0] * threads
    start = time.monotonic() + 0.2

    def worker(k: int) -> None:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        for i in range(k, n, threads):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            conn.request("GET", parts.path)
            resp = conn.getresponse()
            resp.read()
            counts[k] += resp.status == 200

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.monotonic() - start
    print(f"  fixed-rate run: {n} requests in {elapsed:.1f}s ({n / elapsed:.0f}/s)", file=sys.stderr)
    return sum(counts)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--rate-seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=6, help="interleaved public/private 304 rounds")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install -y wrk")
    work = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    on = Serve(work)
    off = Serve(work, CONDAVAULT_AUDIT_DOWNLOADS="false")
    try:
        s_on = on.setup()
        off.setup()
        rows: list[tuple[str, str]] = []
        # 1. 304 revalidations, public vs private with the token in the URL: interleaved rounds (the order
        # alternates), throughput and the server's own CPU time per request (what the token path costs,
        # untouched by other load on a shared machine)
        pub_url = f"{on.url}/api/repo/pub/noarch/repodata.json"
        priv_url = f"{on.url}/api/repo/t/{s_on['token']}/priv/noarch/repodata.json"
        runs: dict[str, list[tuple[float, float]]] = {"public": [], "private": []}
        for i in range(args.rounds):
            order = [("public", pub_url, s_on["etag"]), ("private", priv_url, s_on["etag_priv"])]
            for label, url, etag in order if i % 2 == 0 else order[::-1]:
                cpu0 = on.cpu_seconds()
                rps, total = wrk(url, args.duration, args.connections, {"If-None-Match": etag})
                runs[label].append((rps, (on.cpu_seconds() - cpu0) / total * 1e6))
        ratios = sorted(p[0] / q[0] for p, q in zip(runs["private"], runs["public"], strict=True))
        cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
        best = {k: max(r for r, _ in v) for k, v in runs.items()}
        rows += [
            ("304 revalidations/s, public channel (best round)", f"{best['public']:,.0f}"),
            ("304 revalidations/s, private channel, token in URL (best round)", f"{best['private']:,.0f}"),
            (
                f"private / public req/s (median of {args.rounds} interleaved rounds; best-of ratio)",
                f"{statistics.median(ratios):.2f} ({best['private'] / best['public']:.2f}) (goal >= 0.90)",
            ),
            (
                "server CPU per 304, public / private (median)",
                f"{cpu['public']:.1f} µs / {cpu['private']:.1f} µs: private costs "
                f"{cpu['private'] / cpu['public']:.2f}x, i.e. {cpu['public'] / cpu['private']:.2f} of the public rate",
            ),
        ]
        # 2. audit at a fixed 1,000 downloads/s: every download is a row
        url = f"{on.url}/api/repo/t/{s_on['token']}/priv/noarch/{PKG.name}"
        before = on.audit_rows("priv")
        served = fixed_rate(url, args.rate, args.rate_seconds)
        time.sleep(1.0)
        recorded = on.audit_rows("priv") - before
        rows += [
            (f"downloads at {args.rate}/s for {args.rate_seconds:.0f}s: served", f"{served:,}"),
            ("  audit rows written", f"{recorded:,} ({'no loss' if recorded == served else 'LOSS'})"),
        ]
        # 3. package serving throughput, audit on vs off (interleaved, best of 2)
        tp_on, tp_off = [], []
        for _ in range(2):
            tp_off.append(wrk(f"{off.url}/api/repo/pub/noarch/{PKG.name}", args.duration, args.connections)[0])
            c0, r0 = on.downloads_counted(), on.audit_rows("pub")
            tp_on.append(wrk(f"{on.url}/api/repo/pub/noarch/{PKG.name}", args.duration, args.connections)[0])
            time.sleep(1.0)
            c1, r1 = on.downloads_counted(), on.audit_rows("pub")
            assert r1 - r0 == c1 - c0, f"audit lost rows under full load: {r1 - r0} rows for {c1 - c0} downloads"
        drop = 1 - max(tp_on) / max(tp_off)
        rows += [
            ("package downloads/s, audit off", f"{max(tp_off):,.0f}"),
            ("package downloads/s, audit on", f"{max(tp_on):,.0f}"),
            ("throughput drop with audit", f"{drop * 100:.1f} % (goal <= 10 %)"),
            ("audit rows under full load", f"= downloads served ({c1 - c0:,} in the last run)"),
        ]
        width = max(len(k) for k, _ in rows)
        print(f"\n{'measure'.ljust(width)} | value")
        print(f"{'-' * width}-|------")
        for k, v in rows:
            print(f"{k.ljust(width)} | {v}")
        digest = hashlib.sha256(PKG.read_bytes()).hexdigest()[:12]
        print(
            f"\n(wrk -t2 -c{args.connections} -d{args.duration}s; {os.cpu_count()} CPUs; SQLite; "
            f"package {PKG.name}, {PKG.stat().st_size} bytes, sha256 {digest})"
        )
    finally:
        on.stop()
        off.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
