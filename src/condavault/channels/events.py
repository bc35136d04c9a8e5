"""Events of the channels domain (recorded by ``channels/`` services in their transactions)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from condavault.events import Actor, Event
from condavault.jobs.registry import JsonDict

MAX_MERGED_FILES = 5000  # files of one coalesced follow-up job (its parameters stay far below the 1 MB cap)


@dataclass(frozen=True)
class ChannelCreated(Event):
    name: ClassVar[str] = "channel_created"
    channel_id: int
    channel: str
    actor: Actor


@dataclass(frozen=True)
class ChannelChanged(Event):
    """Privacy or description changed, or (``deleted``) the channel is gone."""

    name: ClassVar[str] = "channel_changed"
    channel_id: int
    channel: str | None = None  # None: only its files changed (cached lookups of the channel go)
    deleted: bool = False


@dataclass(frozen=True)
class RecordsChanged(Event):
    """Records of these subdirs changed. ``index`` False: the writer publishes the index itself (a mirror
    run, an upload batch), so nobody asks for an index run now."""

    name: ClassVar[str] = "records_changed"
    channel_id: int
    subdirs: tuple[str, ...]
    index: bool = True


@dataclass(frozen=True)
class IngestedFile:
    channel: str
    subdir: str
    filename: str
    status: str  # created | replaced (unchanged files are not in the event)
    security: dict[str, Any] | None = None


@dataclass(frozen=True)
class PackagesIngested(Event):
    """New bytes landed (uploads, mirror downloads, passive fetches): durable subscribers match CVEs, and
    later scan them."""

    name: ClassVar[str] = "packages_ingested"
    channel_id: int
    channel: str
    files: tuple[IngestedFile, ...]
    actor: str | None = None

    def to_params(self) -> JsonDict:
        return {
            "channel_id": self.channel_id,
            "channel": self.channel,
            "actor": self.actor,
            "files": [[f.subdir, f.filename, f.status, f.security] for f in self.files],
        }

    def coalesce_key(self) -> str | None:
        return f"{self.channel_id}:{self.actor or ''}"

    @classmethod
    def merge_params(cls, queued: JsonDict, new: JsonDict) -> JsonDict | None:
        same = all(queued.get(k) == new.get(k) for k in ("channel_id", "channel", "actor"))
        if not same or len(queued["files"]) + len(new["files"]) > MAX_MERGED_FILES:
            return None
        return {**queued, "files": [*queued["files"], *new["files"]]}

    @classmethod
    def from_params(cls, params: JsonDict) -> PackagesIngested:
        ch = params["channel"]
        return cls(
            channel_id=int(params["channel_id"]),
            channel=ch,
            actor=params.get("actor"),
            files=tuple(IngestedFile(ch, sd, fn, st, sec) for sd, fn, st, sec in params["files"]),
        )
