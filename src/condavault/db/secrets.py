"""Secrets every process of one server shares through the database (no shared filesystem needed):
the session-cookie secret and the bundle/admission signing key of a server run on several machines.

The first process that needs one creates it; a race between two first processes is decided by the
primary key (the loser reads the winner's value). Values set in settings or files named in settings
always win (see the callers).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from sqlalchemy import String, Text, create_engine, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from condavault.db.base import Base, UTCDateTime, utcnow
from condavault.db.session import Database


class ServerSecret(Base):
    __tablename__ = "server_secrets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


def database_exists(url: str) -> bool:
    """False for a SQLite file that does not exist (opening it would create it); True otherwise."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    if u.get_backend_name() != "sqlite":
        return True
    return u.database is not None and u.database != ":memory:" and Path(u.database).is_file()


def shared_secret_at(url: str, name: str, make: Callable[[], str]) -> str | None:
    """:func:`shared_secret` for a caller without a :class:`Database`: a short-lived engine, disposed of
    at once (no pool kept beside the server's own)."""
    if not database_exists(url):
        return None  # no server database here (yet)
    engine = create_engine(
        url, poolclass=NullPool, **({"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {})
    )
    try:
        return _shared(lambda: Session(engine), name, make)
    finally:
        engine.dispose()


def shared_secret(db: Database, name: str, make: Callable[[], str]) -> str | None:
    """The secret ``name``, created with ``make()`` by the first caller of any process. None when the
    database has no ``server_secrets`` table yet (an older schema: callers keep their file)."""
    return _shared(db._factory, name, make)


def _shared(session: Callable[[], Session], name: str, make: Callable[[], str]) -> str | None:
    try:
        with session() as s:
            value = s.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
        if value is not None:
            return value
        candidate = make()
        try:
            with session() as s:
                s.add(ServerSecret(name=name, value=candidate))
                s.commit()
            return candidate
        except IntegrityError:  # another process created it first: theirs
            with session() as s:
                return s.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    except (OperationalError, ProgrammingError) as exc:
        if "server_secrets" in str(exc):  # no such table: a database not migrated to 0013 yet
            return None
        raise
