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

from sqlalchemy import String, Text, select
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import Mapped, mapped_column

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


def shared_secret(db: Database, name: str, make: Callable[[], str]) -> str | None:
    """The secret ``name``, created with ``make()`` by the first caller of any process. None when the
    database has no ``server_secrets`` table yet (an older schema: callers keep their file)."""
    try:
        with db.session() as s:
            value = s.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
        if value is not None:
            return value
        candidate = make()
        try:
            with db.session() as s:
                s.add(ServerSecret(name=name, value=candidate))
            return candidate
        except IntegrityError:  # another process created it first: theirs
            with db.session() as s:
                return s.scalar(select(ServerSecret.value).where(ServerSecret.name == name))
    except (OperationalError, ProgrammingError) as exc:
        if "server_secrets" in str(exc):  # no such table: a database not migrated to 0013 yet
            return None
        raise
