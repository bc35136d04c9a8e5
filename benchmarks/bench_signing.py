"""Cost of signatures and admission statements (docs/signing.md), in-process, beside the same work without them.

1. **Publishing**: ``compose_repodata`` of a subdir of N records (conda-forge-like fragments) with every
   record carrying a conda-content-trust ``signatures`` entry, beside the same subdir unsigned (ratio).
2. **Checking**: ``verify_content_trust`` per record (the ``only_signed`` filter and the outcome a mirror
   run stores), beside the plan's own per-record work it rides on (``FileRecord.ident`` + MatchSpec-free
   filters: a JSON round trip of the record).
3. **Admission statements**: signing one statement on request (``envelope``), beside reading the package
   row's worth of data it replaces at ingest (nothing: the peer is hashing the 1 MiB file, what a client
   does anyway to verify it).

Usage: ``python benchmarks/bench_signing.py [--quick] [--json FILE]``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from condavault.indexing import builder
from condavault.signing.admission import Admission, envelope
from condavault.signing.carry import signatures_json
from condavault.signing.keys import SigningKey
from condavault.signing.trust import canonserialize, verify_content_trust


def _records(n: int) -> dict[str, dict[str, Any]]:
    out = {}
    for i in range(n):
        name = f"pkg{i // 20}"
        fn = f"{name}-1.{i % 20}-h{i:07x}_0.conda"
        out[fn] = {
            "name": name,
            "version": f"1.{i % 20}",
            "build": f"h{i:07x}_0",
            "build_number": 0,
            "depends": ["python >=3.9,<3.13", "numpy >=1.23", f"lib{i % 7} >=2"],
            "license": "MIT",
            "md5": hashlib.md5(fn.encode()).hexdigest(),
            "sha256": hashlib.sha256(fn.encode()).hexdigest(),
            "size": 12345 + i,
            "subdir": "linux-64",
            "timestamp": 1700000000000 + i,
        }
    return out


def _best(fn: Any, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    n = 20_000 if args.quick else 100_000
    key = Ed25519PrivateKey.generate()
    kid = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
    recs = _records(n)
    sigs = {fn: {kid: {"signature": key.sign(canonserialize(r)).hex()}} for fn, r in recs.items()}

    def segments(signed: bool) -> dict[str, builder.Segment]:
        by_name: dict[str, list[builder.RecordRow]] = {}
        for fn, r in recs.items():
            row = builder.RecordRow(
                fn,
                r["name"],
                json.dumps(r, sort_keys=True, separators=(",", ":")),
                False,
                None,
                signatures_json(sigs[fn]) if signed else None,
            )
            by_name.setdefault(r["name"], []).append(row)
        return {k: builder.build_segment(v) for k, v in by_name.items()}

    plain, signed = segments(False), segments(True)
    t_plain = _best(lambda: builder.compose_repodata("linux-64", plain), 15)
    t_signed = _best(lambda: builder.compose_repodata("linux-64", signed), 15)
    size_plain = len(builder.compose_repodata("linux-64", plain))
    size_signed = len(builder.compose_repodata("linux-64", signed))
    t_seg_plain = _best(lambda: segments(False), 2)
    t_seg_signed = _best(lambda: segments(True), 2)

    sample = list(recs.items())[: min(n, 20_000)]
    trusted = {kid}
    t_verify = _best(lambda: [verify_content_trust(r, sigs[fn], trusted) for fn, r in sample], 3) / len(sample)
    t_roundtrip = _best(lambda: [json.loads(json.dumps(r)) for _, r in sample], 3) / len(sample)

    sk = SigningKey(key)
    adm = Admission("main", "linux-64", "pkg-1.0-0.conda", "ab" * 32, time.time())
    reps = 2000
    t_env = _best(lambda: [envelope(adm, sk) for _ in range(reps)], 3) / reps
    blob = os.urandom(1024 * 1024)
    t_hash = _best(lambda: [hashlib.sha256(blob).hexdigest() for _ in range(50)], 3) / 50

    rows = [
        (f"compose repodata.json, {n} records (ms)", t_signed * 1e3, t_plain * 1e3, "signed vs unsigned", "—"),
        (f"build segments, {n} records (ms)", t_seg_signed * 1e3, t_seg_plain * 1e3, "signed vs unsigned", "<= 2x"),
        ("repodata.json size (MB)", size_signed / 1e6, size_plain / 1e6, "signed vs unsigned", "—"),
        (
            "compose cost per output MB (ms)",
            t_signed * 1e9 / size_signed,
            t_plain * 1e9 / size_plain,
            "signed vs unsigned",
            "<= 1.5x",
        ),
        ("content-trust check per record (µs)", t_verify * 1e6, t_roundtrip * 1e6, "vs JSON round trip", "—"),
        ("admission statement, sign one (µs)", t_env * 1e6, t_hash * 1e6, "vs sha256 of 1 MiB", "<= 1x"),
    ]
    print("| metric | condavault | peer | peer is | ratio | goal | met? |\n|---|---|---|---|---|---|---|")
    out = []
    for metric, ours, peer, what, goal in rows:
        ratio = ours / peer if peer else float("nan")
        met = "—" if goal == "—" else ("yes" if ratio <= float(goal.strip("<= x")) else "no")
        print(f"| {metric} | {ours:,.2f} | {peer:,.2f} | {what} | {ratio:.2f}x | {goal} | {met} |")
        out.append({"metric": metric, "condavault": ours, "peer": peer, "ratio": ratio})
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"records": n, "rows": out}, fh, indent=2)


if __name__ == "__main__":
    main()
