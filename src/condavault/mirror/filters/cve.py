"""CVE filters: ``cve_score_threshold`` (+ ``cve_score_exceptions``), ``exclude_cve_statuses``,
``exclude_non_curated_cve`` and ``max_dependency_risk``.

Links come from ``ctx.vuln_links``; a ``cleared`` or ``mitigated`` link never counts against the score
threshold (the build is not affected), and an advisory listed in ``cve_score_exceptions`` (by id or any
alias) is ignored by the threshold. ``exclude_non_curated_cve`` drops files with any ``reported`` (not yet
reviewed) link. ``max_dependency_risk`` asks ``ctx.dependency_risk`` and drops files above it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from condavault.mirror.filters.base import Decision, FileRecord, FilterContext, VulnLink

if TYPE_CHECKING:
    from condavault.mirror.config import FilterConfig

__all__ = ["CveFilter"]


def _describe(rec: FileRecord, link: VulnLink) -> str:
    score = "n/a" if link.score is None else f"{link.score:g}"
    return f"{rec.ident}: {link.advisory_id} score={score} status={link.status}"


class CveFilter:
    """Drops files by their linked advisories and dependency risk."""

    name: ClassVar[str] = "cve"
    stage: ClassVar[int] = 100

    def __init__(
        self,
        threshold: float | None = None,
        exceptions: list[str] | None = None,
        statuses: list[str] | None = None,
        non_curated: bool = False,
        max_dependency_risk: float | None = None,
    ) -> None:
        self.threshold = threshold
        self.exceptions = frozenset(e.upper() for e in exceptions or ())
        self.statuses = frozenset(statuses or ())
        self.non_curated = non_curated
        self.max_dependency_risk = max_dependency_risk

    @property
    def needs_links(self) -> bool:
        return self.threshold is not None or bool(self.statuses) or self.non_curated

    @property
    def requires(self) -> tuple[str, ...]:
        needed = ("vuln_links",) if self.needs_links else ()
        return needed + (("dependency_risk",) if self.max_dependency_risk is not None else ())

    @classmethod
    def from_config(cls, cfg: FilterConfig) -> CveFilter | None:
        f = cls(
            cfg.cve_score_threshold,
            cfg.cve_score_exceptions,
            list(cfg.exclude_cve_statuses),
            cfg.exclude_non_curated_cve,
            cfg.max_dependency_risk,
        )
        return f if f.requires else None

    def decide(self, rec: FileRecord, ctx: FilterContext) -> Decision | None:
        if self.needs_links:
            assert ctx.vuln_links is not None  # the engine checks `requires`
            for link in ctx.vuln_links(rec.subdir, rec.filename, rec.record):
                decision = self._judge(rec, link)
                if decision is not None:
                    return decision
        if self.max_dependency_risk is not None:
            assert ctx.dependency_risk is not None
            risk = ctx.dependency_risk(rec.subdir, rec.filename)
            if risk is not None and risk > self.max_dependency_risk:
                return Decision(
                    False, "max_dependency_risk", f"{self.max_dependency_risk:g}", f"{rec.ident} risk={risk:g}"
                )
        return None

    def _judge(self, rec: FileRecord, link: VulnLink) -> Decision | None:
        if link.status in self.statuses:
            return Decision(False, "exclude_cve_statuses", link.status, _describe(rec, link))
        if self.non_curated and link.status == "reported" and link.counts:  # not a bundled copy's link
            return Decision(False, "exclude_non_curated_cve", "reported", _describe(rec, link))
        if (
            self.threshold is not None
            and link.counts
            and link.score is not None
            and link.score > self.threshold
            and not (link.ids & self.exceptions)
        ):
            return Decision(False, "cve_score_threshold", f"> {self.threshold:g}", _describe(rec, link))
        return None
