"""Planner statistics of tables that bulk writes grow fast (PostgreSQL).

PostgreSQL plans with the statistics ``ANALYZE`` gathered. A table loaded in bulk faster than autovacuum
analyses it (or on a server where autovacuum is off) keeps the statistics of a small or empty table, and
lookups by key of the rows just loaded are then planned on a shorter index with a filter: a mirror of
740,000 records that looks up each batch of 500 filenames in its subdir read the whole subdir per batch
(seen: 37 s a lookup at 150,000 records, ~600 records/s overall, 10x faster after one ``ANALYZE``).

So the bulk writers say how many rows they inserted; after the commit, a table grown by this process by at
least :data:`MIN_ROWS` rows and by :data:`SHARE` of the rows its statistics count is analysed (sampled:
about a second at millions of rows), from this process, one at a time per table. SQLite is left alone:
its planner uses no statistics unless ``ANALYZE`` ran once, and the lookups are written for that.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from condavault.db.session import after_commit

log = logging.getLogger(__name__)
MIN_ROWS = 10_000
SHARE = 0.2
TABLES = frozenset({"records", "record_depends", "mirror_items"})  # the names go into SQL: only these


@dataclass
class _Growth:
    lock: threading.Lock = field(default_factory=threading.Lock)
    rows: dict[str, int] = field(default_factory=dict)
    running: set[str] = field(default_factory=set)


_COUNTED = text("SELECT reltuples FROM pg_class WHERE oid = CAST(:t AS regclass)")
_growth: weakref.WeakKeyDictionary[Engine, _Growth] = weakref.WeakKeyDictionary()
_growth_lock = threading.Lock()


def note_growth(session: Session, table: str, rows: int) -> None:
    """``rows`` were inserted into ``table`` in ``session``'s transaction: counted once it commits."""
    if table not in TABLES:
        raise ValueError(f"no statistics upkeep for {table!r}")
    engine = session.get_bind().engine
    if rows <= 0 or engine.dialect.name != "postgresql":
        return
    after_commit(session, lambda: _grew(engine, table, rows))


def _grew(engine: Engine, table: str, rows: int) -> None:
    with _growth_lock:
        growth = _growth.setdefault(engine, _Growth())
    with growth.lock:
        grown = growth.rows.get(table, 0) + rows
        growth.rows[table] = grown
        if grown < MIN_ROWS or table in growth.running:
            return
        growth.running.add(table)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            counted = conn.execute(_COUNTED, {"t": table})
            known = max(0.0, float(counted.scalar() or 0))  # -1: never analysed
            if grown < SHARE * known:
                return
            t0 = time.perf_counter()
            conn.execute(text(f"ANALYZE {table}"))
        with growth.lock:
            growth.rows[table] = max(0, growth.rows.get(table, 0) - grown)
        log.info(
            "table statistics refreshed",
            extra={"table": table, "grown": grown, "rows_before": int(known), "seconds": time.perf_counter() - t0},
        )
    finally:
        with growth.lock:
            growth.running.discard(table)
