"""The slow lane (design.md §1.3): the channel's ``channeldata.json``, derived from every live record of the
channel (see :mod:`condavault.indexing.derived`). ``current_repodata.json`` is published with each subdir's
``repodata.json`` by the indexer, kept up to date name by name (:mod:`condavault.indexing.current`)."""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record
from condavault.config import Settings
from condavault.db.session import Database
from condavault.indexing import builder, derived, garbage
from condavault.indexing.models import SubdirState
from condavault.storage.interfaces import BlobStore

JSON = "application/json"
ZST = "application/zstd"
BATCH = 20_000  # records of whole names per channeldata batch


def publish_extras(
    settings: Settings,
    db: Database,
    blobs: BlobStore,
    channel_id: int,
    listeners: list[Callable[[int, str | None, frozenset[str] | None], None]],
) -> None:
    """The slow lane: the channel's ``channeldata.json``.

    Reads light columns of the records streamed by name, and full records only for the newest files.
    """
    live = (Record.channel_id == channel_id, Record.removed.is_(False))
    with db.session() as s:
        subdirs = set(s.scalars(select(SubdirState.subdir).where(SubdirState.channel_id == channel_id)))
        subdirs |= set(s.scalars(select(Record.subdir).where(*live).distinct()))
    subdirs.add("noarch")
    parsed: dict[str, Any] = {}

    def small_json(text: str | None) -> Any:
        if not text:
            return None
        if text not in parsed:
            parsed[text] = json.loads(text)
        return parsed[text]

    def fetch(columns: tuple[Any, ...], subdir: str, filenames: list[str]) -> list[Any]:
        out: list[Any] = []
        with db.session() as s:
            for i in range(0, len(filenames), 500):
                out.extend(
                    s.execute(
                        select(Record.filename, *columns).where(
                            *live, Record.subdir == subdir, Record.filename.in_(filenames[i : i + 500])
                        )
                    )
                )
        return out

    def about(keys: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[dict[str, Any], dict[str, Any]]]:
        by_subdir: dict[str, list[str]] = defaultdict(list)
        for sd, fn in keys:
            by_subdir[sd].append(fn)
        return {
            (sd, fn): (json.loads(ab) if ab else {}, json.loads(frag))
            for sd, fns in by_subdir.items()
            for fn, ab, frag in fetch((Record.about, Record.fragment), sd, fns)
        }

    # channeldata: the records streamed by name, a batch of names at a time (its entries are per name)
    # each name's entry kept encoded (the bytes it has in the file), not as a dict: a fraction of the memory
    packages: dict[str, bytes] = {}
    batch: list[derived.NameRow] = []

    def flush() -> None:
        for name, entry in derived.channeldata(batch, subdirs, about)["packages"].items():
            packages[name] = derived.encode_channeldata_entry(entry)
        batch.clear()
        parsed.clear()

    with db.session() as s:
        q = (
            select(
                Record.subdir,
                Record.filename,
                Record.name,
                Record.version,
                Record.timestamp,
                Record.run_exports,
                Record.paths_summary,
            )
            .where(*live)
            .order_by(Record.name)
            .execution_options(yield_per=5000)
        )
        for _name, group in itertools.groupby(s.execute(q), key=lambda r: r[2]):
            batch.extend(
                derived.NameRow(r[0], r[1], r[2], r[3], r[4], small_json(r[5]), small_json(r[6])) for r in group
            )
            if len(batch) >= BATCH:
                flush()
    flush()
    files: list[tuple[str, str, bytes, str]] = [
        ("", "channeldata.json", derived.compose_channeldata(packages, subdirs), JSON)
    ]
    packages.clear()
    digests = [(sd, path, builder.sha256(data), len(data), ctype) for sd, path, data, ctype in files]

    def publish(s: Session) -> None:
        if s.get(Channel, channel_id) is not None:  # unless deleted meanwhile
            garbage.point_paths(s, channel_id, digests, revision=None)

    with blobs.writing():  # no collection between writing the blobs and pointing at them
        blobs.put_many([(data, d[2]) for (_, _, data, _), d in zip(files, digests, strict=True)])
        db.run_write(publish)
    for fn in listeners:
        fn(channel_id, None, frozenset())  # no record changed
