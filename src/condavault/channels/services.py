"""Channels: CRUD on a session (``get_channel``, ``create_channel``, ...), and :class:`ChannelService`, the
operations the routes call (each one transaction with its events)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import ChannelRef, allowed
from condavault.channels import depends, record_sync
from condavault.channels import records as rec_svc
from condavault.channels.events import ChannelChanged, ChannelCreated, RecordsChanged
from condavault.channels.models import Channel, Record
from condavault.channels.naming import check_channel_name, check_privacy
from condavault.errors import Conflict, NotFound
from condavault.events import Actor
from condavault.indexing import garbage
from condavault.indexing.dirty import get_state, mark_dirty, subdirs_of
from condavault.indexing.models import PublishedFile, ShardBlob, ShardHead
from condavault.indexing.patches import PatchSet
from condavault.jobs.registry import JobRun
from condavault.packages.filename import check_subdir

if TYPE_CHECKING:
    from condavault.context import Context


def get_channel(session: Session, name: str) -> Channel:
    channel = session.scalar(select(Channel).where(Channel.name == name))
    if channel is None:
        raise NotFound(f"channel {name!r} not found", code="channel_not_found", channel=name)
    return channel


def find_channel(session: Session, name: str) -> Channel | None:
    return session.scalar(select(Channel).where(Channel.name == name))


def create_channel(
    session: Session, name: str, *, privacy: str = "public", description: str = "", created_by: str | None = None
) -> Channel:
    check_channel_name(name)
    check_privacy(privacy)
    if find_channel(session, name) is not None:
        raise Conflict(f"channel {name!r} already exists", code="channel_exists", channel=name)
    channel = Channel(name=name, privacy=privacy, description=description, created_by=created_by)
    session.add(channel)
    session.flush()
    mark_dirty(session, channel.id, "noarch", None)  # noarch/repodata.json always exists
    return channel


def update_channel(
    session: Session, name: str, *, privacy: str | None = None, description: str | None = None
) -> Channel:
    channel = get_channel(session, name)
    if privacy is not None:
        channel.privacy = check_privacy(privacy)
    if description is not None:
        channel.description = description
    session.flush()
    return channel


def delete_channel(session: Session, name: str) -> None:
    channel = get_channel(session, name)
    # its index files and shards: collected by the server after the retention (unless shared)
    index_blobs: set[str] = set()
    for column, owner in (
        (PublishedFile.sha256, PublishedFile.channel_id),
        (PublishedFile.source_sha256, PublishedFile.channel_id),
        (ShardBlob.sha256, ShardBlob.channel_id),
        (ShardHead.sha256, ShardHead.channel_id),
    ):
        index_blobs.update(session.scalars(select(column).where(owner == channel.id)))
    garbage.record(session, index_blobs)
    session.delete(channel)
    session.flush()


def list_channels(session: Session) -> list[Channel]:
    return list(session.scalars(select(Channel).order_by(Channel.name)))


def channel_stats(session: Session, channel_id: int) -> dict[str, object]:
    rows = session.execute(
        select(Record.subdir, func.count(), func.coalesce(func.sum(Record.size), 0))
        .where(Record.channel_id == channel_id)
        .group_by(Record.subdir)
    ).all()
    counts = [(str(r[0]), int(r[1] or 0), int(r[2] or 0)) for r in rows]
    return {
        "subdirs": {sd: {"files": n, "bytes": size} for sd, n, size in counts},
        "files": sum(n for _, n, _ in counts),
        "bytes": sum(size for _, _, size in counts),
    }


# -- the operations behind the routes (authorised by the caller; one call per route) ------------------


def _seqs(session: Session, channel_id: int, subdirs: set[str]) -> dict[str, int]:
    """The change sequence each subdir is at (to wait for its index after the commit)."""
    out = {}
    for sd in subdirs:
        state = get_state(session, channel_id, sd, create=False)
        if state is not None:
            out[sd] = state.change_seq
    return out


class ChannelService:
    """Channel and file operations: each runs in one transaction that also records its events (the audit
    row, index requests, cache invalidation, the creator's grant), then waits for the index where the
    API promises it."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _wait_indexed(self, channel_id: int, seqs: dict[str, int], timeout: float = 120) -> bool:
        ok = True
        for sd, seq in seqs.items():
            ok = self.ctx.indexer.wait_for(channel_id, sd, seq, timeout=timeout) and ok
        return ok

    def _changed(self, s: Session, channel_id: int, paths: list[str], *, index: bool = True) -> dict[str, int]:
        """Record that the records of ``paths`` (``subdir/filename``) changed; returns their subdirs' seqs."""
        subdirs = {p.split("/", 1)[0] for p in paths}
        if subdirs:
            self.ctx.events.record(s, RecordsChanged(channel_id, tuple(sorted(subdirs)), index=index))
            self.ctx.events.record(s, ChannelChanged(channel_id))
        return _seqs(s, channel_id, subdirs)

    # -- channels ------------------------------------------------------------------------------------
    def list_readable(self, identity: Identity) -> list[Channel]:
        """Every channel ``identity`` may read, in one query."""
        with self.ctx.db.session() as s:
            rows = list_channels(s)
        return [c for c in rows if allowed(identity, Permission.CHANNEL_READ, ChannelRef(c.id, c.name, c.privacy))]

    def dependants(
        self, identity: Identity, name: str, package: str, *, limit: int = 100, offset: int = 0, count: bool = True
    ) -> tuple[list[dict[str, Any]], int]:
        """Packages of every channel ``identity`` may read with a build whose ``depends`` names ``package``
        of channel ``name`` (read permission on it; a package it does not hold: 404), paged; and their
        number. A lookup in the dependency-name index (``channels.depends``)."""
        ref = self.ctx.channels.for_read(identity, name)
        readable = [c.id for c in self.list_readable(identity)]
        with self.ctx.db.session() as s:
            subdirs = subdirs_of(s, ref.id)
            held = s.scalar(  # the subdirs listed: an index lookup, not a read of the channel's records
                select(Record.id)
                .where(Record.channel_id == ref.id, Record.subdir.in_(subdirs), Record.name == package)
                .limit(1)
            )
            if held is None:
                raise NotFound(
                    f"no package {package!r} in channel {ref.name!r}",
                    code="package_not_found",
                    channel=ref.name,
                    package=package,
                )
            return depends.dependants(s, readable, package, limit=limit, offset=offset, count=count)

    def create(self, identity: Identity, name: str, *, privacy: str, description: str) -> Channel:
        def work(s: Session) -> Channel:
            c = create_channel(s, name, privacy=privacy, description=description, created_by=identity.username)
            actor = Actor.of(identity)
            self.ctx.events.record(s, ChannelCreated(c.id, c.name, actor))
            self.ctx.events.record(s, ChannelChanged(c.id, c.name))
            after = {"name": name, "privacy": privacy, "description": description}
            self.ctx.record_change(identity, "channel:create", name, None, after, session=s)
            return c

        c = self.ctx.db.run_write(work)
        self.ctx.indexer.index_subdir(c.id, "noarch")  # noarch/repodata.json exists as soon as the channel does
        return c

    def show(self, name: str) -> tuple[Channel, dict[str, object]]:
        with self.ctx.db.session() as s:
            c = get_channel(s, name)
            return c, channel_stats(s, c.id)

    def update(self, identity: Identity, name: str, *, privacy: str | None, description: str | None) -> Channel:
        def work(s: Session) -> Channel:
            c = get_channel(s, name)
            before = {"privacy": c.privacy, "description": c.description}
            c = update_channel(s, name, privacy=privacy, description=description)
            self.ctx.events.record(s, ChannelChanged(c.id, c.name))
            after = {"privacy": c.privacy, "description": c.description}
            self.ctx.record_change(
                identity, "channel:update", name, {"name": name, **before}, {"name": name, **after}, session=s
            )
            return c

        return self.ctx.db.run_write(work)

    def delete(self, identity: Identity, name: str) -> None:
        def work(s: Session) -> None:
            c = get_channel(s, name)
            cid = c.id
            delete_channel(s, name)
            self.ctx.events.record(s, ChannelChanged(cid, name, deleted=True))
            self.ctx.record_change(identity, "channel:delete", name, session=s)

        self.ctx.db.run_write(work)

    # -- files ---------------------------------------------------------------------------------------
    def list_files(
        self, name: str, *, subdir: str | None, package: str | None, limit: int, offset: int
    ) -> list[Record]:
        with self.ctx.db.session() as s:
            c = get_channel(s, name)
            return rec_svc.list_records(s, c, subdir=subdir, name=package, limit=limit, offset=offset)

    def remove_files(self, identity: Identity, name: str, files: list[str]) -> list[str]:
        def work(s: Session) -> tuple[list[str], dict[str, int], int]:
            c = get_channel(s, name)
            removed = rec_svc.remove_records(s, c, rec_svc.resolve_files(s, c, files))
            seqs = self._changed(s, c.id, removed)
            self.ctx.record_change(identity, "package:remove", name, removed, None, session=s)
            return removed, seqs, c.id

        removed, seqs, cid = self.ctx.db.run_write(work)
        self._wait_indexed(cid, seqs)
        return removed

    def copy_files(
        self, identity: Identity, name: str, files: list[str], to: str, *, move: bool, force: bool
    ) -> dict[str, list[str]]:
        def work(s: Session) -> tuple[dict[str, list[str]], list[tuple[int, dict[str, int]]]]:
            c = get_channel(s, name)
            t = get_channel(s, to)
            rows = rec_svc.resolve_files(s, c, files)
            done = rec_svc.copy_records(s, c, t, rows, move=move, force=force, actor=identity.username)
            paths = done["copied"] + done["unchanged"]
            waits = [(t.id, self._changed(s, t.id, paths))]
            if move and c.id != t.id:
                waits.append((c.id, self._changed(s, c.id, paths)))
            action = "package:move" if move else "package:copy"
            self.ctx.record_change(identity, action, f"{name}->{to}", files, done, session=s)
            return done, waits

        done, waits = self.ctx.db.run_write(work)
        for cid, seqs in waits:
            self._wait_indexed(cid, seqs)
        return done

    def import_repodata(
        self,
        identity: Identity,
        name: str,
        subdir: str,
        repodata: dict[str, Any] | record_sync.Entries,
        *,
        base_url: str | None,
    ) -> dict[str, int]:
        check_subdir(subdir)

        def work(s: Session) -> tuple[dict[str, int], dict[str, int], int]:
            c = get_channel(s, name)
            counts = record_sync.import_repodata(s, c, subdir, repodata, base_url=base_url)
            seqs = self._changed(s, c.id, [f"{subdir}/x"])
            self.ctx.record_change(identity, "channel:import", f"{name}/{subdir}", None, counts, session=s)
            return counts, seqs, c.id

        counts, seqs, cid = self.ctx.db.run_write(work)
        self._wait_indexed(cid, seqs)
        return counts

    # -- patches and reindexing ----------------------------------------------------------------------
    def get_patches(self, channel_id: int, subdir: str) -> dict[str, Any]:
        with self.ctx.db.session() as s:
            state = get_state(s, channel_id, check_subdir(subdir), create=False)
            return json.loads(state.patch_instructions) if state and state.patch_instructions else {}

    def put_patches(self, identity: Identity, name: str, subdir: str, body: dict[str, Any]) -> int:
        check_subdir(subdir)
        PatchSet.parse(body)  # refuse bad instructions before any write

        def work(s: Session) -> tuple[int, dict[str, int], int]:
            c = get_channel(s, name)
            state = get_state(s, c.id, subdir)
            before = json.loads(state.patch_instructions) if state and state.patch_instructions else None
            n = record_sync.apply_patches(s, c.id, subdir, body)
            seqs = self._changed(s, c.id, [f"{subdir}/x"])
            self.ctx.record_change(identity, "channel:patch", f"{name}/{subdir}", before, body, session=s)
            return n, seqs, c.id

        n, seqs, cid = self.ctx.db.run_write(work)
        self._wait_indexed(cid, seqs)
        return n

    def reindex(self, identity: Identity, name: str, *, wait: bool = True) -> dict[str, Any]:
        """Rebuild every index file of the channel from the database, as a ``channel.reindex`` job (run
        here when ``wait``)."""

        def work(s: Session) -> int:
            c = get_channel(s, name)
            key = f"channel.reindex:{c.id}"
            return self.ctx.jobs.enqueue(
                REINDEX_KIND,
                {"channel_id": c.id},
                session=s,
                dedupe_key=key,
                lock_key=key,
                created_by=identity.username,
                channel_id=c.id,
                claim=wait,
            )

        job_id = self.ctx.db.run_write(work)
        if not wait:
            return {"job_id": job_id, "state": "queued", "reindexed": []}
        ran = self.ctx.worker.run_claimed(job_id)
        if ran.error is not None:
            raise ran.error
        job = self.ctx.jobs.wait(job_id, timeout=3600)
        return {"job_id": job_id, "state": job["state"], **(job["result"] or {"reindexed": []})}


REINDEX_KIND = "channel.reindex"


def reindex_job(run: JobRun) -> dict[str, Any]:
    """The ``channel.reindex`` handler: mark every subdir for a full rebuild, then index it now."""
    ctx = run.ctx
    channel_id = int(run.params["channel_id"])

    def work(s: Session) -> list[str]:
        if s.get(Channel, channel_id) is None:
            raise NotFound(f"channel {channel_id} was deleted", code="channel_not_found")
        subdirs = subdirs_of(s, channel_id)
        for sd in subdirs:
            mark_dirty(s, channel_id, sd, None)
        return subdirs

    subdirs = ctx.db.run_write(work)
    run.progress(phase="indexing", done=0, total=len(subdirs))
    ctx.indexer.forget(channel_id)
    ctx.index_now(channel_id, subdirs)
    ctx.lookup.invalidate(channel_id)
    return {"reindexed": sorted(subdirs)}
