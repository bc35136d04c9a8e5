"""Search benchmark: query latency over a large synthetic catalogue, on SQLite and PostgreSQL.

    /work/venv/bin/python benchmarks/bench_search.py [--records N] [--paths-per-record P] [--db sqlite,postgresql]
                                                     [--quick] [--json out.json] [--keep DIR]
                                                     [--queries-only] [--no-peer]

``--keep DIR`` keeps the seeded catalogues (SQLite file, PostgreSQL database) and reuses them on the next
run with the same sizes, so code changes can be measured before/after on the same data without seeding
again. Each query kind prints wall p50/p95 and **CPU** p50/p95 (this process plus, on PostgreSQL, the
server processes of its own connections, from ``/proc/<pid>/schedstat``), and the load average at the start
and end: on a loaded machine the CPU figures are the comparable ones.

Builds, per database, ``--channels`` (100) public channels holding ``--records`` records in all (real
record shapes: names, versions, builds and licenses from the real repodata in testdata, ~20 builds per
name, 5 subdirs), bulk-inserted (executemany; COPY on PostgreSQL), then the package documents through the
real code (``search.index.sync_channel``, timed: that is what ``search.reindex`` does), and
``--paths-per-record`` file rows per distinct package (real-looking paths: ``lib/lib<name>.so.<major>``,
headers, site-packages, docs).

Measured (``SearchService.search`` / ``provides`` in-process, an administrator's view of all 100
channels; p50/p95 over many distinct queries): exact name, prefix, typo, free text, MatchSpec, ``path:``,
``sha256:``, and an anonymous search (the permission filter). Peer: the query one would write without the
search tables (``records.name LIKE '%term%'`` grouped by channel and name), same data, same run.
Then: upload -> searchable (a real ingest into one channel of the catalogue; the documents are written in the
upload's transaction), remove -> gone (after-commit sync), and the package page's file list for a
package with 5,000 files.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sqlalchemy import insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from _synth import make_conda
from condavault.auth.identity import ANONYMOUS, Identity
from condavault.channels import depends
from condavault.channels.models import Channel, Record
from condavault.db import migrate
from condavault.db.base import table
from condavault.db.session import Database
from condavault.search import index
from condavault.search.models import SearchFile
from condavault.search.service import SearchQuery, SearchService

TESTDATA = Path(os.environ.get("CONDAVAULT_TESTDATA", "/work/shared/testdata"))
REAL = [
    "repodata/defaults-legacy-index/linux-64/index4.json",
    "repodata/pytorch/linux-64/repodata.json",
    "repodata/defaults-r/linux-64/repodata.json",
]
SUBDIRS = ["linux-64", "osx-64", "win-64", "osx-arm64", "noarch"]
LICENSES = ["MIT", "BSD-3-Clause", "Apache-2.0", "GPL-3.0-or-later", "LGPL-2.1", "MPL-2.0", "Zlib", "PSF-2.0"]
WORDS = [
    "fast",
    "library",
    "bindings",
    "numerical",
    "parser",
    "toolkit",
    "compression",
    "plotting",
    "async",
    "client",
    "server",
    "image",
    "statistics",
    "data",
    "network",
    "testing",
    "database",
    "cloud",
]
GOALS = {"text": 0.050, "path": 0.100}
DEFERRED_INDEXES = [  # name, then "table (columns)": exactly the migrations' indexes
    "ix_search_files_path search_files (path)",
    "ix_search_files_sha256 search_files (sha256)",
    "ix_records_sha256 records (sha256)",
    "ix_records_name records (name)",
    "ix_record_depends_name record_depends (name, dependant, channel_id)",
]


def real_names() -> list[tuple[str, list[str]]]:
    """(name, versions) from the real repodata files, most builds first."""
    versions: dict[str, set[str]] = {}
    for rel in REAL:
        doc = json.loads((TESTDATA / rel).read_text())
        if "packages" not in doc and "packages.conda" not in doc:
            doc = {"packages": doc}
        for key in ("packages", "packages.conda"):
            for rec in (doc.get(key) or {}).values():
                versions.setdefault(rec["name"], set()).add(rec["version"])
    return sorted(((n, sorted(v)) for n, v in versions.items()), key=lambda x: (-len(x[1]), x[0]))


def vocabulary(n_names: int) -> list[tuple[str, list[str]]]:
    """``n_names`` distinct names: the real ones, then real-looking variants (``<real>-<suffix>``)."""
    base = real_names()
    out = list(base)
    suffixes = ["core", "base", "tools", "cli", "utils", "io", "plugins", "extras", "dev", "lite", "ng", "py"]
    i = 0
    while len(out) < n_names:
        name, vers = base[i % len(base)]
        out.append((f"{name}-{suffixes[(i // len(base)) % len(suffixes)]}{'' if i < len(base) * 12 else i}", vers))
        i += 1
    return out[:n_names]


def sha(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()


def paths_for(name: str, version: str, k: int) -> list[str]:
    major = version.split(".")[0] or "0"
    base = [
        f"lib/lib{name}.so.{major}",
        f"lib/lib{name}.so",
        f"lib/lib{name}.a",
        f"include/{name}/{name}.h",
        f"include/{name}/config.h",
        f"bin/{name}",
        f"share/doc/{name}/README.md",
        f"share/licenses/{name}/LICENSE",
        f"lib/pkgconfig/{name}.pc",
        f"lib/cmake/{name}/{name}Config.cmake",
    ]
    extra = [f"lib/python3.11/site-packages/{name.replace('-', '_')}/mod{i}.py" for i in range(max(0, k - len(base)))]
    return (base + extra)[:k]


def build(db: Database, url: str, n_records: int, n_channels: int, paths_per: int) -> dict[str, Any]:
    """Seed the catalogue; returns what the queries need (names, paths, shas) and the timings."""
    rng = random.Random(7)
    per_channel = n_records // n_channels
    names_per_channel = max(1, per_channel // 20)
    vocab = vocabulary(max(names_per_channel * 4, 2000))
    info: dict[str, Any] = {"names": [], "paths": [], "shas": [], "timings": {}}
    t0 = time.perf_counter()
    with db.write_session() as s:
        s.execute(
            insert(Channel),
            [
                {"name": f"ch{c:03d}", "privacy": "public" if c % 10 else "private", "description": ""}
                for c in range(n_channels)
            ],
        )
    with db.session() as s:
        chan_ids = list(s.scalars(select(Channel.id).order_by(Channel.id)))
    pg = url.startswith("postgresql")
    rid = 0
    file_rows = 0
    # bulk load without the secondary indexes, built once at the end (what a restore does)
    with db.write_session() as s:
        for ix in DEFERRED_INDEXES:
            s.execute(text(f"DROP INDEX {ix.split()[0]}"))
    for ci, cid in enumerate(chan_ids):
        names = rng.sample(vocab, names_per_channel)
        rows: list[dict[str, Any]] = []
        files: list[tuple[str, str, str, int]] = []
        for j in range(per_channel):
            name, vers = names[j % names_per_channel]
            b = j // names_per_channel
            version = vers[b % len(vers)] if vers else f"{1 + b}.0"
            subdir = SUBDIRS[(j + b) % len(SUBDIRS)]
            build_s = f"h{(hash(name) + b) % 16**7:07x}_{b % 3}"
            fn = f"{name}-{version}-{build_s}.conda"
            # a third of the channels mirror channel 0's bytes for their common names (shared sha256)
            digest = sha(name, version, build_s, subdir, 0 if ci % 3 == 0 else ci)
            rec = {
                "name": name,
                "version": version,
                "build": build_s,
                "build_number": b % 3,
                "subdir": subdir,
                "depends": [f"python >=3.{8 + b % 4}"] + (["zlib >=1.2"] if rid % 10 == 9 else []),
                "license": LICENSES[hash(name) % len(LICENSES)],
                "timestamp": 1_600_000_000_000 + j * 1000,
                "sha256": digest,
                "size": 10_000 + j,
            }
            about = {
                "summary": f"{name}: {rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(WORDS)}",
                "description": f"The {name} package provides {' '.join(rng.sample(WORDS, 6))}.",
                "keywords": rng.sample(WORDS, 2),
            }
            rid += 1
            rows.append(
                {
                    "channel_id": cid,
                    "subdir": subdir,
                    "filename": fn,
                    "name": name,
                    "version": version,
                    "build": build_s,
                    "build_number": b % 3,
                    "sha256": digest,
                    "md5": digest[:32],
                    "size": rec["size"],
                    "timestamp": rec["timestamp"],
                    "license": rec["license"],
                    "record": json.dumps(rec, sort_keys=True),
                    "fragment": json.dumps(rec, sort_keys=True),
                    "about": json.dumps(about),
                    "indexed_timestamp": rec["timestamp"],
                    "has_blob": True,
                    "removed": False,
                    "created_at": "2026-01-01 00:00:00.000000" if not pg else "2026-01-01T00:00:00+00:00",
                }
            )
            if ci % 3 != 0 or ci == 0:  # file lists once per distinct package (content-addressed)
                for p in paths_for(name, version, paths_per):
                    files.append((digest, p, sha(digest, p), 1000))
            if j % 997 == 0:
                info["names"].append(name)
                info["shas"].append(digest)
                info["paths"].append(paths_for(name, version, paths_per)[0])
        with db.write_session() as s:
            if pg:
                s.execute(text("SET LOCAL synchronous_commit = off"))
            cols = list(rows[0])
            _bulk(s, "records", cols, [tuple(r[c] for c in cols) for r in rows], pg)
            # the dependency-name index (channels.depends) as ingest writes it: every record depends on
            # python, every tenth also on zlib (what the records' depends say)
            s.execute(
                text(
                    "INSERT INTO record_depends (record_id, name, channel_id, dependant, spec) "
                    "SELECT id, 'python', channel_id, name, 'python >=3.8' FROM records WHERE channel_id = :c"
                ),
                {"c": cid},
            )
            s.execute(
                text(
                    "INSERT INTO record_depends (record_id, name, channel_id, dependant, spec) "
                    "SELECT id, 'zlib', channel_id, name, 'zlib >=1.2' FROM records "
                    "WHERE channel_id = :c AND id % 10 = 0 AND name <> 'zlib'"
                ),
                {"c": cid},
            )
            file_rows += _insert_files(s, files, pg)
        if ci % 10 == 9:
            print(
                f"  seeded {ci + 1}/{n_channels} channels ({rid} records, {file_rows} path rows) "
                f"{time.perf_counter() - t0:.0f} s",
                file=sys.stderr,
                flush=True,
            )
    info["timings"]["seed records + path rows"] = time.perf_counter() - t0
    tix = time.perf_counter()
    for ix in DEFERRED_INDEXES:
        name, rest = ix.split(maxsplit=1)
        with db.write_session() as s:
            s.execute(text(f"CREATE INDEX {name} ON {rest}"))
        print(f"  index {name} built {time.perf_counter() - tix:.0f} s", file=sys.stderr, flush=True)
    info["timings"]["secondary indexes (after the bulk load)"] = time.perf_counter() - tix
    info["file_rows"] = file_rows
    t1 = time.perf_counter()
    for cid in chan_ids:
        with db.write_session() as s:
            index.sync_channel(s, cid)
    info["timings"]["documents (sync_channel, all channels)"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    with db.write_session() as s:
        index.rebuild_trigrams(s)
    info["timings"]["name trigrams"] = time.perf_counter() - t2
    with db.write_session() as s:
        s.execute(text("ANALYZE"))
    info["channels"] = chan_ids
    return info


def _bulk(s: Any, name: str, cols: list[str], rows: list[tuple[Any, ...]], pg: bool, ignore: bool = False) -> None:
    """Bulk insert through the driver: COPY on PostgreSQL, executemany on SQLite."""
    if not rows:
        return
    raw = s.connection().connection.driver_connection
    if pg:
        with raw.cursor() as cur, cur.copy(f"COPY {name} ({', '.join(cols)}) FROM STDIN") as cp:
            for row in rows:
                cp.write_row(row)
        return
    raw.execute("PRAGMA cache_size = -1000000")  # 1 GB: the random-key B-trees of a large bulk load stay in memory
    verb = "INSERT OR IGNORE" if ignore else "INSERT"
    raw.executemany(f"{verb} INTO {name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})", rows)


def _insert_files(s: Any, files: list[tuple[str, str, str, int]], pg: bool) -> int:
    _bulk(s, "search_files", ["package_sha256", "path", "sha256", "size"], files, pg, ignore=True)
    return len(files)


def typo(name: str, rng: random.Random) -> str:
    i = rng.randrange(1, max(2, len(name) - 1))
    if rng.random() < 0.5:
        return name[:i] + name[i] + name[i:]  # a doubled letter
    return name[: i - 1] + name[i] + name[i - 1] + name[i + 1 :]  # two letters swapped


def percentiles(samples: list[float]) -> tuple[float, float]:
    xs = sorted(samples)
    return statistics.median(xs), xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]


class CpuClock:
    """CPU seconds spent on a query: this process (``time.process_time``: SQLite runs in it) plus, on
    PostgreSQL, the server processes serving this database (``/proc/<pid>/schedstat``: nanoseconds on a
    CPU). Unlike wall time it does not count the time spent waiting for a core on a loaded machine."""

    def __init__(self, pg_admin_url: str | None = None, dbname: str | None = None) -> None:
        self.pids: list[int] = []
        self.conn: Any = None
        if pg_admin_url and dbname:
            import psycopg

            self.conn = psycopg.connect(pg_admin_url, autocommit=True)
            self.dbname = dbname

    def refresh(self) -> None:
        if self.conn is not None:
            rows = self.conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                (self.dbname, APP_NAME),
            ).fetchall()
            self.pids = [r[0] for r in rows]

    def __call__(self) -> float:
        total = time.process_time()
        for pid in self.pids:
            try:
                total += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                pass
        return total


CPU = CpuClock()
APP_NAME = f"bench-search-{os.getpid()}"  # this process's connections (not another client's on the same database)


def measure(fn: Callable[[str], Any], inputs: list[str], cpu: list[float] | None = None) -> tuple[float, float]:
    """Wall p50/p95 of ``fn`` over ``inputs``; with ``cpu``: its CPU p50/p95 appended to that list."""
    fn(inputs[0])  # warm
    CPU.refresh()
    out, used = [], []
    for x in inputs:
        c = CPU()
        t = time.perf_counter()
        fn(x)
        out.append(time.perf_counter() - t)
        used.append(CPU() - c)
    if cpu is not None:
        cpu.extend(percentiles(used))
    return percentiles(out)


def run_db(url: str, args: argparse.Namespace, saved: Path | None = None) -> dict[str, Any]:
    """Seed (or, with ``--keep`` and a catalogue seeded before, reuse) and measure one database."""
    global CPU
    if url.startswith("postgresql"):
        from tests.support.server import PG_ADMIN

        CPU = CpuClock(PG_ADMIN, url.rsplit("/", 1)[1].split("?")[0])
        url += f"?application_name={APP_NAME}"
    migrate.upgrade(url)  # a kept catalogue gets the newer migrations (their cost is printed)
    db = Database(url)
    if saved is not None and saved.exists():
        info = json.loads(saved.read_text())
        print(f"  reusing the catalogue seeded before ({saved})", file=sys.stderr, flush=True)
        with db.write_session() as s:
            s.execute(text("ANALYZE"))
    else:
        info = build(db, url, args.records, args.channels, args.paths_per_record)
        if saved is not None:
            saved.write_text(json.dumps(info))
    svc = SearchService(SimpleNamespace(db=db, channels=None))  # type: ignore[arg-type]
    admin = Identity(user_id=1, username="admin", is_admin=True)
    rng = random.Random(11)
    names = info["names"][: args.queries]
    res: dict[str, Any] = {"timings": info["timings"], "file_rows": info["file_rows"], "queries": {}}
    res["load_start"] = os.getloadavg()
    print(f"  load average at the start of the queries: {res['load_start']}", file=sys.stderr, flush=True)

    def q(identity: Identity = admin, **kw: Any) -> Callable[[str], Any]:
        return lambda x: svc.search(identity, SearchQuery(q=x, **kw))

    ch_ids = ",".join(str(c) for c in info["channels"])

    def peer(term: str) -> Any:
        with db.session() as s:
            return s.execute(
                text(
                    f"SELECT channel_id, name, count(*) FROM records WHERE name LIKE :p AND channel_id IN ({ch_ids}) "
                    "GROUP BY channel_id, name ORDER BY name LIMIT 20"
                ),
                {"p": f"%{term}%"},
            ).all()

    cases = {
        "exact name": (q(), names, peer),
        "prefix": (q(), [n[: max(3, len(n) - 3)] for n in names], peer),
        "typo (fuzzy)": (q(), [typo(n, rng) for n in names], peer),
        "free text (2 words)": (q(), [f"{rng.choice(WORDS)} {rng.choice(WORDS)}" for _ in names], None),
        "MatchSpec": (q(), [f"{n} >=1,<9999" for n in names], None),
        "path:": (q(), [f"path:{p}" for p in info["paths"][: args.queries]], None),
        "sha256: (package)": (q(), [f"sha256:{h}" for h in info["shas"][: args.queries]], None),
        "exact, anonymous (90 public ch.)": (q(ANONYMOUS), names, None),
    }
    for label, (fn, inputs, peer_fn) in cases.items():
        cpu: list[float] = []
        p50, p95 = measure(fn, inputs, cpu)
        row = {"p50": p50, "p95": p95, "cpu_p50": cpu[0], "cpu_p95": cpu[1]}
        if peer_fn is not None and not args.no_peer:
            terms = [x.split()[0] for x in inputs]
            row["peer_p50"], row["peer_p95"] = measure(peer_fn, terms)
        res["queries"][label] = row
        print(
            f"  {label}: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms "
            f"(CPU {cpu[0] * 1000:.1f} / {cpu[1] * 1000:.1f} ms)",
            file=sys.stderr,
            flush=True,
        )
    all_ids = list(info["channels"])
    for dep, label in (
        []
        if args.queries_only
        else (("python", "dependants of python (every record)"), ("zlib", "dependants of zlib (1 in 10)"))
    ):

        def indexed(name: str) -> Any:
            with db.session() as s:
                return depends.dependants(s, all_ids, name, limit=50)

        def scan(name: str) -> Any:  # the peer: what the package page did before the index (a capped scan)
            needle = '"' + name
            found = "strpos(record, :n)" if url.startswith("postgresql") else "instr(record, :n)"
            with db.session() as s:
                rows = s.execute(
                    text(
                        f"SELECT channel_id, name, version, record FROM records WHERE channel_id IN "
                        f"({ch_ids}) AND name <> :m AND {found} > 0 LIMIT 20000"
                    ),
                    {"n": needle, "m": name},
                ).all()
            return {(r[0], r[1]) for r in rows if any(d.split()[0] == name for d in json.loads(r[3])["depends"])}

        p50, p95 = measure(indexed, [dep] * 20)
        peer50, peer95 = measure(scan, [dep] * 5)
        res["queries"][label] = {"p50": p50, "p95": p95, "peer_p50": peer50, "peer_p95": peer95}
        print(
            f"  {label}: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (scan: p50 {peer50 * 1000:.0f} ms)",
            file=sys.stderr,
            flush=True,
        )
    res["provides"] = dict(
        zip(("p50", "p95"), measure(lambda p: svc.provides(admin, p), info["paths"][:50]), strict=True)
    )
    if not args.queries_only:
        res.update(updates(url, db, info, svc, admin))
    res["load_end"] = os.getloadavg()
    print(f"  load average at the end: {res['load_end']}", file=sys.stderr, flush=True)
    db.dispose()
    return res


def updates(url: str, db: Database, info: dict[str, Any], svc: SearchService, admin: Identity) -> dict[str, Any]:
    """Upload -> searchable and remove -> gone through a real Context; the 5,000-file package page query."""
    from condavault.channels.services import ChannelService
    from condavault.config import load_settings
    from condavault.context import Context

    tmp = Path(tempfile.mkdtemp(prefix="bench-search-ctx-"))
    settings = load_settings(data_dir=tmp, database_url=url)
    ctx = Context.build(settings, start_jobs=False)
    out: dict[str, Any] = {}
    try:
        with db.session() as s:
            channel = s.scalar(select(Channel.name).where(Channel.id == info["channels"][1]))
        lat, gone = [], []
        for i in range(10):
            rec = make_conda(tmp, f"freshpkg-bench{i}", "1.0", "h0_0", "noarch")
            path = tmp / rec["fn"]
            t = time.perf_counter()
            ctx.ingestor.ingest(channel, ctx.ingestor.spool_file(path), path.name)
            found = svc.search(admin, SearchQuery(q=f"freshpkg-bench{i}"))["total"]
            lat.append(time.perf_counter() - t)
            assert found == 1, found
            t = time.perf_counter()
            ChannelService(ctx).remove_files(
                Identity(user_id=1, username="admin", is_admin=True), channel, [f"noarch/{path.name}"]
            )
            while svc.search(admin, SearchQuery(q=f"freshpkg-bench{i}"))["total"]:
                time.sleep(0.005)
            gone.append(time.perf_counter() - t)
        out["upload -> searchable"] = dict(zip(("p50", "p95"), percentiles(lat), strict=True))
        out["remove -> gone"] = dict(zip(("p50", "p95"), percentiles(gone), strict=True))
        # the package page's file list: a package with 5,000 files
        with db.write_session() as s:
            rid, cid, digest = s.execute(select(Record.id, Record.channel_id, Record.sha256).limit(1)).one()
            s.execute(text("DELETE FROM search_files WHERE package_sha256 = :d"), {"d": digest})
            s.execute(
                insert(table(SearchFile)),
                [
                    {
                        "package_sha256": digest,
                        "path": f"lib/python3.11/site-packages/big/m{i:05d}.py",
                        "sha256": sha(i),
                        "size": i,
                    }
                    for i in range(5000)
                ],
            )
        # as `condavault serve` does once started (app.py): what this process built before (the seeded
        # catalogue's bookkeeping) is frozen out of the collector's full walks, which were the p95 here
        gc.collect()
        gc.freeze()
        samples = []
        for _ in range(30):
            t = time.perf_counter()
            files = svc.files(cid, rid, limit=5000)
            samples.append(time.perf_counter() - t)
        assert len(files) == 5000
        out["package page files (5,000)"] = dict(zip(("p50", "p95"), percentiles(samples), strict=True))
    finally:
        ctx.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--channels", type=int, default=100)
    ap.add_argument("--paths-per-record", type=int, default=20)
    ap.add_argument("--queries", type=int, default=60, help="distinct queries per kind")
    ap.add_argument("--db", default="sqlite,postgresql")
    ap.add_argument("--quick", action="store_true", help="20 k records, 10 paths each")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--no-peer", action="store_true", help="skip the peer (LIKE on records) measurements")
    ap.add_argument(
        "--queries-only", action="store_true", help="only the search queries (no dependants, updates, file list)"
    )
    ap.add_argument(
        "--keep",
        type=Path,
        default=None,
        help="a directory: keep the seeded catalogues there (SQLite file, PostgreSQL database name) and reuse "
        "them on the next run with the same directory (seeding 1 M records takes tens of minutes)",
    )
    args = ap.parse_args()
    if args.quick:
        args.records, args.paths_per_record = 20_000, 10
    results: dict[str, Any] = {
        "records": args.records,
        "channels": args.channels,
        "paths_per_record": args.paths_per_record,
    }
    for backend in [b.strip() for b in args.db.split(",") if b.strip()]:
        print(f"== {backend}: {args.records} records in {args.channels} channels", file=sys.stderr, flush=True)
        saved = args.keep / f"{backend}-{args.records}-{args.paths_per_record}.json" if args.keep else None
        if backend == "sqlite":
            tmp = str(args.keep) if args.keep else tempfile.mkdtemp(prefix="bench-search-")
            db_file = f"{tmp}/bench-{args.records}-{args.paths_per_record}.db"
            if saved is not None and not saved.exists():
                Path(db_file).unlink(missing_ok=True)  # a seed that did not finish
            results[backend] = run_db(f"sqlite:///{db_file}", args, saved)
        else:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
            from tests.support.server import PG_ADMIN, create_pg_database, drop_pg_database

            pg_file = args.keep / f"postgresql-{args.records}-{args.paths_per_record}.db" if args.keep else None
            if saved is not None and saved.exists() and pg_file is not None and pg_file.exists():
                name = pg_file.read_text().strip()
                url = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1) + "/" + name
            else:
                if pg_file is not None and pg_file.exists():
                    drop_pg_database(pg_file.read_text().strip())  # a seed that did not finish
                url, name = create_pg_database()
                if pg_file is not None:
                    pg_file.write_text(name)
            try:
                results[backend] = run_db(url, args, saved)
            finally:
                if args.keep is None:
                    drop_pg_database(name)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


def print_table(results: dict[str, Any]) -> None:
    backends = [b for b in ("sqlite", "postgresql") if b in results]
    print(
        f"\n{results['records']:,} records in {results['channels']} channels; "
        + ", ".join(f"{b}: {results[b]['file_rows']:,} path rows" for b in backends)
    )
    heads = " | ".join(f"{b} p50 / p95 wall (CPU p50 / p95)" for b in backends)
    print(f"| metric | {heads} | peer (LIKE on records) p50 / p95 | goal |")
    print("|---|" + "---|" * len(backends) + "---|---|")

    def ms(x: float) -> str:
        return f"{x * 1000:.1f} ms"

    for label in results[backends[0]]["queries"]:
        cells = []
        for b in backends:
            r = results[b]["queries"][label]
            cpu = f" (CPU {ms(r['cpu_p50'])} / {ms(r['cpu_p95'])})" if "cpu_p50" in r else ""
            cells.append(f"{ms(r['p50'])} / {ms(r['p95'])}{cpu}")
        r0 = results[backends[0]]["queries"][label]
        peer = (
            " ; ".join(
                f"{ms(results[b]['queries'][label]['peer_p50'])} / {ms(results[b]['queries'][label]['peer_p95'])}"
                for b in backends
                if "peer_p50" in results[b]["queries"][label]
            )
            if "peer_p50" in r0
            else "—"
        )
        goal = (
            "p95 <= 100 ms"
            if label.startswith(("path", "sha"))
            else "—"
            if label.startswith("dependants")
            else "p95 <= 50 ms"
        )
        print(f"| {label} | " + " | ".join(cells) + f" | {peer} | {goal} |")
    for label, goal in (
        ("provides", "—"),
        ("upload -> searchable", "<= 1 s"),
        ("remove -> gone", "<= 1 s"),
        ("package page files (5,000)", "<= 100 ms"),
    ):
        if all(label in results[b] for b in backends):
            cells = [f"{ms(results[b][label]['p50'])} / {ms(results[b][label]['p95'])}" for b in backends]
            print(f"| {label} | " + " | ".join(cells) + f" | — | {goal} |")
    for b in backends:
        load = " -> ".join(" ".join(f"{x:.2f}" for x in results[b][k]) for k in ("load_start", "load_end"))
        print(f"| load average ({b}: queries start -> end) | {load} |")
        for k, v in results[b]["timings"].items():
            print(f"| build ({b}): {k} | {v:.1f} s |")


if __name__ == "__main__":
    raise SystemExit(main())
