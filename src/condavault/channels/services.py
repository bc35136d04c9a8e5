"""Channel CRUD."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record
from condavault.channels.naming import check_channel_name, check_privacy
from condavault.errors import Conflict, NotFound
from condavault.indexing.dirty import mark_dirty


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
    return {
        "subdirs": {r[0]: {"files": r[1], "bytes": int(r[2])} for r in rows},
        "files": sum(r[1] for r in rows),
        "bytes": sum(int(r[2]) for r in rows),
    }
