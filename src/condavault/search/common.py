"""What the search modules share: limits, relevance tiers, a candidate package, the channel scope.

Every query is restricted in SQL to the channels the caller may read (:func:`within`, :func:`scope_sql`).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Integer, String, any_, bindparam, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

SORTS = ("relevance", "name", "newest")
MAX_PAGE = 1000
MAX_PER_PAGE = 100
MAX_CANDIDATES = 1000  # packages a text query ranks (the total says "at least" beyond: total_capped)
MAX_RECORDS = 50000  # records a field query reads
FUZZY_MIN = 0.3
SUGGEST_MIN = 0.35
SCORE_BANDS = (("critical", 9.0), ("high", 7.0), ("medium", 4.0), ("low", 0.0))
BAND_NAMES = ("critical", "high", "medium", "low", "none")
# relevance of a text match (exact name first, then prefix, then substring/text, then fuzzy)
EXACT, PREFIX, NAME_SUBSTRING, TEXT, FUZZY = 1000.0, 500.0, 300.0, 100.0, 50.0


@dataclass
class Pkg:
    """One result before paging: a (channel, name) with its relevance and facet values."""

    channel_id: int
    name: str
    score: float
    subdirs: set[str]
    license: str | None
    max_score: float | None
    timestamp: int
    records: list[Any] | None = None  # record-level queries: the matching records (``shape.record_cols``)
    matched: str | None = None
    doc_id: int | None = None  # text queries: the search_packages row
    latest_id: int | None = None  # text queries: the newest record of the package


class Ids(list[int]):
    """Readable channel ids; ``everything``: they are all the channels (no filter needed)."""

    everything: bool = False


def within(s: Session, col: Any, ids: list[int]) -> ColumnElement[bool]:
    """``col`` is one of ``ids``: nothing when they are all channels; one array parameter on PostgreSQL."""
    if getattr(ids, "everything", False):
        return true()
    if s.get_bind().dialect.name == "postgresql":
        return col == any_(bindparam("scope_ids", list(ids), type_=postgresql.ARRAY(Integer)))  # type: ignore[no-any-return]
    return col.in_(list(ids))  # type: ignore[no-any-return]


def one_of(s: Session, col: Any, values: list[Any], key: str = "names", kind: Any = String) -> ColumnElement[bool]:
    """``col IN values``: one array parameter ``key`` on PostgreSQL, one expanding parameter on SQLite (the
    values are bound as they are, not coerced one by one into the statement)."""
    if s.get_bind().dialect.name == "postgresql":
        return col == any_(bindparam(key, list(values), type_=postgresql.ARRAY(kind)))  # type: ignore[no-any-return]
    return col.in_(bindparam(key, list(values), expanding=True))  # type: ignore[no-any-return]


def scope_sql(ids: list[int], column: str) -> str:
    """The same, as SQL text (the ids are integers from the database)."""
    if getattr(ids, "everything", False):
        return "1=1"
    return f"{column} IN ({','.join(str(int(i)) for i in ids) or 'NULL'})"


def band(score: float | None) -> str:
    if score is None:
        return "none"
    for name, low in SCORE_BANDS:
        if score >= low:
            return name
    return "none"


def like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def glob_like(s: str) -> str:
    return like_escape(s).replace("*", "%")


def keep(p: Pkg, subdir: str | None, lic: str | None, score: str | None = None) -> bool:
    if subdir is not None and subdir not in p.subdirs:
        return False
    if score is not None and band(p.max_score) != score:
        return False
    return lic is None or fnmatch.fnmatchcase((p.license or "").lower(), lic)


def sort_key(sort: str, channels: dict[int, str]) -> Callable[[Pkg], Any]:
    if sort == "name":
        return lambda p: (p.name, channels[p.channel_id], p.channel_id)
    if sort == "newest":
        return lambda p: (-p.timestamp, p.name, channels[p.channel_id], p.channel_id)
    return lambda p: (-p.score, len(p.name), p.name, channels[p.channel_id], p.channel_id)
