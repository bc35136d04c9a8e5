"""The mirror benchmark: sync speed beside conda-mirror, no-op re-sync, and plan time on real repodata.

    /work/venv/bin/python benchmarks/bench_mirror.py [--quick] [--db sqlite|postgresql] [--no-peer] [--json out.json]

1. **Full sync** of a loopback upstream of N tiny valid ``.conda`` files (N = 10 k; ``--quick``: 1 k),
   served by one static HTTP server, into an empty condavault channel (active mode: download, verify,
   ingest through the one ingest path, index) beside ``conda-mirror`` 0.10 (its own venv under
   ``benchmarks/.work/``) mirroring the same upstream into a directory.
2. **No-op re-sync** of a 100 k-record upstream (``--quick``: 10 k), passive mode (metadata only):
   the first run indexes every record; the figure is the second run with nothing changed (ETag 304),
   plus a forced full re-plan (``--full``: parse, plan, diff the stored plan) for reference.
3. **Plan time** for the real ``defaults-r/linux-64`` repodata with 8 filters including
   dependency-consistent pruning: ``compute_plan`` alone, and a dry run through condavault (read
   upstream, plan, persist one decision per file).

Prints one table and rewrites the "## Mirrors" section of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from tests.support.static_channel import StaticChannel  # noqa: E402

from _synth import make_conda, synth_names  # noqa: E402

WORK = HERE / ".work"
PEER_VENV = WORK / "conda-mirror-venv"
PERF_DOC = REPO / "docs" / "performance.md"
SECTION = "## Mirrors"
TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", REPO.parent / "shared" / "testdata"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- the upstreams ------------------------------------------------------------------------------------
def make_package_upstream(root: Path, n: int) -> Path:
    marker = root / f".done-{n}"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    sd = root / "linux-64"
    sd.mkdir(parents=True)
    t = time.perf_counter()
    pkgs = {}
    for name, version, build, _deps in synth_names(n):
        rec = make_conda(sd, name, version, build, "linux-64", [])
        pkgs[rec.pop("fn")] = rec
    (sd / "repodata.json").write_text(
        json.dumps({"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": pkgs})
    )
    (root / "noarch").mkdir()
    (root / "noarch" / "repodata.json").write_text(json.dumps({"info": {"subdir": "noarch"}, "packages": {}}))
    marker.touch()
    log(f"generated {n} .conda files in {time.perf_counter() - t:.1f} s")
    return root


def make_metadata_upstream(root: Path, n: int) -> Path:
    """A repodata-only upstream (passive mirrors never fetch the files)."""
    marker = root / f".done-{n}"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    (root / "linux-64").mkdir(parents=True)
    pkgs = {}
    for i, (name, version, build, deps) in enumerate(synth_names(n)):
        pkgs[f"{name}-{version}-{build}.conda"] = {
            "name": name,
            "version": version,
            "build": build,
            "build_number": int(build.rsplit("_", 1)[-1]),
            "depends": deps,
            "subdir": "linux-64",
            "license": "BSD-3-Clause",
            "timestamp": 1_700_000_000_000 + i,
            "md5": f"{i:032x}",
            "sha256": f"{i:064x}",
            "size": 1000 + i,
        }
    (root / "linux-64" / "repodata.json").write_text(
        json.dumps({"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": pkgs})
    )
    (root / "noarch").mkdir()
    (root / "noarch" / "repodata.json").write_text(json.dumps({"info": {"subdir": "noarch"}, "packages": {}}))
    marker.touch()
    return root


# -- condavault ---------------------------------------------------------------------------------------
class Vault:
    """An in-process condavault (Context, no HTTP server: the mirror runs in a job like in `serve`)."""

    def __init__(self, data_dir: Path, db: str) -> None:
        from condavault.config import load_settings
        from condavault.context import Context
        from condavault.db import migrate

        self.pg_name = None
        url = f"sqlite:///{data_dir / 'condavault.db'}"
        if db == "postgresql":
            from tests.support.server import create_pg_database

            url, self.pg_name = create_pg_database()
        self.settings = load_settings(data_dir=data_dir, database_url=url, log_format="text", log_level="WARNING")
        migrate.upgrade(self.settings.db_url)
        self.ctx = Context.build(self.settings)

    def mirror(self, name: str, upstream: str, **cfg: Any) -> None:
        from condavault.channels.services import create_channel
        from condavault.mirror import services as svc
        from condavault.mirror.config import MirrorConfig

        def work(s: Any) -> None:
            create_channel(s, name)
            svc.save_mirror(
                s,
                MirrorConfig(name=name, upstream=upstream, channel=name, subdirs=["linux-64", "noarch"], **cfg),
                created_by="bench",
                replace=False,
            )

        self.ctx.db.run_write(work)

    def run(self, name: str, **kw: Any) -> tuple[float, dict[str, Any]]:
        from condavault.mirror.tasks import start_run

        t = time.perf_counter()
        out = start_run(self.ctx, name, background=False, **kw)
        dt = time.perf_counter() - t
        assert out["status"] == "completed", out
        return dt, out

    def close(self) -> None:
        self.ctx.close()
        if self.pg_name:
            from tests.support.server import drop_pg_database

            drop_pg_database(self.pg_name)


# -- conda-mirror -------------------------------------------------------------------------------------
def ensure_peer() -> Path | None:
    exe = PEER_VENV / "bin" / "conda-mirror"
    if exe.exists():
        return exe
    log("installing conda-mirror 0.10.0 into benchmarks/.work/conda-mirror-venv")
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    r = subprocess.run([str(PEER_VENV / "bin" / "pip"), "install", "-q", "conda-mirror==0.10.0"])
    return exe if r.returncode == 0 and exe.exists() else None


def run_peer(exe: Path, url: str, target: Path, timeout: float) -> float | None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    t = time.perf_counter()
    try:
        r = subprocess.run(
            [str(exe), "--upstream-channel", url, "--target-directory", str(target), "--platform", "linux-64"],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        log(f"conda-mirror did not finish within {timeout:.0f} s")
        return None
    dt = time.perf_counter() - t
    if r.returncode != 0:
        log(f"conda-mirror failed ({r.returncode}): {r.stderr[-2000:]}")
        return None
    return dt


class UpstreamServer:
    """The static loopback upstream in its own process, so it does not share our GIL."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __enter__(self) -> UpstreamServer:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.root)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait()


def serve(root: Path) -> None:
    with StaticChannel(root) as chan:
        print(chan.url, flush=True)
        while True:
            time.sleep(3600)


# -- the three figures ---------------------------------------------------------------------------------
def bench_full_sync(n: int, db: str, peer: bool, results: dict[str, Any]) -> None:
    up_root = make_package_upstream(WORK / f"upstream-{n}", n)
    with UpstreamServer(up_root) as chan, tempfile.TemporaryDirectory(dir=WORK) as tmp:
        vault = Vault(Path(tmp) / "data", db)
        try:
            vault.mirror("full", chan.url)
            dt, out = vault.run("full")
            c = out["counts"]
            assert c["downloaded"] == n and not c.get("failed"), c
            results["full_sync"] = {
                "files": n,
                "seconds": dt,
                "files_per_s": n / dt,
                "plan_seconds": out["plan_seconds"],
                "apply_seconds": out["apply_seconds"],
                "bytes": c["bytes"],
                "concurrency": vault.settings.mirror_concurrency,
            }
            log(f"condavault full sync of {n} files: {dt:.1f} s ({n / dt:.0f} files/s)")
            dt2, _ = vault.run("full")
            results["full_sync"]["resync_seconds"] = dt2
            log(f"condavault re-sync (nothing changed): {dt2:.2f} s")
        finally:
            vault.close()
        if peer:
            exe = ensure_peer()
            if exe is None:
                results["peer"] = {"error": "conda-mirror could not be installed"}
                return
            timeout = max(600.0, 40 * results["full_sync"]["seconds"])
            pdt = run_peer(exe, chan.url, Path(tmp) / "peer", timeout)
            got = len(list((Path(tmp) / "peer" / "linux-64").glob("*.conda")))
            results["peer"] = {"seconds": pdt, "files": got, "timeout": timeout}
            if pdt:
                log(f"conda-mirror full sync: {pdt:.1f} s ({got} files)")


def bench_noop(n: int, db: str, results: dict[str, Any]) -> None:
    up_root = make_metadata_upstream(WORK / f"metadata-{n}", n)
    with UpstreamServer(up_root) as chan, tempfile.TemporaryDirectory(dir=WORK) as tmp:
        vault = Vault(Path(tmp) / "data", db)
        try:
            vault.mirror("meta", chan.url, mode="passive")
            first, out = vault.run("meta")
            assert out["counts"]["indexed_passive"] == n, out["counts"]
            log(f"passive first run ({n} records indexed): {first:.1f} s")
            noop = [vault.run("meta")[0] for _ in range(3)]
            full = [vault.run("meta", full=True)[0] for _ in range(2)]
            results["noop"] = {
                "records": n,
                "first_run_seconds": first,
                "noop_seconds": statistics.median(noop),
                "full_replan_seconds": statistics.median(full),
            }
            log(f"no-op re-sync: {statistics.median(noop):.2f} s; forced re-plan: {statistics.median(full):.2f} s")
        finally:
            vault.close()


FILTERS = {
    "exclude_specs": ["r-rjava", "r-base <3.3"],
    "exclude_licenses": ["agpl"],
    "date_from": "2016-01-01",
    "dedupe_conda_legacy": True,
    "exclude_prereleases": True,
    "max_size": "200MB",
    "keep_latest": 3,
    "prune_unsatisfiable": "drop",
}


def bench_plan(db: str, results: dict[str, Any]) -> None:
    from condavault.mirror.config import FilterConfig
    from condavault.mirror.plan import compute_plan

    src = TESTDATA / "repodata" / "defaults-r" / "linux-64" / "repodata.json"
    repodata = json.loads(src.read_text())
    upstream = {"linux-64": repodata}
    times = []
    plan = None
    for _ in range(3):
        t = time.perf_counter()
        plan = compute_plan(upstream, FilterConfig(**FILTERS))
        times.append(time.perf_counter() - t)
    assert plan is not None
    with tempfile.TemporaryDirectory(dir=WORK) as tmp:
        root = Path(tmp) / "up"
        (root / "linux-64").mkdir(parents=True)
        (root / "noarch").mkdir()
        (root / "linux-64" / "repodata.json").symlink_to(src)
        (root / "noarch" / "repodata.json").write_text('{"packages": {}}')
        vault = Vault(Path(tmp) / "data", db)
        try:
            vault.mirror("r", str(root), filters=FILTERS)
            dry, _ = vault.run("r", dry_run=True)
            dry2, _ = vault.run("r", dry_run=True)
        finally:
            vault.close()
    results["plan"] = {
        "records": len(plan.decisions),
        "kept": len(plan.kept),
        "dropped": plan.dropped_counts,
        "compute_plan_seconds": statistics.median(times),
        "dry_run_seconds": dry,
        "dry_run_again_seconds": dry2,
        "filters": len(FILTERS),
    }
    log(
        f"plan defaults-r linux-64 ({len(plan.decisions)} records): "
        f"{statistics.median(times):.2f} s; dry run {dry:.2f} s"
    )


# -- output ------------------------------------------------------------------------------------------
def table(results: dict[str, Any], args: argparse.Namespace) -> str:
    rows = []
    fs = results.get("full_sync")
    if fs:
        peer = results.get("peer") or {}
        ratio = (
            f"{peer['seconds'] / fs['seconds']:.1f}x faster"
            if peer.get("seconds")
            else (peer.get("error") or "peer not run")
        )
        rows.append(
            (
                f"Full sync, {fs['files']:,} tiny .conda (loopback)",
                f"{fs['seconds']:.1f} s ({fs['files_per_s']:.0f} files/s)",
                f"conda-mirror 0.10: {peer['seconds']:.1f} s" if peer.get("seconds") else "-",
                ratio,
                "≥ 10x faster",
            )
        )
        rows.append(("Re-sync of the same, nothing changed", f"{fs['resync_seconds']:.2f} s", "-", "-", ""))
    no = results.get("noop")
    if no:
        rows.append(
            (
                f"Passive first run, {no['records']:,} records (metadata only)",
                f"{no['first_run_seconds']:.1f} s",
                "-",
                "-",
                "",
            )
        )
        rows.append(
            (f"No-op re-sync, {no['records']:,} records (ETag 304)", f"{no['noop_seconds']:.2f} s", "-", "-", "≤ 3 s")
        )
        rows.append(
            (f"Forced re-plan (--full), {no['records']:,} records", f"{no['full_replan_seconds']:.2f} s", "-", "-", "")
        )
    pl = results.get("plan")
    if pl:
        rows.append(
            (
                f"Plan defaults-r linux-64 ({pl['records']:,} records, {pl['filters']} filters incl. pruning)",
                f"{pl['compute_plan_seconds']:.2f} s compute_plan",
                f"dry run {pl['dry_run_seconds']:.2f} s (then {pl['dry_run_again_seconds']:.2f} s)",
                "-",
                "",
            )
        )
    head = ("Measurement", "condavault", "peer", "ratio", "goal")
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def write_doc(tbl: str, results: dict[str, Any], args: argparse.Namespace) -> None:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    pl = results.get("plan") or {}
    conc = (results.get("full_sync") or {}).get("concurrency", "(default)")
    body = (
        f"{SECTION}\n\n"
        f"Measured {when} with `benchmarks/bench_mirror.py{' --quick' if args.quick else ''} --db {args.db}` on "
        f"{platform.machine()} ({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end of the run), "
        f"Python {platform.python_version()}, mirror_concurrency {conc}. Peers run in the same process tree on the "
        "same loopback upstream (a Python `ThreadingHTTPServer`).\n\n"
        f"{tbl}\n\n"
        "* Full sync = fetch repodata, plan, persist one decision per file, download with bounded concurrency, "
        "verify sha256 + size, validate each archive and store it through the one ingest path, then publish the "
        "index once and wait for it. conda-mirror downloads one file at a time and validates md5 + size.\n"
        "* No-op re-sync: every subdir answers 304 to the stored ETag, the config hash and the channel's file count "
        "are those of the last clean run, so no plan is computed. The forced re-plan parses the repodata, plans and "
        "diffs against the stored plan (writing nothing when nothing changed).\n"
        "* The full sync downloads on up to `mirror_concurrency` connections (the loopback upstream answers each "
        "request after ~40 ms: it writes headers and body separately, so Nagle's algorithm waits for the client's "
        "delayed ACK; conda-mirror, one request at a time, pays that per file), checks each archive as it arrives "
        "and stores batches of files (one blob fsync barrier and one DB transaction per batch); the sweep leaves "
        "the channel's index to the run, which publishes it once at its end.\n"
        f"* Plan filters: {', '.join(f'`{k}`' for k in FILTERS)}; dropped per filter: {pl.get('dropped')}.\n"
    )
    text = PERF_DOC.read_text() if PERF_DOC.exists() else "# Performance\n"
    start = text.find(SECTION + "\n")
    if start >= 0:
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + body + (text[nxt + 1 :] if nxt >= 0 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + body
    PERF_DOC.parent.mkdir(parents=True, exist_ok=True)
    PERF_DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1 k files / 10 k records instead of 10 k / 100 k")
    ap.add_argument("--db", default="sqlite", choices=["sqlite", "postgresql"])
    ap.add_argument("--no-peer", action="store_true", help="skip conda-mirror")
    ap.add_argument("--only", default="sync,noop,plan", help="comma list of: sync, noop, plan")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--no-doc", action="store_true", help="do not update docs/performance.md")
    ap.add_argument("--merge", type=Path, help="start from the results of an earlier --json (re-run parts)")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # internal: the upstream process
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    WORK.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(","))
    results: dict[str, Any] = json.loads(args.merge.read_text()) if args.merge else {}
    if "sync" in only:
        bench_full_sync(1000 if args.quick else 10_000, args.db, not args.no_peer, results)
    if "noop" in only:
        bench_noop(10_000 if args.quick else 100_000, args.db, results)
    if "plan" in only:
        bench_plan(args.db, results)
    tbl = table(results, args)
    print(tbl)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    if not args.no_doc:
        write_doc(tbl, results, args)


if __name__ == "__main__":
    main()
