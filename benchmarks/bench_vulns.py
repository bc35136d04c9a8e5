"""The vulnerability database's benchmark.

    /work/venv/bin/python benchmarks/bench_vulns.py [--quick] [--db-url URL] [--json out.json]

1. Full match: every advisory of ``testdata/vulns`` (merged by alias) against a synthetic channel of
   100 k metadata-only records (``--quick``: 10 k), advisory-driven (``match_advisories`` over all) and
   record-driven (the sweep, ``match_records`` over all records).
2. Incremental match of one changed advisory (the zlib CVE with a new range): upsert + re-match, goal <= 1 s.
3. Dependency-tree risk of every record of a 10 k-record channel (``--quick``: 2 k) built from real
   repodata (defaults-r, defaults legacy index, pytorch: real names, versions and ``depends``): solved
   with py-rattler for the records whose closure bound carries a score; for reference, the time to
   solve every record; then a re-score after an advisory change (trees cached) and a cached read.

Records are "made from real names/versions": (name, version) pairs from the real repodata files in
testdata plus the versions the OSV records list (mapped to conda names), repeated over builds and
subdirs to reach the size. The database is a fresh SQLite file unless ``--db-url`` names another.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from condavault.channels import services as channel_svc
from condavault.channels.models import Record
from condavault.channels.records import import_repodata
from condavault.db import migrate
from condavault.db.session import Database
from condavault.vulns import catalog, reports, services
from condavault.vulns.mapping import NameMapping
from condavault.vulns.sources import load_path, merge_aliases

TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata"))
REAL_REPODATA = [  # the risk channel takes its records in this order
    "repodata/defaults-legacy-index/linux-64/index4.json",
    "repodata/pytorch/linux-64/repodata.json",
    "repodata/defaults-r/linux-64/repodata.json",
]
SUBDIRS = ["linux-64", "osx-64", "win-64", "osx-arm64", "linux-aarch64"]


def real_records() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rel in REAL_REPODATA:
        doc = json.loads((TESTDATA / rel).read_text())
        if "packages" not in doc and "packages.conda" not in doc:  # a bare ``packages`` mapping
            doc = {"packages": doc}
        for key in ("packages", "packages.conda"):
            for fn, rec in (doc.get(key) or {}).items():
                out.append({**rec, "_fn": fn})
    return out


def name_versions(advisories: list[Any], mapping: NameMapping) -> list[tuple[str, str]]:
    pairs = {(r["name"], str(r["version"])) for r in real_records()}
    for adv in advisories:
        for aff in adv.affected:
            for name in mapping.conda_names_for(aff):
                for v in aff.versions[:40]:
                    pairs.add((name, v))
                for rng in aff.ranges:
                    for bound in (rng.introduced, rng.fixed, rng.last_affected):
                        if bound and bound != "0":
                            pairs.add((name, bound))
    return sorted(pairs)


def synthetic_repodata(pairs: list[tuple[str, str]], size: int) -> dict[str, dict[str, Any]]:
    per_subdir: dict[str, dict[str, Any]] = {sd: {} for sd in SUBDIRS}
    i = 0
    while i < size:
        name, version = pairs[i % len(pairs)]
        rnd = i // len(pairs)
        sd = SUBDIRS[rnd % len(SUBDIRS)]
        build = f"b{rnd}_0"
        fn = f"{name}-{version}-{build}.tar.bz2"
        per_subdir[sd][fn] = {"name": name, "version": version, "build": build, "build_number": 0, "depends": []}
        i += 1
    return {sd: {"packages": recs} for sd, recs in per_subdir.items() if recs}


def seed_channel(db: Database, name: str, repodata: dict[str, dict[str, Any]]) -> int:
    with db.write_session() as s:
        ch = channel_svc.create_channel(s, name, privacy="public", description="", created_by="bench")
        cid = ch.id
        for sd, rd in repodata.items():
            import_repodata(s, ch, sd, rd)
    return cid


def timed(fn: Any) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 k / 2 k records instead of 100 k / 10 k")
    ap.add_argument("--db-url", default=None, help="SQLAlchemy URL of an empty database (default: temp SQLite)")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    n_match, n_risk = (10_000, 2_000) if args.quick else (100_000, 10_000)
    tmp = tempfile.mkdtemp(prefix="bench-vulns-")
    url = args.db_url or f"sqlite:///{tmp}/bench.db"
    migrate.upgrade(url)
    db = Database(url)
    mapping = NameMapping.load(TESTDATA / "mappings/parselmouth/v0/conda-forge/compressed_mapping.json")
    mapping.match_bundled = False  # the synthetic channel spells only direct names
    rows: list[tuple[str, str, str]] = []

    t_load, records = timed(lambda: list(load_path(TESTDATA / "vulns")))
    advisories = merge_aliases(records)
    rows.append(("parse testdata/vulns", f"{len(records)} records", f"{t_load:.2f} s"))
    pairs = name_versions(advisories, mapping)
    t_seed, _ = timed(lambda: seed_channel(db, "big", synthetic_repodata(pairs, n_match)))
    with db.session() as s:
        n_records = s.scalar(select(func.count(Record.id)))
    rows.append(("seed metadata-only channel", f"{n_records} records", f"{t_seed:.2f} s"))

    def upsert() -> catalog.MergeResult:
        with db.write_session() as s:
            src = catalog.source_pk(s, "bench")
            stored = catalog.store_records(s, src, records)
            return catalog.remerge(s, stored.touched, mapping)

    t_store, res = timed(upsert)
    rows.append(("store records, merge advisories (hash, ids, names)", f"{res.created} advisories", f"{t_store:.2f} s"))

    def full_match() -> services.MatchStats:
        with db.write_session() as s:
            return services.match_advisories(s, res.changed_pks, mapping)

    t_full, stats = timed(full_match)
    rows.append(
        (
            f"full match, advisory-driven ({len(advisories)} x {n_records})",
            f"{stats.records} candidate records, {stats.links_added} links",
            f"{t_full:.2f} s",
        )
    )

    def sweep() -> services.MatchStats:
        with db.session() as s:
            ids = list(s.scalars(select(Record.id)))
        total = services.MatchStats()
        for i in range(0, len(ids), 5000):
            with db.write_session() as s:
                st = services.match_records(s, ids[i : i + 5000], mapping)
            total.records += st.records
            total.links_added += st.links_added
        return total

    t_sweep, sw = timed(sweep)
    rows.append(
        (
            f"full match, record-driven sweep ({n_records} records)",
            f"{sw.links_added} new links (all existed)",
            f"{t_sweep:.2f} s",
        )
    )

    zlib = next(a for a in records if a.id == "CVE-2022-37434")
    from dataclasses import replace

    changed = replace(zlib, details=zlib.details + " (re-analysed)", modified="2099-01-01T00:00:00")

    def incremental() -> tuple[catalog.MergeResult, services.MatchStats]:
        with db.write_session() as s:
            stored = catalog.store_records(s, catalog.source_pk(s, "bench-2"), [changed])
            r = catalog.remerge(s, stored.touched, mapping)
            return r, services.match_advisories(s, r.changed_pks, mapping)

    t_inc, (r_inc, st_inc) = timed(incremental)
    rows.append(
        (
            "incremental: 1 changed advisory (upsert + re-match)",
            f"{r_inc.updated} updated, {st_inc.records} records checked",
            f"{t_inc * 1000:.0f} ms",
        )
    )

    recs = real_records()[:n_risk]
    rd: dict[str, Any] = {"packages": {}, "packages.conda": {}}
    for r in recs:
        fn = r.pop("_fn")
        rd["packages.conda" if fn.endswith(".conda") else "packages"][fn] = r
    cid = seed_channel(db, "real", {"linux-64": rd})
    with db.write_session() as s:
        reports.ensure_channel_risk(s, cid, mapping)  # matches the new records first

    def risk() -> None:
        with db.write_session() as s:
            reports.ensure_channel_risk(s, cid, mapping, force=True)

    def risky() -> int:
        with db.session() as s:
            from condavault.vulns.models import VulnRecordState

            return s.scalar(
                select(func.count())
                .select_from(VulnRecordState)
                .where(VulnRecordState.channel_id == cid, VulnRecordState.risk.is_not(None))
            )

    reports.TREES.clear()
    t_risk, _ = timed(risk)
    with db.session() as s:
        solved = len(reports.TREES.get(cid, reports.records_fingerprint(s, cid)))
    rows.append(
        (
            f"dependency-tree risk, every record ({len(recs)} real records)",
            f"{solved} solved (py-rattler), {risky()} with a risk",
            f"{t_risk:.2f} s",
        )
    )

    def solve_all() -> int:
        with db.session() as s:
            rows_ = s.execute(
                select(Record.id, Record.subdir, Record.filename, Record.name, Record.version, Record.build).where(
                    Record.channel_id == cid
                )
            ).all()
            wanted = {r.id: (r.subdir, r.name, r.version, r.build) for r in rows_}
            trees = reports.solve_trees(s, cid, wanted, {(r.subdir, r.filename): r.id for r in rows_})
        return sum(1 for t in trees.values() if isinstance(t, list))

    t_all, n_ok = timed(solve_all)
    rows.append(
        (
            "  for reference: solve every record (no closure bound)",
            f"{len(recs)} solves, {n_ok} solvable",
            f"{t_all:.2f} s",
        )
    )
    t_again, _ = timed(risk)
    rows.append(("dependency-tree risk after an advisory change (trees cached)", "", f"{t_again * 1000:.0f} ms"))
    t_cached, _ = timed(lambda: reports.ensure_channel_risk(db._factory(), cid, mapping))
    rows.append(("dependency-tree risk, cached (fingerprint unchanged)", "", f"{t_cached * 1000:.0f} ms"))

    width = max(len(r[0]) for r in rows)
    mode = "quick" if args.quick else "full"
    print(f"\nvulns benchmark ({mode}; {db.engine.dialect.name}; python {sys.version.split()[0]})")
    print(f"{'step'.ljust(width)} | {'size'.ljust(40)} | time")
    print("-" * (width + 55))
    for step, size, t in rows:
        print(f"{step.ljust(width)} | {size.ljust(40)} | {t}")
    if args.json:
        args.json.write_text(json.dumps([dict(zip(("step", "size", "time"), r, strict=True)) for r in rows], indent=2))
    db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
