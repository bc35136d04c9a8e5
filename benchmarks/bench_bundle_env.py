"""Environment bundles (``condavault bundle env``): the two costs of writing one, each beside its floor.

1. **Copy**: :func:`condavault.airgap.env.write_env_bundle` copies N package blobs out of the blob store,
   hashing each (sha256) while copying, writes the folder's repodata and environment files, fsyncs and
   renames. The peer is the practical floor for the same files in the same run: ``cp`` of the blob files
   into a folder, then ``sha256sum`` of the copies (two passes, no fsync, no repodata). Goal: >= 0.7x
   its throughput.
2. **Solve**: the bundle solves in a child process (py-rattler can crash at interpreter shutdown, see
   ``condavault.airgap.solver``). The peer is the same py-rattler solve in-process, on the same
   synthetic conda-forge-like repodata (``_synth.synth_names``). Goal: the child costs <= 1 s more.

    /work/venv/bin/python benchmarks/bench_bundle_env.py            # 400 x 512 KB files, 100 k records
    /work/venv/bin/python benchmarks/bench_bundle_env.py --quick    # 100 x 512 KB, 20 k records

Prints ``metric | condavault | peer | ratio | goal | met?``. Absolute times drift on the shared machine;
each side runs ``--repeat`` times alternately and the best run counts.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _synth import synth_names
from condavault.airgap.env import EnvPlan, EnvRequest, Package, write_env_bundle
from condavault.airgap.solver import solve_in_child
from condavault.storage.local import LocalBlobStore


def _blobs(root: Path, n: int, size: int) -> tuple[LocalBlobStore, list[Package]]:
    store = LocalBlobStore(root / "blobs")
    packages = []
    for i in range(n):
        data = os.urandom(size)
        sha = hashlib.sha256(data).hexdigest()
        store.put_bytes(data, sha)
        name, fn = f"pkg{i:05d}", f"pkg{i:05d}-1.0-h0_0.conda"
        frag = json.dumps(
            {
                "name": name,
                "version": "1.0",
                "build": "h0_0",
                "build_number": 0,
                "depends": [],
                "subdir": "linux-64",
                "sha256": sha,
                "size": size,
            }
        )
        packages.append(Package("bench", "linux-64", fn, name, "1.0", "h0_0", sha, None, size, frag, None, True))
    return store, packages


def bench_copy(work: Path, n: int, size: int, repeat: int) -> dict[str, float]:
    store, packages = _blobs(work, n, size)
    total = n * size
    ours, floor = [], []
    for r in range(repeat):
        out = work / f"env{r}"
        plan = EnvPlan(
            EnvRequest(channels=["bench"], platform="linux-64", output=out, specs=["x"]), packages, "solve", ["bench"]
        )
        t = time.perf_counter()
        write_env_bundle(store, plan)
        ours.append(time.perf_counter() - t)
        dest = work / f"cp{r}"
        dest.mkdir()
        files = [str(store.local_path(p.sha256)) for p in packages]
        t = time.perf_counter()
        subprocess.run(["cp", *files, str(dest)], check=True)
        subprocess.run(["sha256sum", *[str(dest / Path(f).name) for f in files]], check=True, stdout=subprocess.DEVNULL)
        floor.append(time.perf_counter() - t)
    return {
        "mb": total / 1e6,
        "ours_s": min(ours),
        "floor_s": min(floor),
        "ours_mbs": total / 1e6 / min(ours),
        "floor_mbs": total / 1e6 / min(floor),
    }


def _repodata(path: Path, n_records: int) -> None:
    packages: dict[str, Any] = {}
    for name, version, build, deps in synth_names(n_records):
        packages[f"{name}-{version}-{build}.conda"] = {
            "name": name,
            "version": version,
            "build": build,
            "build_number": 0,
            "depends": deps,
            "subdir": "linux-64",
            "sha256": "0" * 64,
            "md5": "0" * 32,
            "size": 1000,
            "timestamp": 1700000000000,
        }
    packages["libgcc-ng-13.2.0-h0_0.conda"] = {
        "name": "libgcc-ng",
        "version": "13.2.0",
        "build": "h0_0",
        "build_number": 0,
        "depends": [],
        "subdir": "linux-64",
        "sha256": "1" * 64,
        "size": 1000,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"info": {"subdir": "linux-64"}, "packages": {}, "packages.conda": packages}))
    noarch = path.parent.parent / "noarch" / "repodata.json"
    noarch.parent.mkdir(parents=True, exist_ok=True)
    noarch.write_text(json.dumps({"info": {"subdir": "noarch"}, "packages": {}, "packages.conda": {}}))


def _in_process(specs: list[str], sources: list[tuple[str, str, str]]) -> int:
    import rattler

    sparse = [rattler.SparseRepoData(rattler.Channel(u), sd, p) for u, sd, p in sources]
    records = asyncio.run(rattler.solve_with_sparse_repodata(specs, sparse))
    return len(records)


def bench_solve(work: Path, n_records: int, repeat: int) -> dict[str, float]:
    base = work / "repo"
    _repodata(base / "linux-64" / "repodata.json", n_records)
    sources = [(base.as_uri() + "/", sd, str(base / sd / "repodata.json")) for sd in ("linux-64", "noarch")]
    specs = ["pkg00007", "pkg00010", "pkg00123"]
    ours, peer = [], []
    n = 0
    for _ in range(repeat):
        t = time.perf_counter()
        n = len(solve_in_child(specs, sources, []))
        ours.append(time.perf_counter() - t)
        t = time.perf_counter()
        assert _in_process(specs, sources) == n
        peer.append(time.perf_counter() - t)
    return {"records": n_records, "solved": n, "ours_s": min(ours), "peer_s": min(peer)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--files", type=int)
    ap.add_argument("--size-kb", type=int, default=512)
    ap.add_argument("--records", type=int)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    files = args.files or (100 if args.quick else 400)
    records = args.records or (20_000 if args.quick else 100_000)
    with tempfile.TemporaryDirectory(prefix="bench-bundle-env-") as d:
        copy = bench_copy(Path(d), files, args.size_kb * 1024, args.repeat)
        solve = bench_solve(Path(d), records, args.repeat)
    rows = [
        (
            f"copy {files} files, {copy['mb']:.0f} MB (MB/s)",
            f"{copy['ours_mbs']:.0f}",
            f"{copy['floor_mbs']:.0f}",
            copy["ours_mbs"] / copy["floor_mbs"],
            ">= 0.7x",
            copy["ours_mbs"] / copy["floor_mbs"] >= 0.7,
        ),
        (
            f"solve {solve['solved']} of {records} records (s)",
            f"{solve['ours_s']:.2f}",
            f"{solve['peer_s']:.2f}",
            solve["ours_s"] / solve["peer_s"],
            "<= +1 s",
            solve["ours_s"] - solve["peer_s"] <= 1.0,
        ),
    ]
    print("| metric | condavault | peer | ratio | goal | met? |")
    print("|---|---|---|---|---|---|")
    for metric, ours, peer, ratio, goal, met in rows:
        print(f"| {metric} | {ours} | {peer} | {ratio:.2f}x | {goal} | {'yes' if met else 'NO'} |")
    if args.json:
        args.json.write_text(json.dumps({"copy": copy, "solve": solve}, indent=2))


if __name__ == "__main__":
    main()
