"""Scale-out: 304 revalidations/s with 1, 2 and 3 web processes behind nginx, and cache invalidation latency
across processes.

1. For N in --webs (default 1,2,3): N ``condavault serve --no-worker`` processes on PostgreSQL behind
   Debian's nginx (the configuration of docs/operations.md, tests/support/nginx.py), wrk revalidating
   ``repodata.json.zst`` with ``If-None-Match`` through nginx; the peer, in the same run and alternately:
   the same nginx answering 304s for a static file of the same size (nginx alone, no condavault behind).
   Best of --rounds rounds each. Scaling ratio = req/s with N processes / req/s with 1.
2. Invalidation latency (2 web processes, PostgreSQL LISTEN/NOTIFY vs SQLite's 1 s cache lifetimes): a
   token used through web 1 (so web 1 caches it) is revoked through web 0; the time until web 1 answers 401.

    python benchmarks/bench_scaleout.py [--webs 1,2,3] [--seconds 8] [--rounds 2] [--json out.json]

Runs as root (installs wrk and nginx-light with apt-get when missing). Everything on one machine: wrk,
nginx and the web processes share its cores, so the scaling ratio is bounded by the core count; the load
average is printed with the results.
"""

from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.support.cluster import Cluster, start_cluster  # noqa: E402
from tests.support.nginx import start_nginx  # noqa: E402

PKG = "noarch/dependency-1.0-0.conda"
WRK_LUA = """
wrk.method = "GET"
wrk.headers["If-None-Match"] = '{etag}'
response = function(status, headers, body)
  if status ~= 304 then
    wrk.thread:set("bad", (wrk.thread:get("bad") or 0) + 1)
  end
end
"""


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def ensure_debs() -> None:
    missing = [
        pkg
        for tool, pkg in (("wrk", "wrk"), ("nginx", "nginx-light"))
        if not shutil.which(tool) and not Path(f"/usr/sbin/{tool}").exists()
    ]
    if missing:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)


def wrk(url: str, script: Path, seconds: int, conns: int = 64) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    res: dict[str, float] = {"rps": 0.0, "non2xx": 0.0, "errors": 0.0}
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Requests/sec:"):
            res["rps"] = float(line.split()[1])
        elif line.startswith("Non-2xx or 3xx responses:"):
            res["non2xx"] = float(line.split()[-1])
        elif line.startswith("Socket errors:"):
            parts = line.replace(",", "").split()
            res["errors"] = float(sum(int(parts[i + 1]) for i in range(2, len(parts) - 1, 2)))
    return res


def seed(cluster: Cluster, testdata: Path) -> None:
    with cluster.client(base=cluster.webs[0].url) as c:
        r = c.post("/api/channels", json={"name": "bench", "privacy": "public"})
        assert r.status_code == 201, r.text
        p = testdata / "packages" / PKG
        r = c.post("/api/channels/bench/files", params={"filename": p.name}, content=p.read_bytes())
        assert r.status_code in (200, 201), r.text


def revalidations(webs: int, work: Path, testdata: Path, seconds: int, rounds: int) -> dict[str, Any]:
    cluster = start_cluster(work / f"webs{webs}", "postgresql", webs=webs, workers=0)
    try:
        seed(cluster, testdata)
        zst = cluster.url + "/api/repo/bench/noarch/repodata.json.zst"
        body = httpx.get(zst, timeout=30)
        static = work / f"webs{webs}" / "repodata.json.zst"
        static.write_bytes(body.content)
        assert cluster.nginx is not None
        cluster.nginx.stop()  # the same nginx configuration, plus the static file: the reference
        cluster.nginx = start_nginx(
            cluster.root / "nginx2",
            [w.port for w in cluster.webs],
            cluster.data_dir / "blobs",
            access_log=False,
            workers=1,
            static_file=static,
        )
        peers = {
            "condavault": cluster.url + "/api/repo/bench/noarch/repodata.json.zst",
            "nginx": cluster.url + f"/static/{static.name}",
        }
        scripts = {}
        for label, url in peers.items():
            etag = httpx.get(url, timeout=30).headers["etag"]
            check = httpx.get(url, headers={"If-None-Match": etag}, timeout=30)
            assert check.status_code == 304, (label, check.status_code)
            scripts[label] = work / f"inm-{webs}-{label}.lua"
            scripts[label].write_text(WRK_LUA.format(etag=etag))
        best: dict[str, dict[str, float]] = {}
        for rnd in range(rounds):
            for label, url in peers.items():
                r = wrk(url, scripts[label], seconds)
                log(
                    f"  webs={webs} {label} round {rnd + 1}: {r['rps']:,.0f} req/s "
                    f"(non-304 {r['non2xx']:.0f}, socket errors {r['errors']:.0f})"
                )
                if r["rps"] > best.get(label, {}).get("rps", -1):
                    best[label] = r
        return {"webs": webs, **best, "load": os.getloadavg()}
    finally:
        cluster.stop()


def invalidation(backend: str, work: Path, samples: int) -> dict[str, Any]:
    cluster = start_cluster(work / f"inv-{backend}", backend, webs=2, workers=0)
    lat = []
    try:
        with cluster.client(base=cluster.webs[0].url) as admin0:
            r = admin0.post("/api/users", json={"username": "bench-user"})
            assert r.status_code == 201, r.text
            for _ in range(samples):
                r = admin0.post("/api/tokens", json={"user": "bench-user", "scopes": [{"scope": "read"}]})
                tok, tid = r.json()["token"], r.json()["id"]
                with cluster.client(tok, base=cluster.webs[1].url) as user1:
                    assert user1.get("/api/whoami").status_code == 200
                    t0 = time.monotonic()
                    assert admin0.delete(f"/api/tokens/{tid}").status_code == 200
                    while user1.get("/api/whoami").status_code != 401:
                        if time.monotonic() - t0 > 10:
                            raise RuntimeError("not invalidated within 10 s")
                    lat.append(time.monotonic() - t0)
                time.sleep(0.1)
    finally:
        cluster.stop()
    lat.sort()
    return {"backend": backend, "p50_ms": statistics.median(lat) * 1000, "max_ms": lat[-1] * 1000, "samples": samples}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--webs", default="1,2,3", help="web process counts to measure")
    ap.add_argument("--seconds", type=int, default=8, help="wrk duration per round")
    ap.add_argument("--rounds", type=int, default=2, help="rounds per peer (best kept)")
    ap.add_argument("--samples", type=int, default=20, help="invalidation latency samples per backend")
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--only-invalidation", action="store_true", help="skip the 304 measurements")
    args = ap.parse_args()
    ensure_debs()
    testdata = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata"))
    out: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-scaleout-") as tmp:
        work = Path(tmp)
        out["invalidation"] = [invalidation(b, work, args.samples) for b in ("postgresql", "sqlite")]
        for inv in out["invalidation"]:
            log(f"invalidation {inv['backend']}: p50 {inv['p50_ms']:.0f} ms, max {inv['max_ms']:.0f} ms")
        out["revalidate"] = (
            []
            if args.only_invalidation
            else [revalidations(int(n), work, testdata, args.seconds, args.rounds) for n in args.webs.split(",")]
        )
    base = out["revalidate"][0]["condavault"]["rps"] if out["revalidate"] else 0.0
    print(
        "| web processes | condavault 304/s via nginx | nginx alone 304/s | ratio to nginx | scaling vs 1 | load avg |"
    )
    print("|---|---|---|---|---|---|")
    for r in out["revalidate"]:
        cv, ng = r["condavault"]["rps"], r["nginx"]["rps"]
        print(f"| {r['webs']} | {cv:,.0f} | {ng:,.0f} | {cv / ng:.2f}× | {cv / base:.2f}× | {r['load'][0]:.2f} |")
    for inv in out["invalidation"]:
        print(
            f"invalidation across processes ({inv['backend']}): p50 {inv['p50_ms']:.0f} ms, "
            f"max {inv['max_ms']:.0f} ms over {inv['samples']} token revocations"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
