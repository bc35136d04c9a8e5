"""Planning a mirror run: the no-op shortcut, the plan and the to-do list it leaves for the apply phase.

* **no-op** -- nothing changed upstream (ETags), in the config or in the channel since the last clean run:
  no plan is computed.
* **plan** -- ``compute_plan`` over every subdir's repodata; the decisions are written as
  :class:`~condavault.mirror.models.MirrorItem` rows (only rows that changed are written, so a re-plan of
  an unchanged 100 k-file upstream writes nothing). A kept item's ``state`` makes the plan a to-do list:
  :class:`Work` is what the apply phase has to do.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from condavault.channels.models import Record
from condavault.db import statistics
from condavault.db.base import table, utcnow
from condavault.indexing.dirty import get_state
from condavault.mirror.bookkeeping import RunBook, RunInfo
from condavault.mirror.filters import FilterContext, build_chain
from condavault.mirror.models import MirrorItem, MirrorRun
from condavault.mirror.plan import Plan, compute_plan, iter_records
from condavault.mirror.upstream import Fetched

if TYPE_CHECKING:
    from condavault.signing.carry import SidecarVerifier

__all__ = ["GONE", "ITEM_COLUMNS", "NOT_OVERRIDDEN", "ItemRows", "Planner", "Work", "overrides_of", "record_hash"]

# upstream record fields that the archive itself decides (validated against the filename) or that the
# ingest recomputes from the bytes
NOT_OVERRIDDEN = frozenset(
    {"name", "version", "build", "subdir", "md5", "sha256", "size", "indexed_timestamp", "fn", "url"}
)
LIST_LIMIT = 500
GONE = "upstream_missing"


def record_hash(rec: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(rec, sort_keys=True, default=str).encode()).hexdigest()


def overrides_of(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rec.items() if k not in NOT_OVERRIDDEN}


# the plan-row columns a re-plan compares with its new decision (``ItemRows.stage``)
ITEM_COLUMNS = (
    MirrorItem.id,
    MirrorItem.subdir,
    MirrorItem.filename,
    MirrorItem.name,
    MirrorItem.kept,
    MirrorItem.flag,
    MirrorItem.filter,
    MirrorItem.rule,
    MirrorItem.value,
    MirrorItem.sha256,
    MirrorItem.size,
    MirrorItem.record_hash,
    MirrorItem.state,
)


@dataclass
class ItemRows:
    """The plan rows one planning pass writes: new ones and changed ones (unchanged rows are not written)."""

    mirror_id: int
    run_id: int
    inserts: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)

    def stage(
        self,
        key: tuple[str, str],
        rec: dict[str, Any],
        prev: Any,
        *,
        decision: dict[str, Any],
        state: str,
        rh: str,
        now: Any,
    ) -> None:
        """Stage the plan row of upstream file ``key`` (``prev``: its row from ``ITEM_COLUMNS``, or None).
        ``decision``: kept, flag, filter, rule, value; ``rh``: ``record_hash(rec)``."""
        values = {
            "name": str(rec.get("name", ""))[:100].lower(),
            **decision,
            "filter": decision["filter"][:64],
            "sha256": rec.get("sha256"),
            "size": rec.get("size"),
            "record_hash": rh,
            "state": state,
        }
        if prev is None:
            self.inserts.append(
                {
                    **values,
                    "mirror_id": self.mirror_id,
                    "subdir": key[0],
                    "filename": key[1],
                    "error": None,
                    "fetch_until": 0.0,
                    "run_id": self.run_id,
                    "updated_at": now,
                }
            )
        elif any(getattr(prev, k) != v for k, v in values.items()):
            self.updates.append({**values, "id": prev.id, "run_id": self.run_id, "updated_at": now, "error": None})


@dataclass
class Work:
    """What the apply phase has to do, worked out from the plan and the channel."""

    fetch: list[tuple[str, str]] = field(default_factory=list)  # active: download these
    replace: set[tuple[str, str]] = field(default_factory=set)  # ours, but upstream bytes changed
    refresh: list[tuple[str, str]] = field(default_factory=list)  # same bytes, new upstream metadata
    remove: list[tuple[str, str]] = field(default_factory=list)
    present: int = 0


class Planner:
    def __init__(self, info: RunInfo, book: RunBook) -> None:
        self.info = info
        self.book = book
        self.ctx = info.ctx
        self.cfg = info.cfg
        self.channel_id = info.channel_id
        self.mirror_id = info.mirror_id
        self.run_id = info.run_id
        # set by the run when the mirror trusts Sigstore identities: fetches and verifies sidecars for
        # ``only_signed`` (see condavault.signing.carry.SidecarVerifier)
        self.sidecars: SidecarVerifier | None = None

    def unchanged(self, fetched: list[Fetched]) -> bool:
        """Nothing changed upstream (ETags), in the config, or in the channel since the last clean run."""
        if self.info.full or self.info.dry_run or any(f.changed for f in fetched):
            return False
        if any(f.requires for f in build_chain(self.cfg.filters)):
            return False  # CVE data or signatures may have changed without upstream changing
        with self.ctx.db.session() as s:
            prev = s.scalar(
                select(MirrorRun)
                .where(MirrorRun.mirror_id == self.mirror_id, MirrorRun.dry_run.is_(False), MirrorRun.id != self.run_id)
                .order_by(MirrorRun.id.desc())
                .limit(1)
            )
            if prev is None or prev.status != "completed":
                return False
            counts = json.loads(prev.counts or "{}")
            files = s.scalar(
                select(func.count())
                .select_from(Record)
                .where(Record.channel_id == self.channel_id, Record.subdir.in_(self.cfg.subdirs))
            )
        if (
            counts.get("failed")
            or counts.get("config_hash") != self.info.config_hash
            or counts.get("channel_files") != files
        ):
            return False
        for key in ("files", "kept", "dropped", "dropped_by_filter", "flagged", "channel_files"):
            if key in counts:
                self.book.extra[key] = counts[key]
        self.book.extra["unchanged"] = True
        return True

    # -- plan ----------------------------------------------------------------------------------------
    def _filter_context(self, upstream: dict[str, dict[str, Any]]) -> FilterContext:
        kw: dict[str, Any] = {}
        vulns = self.ctx.domains.vulns.provider
        kw["vuln_links"] = vulns.vuln_links
        if self.cfg.filters.max_dependency_risk is not None:
            recs = {rec.key: rec.record for rec, _ in iter_records(upstream)}
            kw["dependency_risk"] = vulns.dependency_risk_for(recs)
        # ``only_signed`` needs keys or identities to verify against: without them it is refused clearly
        f = self.cfg.filters
        if f.signature_keys or f.sigstore_identities:
            from condavault.signing.carry import signed_provider

            check = self.sidecars.check if (self.sidecars is not None and f.sigstore_identities) else None
            kw["is_signed"] = signed_provider(upstream, f.signature_keys, check)
        return FilterContext(**kw)

    def plan(self, fetched: list[Fetched]) -> tuple[Plan, Work]:
        ctx, cfg = self.ctx, self.cfg
        upstream = {f.subdir: f.data for f in fetched}
        with ctx.db.session() as s:
            chan = {
                (sd, fn): (sha, has_blob)
                for sd, fn, sha, has_blob in s.execute(
                    select(Record.subdir, Record.filename, Record.sha256, Record.has_blob).where(
                        Record.channel_id == self.channel_id, Record.subdir.in_(cfg.subdirs)
                    )
                )
            }
            old = {
                (r.subdir, r.filename): r
                for r in s.execute(select(*ITEM_COLUMNS).where(MirrorItem.mirror_id == self.mirror_id))
            }
        ours = {k for k in chan if k in old}
        plan = compute_plan(upstream, cfg.filters, self._filter_context(upstream), ours)
        passive = cfg.mode == "passive"
        work = Work()
        rows = ItemRows(self.mirror_id, self.run_id)
        now = utcnow()
        for key, d in plan.decisions.items():
            rec = plan.records[key].record
            sha = rec.get("sha256")
            rh = record_hash(rec)
            have = chan.get(key)
            prev = old.get(key)
            if d.kept:
                same = have is not None and (have[0] == sha if sha else prev is not None and prev.sha256 == sha)
                if same and (have[1] or passive):  # type: ignore[index]
                    state = "done" if have[1] else "passive"  # type: ignore[index]
                    work.present += 1
                    if prev is not None and prev.record_hash not in (None, rh):
                        work.refresh.append(key)
                else:
                    state = "pending"
                    work.fetch.append(key)
                    if have is not None and not same and key in ours:
                        work.replace.add(key)
            else:
                state = "dropped"
            decision = {"kept": d.kept, "flag": d.flag, "filter": d.filter, "rule": d.rule, "value": d.value}
            rows.stage(key, rec, prev, decision=decision, state=state, rh=rh, now=now)
        inserts, updates = rows.inserts, rows.updates
        gone = [k for k in old if k not in plan.decisions]
        delete_ids = [old[k].id for k in gone if k not in chan]
        for k in gone:
            if k in chan and (old[k].filter != GONE or old[k].kept):
                updates.append(
                    {
                        "id": old[k].id,
                        "kept": False,
                        "flag": False,
                        "filter": GONE,
                        "rule": "not in upstream repodata",
                        "value": k[1],
                        "state": "dropped",
                        "run_id": self.run_id,
                        "updated_at": now,
                        "error": None,
                    }
                )
        work.remove = [k for k in plan.to_remove if k in chan]
        self._persist_items(inserts, updates, delete_ids)

        kept = plan.kept
        self.book.extra.update(
            files=len(plan.decisions),
            kept=len(kept),
            dropped=len(plan.decisions) - len(kept),
            dropped_by_filter=plan.dropped_counts,
            flagged=len(plan.flagged),
            to_add=len(work.fetch),
            to_remove=len(work.remove),
            to_refresh=len(work.refresh),
            present=work.present,
            plan_items_written=len(inserts) + len(updates) + len(delete_ids),
        )
        if self.info.dry_run:
            self.book.extra["plan"] = self._plan_lists(plan, work)
        self.book.total_items = len(work.fetch) if cfg.mode == "active" else 0
        self.book.total_bytes = (
            sum(int(plan.records[k].record.get("size") or 0) for k in work.fetch) if cfg.mode == "active" else 0
        )
        return plan, work

    def _plan_lists(self, plan: Plan, work: Work) -> dict[str, Any]:
        dropped: dict[str, list[dict[str, str]]] = defaultdict(list)
        for key in sorted(plan.dropped):
            d = plan.decisions[key]
            lst = dropped[d.filter]
            if len(lst) < LIST_LIMIT:
                lst.append({"file": f"{key[0]}/{key[1]}", "rule": d.rule, "value": d.value})
        return {
            "add": [f"{sd}/{fn}" for sd, fn in sorted(work.fetch)[:LIST_LIMIT]],
            "remove": [f"{sd}/{fn}" for sd, fn in sorted(work.remove)[:LIST_LIMIT]],
            "on_remove": self.cfg.on_remove,
            "dropped": dict(dropped),
            "flagged": [
                {"file": f"{d.subdir}/{d.filename}", "filter": d.filter, "rule": d.rule, "value": d.value}
                for d in plan.flagged[:LIST_LIMIT]
            ],
        }

    def _persist_items(
        self, inserts: list[dict[str, Any]], updates: list[dict[str, Any]], delete_ids: list[int]
    ) -> None:
        def write(s: Session) -> None:
            for sd in self.cfg.subdirs:  # every mirrored subdir gets a repodata.json, even if empty
                get_state(s, self.channel_id, sd)
            for i in range(0, len(inserts), 5000):
                s.execute(table(MirrorItem).insert(), inserts[i : i + 5000])
            statistics.note_growth(s, "mirror_items", len(inserts))
            for i in range(0, len(updates), 5000):
                s.execute(update(MirrorItem), updates[i : i + 5000])
            for i in range(0, len(delete_ids), 1000):
                s.execute(delete(MirrorItem).where(MirrorItem.id.in_(delete_ids[i : i + 1000])))

        self.ctx.db.run_write(write)
        self.book.touched.update(self.cfg.subdirs)
