"""Applying a plan, all but the downloads (:mod:`.fetching`): refresh records whose upstream metadata
changed, index a passive mirror's records metadata-only, remove what upstream removed or the policy now
drops, and publish the index once for the whole run.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from condavault.channels import records as rec_svc
from condavault.channels.models import Channel, Record
from condavault.indexing.dirty import get_state
from condavault.mirror.bookkeeping import RunBook, RunInfo
from condavault.mirror.plan import Plan
from condavault.mirror.planning import Work, overrides_of
from condavault.mirror.upstream import Upstream, redact_url

__all__ = ["Applier"]

log = logging.getLogger(__name__)


class Applier:
    def __init__(self, info: RunInfo, book: RunBook, upstream: Upstream) -> None:
        self.info = info
        self.book = book
        self.ctx = info.ctx
        self.cfg = info.cfg
        self.channel_id = info.channel_id
        self.upstream = upstream

    def import_passive(self, plan: Plan, work: Work) -> None:
        by_subdir: dict[str, dict[str, dict[str, Any]]] = defaultdict(lambda: {"packages": {}, "packages.conda": {}})
        for key in work.fetch:
            rec = dict(plan.records[key].record)
            section = "packages.conda" if key[1].endswith(".conda") else "packages"
            by_subdir[key[0]][section][key[1]] = rec
        replace = sorted(work.replace)

        def write(s: Session) -> dict[str, int]:
            channel = s.get(Channel, self.channel_id)
            assert channel is not None
            if replace:
                rows = [r for sd, fn in replace if (r := rec_svc.find_record(s, channel, sd, fn)) is not None]
                rec_svc.remove_records(s, channel, rows)
            total: Counter[str] = Counter()
            for sd, rd in by_subdir.items():
                base = redact_url(f"{self.upstream.base}/{sd}") if self.upstream.local is None else None
                total.update(rec_svc.import_repodata(s, channel, sd, rd, base_url=base, skip_invalid=True))
            return dict(total)

        got = self.ctx.db.run_write(write)
        self.book.counts["indexed_passive"] += got.get("created", 0)
        if got.get("invalid"):  # upstream records that would break clients (packages.validation)
            self.book.counts["invalid_upstream_records"] += got["invalid"]
        self.book.touched.update(by_subdir)
        for key in work.fetch:
            self.book.mark(key, "passive")

    def refresh(self, plan: Plan, keys: list[tuple[str, str]]) -> None:
        """Same bytes, new upstream metadata (a repodata patch): serve upstream's new record."""
        updates = {key: overrides_of(plan.records[key].record) for key in keys}
        self.book.counts["refreshed"] += self.ctx.db.run_write(
            lambda s: rec_svc.refresh_records(s, self.channel_id, updates)
        )
        self.book.touched.update(k[0] for k in keys)

    def remove(self, keys: list[tuple[str, str]]) -> None:
        def write(s: Session) -> int:
            channel = s.get(Channel, self.channel_id)
            assert channel is not None
            return len(rec_svc.remove_by_keys(s, channel, keys))

        self.book.counts["removed"] += self.ctx.db.run_write(write)
        self.book.touched.update(k[0] for k in keys)

    def publish(self) -> None:
        """One index publish for the whole run: ask for it, then wait until it is out."""
        self.book.flush_updates()
        with self.ctx.db.session() as s:
            seqs = {
                sd: st.change_seq for sd in self.book.touched if (st := get_state(s, self.channel_id, sd, create=False))
            }
        for sd in seqs:
            # index here rather than queueing it: the job runner's threads may all be busy
            # (if another thread is already indexing this subdir, it loops until it is clean)
            self.ctx.indexer.index_subdir(self.channel_id, sd)
        for sd, seq in seqs.items():
            if not self.ctx.indexer.wait_for(self.channel_id, sd, seq, timeout=600):
                log.warning("index not published in time", extra={"channel_id": self.channel_id, "subdir": sd})
        self.ctx.lookup.invalidate(self.channel_id)
        with self.ctx.db.session() as s:
            self.book.extra["channel_files"] = s.scalar(
                select(func.count())
                .select_from(Record)
                .where(Record.channel_id == self.channel_id, Record.subdir.in_(self.cfg.subdirs))
            )
