"""Passive mirrors: fetch a metadata-only record's bytes on its first request.

:class:`PassiveFetcher` is registered in ``ctx.missing_fetchers``. For a file of a mirrored channel it
downloads the bytes from the mirror's upstream, verifies them against the upstream record (sha256 and
size) and stores them through ``Ingestor.ingest``, after which the record has its blob and is served
like any other. Concurrent first requests share one download: an in-process future per file, plus a
short DB claim on the plan item (``fetch_until``) so replicas wait for each other instead of fetching
the same file again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from condavault.auth.identity import Identity
from condavault.auth.policy import ChannelRef
from condavault.channels.models import Record
from condavault.db.base import affected
from condavault.errors import UpstreamError
from condavault.mirror.config import MirrorConfig
from condavault.mirror.models import Mirror, MirrorItem
from condavault.mirror.planning import overrides_of
from condavault.mirror.upstream import Upstream
from condavault.outbound import UrlPolicy
from condavault.serving.lookup import Target

if TYPE_CHECKING:
    from condavault.context import Context

__all__ = ["PassiveFetcher"]

log = logging.getLogger(__name__)
CLAIM_SECONDS = 300.0


class PassiveFetcher:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._inflight: dict[tuple[int, str, str], asyncio.Future[Target | None]] = {}
        self.downloads = 0  # upstream downloads started by this process

    async def __call__(self, channel: ChannelRef, subdir: str, target: Target) -> Target | None:
        key = (channel.id, subdir, target.filename or "")
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._fetch(channel, subdir, target))
            self._inflight[key] = fut
            fut.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(fut)

    # -- one file ------------------------------------------------------------------------------------
    def _find(self, channel_id: int, subdir: str, filename: str) -> tuple[int, int, Any, dict[str, Any]] | None:
        """The plan item and mirror config for a file of a mirrored channel, with the upstream record."""
        with self.ctx.db.session() as s:
            row = s.execute(
                select(MirrorItem.id, Mirror.id, Mirror.config)
                .join(Mirror, Mirror.id == MirrorItem.mirror_id)
                .where(
                    Mirror.channel_id == channel_id,
                    MirrorItem.subdir == subdir,
                    MirrorItem.filename == filename,
                    MirrorItem.kept.is_(True),
                )
                .limit(1)
            ).first()
            if row is None:
                return None
            rec = s.scalar(
                select(Record.record).where(
                    Record.channel_id == channel_id, Record.subdir == subdir, Record.filename == filename
                )
            )
        return row[0], row[1], MirrorConfig.model_validate_json(row[2]), json.loads(rec) if rec else {}

    def _claim(self, item_id: int) -> bool:
        now = time.time()

        def claim(s: Session) -> bool:
            res = s.execute(
                update(MirrorItem)
                .where(MirrorItem.id == item_id, MirrorItem.fetch_until < now)
                .values(fetch_until=now + CLAIM_SECONDS)
            )
            return bool(affected(res))

        return self.ctx.db.run_write(claim)

    def _settle(self, item_id: int, state: str, error: str | None) -> None:
        def write(s: Session) -> None:
            s.execute(
                update(MirrorItem).where(MirrorItem.id == item_id).values(fetch_until=0.0, state=state, error=error)
            )

        self.ctx.db.run_write(write)

    def _has_blob(self, channel_id: int, subdir: str, filename: str) -> bool:
        with self.ctx.db.session() as s:
            return bool(
                s.scalar(
                    select(Record.has_blob).where(
                        Record.channel_id == channel_id, Record.subdir == subdir, Record.filename == filename
                    )
                )
            )

    def _reload(self, channel_id: int, subdir: str, filename: str) -> Target | None:
        self.ctx.lookup.invalidate(channel_id)
        return self.ctx.lookup.load(("package", channel_id, subdir, filename))

    async def _fetch(self, channel: ChannelRef, subdir: str, target: Target) -> Target | None:
        filename = target.filename or ""
        found = await anyio.to_thread.run_sync(self._find, channel.id, subdir, filename)
        if found is None:
            return None  # not a mirrored file: another fetcher may know it
        item_id, mirror_id, cfg, rec = found
        if not await anyio.to_thread.run_sync(self._claim, item_id):
            # another process is fetching it: wait for its blob
            deadline = time.monotonic() + CLAIM_SECONDS
            while time.monotonic() < deadline:
                if await anyio.to_thread.run_sync(self._has_blob, channel.id, subdir, filename):
                    return await anyio.to_thread.run_sync(self._reload, channel.id, subdir, filename)
                await asyncio.sleep(0.2)
            raise UpstreamError(f"{subdir}/{filename}: timed out waiting for another fetch", code="fetch_timeout")
        settings = self.ctx.settings
        try:
            self.downloads += 1
            async with Upstream(
                cfg,
                cache_dir=None,
                timeout=settings.mirror_timeout,
                retries=settings.mirror_retries,
                concurrency=1,
                transport=self.ctx.domains.mirror_transport,
                policy=UrlPolicy.from_settings(settings),
            ) as up:
                received = await up.download(subdir, filename, self.ctx.ingestor.aspool)
                sha = rec.get("sha256") or None
                identity = Identity(username=f"mirror:{cfg.name}")

                def store() -> Any:
                    return self.ctx.ingestor.ingest(
                        channel.name,
                        received,
                        filename,
                        expected_subdir=subdir,
                        expected_sha256=sha,
                        expected_size=rec.get("size"),
                        force=sha is None,
                        actor=identity.username,
                        record_overrides=overrides_of(rec),
                        source_url=up.display_url(subdir, filename),
                    )

                await anyio.to_thread.run_sync(store)
        except BaseException as exc:
            err = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            await anyio.to_thread.run_sync(self._settle, item_id, "passive", err)
            log.warning("passive fetch failed", extra={"mirror_id": mirror_id, "file": f"{subdir}/{filename}"})
            raise
        await anyio.to_thread.run_sync(self._settle, item_id, "done", None)
        return await anyio.to_thread.run_sync(self._reload, channel.id, subdir, filename)
