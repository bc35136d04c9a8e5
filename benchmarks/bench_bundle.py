"""Air-gap bundles (issue 13): export and import throughput beside ``tar`` + ``sha256sum``, and an
incremental bundle on a large channel.

    .venv/bin/python benchmarks/bench_bundle.py [--files 10000] [--payload 20000] [--records 100000]
                                                [--new 100] [--json out.json]

1. **Throughput**: a channel of ``--files`` valid synthetic ``.conda`` files (``_synth.py``, about
   ``--payload`` bytes each) on a fresh data folder (SQLite). ``export`` = ``condavault bundle export``'s
   code (``airgap.export.export_bundle``); ``import`` = ``bundle import``'s (``airgap.importer``: signature,
   every file's sha256, every archive checked as an upload, blobs stored, records published in one
   transaction) into a second, empty data folder. The peer, in the same run on the same files:
   ``tar -cf`` of the folder + ``sha256sum`` of every file (export), and ``tar -xf`` + ``sha256sum`` of the
   extracted files (import). MB/s are of package bytes; ratio = our MB/s / peer MB/s (goal >= 0.7).
2. **Incremental**: a channel of ``--records`` records (bulk synthetic rows, metadata-only) exported and
   imported in full (set-up, timed for reference), then ``--new`` new files (with their bytes) exported
   with ``--since`` and imported on top: each timed (goal <= 5 s each).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO / "src"))
from _synth import conda_bytes, record_of, synth_names  # noqa: E402

WORK = HERE / ".work"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} load {os.getloadavg()[0]:.1f}] {msg}", file=sys.stderr, flush=True)


def context(root: Path, trusted: list[str] | None = None) -> Any:
    from condavault.config import load_settings
    from condavault.context import Context
    from condavault.db import migrate

    settings = load_settings(data_dir=root, worker=False, log_level="WARNING", trusted_keys=trusted or [])
    root.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(settings.db_url)
    return Context.build(settings, start_jobs=False)


def seed_files(ctx: Any, channel: str, folder: Path, n: int, payload: int, offset: int = 0) -> int:
    """``n`` synthetic packages: written to ``folder`` (the peer's input) and stored as blobs + records."""
    from condavault.channels.records import NewRecord, put_records
    from condavault.channels.services import create_channel, find_channel

    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    entries = []
    blobs = []
    for name, version, build, deps in synth_names(n + offset)[offset:]:
        data, idx = conda_bytes(name, version, build, "linux-64", deps, payload)
        fn = f"{name}-{version}-{build}.conda"
        (folder / fn).write_bytes(data)
        rec = record_of(data, idx)
        blobs.append((data, rec["sha256"]))
        entries.append(NewRecord("linux-64", fn, rec))
        total += len(data)
    ctx.blobs.put_many(blobs)
    with ctx.db.write_session() as s:
        ch = find_channel(s, channel) or create_channel(s, channel)
        for i in range(0, len(entries), 5000):
            put_records(s, ch, entries[i : i + 5000])
    return total


def seed_metadata(ctx: Any, channel: str, n: int) -> None:
    """``n`` metadata-only records (no bytes): a large channel's rows, inserted in bulk."""
    from condavault.channels.records import NewRecord, put_records
    from condavault.channels.services import create_channel

    with ctx.db.write_session() as s:
        ch = create_channel(s, channel)
        batch = []
        for name, version, build, deps in synth_names(n):
            rec = {
                "name": name,
                "version": version,
                "build": build,
                "build_number": 0,
                "depends": deps,
                "subdir": "linux-64",
                "license": "BSD-3-Clause",
                "timestamp": 1_700_000_000_000,
                "sha256": os.urandom(32).hex(),
                "md5": os.urandom(16).hex(),
                "size": 12345,
            }
            batch.append(NewRecord("linux-64", f"{name}-{version}-{build}.tar.bz2", rec, has_blob=False))
            if len(batch) == 5000:
                put_records(s, ch, batch)
                batch = []
        if batch:
            put_records(s, ch, batch)


def run(cmd: str, cwd: Path) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, shell=True, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def cpu(who: int = resource.RUSAGE_SELF) -> float:
    """CPU seconds (user + system) used so far by this process (every thread), or by its waited-for children:
    on a shared machine the steadier measure of the work done (wall time follows the load)."""
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def throughput(root: Path, files: int, payload: int) -> dict[str, Any]:
    from condavault.airgap.export import export_bundle
    from condavault.airgap.importer import Importer
    from condavault.signing.keys import load_or_create

    origin = context(root / "origin")
    pkgs = root / "pkgs" / "linux-64"
    log(f"seeding {files} files of ~{payload} bytes")
    total = seed_files(origin, "bench", pkgs, files, payload)
    origin.settle(timeout=600)  # the origin's own index work done before anything is timed
    mb = total / 1e6
    os.sync()
    load_start = round(os.getloadavg()[0], 1)
    # the peer: tar + sha256sum of the same files
    c = cpu(resource.RUSAGE_CHILDREN)
    peer_export = run("tar -cf ../peer.tar linux-64", root / "pkgs")
    peer_export += run("find linux-64 -type f -print0 | xargs -0 sha256sum > ../peer.sha256", root / "pkgs")
    c_peer_export, c = cpu(resource.RUSAGE_CHILDREN) - c, cpu(resource.RUSAGE_CHILDREN)
    (root / "peer-x").mkdir()
    os.sync()  # before each timed step: no step pays for the write-back of the one before (blob stores sync)
    c = cpu(resource.RUSAGE_CHILDREN)
    peer_import = run("tar -xf ../pkgs/../peer.tar", root / "peer-x")
    peer_import += run("find linux-64 -type f -print0 | xargs -0 sha256sum > ../peer-x.sha256", root / "peer-x")
    c_peer_import = cpu(resource.RUSAGE_CHILDREN) - c
    log("export")
    os.sync()
    t, c = time.perf_counter(), cpu()
    rep = export_bundle(origin, root / "bundle", channels=["bench"])
    t_export, c_export = time.perf_counter() - t, cpu() - c
    key = load_or_create(origin.settings).public.text
    origin.close()  # nothing of the origin's runs beside the import (this process's CPU is the import's)
    inside = context(root / "inside", [key])
    log("import")
    os.sync()
    t, c = time.perf_counter(), cpu()
    irep = Importer(inside).run(root / "bundle")
    t_import, c_import = time.perf_counter() - t, cpu() - c
    t = time.perf_counter()
    inside.settle(timeout=600)
    t_index = time.perf_counter() - t
    assert irep.status == "imported" and irep.stored_blobs == files, irep
    inside.close()
    return {
        "files": files,
        "mb": round(mb, 1),
        "bundle_files": rep.files,
        "export_s": round(t_export, 2),
        "import_s": round(t_import, 2),
        "index_after_import_s": round(t_index, 2),
        "peer_export_s": round(peer_export, 2),
        "peer_import_s": round(peer_import, 2),
        "export_mb_s": round(mb / t_export, 1),
        "import_mb_s": round(mb / t_import, 1),
        "peer_export_mb_s": round(mb / peer_export, 1),
        "peer_import_mb_s": round(mb / peer_import, 1),
        "export_ratio": round(peer_export / t_export, 2),
        "import_ratio": round(peer_import / t_import, 2),
        "cpu_s": {  # user + system CPU seconds: ours (every thread) and the peer's (its processes)
            "export": round(c_export, 2),
            "peer_export": round(c_peer_export, 2),
            "import": round(c_import, 2),
            "peer_import": round(c_peer_import, 2),
        },
        "import_phases": irep.phases,
        "load_start": load_start,
        "load_end": round(os.getloadavg()[0], 1),
    }


def incremental(root: Path, records: int, new: int, payload: int) -> dict[str, Any]:
    from condavault.airgap.export import export_bundle
    from condavault.airgap.importer import Importer
    from condavault.signing.keys import load_or_create

    origin = context(root / "origin")
    log(f"seeding {records} records")
    t = time.perf_counter()
    seed_metadata(origin, "big", records)
    t_seed = time.perf_counter() - t
    key = load_or_create(origin.settings).public.text
    inside = context(root / "inside", [key])
    log("full export + import (set-up)")
    t = time.perf_counter()
    full = export_bundle(origin, root / "full", channels=["big"])
    t_full_export = time.perf_counter() - t
    t = time.perf_counter()
    Importer(inside).run(root / "full")
    t_full_import = time.perf_counter() - t
    inside.settle(timeout=900)
    log(f"{new} new files, incremental export + import")
    seed_files(origin, "big", root / "new", new, payload, offset=records)
    t = time.perf_counter()
    inc = export_bundle(origin, root / "inc", channels=["big"], since=full.bundle_id)
    t_inc_export = time.perf_counter() - t
    t = time.perf_counter()
    irep = Importer(inside).run(root / "inc")
    t_inc_import = time.perf_counter() - t
    assert irep.status == "imported" and irep.records == new == inc.records, (irep, inc)
    t = time.perf_counter()
    inside.settle(timeout=600)
    t_index = time.perf_counter() - t
    origin.close()
    inside.close()
    return {
        "records": records,
        "new": new,
        "seed_s": round(t_seed, 1),
        "full_export_s": round(t_full_export, 2),
        "full_import_s": round(t_full_import, 2),
        "inc_export_s": round(t_inc_export, 2),
        "inc_import_s": round(t_inc_import, 2),
        "index_after_inc_s": round(t_index, 2),
        "inc_bundle_bytes": inc.bytes,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--payload", type=int, default=20_000)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--new", type=int, default=100)
    ap.add_argument("--only", choices=["throughput", "incremental"], help="run one part only")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="bundle-", dir=WORK))
    try:
        tp = throughput(root / "tp", args.files, args.payload) if args.only != "incremental" else None
        log(f"throughput: {tp}")
        inc = incremental(root / "inc", args.records, args.new, args.payload) if args.only != "throughput" else None
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if tp is not None:
        _print_throughput(tp)
    if inc is not None:
        _print_incremental(inc)
    if args.json:
        args.json.write_text(json.dumps({"throughput": tp, "incremental": inc}, indent=2))


def _print_throughput(tp: dict[str, Any]) -> None:
    print(f"\nThroughput: {tp['files']} files, {tp['mb']} MB (one run, load {os.getloadavg()[0]:.1f})")
    print(f"{'':10}{'condavault':>14}{'tar+sha256sum':>16}{'ratio':>8}")
    print(f"{'export':10}{tp['export_mb_s']:>10} MB/s{tp['peer_export_mb_s']:>12} MB/s{tp['export_ratio']:>8}")
    print(f"{'import':10}{tp['import_mb_s']:>10} MB/s{tp['peer_import_mb_s']:>12} MB/s{tp['import_ratio']:>8}")
    c = tp["cpu_s"]
    print(f"CPU s (user + sys), ours vs peer: export {c['export']} vs {c['peer_export']}", end="")
    print(f"; import {c['import']} vs {c['peer_import']}")
    print(f"(import then indexed the {tp['files']} records in {tp['index_after_import_s']} s)")
    print(f"import phases (s): {tp['import_phases']}; load {tp['load_start']} -> {tp['load_end']}")


def _print_incremental(inc: dict[str, Any]) -> None:
    print(f"\nIncremental: {inc['new']} new files on a {inc['records']}-record channel")
    print(f"{'':18}{'seconds':>10}{'goal':>8}")
    print(f"{'export --since':18}{inc['inc_export_s']:>10}{'<= 5':>8}")
    print(f"{'import':18}{inc['inc_import_s']:>10}{'<= 5':>8}")
    print(
        f"(set-up: full export {inc['full_export_s']} s, full import {inc['full_import_s']} s; index after the "
        f"incremental {inc['index_after_inc_s']} s)"
    )


if __name__ == "__main__":
    main()
