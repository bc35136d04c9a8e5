"""The records of a subdir as the indexer reads them (:class:`~condavault.indexing.builder.RecordRow`: the
published parts of a record and its carried signatures), for some names or for every name in turn."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.models import Record
from condavault.indexing.builder import RecordRow
from condavault.signing.models import RecordTrust

# what a RecordRow is made of, in its order
COLUMNS = (
    Record.filename,
    Record.name,
    Record.fragment,
    Record.removed,
    Record.run_exports,
    RecordTrust.signatures,
    RecordTrust.signed_record,
    RecordTrust.fragment_digest,
    Record.version,
    Record.build,
    Record.build_number,
)
NAMES_PER_QUERY = 500


def _query(channel_id: int, subdir: str) -> Any:
    return (
        select(*COLUMNS)
        .outerjoin(RecordTrust, RecordTrust.record_id == Record.id)
        .where(Record.channel_id == channel_id, Record.subdir == subdir)
    )


def rows_of(s: Session, channel_id: int, subdir: str, names: set[str]) -> dict[str, list[RecordRow]]:
    """The records of ``names`` in the subdir, by name (names without records left out)."""
    q = _query(channel_id, subdir)
    out: dict[str, list[RecordRow]] = defaultdict(list)
    ordered = sorted(names)
    for i in range(0, len(ordered), NAMES_PER_QUERY):
        for r in s.execute(q.where(Record.name.in_(ordered[i : i + NAMES_PER_QUERY]))):
            out[r.name].append(RecordRow(*r))
    return dict(out)


def each_name(s: Session, channel_id: int, subdir: str) -> Iterator[tuple[str, list[RecordRow]]]:
    """Every record of the subdir, one package name at a time (ordered by name, fetched in batches)."""
    q = _query(channel_id, subdir).order_by(Record.name).execution_options(yield_per=2000)
    for n, group in itertools.groupby(s.execute(q), key=lambda r: r.name):
        yield n, [RecordRow(*r) for r in group]
