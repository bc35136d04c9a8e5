"""Curation: set a status per link or per advisory x package x version range (a rule), with history.

A rule applies to the existing links it covers and to every future link (``services._apply`` looks
rules up). A per-link decision is the most specific one and wins over rules until another curation
changes it. Every change writes a ``vuln_curation_events`` row (who, when, why, before, after); the
caller also records it in the audit log (``ctx.record_change``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rattler import VersionSpec
from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.channels.models import Channel, Record
from condavault.db.base import utcnow
from condavault.errors import InvalidRequest, NotFound
from condavault.vulns import store
from condavault.vulns.matching import parse_version
from condavault.vulns.models import STATUSES, VulnAdvisory, VulnCurationEvent, VulnLinkRow, VulnRule


@dataclass(frozen=True)
class RuleView:
    id: int
    advisory_pk: int
    package: str
    versions: str
    status: str
    reason: str

    def covers(self, name: str, version: str) -> bool:
        return name == self.package and version_in(version, self.versions)


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise InvalidRequest(
            f"unknown status {status!r}; use one of {', '.join(STATUSES)}", code="invalid_status", status=status
        )
    return status


def check_versions(versions: str) -> str:
    versions = (versions or "*").strip() or "*"
    try:
        VersionSpec(versions)
    except Exception as exc:
        raise InvalidRequest(
            f"invalid version range {versions!r}: {exc}", code="invalid_version_range", versions=versions
        ) from exc
    return versions


def version_in(version: str, versions: str) -> bool:
    if versions.strip() in ("", "*"):
        return True
    v = parse_version(version)
    if v is None:
        return False
    try:
        return bool(VersionSpec(versions).matches(v))
    except Exception:
        return False


def load_rules(session: Session, advisory_pks: Iterable[int] | None = None) -> dict[tuple[int, str], list[RuleView]]:
    """(advisory pk, package) -> rules, newest first."""
    stmt = select(VulnRule).order_by(VulnRule.id.desc())
    out: dict[tuple[int, str], list[RuleView]] = {}
    pks = None if advisory_pks is None else sorted(set(advisory_pks))
    parts = [None] if pks is None else list(store.chunks(pks))
    for part in parts:
        q = stmt if part is None else stmt.where(VulnRule.advisory_pk.in_(part))
        for r in session.scalars(q):
            view = RuleView(r.id, r.advisory_pk, r.package, r.versions, r.status, r.reason)
            out.setdefault((r.advisory_pk, r.package), []).append(view)
    for rules in out.values():
        rules.sort(key=lambda r: -r.id)
    return out


def rule_for(
    rules: dict[tuple[int, str], list[RuleView]], advisory_pk: int, name: str, version: str
) -> RuleView | None:
    for rule in rules.get((advisory_pk, name), ()):
        if version_in(version, rule.versions):
            return rule
    return None


def _event(session: Session, adv_id: str, scope: str, target: str, before: str | None, after: str, **kw: Any) -> None:
    session.add(
        VulnCurationEvent(
            advisory_id=adv_id, scope=scope, target=target[:500], before=before, after=after, at=utcnow(), **kw
        )
    )


def _set_link(
    session: Session,
    link: VulnLinkRow,
    adv_id: str,
    target: str,
    channel_id: int,
    status: str,
    reason: str,
    actor: str | None,
    now: Any,
    rule_id: int | None,
) -> str | None:
    """Set one link's status (by a per-link decision, or by ``rule_id``) and record the event; returns the
    status it had."""
    before = link.status
    link.status, link.curated_by, link.rule_id = status, ("rule" if rule_id is not None else "link"), rule_id
    link.status_reason, link.updated_by, link.updated_at = reason, actor, now
    extra = {"rule_id": rule_id} if rule_id is not None else {}
    _event(
        session,
        adv_id,
        "link",
        target,
        before,
        status,
        reason=reason,
        actor=actor,
        link_id=link.id,
        channel_id=channel_id,
        **extra,
    )
    return before


def curate_links(
    session: Session, links: list[VulnLinkRow], status: str, reason: str, actor: str | None
) -> list[dict[str, Any]]:
    """Set ``status`` on individual links; returns one change per link."""
    check_status(status)
    changes = []
    now = utcnow()
    for link in links:
        adv = session.get(VulnAdvisory, link.advisory_pk)
        rec = session.get(Record, link.record_id)
        assert adv is not None and rec is not None
        chan = session.get(Channel, rec.channel_id)
        target = f"{chan.name if chan else rec.channel_id}/{rec.subdir}/{rec.filename}"
        before = _set_link(session, link, adv.advisory_id, target, rec.channel_id, status, reason, actor, now, None)
        changes.append(
            {"advisory": adv.advisory_id, "file": target, "link_id": link.id, "before": before, "after": status}
        )
    if changes:
        store.bump_generation(session)
    return changes


def curate_range(
    session: Session, advisory: VulnAdvisory, package: str, versions: str, status: str, reason: str, actor: str | None
) -> tuple[VulnRule, list[dict[str, Any]]]:
    """Create a rule for advisory x package x version range and apply it to the links it covers now."""
    check_status(status)
    versions = check_versions(versions)
    if not package:
        raise InvalidRequest("a package name is required for a version-range curation", code="missing_package")
    rule = VulnRule(
        advisory_pk=advisory.id,
        package=package,
        versions=versions,
        status=status,
        reason=reason,
        created_by=actor,
        created_at=utcnow(),
    )
    session.add(rule)
    session.flush()
    _event(
        session,
        advisory.advisory_id,
        "rule",
        f"{package} {versions}",
        None,
        status,
        reason=reason,
        actor=actor,
        rule_id=rule.id,
    )
    changes = []
    now = utcnow()
    rows = session.execute(
        select(VulnLinkRow, Record, Channel.name)
        .join(Record, Record.id == VulnLinkRow.record_id)
        .join(Channel, Channel.id == Record.channel_id)
        .where(VulnLinkRow.advisory_pk == advisory.id, Record.name == package)
    )
    for link, rec, chan in rows:
        if not version_in(rec.version, versions):
            continue
        target = f"{chan}/{rec.subdir}/{rec.filename}"
        before = _set_link(
            session, link, advisory.advisory_id, target, rec.channel_id, status, reason, actor, now, rule.id
        )
        changes.append(
            {
                "advisory": advisory.advisory_id,
                "file": target,
                "link_id": link.id,
                "before": before,
                "after": status,
                "channel_id": rec.channel_id,
            }
        )
    store.bump_generation(session)
    return rule, changes


def find_links(session: Session, advisory: VulnAdvisory, files: list[tuple[str, str, str]]) -> list[VulnLinkRow]:
    """Links of ``advisory`` to files given as (channel, subdir, filename)."""
    out = []
    for channel, subdir, filename in files:
        link = session.scalar(
            select(VulnLinkRow)
            .join(Record, Record.id == VulnLinkRow.record_id)
            .join(Channel, Channel.id == Record.channel_id)
            .where(
                VulnLinkRow.advisory_pk == advisory.id,
                Channel.name == channel,
                Record.subdir == subdir,
                Record.filename == filename,
            )
        )
        if link is None:
            raise NotFound(
                f"{advisory.advisory_id} is not linked to {channel}/{subdir}/{filename}",
                code="link_not_found",
                advisory=advisory.advisory_id,
                file=f"{channel}/{subdir}/{filename}",
            )
        out.append(link)
    return out
