"""Issue 15 (conda-forge scale): memory, cost per change and the serving hot path, beside peers in one run.

    /work/venv/bin/python benchmarks/bench_scale.py [--sizes 10000,100000,300000] [--rattler-max 100000]
        [--uploads 10] [--seconds 8] [--json out.json] [--write-doc]

For each size (records in one subdir, synthetic conda-forge-like shapes from ``_synth``):

1. a fresh ``condavault serve`` (one process); ``import-repodata`` in 10 k chunks, streamed (time per
   chunk: first and last -- linear means flat);
2. index update after one upload (p50 over ``--uploads``): from the start of the POST until the server
   begins to answer with a ``repodata.json`` that lists the file, with a shard index naming a shard that
   lists it, and with a ``current_repodata.json`` that lists it (one polling thread per file; the time
   of the response headers, the body read and checked after); beside rattler-index (``index_fs``) adding one file
   to a channel folder of the same size (up to ``--rattler-max`` records: it needs the real files);
3. peak RSS of the server (VmHWM, /proc) over import, indexing and uploads.

At the largest size, serving beside Debian's nginx on the same files (one worker each): 304
revalidations of ``repodata.json.zst`` and GETs of one cached shard (wrk), req/s and server CPU per
request from ``/proc/<pid>/stat`` (utime + stime over the run / requests).

Reuses bench_foundation's processes, samplers, nginx and wrk helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import msgpack
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_foundation as bf
from _synth import conda_bytes, synth_names
from bench_foundation import (
    SUBDIR,
    WRK_LUA,
    Condavault,
    Nginx,
    RssSampler,
    cpu_seconds,
    ensure_debs,
    machine,
    make_channel_dir,
    pct,
    raise_nofile,
    rattler_index,
    rattler_latencies,
    wrk,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
PERF_DOC = REPO_ROOT / "docs" / "performance.md"
SECTION = "## Scale (issue 15)"
CHUNK = 10_000


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def synth_records(n: int) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for i, (name, version, build, deps) in enumerate(synth_names(n)):
        fn = f"{name}-{version}-{build}.conda"
        out.append(
            (
                fn,
                {
                    "name": name,
                    "version": version,
                    "build": build,
                    "build_number": 0,
                    "depends": deps,
                    "constrains": [],
                    "license": "MIT",
                    "subdir": SUBDIR,
                    "timestamp": 1700000000000 + i,
                    "sha256": f"{i:064x}",
                    "md5": f"{i:032x}",
                    "size": 1000 + i,
                },
            )
        )
    return out


def import_chunks(
    cv: Condavault, channel: str, records: list[tuple[str, dict[str, Any]]], chunk: int = CHUNK
) -> list[float]:
    cv.channel(channel)
    times = []
    for i in range(0, len(records), chunk):
        body = json.dumps({"info": {"subdir": SUBDIR}, "packages.conda": dict(records[i : i + chunk])}).encode()
        t = time.perf_counter()
        r = cv.http.post(
            f"/api/channels/{channel}/subdirs/{SUBDIR}/import",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        r.raise_for_status()
        times.append(time.perf_counter() - t)
    return times


def _lists(anon: httpx.Client, url: str, needle: bytes, etag: dict[str, str]) -> float | None:
    """When the server began to answer with a ``url`` that lists ``needle`` (perf_counter at the response
    headers; the body is read and checked after), or None when it does not list it yet."""
    with anon.stream("GET", url, headers={"If-None-Match": etag.get(url, "")}) as resp:
        at = time.perf_counter()
        if resp.status_code in (304, 404):  # 404: not published yet
            return None
        resp.raise_for_status()
        etag[url] = resp.headers["etag"]
        return at if needle in resp.read() else None


def _shard_lists(
    anon: httpx.Client, cv: Condavault, channel: str, name: str, fn: str, etag: dict[str, str]
) -> float | None:
    """As :func:`_lists` for the name's shard: the time the shard index that names a shard listing ``fn``
    began to be answered (a client fetches the content-addressed shard it names next)."""
    url = cv.repo(channel, f"{SUBDIR}/repodata_shards.msgpack.zst")
    with anon.stream("GET", url, headers={"If-None-Match": etag.get(url, "")}) as resp:
        at = time.perf_counter()
        if resp.status_code == 304:
            return None
        etag[url] = resp.headers["etag"]
        index = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(resp.read()), raw=False)
    sha = index["shards"].get(name)
    if sha is None:
        return None
    shard = anon.get(cv.repo(channel, f"{SUBDIR}/shards/{sha.hex()}.msgpack.zst"))
    data = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(shard.content), raw=False)
    return at if fn in data["packages.conda"] else None


def upload_latencies(cv: Condavault, channel: str, n: int, uploads: int, current: bool = True) -> dict[str, Any]:
    """Per upload, the time from the start of its POST until each index file lists it, as a client polling
    that file alone sees it: one polling thread per file (so a 116 MB download of one does not delay the
    others), each taking the moment the server began to answer with the new content (the response
    headers; the body is then read and checked)."""
    n_names = max(1, n // 20)
    kinds = ["repodata.json", "shard"] + (["current_repodata.json"] if current else [])
    got: dict[str, list[float]] = {k: [] for k in kinds}
    etags: dict[str, dict[str, str]] = {k: {} for k in kinds}  # one ETag cache per watcher: it sees every change
    cpu: list[float] = []  # server CPU seconds from the POST until every file lists the upload (/proc)
    clients = {k: httpx.Client(timeout=600) for k in kinds}

    def poll(kind: str, name: str, fn: str) -> float | None:
        if kind == "shard":
            return _shard_lists(clients[kind], cv, channel, name, fn, etags[kind])
        return _lists(clients[kind], cv.repo(channel, f"{SUBDIR}/{kind}"), f'"{fn}":'.encode(), etags[kind])

    try:
        for kind in kinds:
            poll(kind, "", "")  # the current ETags
        with ThreadPoolExecutor(len(kinds)) as pool:
            for i in range(uploads):
                name = f"pkg{(i * 7) % n_names:05d}"
                data, _ = conda_bytes(name, f"99.{i}.0", "h0_0", SUBDIR, ["libgcc-ng >=12"])
                fn = f"{name}-99.{i}.0-h0_0.conda"
                t0 = time.perf_counter()
                cpu0 = cpu_seconds(cv.proc.pids())

                def watch(kind: str, name: str = name, fn: str = fn, t0: float = t0) -> float:
                    while (at := poll(kind, name, fn)) is None:
                        if time.perf_counter() - t0 > 300:
                            raise RuntimeError(f"{fn} never appeared in {kind}")
                        time.sleep(0.01)
                    return at - t0

                cv.http.post(f"/api/channels/{channel}/files", params={"filename": fn}, content=data).raise_for_status()
                for kind, took in zip(kinds, pool.map(watch, kinds), strict=True):
                    got[kind].append(took)
                cpu.append(cpu_seconds(cv.proc.pids()) - cpu0)
    finally:
        for c in clients.values():
            c.close()
    out = {k: {"p50": pct(v, 0.5), "p95": pct(v, 0.95)} for k, v in got.items()}
    out["server_cpu"] = {"p50": pct(cpu, 0.5), "p95": pct(cpu, 0.95)}
    out.setdefault("current_repodata.json", {"p50": float("nan"), "p95": float("nan")})
    return out


def serving(cv: Condavault, channel: str, work: Path, seconds: int) -> dict[str, Any]:
    """304s of repodata.json.zst, GETs of one shard and whole GETs of the plain repodata.json (which
    condavault decompresses from its .zst as it sends it; nginx sends a file): condavault vs nginx (one
    worker each)."""
    root = work / "static"
    (root / SUBDIR / "shards").mkdir(parents=True, exist_ok=True)
    zst = httpx.get(cv.repo(channel, f"{SUBDIR}/repodata.json.zst"), timeout=600)
    (root / SUBDIR / "repodata.json.zst").write_bytes(zst.content)
    (root / SUBDIR / "repodata.json").write_bytes(zstandard.ZstdDecompressor().decompress(zst.content))
    index = msgpack.unpackb(
        zstandard.ZstdDecompressor().decompress(
            httpx.get(cv.repo(channel, f"{SUBDIR}/repodata_shards.msgpack.zst"), timeout=60).content
        ),
        raw=False,
    )
    sha = index["shards"]["pkg00001"].hex()
    shard_path = f"{SUBDIR}/shards/{sha}.msgpack.zst"
    (root / shard_path).write_bytes(httpx.get(cv.repo(channel, shard_path), timeout=60).content)
    bf.NGINX_CONF = bf.NGINX_CONF.replace("worker_processes 2;", "worker_processes 1;")  # one worker each
    ngx = Nginx(work, root)
    out: dict[str, Any] = {}
    try:
        for label, path in (
            ("304 repodata.json.zst", f"{SUBDIR}/repodata.json.zst"),
            ("cached shard GET", shard_path),
            ("plain repodata.json GET", f"{SUBDIR}/repodata.json"),
        ):
            row: dict[str, Any] = {}
            for who, base, pids in (
                ("condavault", cv.repo(channel, ""), cv.proc.pids),
                ("nginx", ngx.url + "/", ngx.proc.pids),
            ):
                url = base + path
                script = None
                if label.startswith("304"):
                    etag = httpx.get(url, timeout=60).headers["etag"]
                    script = work / f"{who}-304.lua"
                    script.write_text(WRK_LUA.format(etag=etag))
                before = cpu_seconds(pids())
                conns = 2 if label.startswith("plain") else 16  # whole files of up to hundreds of MB
                res = wrk(url, threads=1, conns=conns, seconds=seconds, script=script)
                cpu = cpu_seconds(pids()) - before
                reqs = res["rps"] * seconds
                row[who] = {"rps": res["rps"], "cpu_us": cpu / max(reqs, 1) * 1e6}
            out[label] = row
    finally:
        ngx.stop()
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = [int(x) for x in args.sizes.split(",")]
    res: dict[str, Any] = {
        "machine": machine(),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "sizes": {},
    }
    base = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    try:
        for n in sizes:
            work = base / f"n{n}"
            work.mkdir()
            log(f"{n:,} records: import")
            cv = Condavault(work, 1)
            sampler = RssSampler(cv.proc)
            sampler.start()
            row: dict[str, Any] = {"load_start": os.getloadavg()[0]}
            try:
                # in filename order, as an upstream repodata.json lists them: a chunk adds ~chunk/20 names
                sampler.phase = "import"
                chunks = import_chunks(cv, "big", sorted(synth_records(n)), args.chunk)
                log(f"{n:,} records: uploads")
                sampler.phase = "uploads"
                lat = upload_latencies(cv, "big", n, args.uploads, current=not args.no_current)
                row.update(
                    chunks_first=chunks[0],
                    chunks_last=chunks[-1],
                    chunks_total=sum(chunks),
                    chunks_tenths=[
                        round(sum(chunks[i : i + len(chunks) // 10]), 1)
                        for i in range(0, len(chunks), max(1, len(chunks) // 10))
                    ],
                    chunks=len(chunks),
                    latency=lat,
                )
                if n == sizes[-1] and not args.skip_serve:
                    log(f"{n:,} records: serving vs nginx")
                    row["serving"] = serving(cv, "big", work, args.seconds)
            finally:
                sampler.stop()
                row["peak_rss_mb"] = sampler.hwm_kb()[1] / 1024
                row["rss_by_phase_mb"] = {k: v / 1024 for k, v in sampler.phase_peaks.items()}
                if args.keep_logs:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    shutil.copy(work / "condavault.log", args.keep_logs / f"condavault-{n}.log")
                row["load_end"] = os.getloadavg()[0]
                cv.stop()
            if n <= args.rattler_max:
                log(f"{n:,} records: rattler-index")
                chan = work / "rattler"
                make_channel_dir(chan, n)
                big = n > 100_000  # see bf.rattler_index
                parallel, shards = (128, False) if big else (None, None)
                try:
                    rattler_index(chan, force=True, max_parallel=parallel, write_shards=shards)
                    row["rattler"] = rattler_latencies(chan, n, max(3, args.uploads // 3), parallel, shards)
                    row["rattler_shards"] = not big
                except Exception as exc:  # keep our own figures of this size
                    log(f"rattler-index failed: {exc!r}"[:300])
                finally:
                    shutil.rmtree(chan, ignore_errors=True)
            res["sizes"][str(n)] = row
            log(json.dumps(row, default=str))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return res


def table(res: dict[str, Any]) -> str:
    lines = [
        f"Measured {res['when']} on {res['machine']}.",
        "",
        "| records | import 10 k chunk first / last | repodata.json p50 | shard p50 | current_repodata p50 "
        "| rattler-index p50 | ratio (repodata.json) | server CPU per upload p50 | peak RSS | load avg start / end |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in res["sizes"].items():
        lat = r["latency"]
        rt = r.get("rattler", {}).get("p50")
        ratio = f"{rt / lat['repodata.json']['p50']:.0f}x" if rt else "n/a"
        shards = "" if r.get("rattler_shards", True) else " (no shards)"
        lines.append(
            f"| {int(n):,} | {r['chunks_first']:.2f} s / {r['chunks_last']:.2f} s "
            f"| {lat['repodata.json']['p50']:.2f} s "
            f"| {lat['shard']['p50']:.2f} s | {lat['current_repodata.json']['p50']:.2f} s "
            f"| {f'{rt:.2f} s' if rt else 'not run'}{shards} | {ratio} "
            f"| {lat.get('server_cpu', {}).get('p50', float('nan')):.2f} s | {r['peak_rss_mb']:.0f} MiB "
            f"| {r.get('load_start', 0):.1f} / {r.get('load_end', 0):.1f} |"
        )
    for n, r in res["sizes"].items():
        if "serving" not in r:
            continue
        lines += [
            "",
            f"Serving at {int(n):,} records, one worker each (wrk, 16 connections):",
            "",
            "| request | condavault req/s | nginx req/s | ratio | condavault CPU/req | nginx CPU/req | CPU ratio |",
            "|---|---|---|---|---|---|---|",
        ]
        for label, row in r["serving"].items():
            a, b = row["condavault"], row["nginx"]
            lines.append(
                f"| {label} | {a['rps']:,.0f} | {b['rps']:,.0f} | {a['rps'] / b['rps']:.2f}x "
                f"| {a['cpu_us']:.0f} us | {b['cpu_us']:.0f} us "
                f"| {a['cpu_us'] / max(b['cpu_us'], 0.01):.1f}x |"
            )
    return "\n".join(lines) + "\n"


def write_doc(text: str) -> None:
    doc = PERF_DOC.read_text()
    body = f"{SECTION}\n\nFrom `benchmarks/bench_scale.py` (peers in the same run).\n\n{text}"
    if SECTION in doc:
        start = doc.index(SECTION)
        nxt = doc.find("\n## ", start + len(SECTION))
        doc = doc[:start] + body + ("" if nxt < 0 else doc[nxt:])
    else:
        doc = doc.rstrip() + "\n\n" + body
    PERF_DOC.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,100000,300000")
    ap.add_argument("--rattler-max", type=int, default=100_000)
    ap.add_argument("--uploads", type=int, default=10)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--skip-serve", action="store_true")
    ap.add_argument("--chunk", type=int, default=CHUNK, help="records per import call")
    ap.add_argument("--no-current", action="store_true", help="do not wait for current_repodata.json")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--keep-logs", type=Path, help="copy each size's server log into this folder")
    ap.add_argument("--write-doc", action="store_true")
    args = ap.parse_args()
    raise_nofile()
    if not args.skip_serve:
        ensure_debs()
    res = run(args)
    text = table(res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.write_doc:
        write_doc(text)


if __name__ == "__main__":
    main()
