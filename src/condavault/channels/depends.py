"""The dependency-name index (``record_depends``): which records name a package in their ``depends``.

Rows are written by ``channels.records`` in the transaction that writes the records (inserts, in-place
metadata refreshes) and deleted with them (foreign key, cascade). The migration ``0014_dependants``
fills it for records stored before it existed. Queries take channel ids the caller was already allowed
to read (``vulns.api.readable``): nothing here checks permissions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record, RecordDepends
from condavault.db import statistics
from condavault.db.base import table
from condavault.packages.specs import version_key

MAX_NAME = 100
MAX_SPEC = 500
MAX_LIMIT = 1000
COUNT_CAP = 1000  # packages counted at most (``python`` has a dependant in nearly every package)
_NAME_END = re.compile(r"[\s\[=<>!~,]")


def dep_name(spec: str) -> str:
    """The package name of a ``depends`` entry (``numpy >=1.20`` -> ``numpy``; ``conda-forge::x`` -> ``x``)."""
    name = _NAME_END.split(spec.strip(), maxsplit=1)[0]
    return name.rsplit("::", 1)[-1]


def depends_rows(record_id: int, channel_id: int, name: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``record_depends`` rows of one record (one per depended name; the first spec naming it)."""
    deps = record.get("depends")
    if not isinstance(deps, list):
        return []
    out: dict[str, dict[str, Any]] = {}
    for spec in deps:
        if not isinstance(spec, str):
            continue
        dep = dep_name(spec)
        if not dep or len(dep) > MAX_NAME or dep in out:
            continue
        out[dep] = {
            "record_id": record_id,
            "name": dep,
            "channel_id": channel_id,
            "dependant": name[:MAX_NAME],
            "spec": spec.strip()[:MAX_SPEC],
        }
    return list(out.values())


def write(session: Session, rows: Iterable[dict[str, Any]], *, replace: Collection[int] = ()) -> None:
    """Insert ``depends_rows`` output; ``replace``: record ids whose rows are rewritten (deleted first)."""
    ids = sorted(set(replace))
    for i in range(0, len(ids), 500):
        session.execute(delete(RecordDepends).where(RecordDepends.record_id.in_(ids[i : i + 500])))
    batch: list[dict[str, Any]] = []
    written = 0
    for row in rows:
        batch.append(row)
        if len(batch) >= 5000:
            session.connection().execute(table(RecordDepends).insert(), batch)
            written, batch = written + len(batch), []
    if batch:
        session.connection().execute(table(RecordDepends).insert(), batch)
        written += len(batch)
    statistics.note_growth(session, "record_depends", written)


def record_dict(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def dependants(
    s: Session, channel_ids: Collection[int], name: str, *, limit: int = 200, offset: int = 0, count: bool = True
) -> tuple[list[dict[str, Any]], int]:
    """Packages (channel, name) in ``channel_ids`` with a build whose ``depends`` names ``name``, by name
    then channel, paged; each with the newest such build's version and its spec. Also the number of such
    packages, counted up to ``COUNT_CAP`` + 1 (more: "over COUNT_CAP"); without ``count``, only whether
    there are more than this page (``offset + len(page) + 1`` then). Index range reads only: the count, the
    packages of the page, then the builds of those packages."""
    ids = sorted(set(channel_ids))
    if not ids:
        return [], 0
    limit = max(1, min(limit, MAX_LIMIT))
    d = RecordDepends
    where = [d.name == name, d.dependant != name]
    if len(ids) < int(s.scalar(select(func.count()).select_from(Channel)) or 0):
        where.append(d.channel_id.in_(ids))  # not every channel readable: filter (else the filter only costs)
    groups = select(d.dependant, d.channel_id).where(*where).group_by(d.dependant, d.channel_id)
    page = s.execute(groups.order_by(d.dependant, d.channel_id).limit(limit + 1).offset(offset)).all()
    more = len(page) > limit
    page = page[:limit]
    if count:
        total = int(s.scalar(select(func.count()).select_from(groups.limit(COUNT_CAP + 1).subquery())) or 0)
    else:
        total = offset + len(page) + (1 if more else 0)
    if not page:
        return [], total
    keys = [(p, c) for p, c in page]
    names = dict(s.execute(select(Channel.id, Channel.name).where(Channel.id.in_({c for _, c in keys}))).all())
    best: dict[tuple[str, int], dict[str, Any]] = {}
    rows = s.execute(
        select(d.dependant, d.channel_id, d.spec, Record.version, Record.build_number, Record.timestamp)
        .join(Record, Record.id == d.record_id)
        # two plain INs (an index range per pair; SQLite reads every row of ``name`` for a row-value IN)
        .where(
            d.name == name,
            d.dependant.in_(sorted({p for p, _ in keys})),
            d.channel_id.in_(sorted({c for _, c in keys})),
        )
    )
    wanted = set(keys)
    for pkg, cid, spec, version, build_number, ts in rows:
        if (pkg, cid) not in wanted:
            continue
        rank = (version_key(version), build_number or 0, ts or 0)
        cur = best.get((pkg, cid))
        if cur is None or rank > cur["_rank"]:
            best[(pkg, cid)] = {
                "channel": names.get(cid, ""),
                "name": pkg,
                "version": version,
                "spec": spec,
                "_rank": rank,
            }
    out = []
    for key in keys:
        item = best.get(key)
        if item is not None:
            item.pop("_rank")
            out.append(item)
    return out, total
