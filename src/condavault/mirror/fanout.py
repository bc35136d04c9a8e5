"""A streamable passive mirror run as one durable job per subdir (kind ``mirror.subdir``; issue 16).

The run (``mirror.run``) asks upstream about each subdir with the ETag of its last sync (a 304 and an
unchanged record count: nothing to do), then enqueues one ``mirror.subdir`` job per changed subdir and
waits for them. Any worker of any machine takes them; the run's own thread takes queued ones too, so a
single process (``mirror run --local``, a server without other workers) still finishes. A process runs
one subdir sync at a time (:data:`SLOTS`): memory stays that of one subdir whatever the number of job
threads.

A worker killed mid-subdir (``kill -9``) leaves its job to the job system's takeover; the job runs again
elsewhere, streams the subdir again and skips every batch already committed (records present with their
sha256): verified work is not redone. A run taken over (its own worker died) finds the subdir jobs
still queued or running by their lock key and waits for those instead of enqueuing twins.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from condavault.channels.models import Channel
from condavault.errors import UpstreamError
from condavault.jobs.registry import JobKind, JobRun, JsonDict
from condavault.mirror import services as svc
from condavault.mirror import streamed
from condavault.mirror.models import Mirror, MirrorRun
from condavault.mirror.upstream import Upstream, redact_url
from condavault.outbound import UrlPolicy

if TYPE_CHECKING:
    from condavault.context import Context
    from condavault.mirror.bookkeeping import RunBook, RunInfo

__all__ = ["KIND", "fan_out", "job_kind"]

log = logging.getLogger(__name__)
KIND = "mirror.subdir"
SLOTS = threading.Semaphore(1)  # subdir syncs at once in this process (memory: one subdir's worth)
POLL = 0.5
SUM_KEYS = (
    "files",
    "kept",
    "dropped",
    "indexed_passive",
    "present",
    "refreshed",
    "replaced",
    "removed",
    "invalid_upstream_records",
    "kept_removed_upstream",
    "gone_upstream",
)


def lock_key(mirror_id: int, subdir: str) -> str:
    return f"mirror:{mirror_id}:subdir:{subdir}"


def _upstream(ctx: Context, cfg: Any) -> Upstream:
    s = ctx.settings
    return Upstream(
        cfg,
        cache_dir=None,
        timeout=s.mirror_timeout,
        retries=s.mirror_retries,
        concurrency=2,
        transport=ctx.domains.mirror_transport,
        policy=UrlPolicy.from_settings(s),
    )


# -- the run's side ----------------------------------------------------------------------------------
async def unchanged_subdirs(info: RunInfo, up: Upstream) -> dict[str, dict[str, Any]]:
    """Subdirs whose upstream answered 304 to the last sync's ETag, with the same config and record count."""
    if info.full:
        return {}
    ctx = info.ctx
    with ctx.db.session() as s:
        prev = streamed.previous_state(s, info.mirror_id)
    out: dict[str, dict[str, Any]] = {}

    async def one(sd: str) -> None:
        st = prev.get(sd)
        if not st or st.get("config_hash") != info.config_hash or not st.get("etag"):
            return
        with tempfile.TemporaryDirectory(prefix="cv-probe-") as tmp:
            got = await up.spool_repodata(sd, Path(tmp) / "body", {"file": st.get("file"), "etag": st["etag"]})
        if got is None:
            out[sd] = st

    await asyncio.gather(*(one(sd) for sd in info.cfg.subdirs))
    with ctx.db.session() as s:
        for sd in list(out):
            if streamed.record_count(s, info.channel_id, sd) != out[sd].get("channel_records"):
                del out[sd]
    return out


def fan_out(info: RunInfo, book: RunBook, todo: list[str], full: bool) -> None:
    """Enqueue (or find) one job per subdir in ``todo`` and wait for all of them; sums their counts."""
    ctx = info.ctx
    jobs: dict[str, int] = {}
    for sd in todo:
        key = lock_key(info.mirror_id, sd)
        found = ctx.jobs.active(key)
        jobs[sd] = found or ctx.jobs.enqueue(
            KIND,
            {"mirror_id": info.mirror_id, "run_id": info.run_id, "subdir": sd, "full": full},
            lock_key=key,
            channel_id=info.channel_id,
        )
    book.extra["subdir_jobs"] = jobs
    results: dict[str, JsonDict] = {}
    failed: dict[str, str] = {}
    while len(results) + len(failed) < len(jobs):
        if book.cancelled:
            # asked to stop by the user: the subdir jobs stop too; a run that lost its lease (taken over,
            # its worker stopping) leaves them to the run that takes over, which waits for them
            if _cancel_requested(ctx, info.run_id) or (book.job is not None and book.job.cancel_requested):
                for job_id in jobs.values():
                    ctx.jobs.cancel(job_id)
            return
        pending = False
        for sd, job_id in jobs.items():
            if sd in results or sd in failed:
                continue
            job = ctx.jobs.get(job_id)
            if job["state"] == "succeeded":
                results[sd] = job["result"] or {}
                if results[sd].get("state"):
                    book.extra.setdefault("subdirs", {})[sd] = results[sd]["state"]
            elif job["state"] in ("failed", "cancelled"):
                failed[sd] = str(job["error"])
            elif job["state"] == "queued" and not pending:
                pending = True
                ctx.worker.run_here(job_id)  # help: take it in this thread unless a worker got it first
        if len(results) + len(failed) < len(jobs) and not pending:
            time.sleep(POLL)
        book.done_items = sum(int(ctx.jobs.get(j)["done"] or 0) for sd, j in jobs.items() if sd not in results)
        book.done_items += sum(int(r.get("files", 0)) for r in results.values())
    for r in results.values():
        for k in SUM_KEYS:
            if r.get(k):
                book.counts[k] += int(r[k])
    if failed:
        raise UpstreamError(
            "subdir syncs failed: " + "; ".join(f"{sd}: {err}" for sd, err in sorted(failed.items())),
            code="mirror_subdir_failed",
        )


def _cancel_requested(ctx: Context, run_id: int) -> bool:
    with ctx.db.session() as s:
        return bool(s.scalar(select(MirrorRun.cancel_requested).where(MirrorRun.id == run_id)))


# -- the subdir job ----------------------------------------------------------------------------------
def run_job(run: JobRun) -> JsonDict:
    """``mirror.subdir``: stream one subdir of a passive mirror into its channel, then index it."""
    ctx = run.ctx
    mirror_id, run_id, sd = int(run.params["mirror_id"]), int(run.params["run_id"]), str(run.params["subdir"])
    with ctx.db.session() as s:
        mirror = s.get(Mirror, mirror_id)
        if mirror is None:
            return {"status": "mirror gone"}
        cfg = svc.load_config(mirror)
        config_hash = mirror.config_hash
        channel = s.get(Channel, mirror.channel_id)
        assert channel is not None
        channel_id = channel.id
        prev = streamed.previous_state(s, mirror_id).get(sd)
    run.progress(phase="waiting for a slot")
    with SLOTS:
        run.check_cancelled()
        t0 = time.perf_counter()
        spool = ctx.settings.data_dir / "mirror-spool"
        spool.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=spool) as tmp:
            body = Path(tmp) / "repodata"
            run.progress(phase="fetching repodata")

            async def fetch() -> tuple[dict[str, Any] | None, str | None]:
                async with _upstream(ctx, cfg) as up:
                    got = await up.spool_repodata(sd, body)
                    base = redact_url(f"{up.base}/{sd}") if up.local is None else None
                    return got, base

            got, base = asyncio.run(fetch())
            assert got is not None  # asked without an ETag: never a 304
            fetch_s = time.perf_counter() - t0
            with ctx.db.session() as s:
                count = streamed.record_count(s, channel_id, sd)
            same = (
                not run.params.get("full")
                and prev is not None
                and prev.get("sha256") == got["sha256"]
                and prev.get("config_hash") == config_hash
                and prev.get("channel_records") == count
            )
            sync = streamed.SubdirSync(
                ctx,
                mirror_id,
                run_id,
                channel_id,
                cfg,
                sd,
                base,
                progress=lambda n: run.progress(phase="importing", done=n),
                cancelled=lambda: run.cancelled,
            )
            counts: dict[str, Any] = dict(sync.counts)
            if not same:
                with streamed.open_body(body, got["compressed"]) as fh:
                    counts = dict(sync.run(fh))
            run.check_cancelled()
        import_s = time.perf_counter() - t0 - fetch_s
        run.progress(phase="indexing")
        index_s = sync.publish() if not same else 0.0
        with ctx.db.session() as s:
            count = streamed.record_count(s, channel_id, sd)
        state = {
            "file": got["file"],
            "etag": got["etag"],
            "sha256": got["sha256"],
            "config_hash": config_hash,
            "channel_records": count,
        }
    counts.update(
        subdir=sd,
        state=state,
        unchanged_body=same,
        channel_records=count,
        fetch_seconds=round(fetch_s, 2),
        import_seconds=round(import_s, 2),
        index_seconds=round(index_s, 2),
    )
    log.info("mirror subdir synced", extra={"mirror_id": mirror_id, "subdir": sd, "records": count})
    return counts


def job_kind() -> JobKind:
    return JobKind(
        KIND,
        run_job,
        lane="long",
        max_attempts=2,
        takeovers=3,
        description="one subdir of a passive mirror run (streamed import, then its index)",
    )
