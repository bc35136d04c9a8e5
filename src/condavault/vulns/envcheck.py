"""Check an environment: parse an ``environment.yml``, a spec list, an ``@EXPLICIT`` list, a conda-lock or
a pixi lock file; solve spec inputs with py-rattler against the given channels of this server; report
every advisory, status and score of every package with a policy verdict.

Solving reads the channels' records straight from the database (the published, patched fragments)
and solves with py-rattler on a generic machine of the platform (``vulns.solving``). Lock files are
not solved: their packages are looked up by filename in the given channels, and packages not found
there are matched on the fly by name + version against the stored advisories.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml
from sqlalchemy import select
from sqlalchemy.orm import Session

from condavault.auth.policy import ChannelRef
from condavault.channels.models import Record
from condavault.errors import InvalidRequest
from condavault.packages.filename import parse_filename
from condavault.vulns import solving


@dataclass
class Parsed:
    kind: str
    specs: list[str]
    locked: list[dict[str, Any]]  # name, version, build, subdir, filename
    channels: list[str]
    platform: str | None = None


def _channel_name(c: str) -> str:
    return c.rstrip("/").rsplit("/", 1)[-1]


def _from_filename(url: str, subdir: str | None = None) -> dict[str, Any]:
    fn = url.rstrip("/").rsplit("/", 1)[-1].split("#", 1)[0]
    parts = url.rstrip("/").split("/")
    sd = subdir or (parts[-2] if len(parts) >= 2 else "")
    try:
        parsed = parse_filename(fn)
        name, version, build = parsed.name, parsed.version, parsed.build  # type: ignore[attr-defined]
    except Exception:
        stem = fn.removesuffix(".conda").removesuffix(".tar.bz2")
        try:
            name, version, build = stem.rsplit("-", 2)
        except ValueError as exc:
            raise InvalidRequest(f"cannot read a package from {url!r}", code="invalid_lock_entry") from exc
    return {"name": name, "version": version, "build": build, "subdir": sd, "filename": fn, "url": url}


def parse(content: str, kind: str = "auto") -> Parsed:
    """Read an environment file; anything malformed is a 400 (``invalid_environment``), never a 500."""
    try:
        return _parse(content, kind)
    except (yaml.YAMLError, ValueError, TypeError, AttributeError, KeyError) as exc:
        raise InvalidRequest(
            f"cannot read the environment as {kind}: {type(exc).__name__}: {str(exc)[:200]}", code="invalid_environment"
        ) from None


def _parse(content: str, kind: str) -> Parsed:
    text = content.strip()
    if kind == "auto":
        if text.startswith("@EXPLICIT") or "\n@EXPLICIT" in text:
            kind = "explicit"
        elif text.startswith("["):
            kind = "specs"
        else:
            try:
                doc = yaml.safe_load(text)
            except yaml.YAMLError:
                doc = None
            if isinstance(doc, dict) and "package" in doc and "metadata" in doc:
                kind = "conda-lock"
            elif isinstance(doc, dict) and "packages" in doc and "environments" in doc:
                kind = "pixi-lock"
            elif isinstance(doc, dict) and "dependencies" in doc:
                kind = "environment"
            else:
                kind = "specs"
    if kind == "explicit":
        urls = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith(("#", "@"))]
        return Parsed(kind, [], [_from_filename(u) for u in urls], [])
    if kind == "specs":
        if text.startswith("["):
            specs = [str(s) for s in json.loads(text)]
        else:
            specs = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        return Parsed(kind, [s for s in specs if s], [], [])
    doc = yaml.safe_load(text) or {}
    if kind == "environment":
        specs = [str(d) for d in doc.get("dependencies") or () if isinstance(d, str | int | float)]
        return Parsed(kind, specs, [], [_channel_name(str(c)) for c in doc.get("channels") or ()])
    if kind == "conda-lock":
        locked = [
            {**_from_filename(p["url"]), "name": p["name"], "version": str(p["version"])}
            for p in doc.get("package") or ()
            if p.get("manager", "conda") == "conda" and p.get("url")
        ]
        chans = [
            _channel_name(str(c.get("url", c) if isinstance(c, dict) else c))
            for c in (doc.get("metadata") or {}).get("channels") or ()
        ]
        return Parsed(kind, [], locked, chans)
    if kind == "pixi-lock":
        locked = []
        for p in doc.get("packages") or ():
            url = p.get("conda") or (p.get("url") if p.get("kind", "conda") == "conda" else None)
            if url:
                locked.append(_from_filename(url, p.get("subdir")))
        chans = []
        for env in (doc.get("environments") or {}).values():
            for c in env.get("channels") or ():
                chans.append(_channel_name(str(c.get("url") if isinstance(c, dict) else c)))
        return Parsed(kind, [], locked, list(dict.fromkeys(chans)))
    raise InvalidRequest(f"unknown environment kind {kind!r}", code="invalid_environment")


def channel_repodata(session: Session, channel_id: int, subdir: str) -> str | None:
    """The published (patched) records of one subdir of a channel as ``repodata.json`` text."""
    rows = session.execute(
        select(Record.filename, Record.fragment).where(
            Record.channel_id == channel_id, Record.subdir == subdir, Record.removed.is_(False)
        )
    ).all()
    return solving.repodata_text(subdir, rows) if rows else None


def solve(
    session: Session, channels: Sequence[ChannelRef], specs: list[str], platform: str, base_url: str
) -> list[dict[str, Any]]:
    """Solve ``specs`` for ``platform`` over the channels' records; returns the solved packages."""
    ids = {ref.name: ref.id for ref in channels}
    source = lambda name, sd: channel_repodata(session, ids[name], sd)  # noqa: E731
    universe = solving.Universe(list(ids), source, f"{base_url.rstrip('/')}/api/repo")
    with solving.TreeSolver(universe, [platform]) as solver:
        try:
            solved = solver.solve(specs, platform)
        except Exception as exc:
            raise InvalidRequest(f"the environment cannot be solved: {exc}", code="unsolvable_environment") from exc
    out = [
        {
            "name": rec.name,
            "version": rec.version,
            "build": rec.build,
            "subdir": rec.subdir,
            "filename": rec.filename,
            "channel": rec.channel if rec.channel in ids else None,
        }
        for rec in solved
    ]
    return sorted(out, key=lambda p: p["name"])


def verdict(links: list[dict[str, Any]], threshold: float) -> str:
    counting = [link for link in links if link.get("counts", True)]
    if any(link.get("score") is not None and link["score"] > threshold for link in counting):
        return "fail"
    return "warn" if counting else "pass"


def check(
    session: Session,
    parsed: Parsed,
    channels: Sequence[ChannelRef],
    *,
    platform: str,
    base_url: str,
    readable: Sequence[int],
    vuln_links: Any,
    threshold: float,
) -> dict[str, Any]:
    """Resolve the environment and evaluate every package; see the module docstring."""
    from condavault.vulns import reports

    if parsed.specs:
        if not channels:
            raise InvalidRequest("no channels of this server to solve against", code="no_channels")
        packages = solve(session, channels, parsed.specs, platform, base_url)
    else:
        packages = [dict(p) for p in parsed.locked]
    ids = {ref.name: ref.id for ref in channels}
    out = []
    for pkg in packages:
        rec = None
        names = [pkg["channel"]] if pkg.get("channel") in ids else list(ids)
        for cname in names:
            rec = session.scalar(
                select(Record).where(
                    Record.channel_id == ids[cname], Record.subdir == pkg["subdir"], Record.filename == pkg["filename"]
                )
            )
            if rec is not None:
                pkg["channel"] = cname
                break
        if rec is not None:
            links = [
                {k: lk[k] for k in ("advisory", "aliases", "score", "status", "counts", "status_reason", "risk")}
                for lk in reports.link_rows(session, readable, record_ids=[rec.id])
            ]
            pkg["sha256"] = rec.sha256
        else:
            pkg.setdefault("channel", None)
            links = [
                {
                    "advisory": v.advisory_id,
                    "aliases": list(v.aliases),
                    "score": v.score,
                    "status": v.status,
                    "counts": v.counts,
                    "status_reason": "",
                    "risk": None,
                }
                for v in vuln_links(
                    pkg.get("subdir", ""), pkg["filename"], {"name": pkg["name"], "version": pkg["version"]}
                )
            ]
        pkg["in_server"] = rec is not None
        pkg["advisories"] = links
        pkg["verdict"] = verdict(links, threshold)
        out.append(pkg)
    order = {"pass": 0, "warn": 1, "fail": 2}
    overall = max((p["verdict"] for p in out), key=order.__getitem__, default="pass")
    return {
        "kind": parsed.kind,
        "platform": platform,
        "channels": [c.name for c in channels],
        "threshold": threshold,
        "verdict": overall,
        "packages": out,
        "summary": {
            "packages": len(out),
            "vulnerable": sum(1 for p in out if p["advisories"]),
            "failing": sum(1 for p in out if p["verdict"] == "fail"),
            "advisories": len({a["advisory"] for p in out for a in p["advisories"]}),
        },
    }
