"""The mirror plan: apply the filter chain to upstream repodata and say what to add and remove.

``compute_plan`` is pure. The chain comes from :func:`condavault.mirror.filters.build_chain`, ordered by
stage: subdirs, only_specs (+ dependency closure), exclude_specs, licenses, dates, only_signed,
dedupe_conda_legacy, exclude_prereleases, max_size, CVE, keep_latest, then include_specs exceptions
(which re-admit anything dropped before them), then prune_unsatisfiable. The engine dispatches on the
protocol a filter implements, never on its name:

* a record filter's drop removes the file from the kept set; later filters no longer see it, so each
  dropped file carries the *first* filter that dropped it;
* a group filter sees the files still kept and may drop several at once;
* an exception filter sees the dropped files and may re-admit them. Re-admitted files are *protected*:
  a later drop (e.g. pruning) becomes a flag, because an explicit exception is the admin's intent.
  They still satisfy other files' dependencies when pruning.

Files listed in an upstream ``removed`` list are never mirrored and never re-admitted.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from condavault.mirror.config import FilterConfig, MirrorConfigError
from condavault.mirror.filters import (
    Decision,
    ExceptionFilter,
    FileKey,
    FileRecord,
    FilterContext,
    GroupFilter,
    RecordFilter,
    build_chain,
)

__all__ = ["UPSTREAM_REMOVED", "Plan", "compute_plan", "iter_records"]

UPSTREAM_REMOVED = "upstream_removed"
DEFAULT = "default"


@dataclasses.dataclass
class Plan:
    """One decision per upstream file, the full decision history, and the resulting changes.

    ``decisions`` holds each file's final word: the first filter that dropped it; or, if kept, the
    first flag, else the last note (``include_specs``, ``include_dependencies``), else ``default``.
    ``history`` holds everything filters said, in order (an exception keeps the drop it overrode).
    ``counts`` counts final decisions per ``filter`` (kept ones included), ``dropped_counts`` only drops.
    """

    records: dict[FileKey, FileRecord]
    decisions: dict[FileKey, Decision]
    history: dict[FileKey, list[Decision]]
    to_add: list[FileKey]
    to_remove: list[FileKey]
    counts: dict[str, int]
    elapsed: float = 0.0

    @property
    def kept(self) -> set[FileKey]:
        return {k for k, d in self.decisions.items() if d.kept}

    @property
    def dropped(self) -> set[FileKey]:
        return {k for k, d in self.decisions.items() if not d.kept}

    @property
    def flagged(self) -> list[Decision]:
        """Kept files a filter objects to (e.g. ``prune_unsatisfiable: flag``)."""
        return [d for d in self.decisions.values() if d.kept and d.flag]

    @property
    def dropped_counts(self) -> dict[str, int]:
        """Dropped files per responsible filter key (Anaconda's "per-cause filtered counts")."""
        return dict(Counter(d.filter for d in self.decisions.values() if not d.kept))

    def explain(self, query: str) -> list[Decision]:
        """Everything the filters said about the files matching ``query`` (a filename, ``subdir/filename``
        or a package name), ending with each file's final decision."""
        q = query.strip()
        out: list[Decision] = []
        for key in sorted(self.decisions):
            subdir, filename = key
            rec = self.records.get(key)
            name = rec.name.lower() if rec is not None else ""
            if q not in (filename, f"{subdir}/{filename}") and q.lower() != name:
                continue
            steps = list(self.history.get(key, ()))
            final = self.decisions[key]
            if final not in steps:
                steps.append(final)
            out.extend(steps)
        return out


def iter_records(upstream: Mapping[str, Mapping[str, Any]]) -> Iterable[tuple[FileRecord, bool]]:
    """Every file of every subdir's repodata (``packages`` and ``packages.conda``), with whether the
    repodata lists it as ``removed``. The subdir is the key of ``upstream``, not the record's field."""
    for subdir, repodata in upstream.items():
        removed = set(repodata.get("removed") or ())
        for section in ("packages", "packages.conda"):
            for filename, record in (repodata.get(section) or {}).items():
                yield FileRecord(subdir, filename, record), filename in removed


def _check_providers(chain: list[Any], ctx: FilterContext) -> None:
    for f in chain:
        missing = [p for p in f.requires if getattr(ctx, p, None) is None]
        if missing:
            raise MirrorConfigError(
                f"mirror filter {f.name!r} needs the {', '.join(missing)} provider, which is not configured; "
                "set up the data source or remove the filter from the mirror config",
                filter=f.name,
                missing=missing,
            )


def _final(key: FileKey, rec: FileRecord, history: list[Decision], dropped: bool) -> Decision:
    if dropped:
        return next(d for d in history if not d.kept)
    flags = [d for d in history if d.kept and d.flag]
    if flags:
        return flags[0]
    notes = [d for d in history if d.kept]
    if notes:
        return notes[-1]
    return Decision(True, DEFAULT, "no filter objected", rec.ident).for_file(key)


def compute_plan(
    upstream: Mapping[str, Mapping[str, Any]],
    cfg: FilterConfig,
    ctx: FilterContext | None = None,
    existing: set[FileKey] | None = None,
    *,
    filters: Mapping[str, type[Any]] | None = None,
) -> Plan:
    """Decide every upstream file. ``existing`` is what the channel holds now (``None``: nothing).

    ``to_remove`` lists existing files that are gone upstream, removed upstream or no longer kept;
    whether they are actually deleted (``on_remove``) is up to the caller. ``filters`` overrides the
    filter registry (tests, restricted deployments). Raises :class:`MirrorConfigError` when a filter
    needs a context provider that ``ctx`` lacks.
    """
    started = time.perf_counter()
    ctx = ctx or FilterContext()
    chain = build_chain(cfg, dict(filters) if filters is not None else None)
    _check_providers(chain, ctx)

    records: dict[FileKey, FileRecord] = {}
    alive: dict[FileKey, FileRecord] = {}
    dropped: dict[FileKey, FileRecord] = {}
    history: dict[FileKey, list[Decision]] = {}
    removed_upstream: dict[FileKey, Decision] = {}
    protected: set[FileKey] = set()
    for rec, is_removed in iter_records(upstream):
        records[rec.key] = rec
        if is_removed:
            removed_upstream[rec.key] = Decision(False, UPSTREAM_REMOVED, "removed", rec.ident).for_file(rec.key)
        else:
            alive[rec.key] = rec

    def apply(key: FileKey, decision: Decision) -> None:
        decision = decision.for_file(key)
        if not decision.kept and key in protected:
            decision = dataclasses.replace(decision, kept=True, flag=True)
        history.setdefault(key, []).append(decision)
        if not decision.kept:
            dropped[key] = alive.pop(key)

    for f in chain:
        if isinstance(f, RecordFilter):
            for key, rec in list(alive.items()):
                d = f.decide(rec, ctx)
                if d is not None:
                    apply(key, d)
        elif isinstance(f, GroupFilter):
            stage_ctx = dataclasses.replace(ctx, protected=frozenset(protected))
            for key, d in f.select(list(alive.values()), stage_ctx).items():
                if key in alive:
                    apply(key, d)
        elif isinstance(f, ExceptionFilter):
            for key, rec in list(dropped.items()):
                d = f.readmit(rec, ctx)
                if d is not None and d.kept:
                    history.setdefault(key, []).append(d.for_file(key))
                    alive[key] = dropped.pop(key)
                    protected.add(key)
        else:  # pragma: no cover - registry guards against this
            raise MirrorConfigError(f"mirror filter {getattr(f, 'name', f)!r} implements no filter protocol")

    decisions: dict[FileKey, Decision] = dict(removed_upstream)
    for key, rec in records.items():
        if key not in removed_upstream:
            decisions[key] = _final(key, rec, history.get(key, []), key in dropped)
    kept = set(alive)
    have = existing or set()
    return Plan(
        records=records,
        decisions=decisions,
        history=history,
        to_add=sorted(kept - have),
        to_remove=sorted(have - kept),
        counts=dict(Counter(d.filter for d in decisions.values())),
        elapsed=time.perf_counter() - started,
    )
