"""One mirror run: fetch upstream repodata, plan, persist the plan, then apply it (design.md §6).

* **plan** -- ``compute_plan`` over every subdir's repodata; the decisions are written as
  :class:`~condavault.mirror.models.MirrorItem` rows (only rows that changed are written, so a re-plan of
  an unchanged 100 k-file upstream writes nothing). A kept item's ``state`` makes the plan a to-do list.
* **apply** -- active mode downloads the kept files that the channel lacks: bounded concurrency
  (``settings.mirror_concurrency``), retries in :mod:`.upstream`, streamed to a spool file, verified
  (sha256 + size, or md5 when upstream has no sha256) and stored through ``Ingestor.ingest`` with
  upstream's (patched) record fields. Passive mode indexes kept records metadata-only at once; the
  bytes come on first request (:mod:`.passive`). Files removed upstream or newly dropped are deleted
  when ``on_remove: remove``. Records whose upstream metadata changed (repodata patches) are refreshed.
  The index is published once the run is done (ingest only marks subdirs dirty).
* **resume** -- a killed run leaves its lease to expire (or to be taken over at once when its process is
  gone) and its items in state ``pending``; the next run skips everything already in the channel with
  the right sha256.

Progress, cancellation and the lease heartbeat share one small loop (:meth:`SyncRun._tick`).
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.orm import Session

from condavault.auth.identity import Identity
from condavault.channels import records as rec_svc
from condavault.channels.models import Channel, Record
from condavault.db.base import utcnow
from condavault.errors import ChecksumMismatch, CondavaultError
from condavault.indexing.dirty import get_state, mark_dirty
from condavault.mirror import services as svc
from condavault.mirror.config import MirrorConfig
from condavault.mirror.filters import FilterContext, build_chain
from condavault.mirror.models import Mirror, MirrorItem, MirrorRun
from condavault.mirror.plan import Plan, compute_plan, iter_records
from condavault.mirror.upstream import Fetched, Upstream, redact_url
from condavault.packages.metadata import record_json

log = logging.getLogger(__name__)

# upstream record fields that the archive itself decides (validated against the filename) or that the
# ingest recomputes from the bytes
NOT_OVERRIDDEN = frozenset(
    {"name", "version", "build", "subdir", "md5", "sha256", "size", "indexed_timestamp", "fn", "url"}
)
LIST_LIMIT = 500
FAILURES_KEPT = 200
GONE = "upstream_missing"


def record_hash(rec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()


def overrides_of(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in NOT_OVERRIDDEN}


@dataclass
class _Work:
    """What the apply phase has to do, worked out from the plan and the channel."""

    fetch: list[tuple[str, str]] = field(default_factory=list)  # active: download these
    replace: set[tuple[str, str]] = field(default_factory=set)  # ours, but upstream bytes changed
    refresh: list[tuple[str, str]] = field(default_factory=list)  # same bytes, new upstream metadata
    remove: list[tuple[str, str]] = field(default_factory=list)
    present: int = 0


class SyncRun:
    """Runs one planned run to its end; ``execute()`` never raises (the outcome is in the run row)."""

    def __init__(
        self,
        ctx: Any,
        mirror_id: int,
        run_id: int,
        holder: str,
        *,
        full: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.mirror_id = mirror_id
        self.run_id = run_id
        self.holder = holder
        self.full = full
        self.transport = transport
        self.on_progress = on_progress
        self.counts: Counter[str] = Counter()
        self.extra: dict[str, Any] = {}
        self.failures: list[dict[str, Any]] = []
        self.cancelled = False
        self.lost_lease = False
        self.phase = "starting"
        self.status = "planning"
        self.total_items = 0
        self.total_bytes = 0
        self.done_items = 0
        self.done_bytes = 0
        self._updates: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._last_renew = time.monotonic()
        self._touched: set[str] = set()
        self.plan_seconds: float | None = None
        self.apply_seconds: float | None = None
        self.exception: CondavaultError | None = None  # why the run failed, if it was our kind of error

    # -- entry point ---------------------------------------------------------------------------------
    def execute(self) -> None:
        error = None
        try:
            asyncio.run(self._main())
            status = "cancelled" if self.cancelled else "completed"
            if self.lost_lease:
                status, error = "failed", "lost the run lease (another worker took over)"
        except CondavaultError as exc:
            status, error = "failed", f"{exc.message} [{exc.code}]"
            self.exception = exc
        except Exception as exc:  # a bug must still end the run cleanly
            log.exception("mirror run failed", extra={"mirror_id": self.mirror_id, "run_id": self.run_id})
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            try:
                self._flush_updates()
                self._finish(locals().get("status", "failed"), error)
            finally:
                svc.release_lease(self.ctx.db, self.mirror_id, self.holder)

    def _finish(self, status: str, error: str | None) -> None:
        self.status = status
        counts = self._counts()

        def fin(s: Session) -> None:
            s.execute(
                update(MirrorRun)
                .where(MirrorRun.id == self.run_id)
                .values(
                    status=status,
                    phase="done",
                    finished_at=utcnow(),
                    error=error,
                    counts=json.dumps(counts, default=str),
                    failures=json.dumps(self.failures[:FAILURES_KEPT]),
                    plan_seconds=self.plan_seconds,
                    apply_seconds=self.apply_seconds,
                    total_items=self.total_items,
                    done_items=self.done_items,
                    total_bytes=self.total_bytes,
                    done_bytes=self.done_bytes,
                )
            )

        self.ctx.db.run_write(fin)
        self._report()

    def _counts(self) -> dict[str, Any]:
        return {**dict(self.counts), **self.extra}

    # -- the heartbeat -------------------------------------------------------------------------------
    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(0.5)
            await loop.run_in_executor(None, self._tick)

    def _tick(self) -> None:
        self._flush_updates()

        def progress(s: Session) -> bool:
            s.execute(
                update(MirrorRun)
                .where(MirrorRun.id == self.run_id)
                .values(
                    status=self.status,
                    phase=self.phase,
                    total_items=self.total_items,
                    done_items=self.done_items,
                    total_bytes=self.total_bytes,
                    done_bytes=self.done_bytes,
                    counts=json.dumps(self._counts(), default=str),
                )
            )
            return bool(s.scalar(select(MirrorRun.cancel_requested).where(MirrorRun.id == self.run_id)))

        try:
            if self.ctx.db.run_write(progress):
                self.cancelled = True
            if time.monotonic() - self._last_renew > 5:
                self._last_renew = time.monotonic()
                if not svc.renew_lease(self.ctx.db, self.mirror_id, self.holder):
                    self.lost_lease = self.cancelled = True
        except Exception:  # pragma: no cover - a DB hiccup must not kill the run
            log.exception("mirror heartbeat failed")
        self._report()

    def _report(self) -> None:
        if self.on_progress is None:
            return
        try:
            self.on_progress(
                {
                    "status": self.status,
                    "phase": self.phase,
                    "progress": {
                        "total_items": self.total_items,
                        "done_items": self.done_items,
                        "total_bytes": self.total_bytes,
                        "done_bytes": self.done_bytes,
                    },
                    "counts": self._counts(),
                }
            )
        except Exception:  # pragma: no cover
            log.exception("progress callback failed")

    # -- main ----------------------------------------------------------------------------------------
    async def _main(self) -> None:
        ctx = self.ctx
        with ctx.db.session() as s:
            mirror = s.get(Mirror, self.mirror_id)
            run = s.get(MirrorRun, self.run_id)
            assert mirror is not None and run is not None
            cfg = svc.load_config(mirror)
            channel = s.get(Channel, mirror.channel_id)
            assert channel is not None
            self.channel_id, self.channel_name = channel.id, channel.name
            self.dry_run = run.dry_run
            self.config_hash = mirror.config_hash
            self.mirror_name = mirror.name
        self.cfg = cfg
        self.extra["config_hash"] = self.config_hash
        beat = asyncio.create_task(self._heartbeat())
        settings = ctx.settings
        try:
            async with Upstream(
                cfg,
                cache_dir=settings.data_dir / "mirror-cache" / str(self.mirror_id),
                timeout=settings.mirror_timeout,
                retries=settings.mirror_retries,
                concurrency=settings.mirror_concurrency,
                transport=self.transport,
            ) as up:
                self.upstream = up
                self.phase = "fetching repodata"
                fetched = await asyncio.gather(*(up.repodata(sd) for sd in cfg.subdirs))
                loop = asyncio.get_running_loop()
                t0 = time.perf_counter()
                skip = await loop.run_in_executor(None, self._unchanged, fetched)
                if skip:
                    self.plan_seconds = time.perf_counter() - t0
                    return
                self.phase = "planning"
                plan, work = await loop.run_in_executor(None, self._plan, fetched)
                self.plan_seconds = time.perf_counter() - t0
                if self.dry_run or self.cancelled:
                    return
                t1 = time.perf_counter()
                self.status = "running"
                await self._apply(up, plan, work)
                self.apply_seconds = time.perf_counter() - t1
                self.extra["retries"] = up.retried
        finally:
            beat.cancel()

    # -- the no-op shortcut --------------------------------------------------------------------------
    def _unchanged(self, fetched: list[Fetched]) -> bool:
        """Nothing changed upstream (ETags), in the config, or in the channel since the last clean run."""
        if self.full or self.dry_run or any(f.changed for f in fetched):
            return False
        if any(f.requires for f in build_chain(self.cfg.filters)):
            return False  # CVE data or signatures may have changed without upstream changing
        with self.ctx.db.session() as s:
            prev = s.scalar(
                select(MirrorRun)
                .where(MirrorRun.mirror_id == self.mirror_id, MirrorRun.dry_run.is_(False), MirrorRun.id != self.run_id)
                .order_by(MirrorRun.id.desc())
                .limit(1)
            )
            if prev is None or prev.status != "completed":
                return False
            counts = json.loads(prev.counts or "{}")
            files = s.scalar(
                select(func.count())
                .select_from(Record)
                .where(Record.channel_id == self.channel_id, Record.subdir.in_(self.cfg.subdirs))
            )
        if (
            counts.get("failed")
            or counts.get("config_hash") != self.config_hash
            or counts.get("channel_files") != files
        ):
            return False
        for key in ("files", "kept", "dropped", "dropped_by_filter", "flagged", "channel_files"):
            if key in counts:
                self.extra[key] = counts[key]
        self.extra["unchanged"] = True
        return True

    # -- plan ----------------------------------------------------------------------------------------
    def _filter_context(self, upstream: dict[str, dict[str, Any]]) -> FilterContext:
        kw: dict[str, Any] = {}
        vulns = self.ctx.extensions.get("vulns")
        if vulns is not None:
            kw["vuln_links"] = vulns.vuln_links
            if self.cfg.filters.max_dependency_risk is not None:
                recs = {rec.key: rec.record for rec, _ in iter_records(upstream)}
                kw["dependency_risk"] = vulns.dependency_risk_for(recs)
        signing = self.ctx.extensions.get("signing")
        if signing is not None and hasattr(signing, "is_signed"):
            kw["is_signed"] = signing.is_signed
        return FilterContext(**kw)

    def _plan(self, fetched: list[Fetched]) -> tuple[Plan, _Work]:
        ctx, cfg = self.ctx, self.cfg
        upstream = {f.subdir: f.data for f in fetched}
        with ctx.db.session() as s:
            chan = {
                (sd, fn): (sha, has_blob)
                for sd, fn, sha, has_blob in s.execute(
                    select(Record.subdir, Record.filename, Record.sha256, Record.has_blob).where(
                        Record.channel_id == self.channel_id, Record.subdir.in_(cfg.subdirs)
                    )
                )
            }
            old = {
                (r.subdir, r.filename): r
                for r in s.execute(
                    select(
                        MirrorItem.id,
                        MirrorItem.subdir,
                        MirrorItem.filename,
                        MirrorItem.name,
                        MirrorItem.kept,
                        MirrorItem.flag,
                        MirrorItem.filter,
                        MirrorItem.rule,
                        MirrorItem.value,
                        MirrorItem.sha256,
                        MirrorItem.size,
                        MirrorItem.record_hash,
                        MirrorItem.state,
                    ).where(MirrorItem.mirror_id == self.mirror_id)
                )
            }
        ours = {k for k in chan if k in old}
        plan = compute_plan(upstream, cfg.filters, self._filter_context(upstream), ours)
        passive = cfg.mode == "passive"
        work = _Work()
        inserts: list[dict[str, Any]] = []
        updates: list[dict[str, Any]] = []
        now = utcnow()
        for key, d in plan.decisions.items():
            rec = plan.records[key].record
            sha = rec.get("sha256")
            rh = record_hash(rec)
            have = chan.get(key)
            prev = old.get(key)
            if d.kept:
                same = have is not None and (have[0] == sha if sha else prev is not None and prev.sha256 == sha)
                if same and (have[1] or passive):  # type: ignore[index]
                    state = "done" if have[1] else "passive"  # type: ignore[index]
                    work.present += 1
                    if prev is not None and prev.record_hash not in (None, rh):
                        work.refresh.append(key)
                else:
                    state = "pending"
                    work.fetch.append(key)
                    if have is not None and not same and key in ours:
                        work.replace.add(key)
            else:
                state = "dropped"
            values = {
                "name": str(rec.get("name", ""))[:100].lower(),
                "kept": d.kept,
                "flag": d.flag,
                "filter": d.filter[:64],
                "rule": d.rule,
                "value": d.value,
                "sha256": sha,
                "size": rec.get("size"),
                "record_hash": rh,
                "state": state,
            }
            if prev is None:
                inserts.append(
                    {
                        **values,
                        "mirror_id": self.mirror_id,
                        "subdir": key[0],
                        "filename": key[1],
                        "error": None,
                        "fetch_until": 0.0,
                        "run_id": self.run_id,
                        "updated_at": now,
                    }
                )
            elif any(getattr(prev, k) != v for k, v in values.items()):
                updates.append({**values, "id": prev.id, "run_id": self.run_id, "updated_at": now, "error": None})
        gone = [k for k in old if k not in plan.decisions]
        delete_ids = [old[k].id for k in gone if k not in chan]
        for k in gone:
            if k in chan and (old[k].filter != GONE or old[k].kept):
                updates.append(
                    {
                        "id": old[k].id,
                        "kept": False,
                        "flag": False,
                        "filter": GONE,
                        "rule": "not in upstream repodata",
                        "value": k[1],
                        "state": "dropped",
                        "run_id": self.run_id,
                        "updated_at": now,
                        "error": None,
                    }
                )
        work.remove = [k for k in plan.to_remove if k in chan]
        self._persist_items(inserts, updates, delete_ids)

        kept = plan.kept
        self.extra.update(
            files=len(plan.decisions),
            kept=len(kept),
            dropped=len(plan.decisions) - len(kept),
            dropped_by_filter=plan.dropped_counts,
            flagged=len(plan.flagged),
            to_add=len(work.fetch),
            to_remove=len(work.remove),
            to_refresh=len(work.refresh),
            present=work.present,
            plan_items_written=len(inserts) + len(updates) + len(delete_ids),
        )
        if self.dry_run:
            self.extra["plan"] = self._plan_lists(plan, work)
        self.total_items = len(work.fetch) if cfg.mode == "active" else 0
        self.total_bytes = (
            sum(int(plan.records[k].record.get("size") or 0) for k in work.fetch) if cfg.mode == "active" else 0
        )
        return plan, work

    def _plan_lists(self, plan: Plan, work: _Work) -> dict[str, Any]:
        dropped: dict[str, list[dict[str, str]]] = defaultdict(list)
        for key in sorted(plan.dropped):
            d = plan.decisions[key]
            lst = dropped[d.filter]
            if len(lst) < LIST_LIMIT:
                lst.append({"file": f"{key[0]}/{key[1]}", "rule": d.rule, "value": d.value})
        return {
            "add": [f"{sd}/{fn}" for sd, fn in sorted(work.fetch)[:LIST_LIMIT]],
            "remove": [f"{sd}/{fn}" for sd, fn in sorted(work.remove)[:LIST_LIMIT]],
            "on_remove": self.cfg.on_remove,
            "dropped": dict(dropped),
            "flagged": [
                {"file": f"{d.subdir}/{d.filename}", "filter": d.filter, "rule": d.rule, "value": d.value}
                for d in plan.flagged[:LIST_LIMIT]
            ],
        }

    def _persist_items(
        self, inserts: list[dict[str, Any]], updates: list[dict[str, Any]], delete_ids: list[int]
    ) -> None:
        def write(s: Session) -> None:
            for sd in self.cfg.subdirs:  # every mirrored subdir gets a repodata.json, even if empty
                get_state(s, self.channel_id, sd)
            for i in range(0, len(inserts), 5000):
                s.execute(MirrorItem.__table__.insert(), inserts[i : i + 5000])
            for i in range(0, len(updates), 5000):
                s.execute(update(MirrorItem), updates[i : i + 5000])
            for i in range(0, len(delete_ids), 1000):
                s.execute(delete(MirrorItem).where(MirrorItem.id.in_(delete_ids[i : i + 1000])))

        self.ctx.db.run_write(write)
        self._touched.update(self.cfg.subdirs)

    # -- item state updates (batched) ----------------------------------------------------------------
    def _mark(self, key: tuple[str, str], state: str, error: str | None = None) -> None:
        with self._lock:
            self._updates.append({"b_sd": key[0], "b_fn": key[1], "b_state": state, "b_error": error})

    def _flush_updates(self) -> None:
        with self._lock:
            batch, self._updates = self._updates, []
        if not batch:
            return
        t = MirrorItem.__table__
        stmt = (
            update(t)
            .where(t.c.mirror_id == self.mirror_id, t.c.subdir == bindparam("b_sd"), t.c.filename == bindparam("b_fn"))
            .values(state=bindparam("b_state"), error=bindparam("b_error"), run_id=self.run_id)
        )

        def write(s: Session) -> None:
            s.connection().execute(stmt, batch)

        self.ctx.db.run_write(write)

    # -- apply ---------------------------------------------------------------------------------------
    async def _apply(self, up: Upstream, plan: Plan, work: _Work) -> None:
        loop = asyncio.get_running_loop()
        if work.refresh:
            self.phase = "refreshing records"
            await loop.run_in_executor(None, self._refresh, plan, work.refresh)
        if self.cfg.mode == "active":
            self.phase = "downloading"
            await self._download_all(up, plan, work)
        else:
            self.phase = "indexing metadata"
            await loop.run_in_executor(None, self._import_passive, plan, work)
        if work.remove and not self.cancelled:
            if self.cfg.on_remove == "remove":
                self.phase = "removing"
                await loop.run_in_executor(None, self._remove, work.remove)
            else:
                self.counts["kept_removed_upstream"] += len(work.remove)
        self.phase = "publishing index"
        await loop.run_in_executor(None, self._publish)

    async def _download_all(self, up: Upstream, plan: Plan, work: _Work) -> None:
        loop = asyncio.get_running_loop()
        conc = max(1, self.ctx.settings.mirror_concurrency)
        sem = asyncio.Semaphore(conc)
        pool = ThreadPoolExecutor(max_workers=conc, thread_name_prefix="condavault-mirror-ingest")
        identity = Identity(username=f"mirror:{self.mirror_name}")
        # the same ingest path, minus the per-file index request: the run publishes once at its end
        # (the periodic sweep may still publish progress meanwhile)
        self.ingestor = copy.copy(self.ctx.ingestor)
        self.ingestor.on_change = None

        async def one(key: tuple[str, str]) -> None:
            async with sem:
                if self.cancelled:
                    return
                rec = plan.records[key].record
                try:
                    received = await up.download(key[0], key[1], self.ingestor.aspool)
                    result = await loop.run_in_executor(
                        pool, self._ingest, received, key, rec, key in work.replace, up, identity
                    )
                except CondavaultError as exc:
                    self._fail(key, exc.code, exc.message)
                    return
                except (httpx.HTTPError, OSError) as exc:
                    self._fail(key, "download_failed", f"{type(exc).__name__}: {exc}")
                    return
                except Exception as exc:  # pragma: no cover - keep going, report it
                    log.exception("mirror download failed", extra={"file": key})
                    self._fail(key, "internal_error", f"{type(exc).__name__}: {exc}")
                    return
                self._mark(key, "done")
                self.counts["downloaded"] += 1
                self.counts["bytes"] += result.size
                self.done_items += 1
                self.done_bytes += result.size

        try:
            await asyncio.gather(*(one(k) for k in work.fetch))
        finally:
            pool.shutdown(wait=True)

    def _fail(self, key: tuple[str, str], code: str, message: str) -> None:
        self.counts["failed"] += 1
        if code == "checksum_mismatch":
            self.counts["rejected_checksum"] += 1
        self.done_items += 1
        self.failures.append({"file": f"{key[0]}/{key[1]}", "code": code, "message": message})
        self._mark(key, "failed", f"{message} [{code}]")
        log.warning(
            "mirror file failed", extra={"mirror": self.mirror_name, "file": f"{key[0]}/{key[1]}", "code": code}
        )

    def _ingest(
        self, received: Any, key: tuple[str, str], rec: dict[str, Any], force: bool, up: Upstream, identity: Identity
    ) -> Any:
        sd, fn = key
        if not rec.get("sha256") and rec.get("md5") and rec["md5"] != received.md5:
            received.path.unlink(missing_ok=True)
            raise ChecksumMismatch(
                f"{fn}: md5 {received.md5} differs from the expected {rec['md5']}",
                filename=fn,
                expected=rec["md5"],
                actual=received.md5,
            )
        result = self.ingestor.ingest(
            self.channel_name,
            received,
            fn,
            expected_subdir=sd,
            expected_sha256=rec.get("sha256"),
            expected_size=rec.get("size"),
            force=force or not rec.get("sha256"),
            actor=identity.username,
            record_overrides=overrides_of(rec),
            source_url=up.display_url(sd, fn),
        )
        self._touched.add(sd)
        self.ctx.on_ingested(result, identity)
        return result

    def _import_passive(self, plan: Plan, work: _Work) -> None:
        by_subdir: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: {"packages": {}, "packages.conda": {}})
        for key in work.fetch:
            rec = dict(plan.records[key].record)
            section = "packages.conda" if key[1].endswith(".conda") else "packages"
            by_subdir[key[0]][section][key[1]] = rec
        replace = sorted(work.replace)

        def write(s: Session) -> dict[str, int]:
            channel = s.get(Channel, self.channel_id)
            assert channel is not None
            if replace:
                rows = [r for sd, fn in replace if (r := rec_svc.find_record(s, channel, sd, fn)) is not None]
                rec_svc.remove_records(s, channel, rows)
            total: Counter[str] = Counter()
            for sd, rd in by_subdir.items():
                base = redact_url(f"{self.upstream.base}/{sd}") if self.upstream.local is None else None
                total.update(rec_svc.import_repodata(s, channel, sd, rd, base_url=base))
            return dict(total)

        got = self.ctx.db.run_write(write)
        self.counts["indexed_passive"] += got.get("created", 0)
        self._touched.update(by_subdir)
        for key in work.fetch:
            self._mark(key, "passive")

    def _refresh(self, plan: Plan, keys: list[tuple[str, str]]) -> None:
        """Same bytes, new upstream metadata (a repodata patch): serve upstream's new record."""

        def write(s: Session) -> int:
            n = 0
            by_subdir: dict[str, list[str]] = defaultdict(list)
            for sd, fn in keys:
                by_subdir[sd].append(fn)
            for sd, fns in by_subdir.items():
                patches = rec_svc.subdir_patches(s, self.channel_id, sd)
                names = set()
                for i in range(0, len(fns), 500):
                    rows = s.scalars(
                        select(Record).where(
                            Record.channel_id == self.channel_id,
                            Record.subdir == sd,
                            Record.filename.in_(fns[i : i + 500]),
                        )
                    )
                    for row in rows:
                        rec = json.loads(row.record)
                        rec.update(overrides_of(plan.records[(sd, row.filename)].record))
                        row.record = record_json(rec)
                        row.fragment, row.removed = rec_svc.make_fragment(
                            row.filename, rec, row.indexed_timestamp, patches
                        )
                        row.license = str(rec["license"])[:500] if rec.get("license") else None
                        names.add(row.name)
                        n += 1
                s.flush()
                if names:
                    mark_dirty(s, self.channel_id, sd, names)
            return n

        self.counts["refreshed"] += self.ctx.db.run_write(write)
        self._touched.update(k[0] for k in keys)

    def _remove(self, keys: list[tuple[str, str]]) -> None:
        def write(s: Session) -> int:
            channel = s.get(Channel, self.channel_id)
            assert channel is not None
            n = 0
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows = []
                for sd in {k[0] for k in chunk}:
                    fns = [fn for d, fn in chunk if d == sd]
                    rows.extend(
                        s.scalars(
                            select(Record).where(
                                Record.channel_id == self.channel_id, Record.subdir == sd, Record.filename.in_(fns)
                            )
                        )
                    )
                n += len(rec_svc.remove_records(s, channel, rows))
            return n

        self.counts["removed"] += self.ctx.db.run_write(write)
        self._touched.update(k[0] for k in keys)

    def _publish(self) -> None:
        """One index publish for the whole run: ask for it, then wait until it is out."""
        self._flush_updates()
        with self.ctx.db.session() as s:
            seqs = {
                sd: st.change_seq for sd in self._touched if (st := get_state(s, self.channel_id, sd, create=False))
            }
        for sd in seqs:
            # index here rather than queueing it: the job runner's threads may all be busy
            # (if another thread is already indexing this subdir, it loops until it is clean)
            self.ctx.indexer.index_subdir(self.channel_id, sd)
        for sd, seq in seqs.items():
            if not self.ctx.indexer.wait_for(self.channel_id, sd, seq, timeout=600):
                log.warning("index not published in time", extra={"channel_id": self.channel_id, "subdir": sd})
        self.ctx.lookup.invalidate(self.channel_id)
        with self.ctx.db.session() as s:
            self.extra["channel_files"] = s.scalar(
                select(func.count())
                .select_from(Record)
                .where(Record.channel_id == self.channel_id, Record.subdir.in_(self.cfg.subdirs))
            )


def config_of(ctx: Any, mirror_id: int) -> MirrorConfig:
    with ctx.db.session() as s:
        mirror = s.get(Mirror, mirror_id)
        assert mirror is not None
        return svc.load_config(mirror)
