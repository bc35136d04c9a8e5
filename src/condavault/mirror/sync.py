"""One mirror run: fetch upstream repodata, plan, persist the plan, then apply it (design.md §6).

* **plan** (:mod:`.planning`) -- ``compute_plan`` over every subdir's repodata, the decisions persisted
  as :class:`~condavault.mirror.models.MirrorItem` rows, which make the plan a to-do list; or nothing at
  all when neither upstream, the config nor the channel changed since the last clean run.
* **apply** -- active mode downloads the kept files that the channel lacks and ingests them in batches
  (:mod:`.fetching`); passive mode indexes kept records metadata-only at once, the bytes come on first
  request (:mod:`.passive`). Files removed upstream or newly dropped are deleted when
  ``on_remove: remove``; records whose upstream metadata changed (repodata patches) are refreshed
  (:mod:`.applying`).
* **index** -- while the run lasts, the periodic sweep leaves the channel alone (``Context.hold_index``):
  the run publishes the index once at its end (and every ``fetching.PUBLISH_EVERY`` seconds of a long
  download phase), not after every file.
* **resume** -- a killed run leaves its lease to expire (or to be taken over at once when its process is
  gone) and its items in state ``pending``; the next run skips everything already in the channel with
  the right sha256.

Progress, cancellation and the lease heartbeat share one small loop (:meth:`.bookkeeping.RunBook.tick`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, select

from condavault.channels.models import Channel, Record
from condavault.errors import CondavaultError
from condavault.mirror import fanout, streamed
from condavault.mirror import services as svc
from condavault.mirror.applying import Applier
from condavault.mirror.bookkeeping import RunBook, RunInfo
from condavault.mirror.config import MirrorConfig
from condavault.mirror.fetching import Fetcher
from condavault.mirror.models import Mirror, MirrorRun
from condavault.mirror.plan import Plan
from condavault.mirror.planning import Planner, Work, overrides_of, record_hash
from condavault.mirror.upstream import Upstream
from condavault.outbound import UrlPolicy

if TYPE_CHECKING:
    from condavault.context import Context
    from condavault.jobs.registry import JobRun

__all__ = ["SyncRun", "config_of", "overrides_of", "record_hash"]

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 0.5


class SyncRun:
    """Runs one planned run to its end; ``execute()`` never raises (the outcome is in the run row)."""

    def __init__(
        self,
        ctx: Context,
        mirror_id: int,
        run_id: int,
        holder: str,
        *,
        full: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        job: JobRun | None = None,
    ) -> None:
        self.ctx = ctx
        self.mirror_id = mirror_id
        self.run_id = run_id
        self.holder = holder
        self.full = full
        self.transport = transport
        self.book = RunBook(ctx, mirror_id, run_id, holder, on_progress, job=job)
        self.exception: CondavaultError | None = None  # why the run failed, if it was our kind of error

    # -- entry point ---------------------------------------------------------------------------------
    def execute(self) -> None:
        book = self.book
        status, error = "failed", None
        try:
            asyncio.run(self._main())
            status = "cancelled" if book.cancelled else "completed"
            if book.lost_lease:
                status, error = "failed", "lost the run lease (another worker took over)"
        except CondavaultError as exc:
            status, error = "failed", f"{exc.message} [{exc.code}]"
            self.exception = exc
        except Exception as exc:  # a bug must still end the run cleanly
            log.exception("mirror run failed", extra={"mirror_id": self.mirror_id, "run_id": self.run_id})
            status, error = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            try:
                book.flush_updates()
                book.finish(status, error)
            finally:
                svc.release_lease(self.ctx.db, self.mirror_id, self.holder)

    def _load(self) -> RunInfo:
        with self.ctx.db.session() as s:
            mirror = s.get(Mirror, self.mirror_id)
            run = s.get(MirrorRun, self.run_id)
            assert mirror is not None and run is not None
            cfg = svc.load_config(mirror)
            channel = s.get(Channel, mirror.channel_id)
            assert channel is not None
            return RunInfo(
                ctx=self.ctx,
                mirror_id=self.mirror_id,
                run_id=self.run_id,
                holder=self.holder,
                mirror_name=mirror.name,
                channel_id=channel.id,
                channel_name=channel.name,
                cfg=cfg,
                config_hash=mirror.config_hash,
                dry_run=run.dry_run,
                full=self.full,
            )

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            await loop.run_in_executor(None, self.book.tick)

    # -- main ----------------------------------------------------------------------------------------
    async def _main(self) -> None:
        ctx, book = self.ctx, self.book
        info = self._load()
        book.extra["config_hash"] = info.config_hash
        beat = asyncio.create_task(self._heartbeat())
        settings = ctx.settings
        try:
            from condavault.airgap.upstream import verify_upstream

            # a bundle folder as upstream: its signature and repodata verified before anything is read
            # (a split bundle's channel is read through a view of its parts)
            local = await asyncio.get_running_loop().run_in_executor(None, verify_upstream, settings, info.cfg.upstream)
            cfg = info.cfg if local is None else info.cfg.model_copy(update={"upstream": str(local)})
            with ctx.hold_index(info.channel_id):
                async with Upstream(
                    cfg,
                    cache_dir=settings.data_dir / "mirror-cache" / str(self.mirror_id),
                    timeout=settings.mirror_timeout,
                    retries=settings.mirror_retries,
                    concurrency=settings.mirror_concurrency,
                    transport=self.transport,
                    policy=UrlPolicy.from_settings(settings),
                ) as up:
                    if local is None and not info.dry_run and streamed.streamable(info.cfg):
                        await self._streamed(info, up)  # conda-forge scale: one job per subdir, streamed
                        return
                    book.phase = "fetching repodata"
                    fetched = await asyncio.gather(*(up.repodata(sd) for sd in info.cfg.subdirs))
                    loop = asyncio.get_running_loop()
                    planner = Planner(info, book)
                    planner.sidecars = _sidecar_verifier(ctx, info, up, loop)
                    t0 = time.perf_counter()
                    if await loop.run_in_executor(None, planner.unchanged, fetched):
                        book.plan_seconds = time.perf_counter() - t0
                        return
                    book.phase = "planning"
                    plan, work = await loop.run_in_executor(None, planner.plan, fetched)
                    book.plan_seconds = time.perf_counter() - t0
                    if info.dry_run or book.cancelled:
                        return
                    t1 = time.perf_counter()
                    book.status = "running"
                    self._prefetched = planner.sidecars.fetched if planner.sidecars is not None else {}
                    await self._apply(info, up, plan, work, {f.subdir: f.data for f in fetched})
                    book.apply_seconds = time.perf_counter() - t1
                    book.extra["retries"] = up.retried
        finally:
            beat.cancel()

    async def _streamed(self, info: RunInfo, up: Upstream) -> None:
        """A passive mirror with record filters only: unchanged subdirs (ETag 304) skipped, the others
        streamed by ``mirror.subdir`` jobs (:mod:`.fanout`), which also index their subdir."""
        book = self.book
        book.phase = "checking upstream"
        t0 = time.perf_counter()
        same = await fanout.unchanged_subdirs(info, up)
        todo = [sd for sd in info.cfg.subdirs if sd not in same]
        book.plan_seconds = time.perf_counter() - t0
        book.extra["subdirs"] = dict(same)
        book.extra["unchanged_subdirs"] = sorted(same)
        if not todo:
            book.extra["unchanged"] = True
            return
        book.status = "running"
        book.phase = "syncing subdirs"
        t1 = time.perf_counter()
        await asyncio.get_running_loop().run_in_executor(None, fanout.fan_out, info, book, todo, self.full)
        book.apply_seconds = time.perf_counter() - t1
        self.ctx.lookup.invalidate(info.channel_id)
        with self.ctx.db.session() as s:
            book.extra["channel_files"] = s.scalar(
                select(func.count())
                .select_from(Record)
                .where(Record.channel_id == info.channel_id, Record.subdir.in_(info.cfg.subdirs))
            )

    async def _apply(
        self, info: RunInfo, up: Upstream, plan: Plan, work: Work, upstream: dict[str, dict[str, Any]]
    ) -> None:
        book = self.book
        loop = asyncio.get_running_loop()
        applier = Applier(info, book, up)
        if work.refresh:
            book.phase = "refreshing records"
            await loop.run_in_executor(None, applier.refresh, plan, work.refresh)
        if info.cfg.mode == "active":
            book.phase = "downloading"
            await Fetcher(info, book, up, plan, work).run()
        else:
            book.phase = "indexing metadata"
            await loop.run_in_executor(None, applier.import_passive, plan, work)
        if work.remove and not book.cancelled:
            if info.cfg.on_remove == "remove":
                book.phase = "removing"
                await loop.run_in_executor(None, applier.remove, work.remove)
            else:
                book.counts["kept_removed_upstream"] += len(work.remove)
        if not book.cancelled:
            # upstream signatures and CEP 50 sidecars of the kept files, saved per record before the publish
            from condavault.signing.carry import carry_from_upstream

            book.phase = "carrying signatures"
            carried = await carry_from_upstream(
                self.ctx.db,
                self.ctx.blobs,
                info.channel_id,
                up,
                plan,
                upstream,
                info.cfg.filters.signature_keys,
                self.ctx.settings.sigstore_trusted_root,
                _identity_rules(info),
                getattr(self, "_prefetched", None),
            )
            book.extra.update({k: v for k, v in carried.items() if v})
            if carried["trust_changed"]:
                book.touched.update(sd for sd, _ in plan.kept)
        book.phase = "publishing index"
        await loop.run_in_executor(None, applier.publish)


def _identity_rules(info: RunInfo) -> list[Any]:
    from condavault.signing.sigstore import IdentityRule

    return [IdentityRule(r.issuer, r.identity, r.repository) for r in info.cfg.filters.sigstore_identities]


def _sidecar_verifier(ctx: Context, info: RunInfo, up: Upstream, loop: asyncio.AbstractEventLoop) -> Any:
    """What ``only_signed`` asks about Sigstore attestations during planning (None: no identities trusted)."""
    if not info.cfg.filters.sigstore_identities:
        return None
    from condavault.signing.carry import SidecarVerifier

    return SidecarVerifier(ctx.blobs, up, loop, ctx.settings.sigstore_trusted_root, _identity_rules(info))


def config_of(ctx: Context, mirror_id: int) -> MirrorConfig:
    with ctx.db.session() as s:
        mirror = s.get(Mirror, mirror_id)
        assert mirror is not None
        return svc.load_config(mirror)
