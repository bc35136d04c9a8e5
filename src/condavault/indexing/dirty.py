"""Marking subdirs dirty: done by writers in the same transaction as their record change."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from condavault.db.base import utcnow
from condavault.indexing.models import DirtyName, SubdirState


def get_state(session: Session, channel_id: int, subdir: str, *, create: bool = True) -> SubdirState | None:
    q = select(SubdirState).where(SubdirState.channel_id == channel_id, SubdirState.subdir == subdir)
    state = session.scalar(q)
    if state is None and create:
        ins = (
            _insert(session)(SubdirState)
            .values(
                channel_id=channel_id,
                subdir=subdir,
                change_seq=1,
                indexed_seq=0,
                full_seq=1,
                lease_until=0.0,
                updated_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["channel_id", "subdir"])
        )
        session.execute(ins)
        state = session.scalar(q)
    return state


def subdirs_of(session: Session, channel_id: int) -> list[str]:
    """The channel's subdirs with index state, sorted: every subdir that ever had a record (every write of
    records marks its subdir here) and noarch (made with the channel)."""
    return sorted(session.scalars(select(SubdirState.subdir).where(SubdirState.channel_id == channel_id)))


def _insert(session: Session):  # type: ignore[no-untyped-def]
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def mark_dirty(session: Session, channel_id: int, subdir: str, names: Iterable[str] | None) -> int:
    """Record that ``names`` (None = everything) changed; returns the new change sequence."""
    get_state(session, channel_id, subdir)
    values: dict[str, object] = {"change_seq": SubdirState.change_seq + 1, "updated_at": utcnow()}
    if names is None:
        values["full_seq"] = SubdirState.change_seq + 1
    seq = session.execute(
        update(SubdirState)
        .where(SubdirState.channel_id == channel_id, SubdirState.subdir == subdir)
        .values(**values)
        .returning(SubdirState.change_seq)
    ).scalar_one()
    if names is not None:
        rows = [{"channel_id": channel_id, "subdir": subdir, "name": n, "seq": seq} for n in set(names)]
        if rows:
            # one statement for any number of names (executemany): a multi-VALUES statement would be
            # compiled anew for every count of names
            ins = _insert(session)(DirtyName.__table__)
            upsert = ins.on_conflict_do_update(
                index_elements=["channel_id", "subdir", "name"], set_={"seq": ins.excluded.seq}
            )
            session.connection().execute(upsert, rows)
    for obj in list(session.identity_map.values()):
        if isinstance(obj, SubdirState):
            session.expire(obj)
    return int(seq)


def dirty_names(session: Session, channel_id: int, subdir: str) -> dict[str, int]:
    rows = session.execute(
        select(DirtyName.name, DirtyName.seq).where(DirtyName.channel_id == channel_id, DirtyName.subdir == subdir)
    )
    return {n: int(s) for n, s in rows}


def clear_dirty(session: Session, channel_id: int, subdir: str, upto_seq: int) -> None:
    session.execute(
        delete(DirtyName).where(
            DirtyName.channel_id == channel_id, DirtyName.subdir == subdir, DirtyName.seq <= upto_seq
        )
    )
