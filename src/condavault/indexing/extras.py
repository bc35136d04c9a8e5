"""The slow lane (design.md §1.3): ``current_repodata.json`` per subdir and the channel's ``channeldata.json``,
derived from every live record of the channel (see :mod:`condavault.indexing.derived`)."""

from __future__ import annotations

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


def publish_extras(
    settings: Settings,
    db: Database,
    blobs: BlobStore,
    channel_id: int,
    listeners: list[Callable[[int, str | None], None]],
) -> None:
    """The slow lane: ``current_repodata.json`` per subdir and the channel's ``channeldata.json``.

    Reads light columns of every record and full records only for the files it publishes.
    """
    live = (Record.channel_id == channel_id, Record.removed.is_(False))
    with db.session() as s:
        rows = s.execute(
            select(
                Record.subdir,
                Record.filename,
                Record.name,
                Record.version,
                Record.build,
                Record.build_number,
                Record.timestamp,
                Record.run_exports,
                Record.paths_summary,
            ).where(*live)
        ).all()
        subdirs = set(s.scalars(select(SubdirState.subdir).where(SubdirState.channel_id == channel_id)))
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

    subdirs |= {r[0] for r in rows}
    subdirs.add("noarch")
    name_rows = [derived.NameRow(r[0], r[1], r[2], r[3], r[6], small_json(r[7]), small_json(r[8])) for r in rows]
    cd = derived.channeldata(name_rows, subdirs, about)
    del name_rows
    files: list[tuple[str, str, bytes, str]] = [
        ("", "channeldata.json", json.dumps(cd, indent=1, sort_keys=True).encode(), JSON)
    ]
    if settings.current_repodata:
        lights: dict[str, list[derived.Light]] = defaultdict(list)
        for r in rows:
            lights[r[0]].append(derived.Light(r[1], r[2], r[3], r[4], r[5]))
        for sd in sorted(subdirs):

            def load(filenames: list[str], sd: str = sd) -> dict[str, dict[str, Any]]:
                return {fn: json.loads(frag) for fn, frag in fetch((Record.fragment,), sd, filenames)}

            cur = derived.current_repodata(sd, lights.get(sd, []), load)
            data = json.dumps(cur, separators=(",", ":")).encode()
            files.append((sd, "current_repodata.json", data, JSON))
            files.append((sd, "current_repodata.json.zst", builder.zstd(data, settings.zstd_level), ZST))
    del rows
    digests = [(sd, path, builder.sha256(data), len(data), ctype) for sd, path, data, ctype in files]

    def publish(s: Session) -> None:
        if s.get(Channel, channel_id) is not None:  # unless deleted meanwhile
            garbage.point_paths(s, channel_id, digests, revision=None)

    with blobs.writing():  # no collection between writing the blobs and pointing at them
        blobs.put_many([(data, d[2]) for (_, _, data, _), d in zip(files, digests, strict=True)])
        db.run_write(publish)
    for fn in listeners:
        fn(channel_id, None)
