"""The search service behind ``GET /api/search``, the CLI and the web UI.

Results are packages, one per (channel, name): for free text from the package documents
(``search_packages``), for MatchSpecs and field queries from the matching records, grouped. Each result
shows one record: the newest (conda version order, then build number, then timestamp) of those that
matched and pass the filters.

Every query is restricted in SQL to the channels the caller may read -- results, totals, facets and
the "did you mean" suggestion alike. See docs/search.md.
"""

from __future__ import annotations

import fnmatch
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import ChannelRef, allowed
from condavault.channels.models import Channel, Record
from condavault.errors import InvalidRequest, NotFound
from condavault.packages.filename import is_subdir
from condavault.search import query as qp
from condavault.search.common import BAND_NAMES, MAX_PAGE, MAX_PER_PAGE, SORTS, Ids, Pkg, band, keep, sort_key
from condavault.search.fields import record_candidates
from condavault.search.models import SearchFile
from condavault.search.shape import shape
from condavault.search.text import suggest, text_candidates

__all__ = ["MAX_PAGE", "MAX_PER_PAGE", "SearchQuery", "SearchService"]

if TYPE_CHECKING:
    from condavault.context import Context


@dataclass(frozen=True)
class SearchQuery:
    """A validated search request (raises ``InvalidRequest`` on construction)."""

    q: str
    channel: str | None = None
    subdir: str | None = None
    license: str | None = None
    score: str | None = None  # a CVE score band (``BAND_NAMES``): packages whose worst score falls in it
    sort: str = "relevance"  # relevance|name|newest
    page: int = 1
    per_page: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.q, str) or len(self.q) > qp.MAX_QUERY:
            raise InvalidRequest(f"q must be at most {qp.MAX_QUERY} characters", code="invalid_query")
        if self.sort not in SORTS:
            raise InvalidRequest(f"sort must be one of {', '.join(SORTS)}", code="invalid_query", sort=self.sort)
        if not 1 <= self.page <= MAX_PAGE:
            raise InvalidRequest(f"page must be between 1 and {MAX_PAGE}", code="invalid_query")
        if not 1 <= self.per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"per_page must be between 1 and {MAX_PER_PAGE}", code="invalid_query")
        if self.subdir is not None and not is_subdir(self.subdir):
            raise InvalidRequest(f"unknown subdir {self.subdir[:40]!r}", code="invalid_query", subdir=self.subdir[:40])
        if self.channel is not None and not 0 < len(self.channel) <= 100:
            raise InvalidRequest("channel must be 1 to 100 characters", code="invalid_query")
        if self.license is not None and not 0 < len(self.license) <= 200:
            raise InvalidRequest("license must be 1 to 200 characters", code="invalid_query")
        if self.score is not None and self.score not in BAND_NAMES:
            raise InvalidRequest(f"score must be one of {', '.join(BAND_NAMES)}", code="invalid_query")


class SearchService:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    # -- permissions -------------------------------------------------------------------------------
    def readable(self, identity: Identity) -> dict[int, str]:
        """id -> name of every channel ``identity`` may read."""
        with self.ctx.db.session() as s:
            rows = s.execute(select(Channel.id, Channel.name, Channel.privacy)).all()
        return {
            cid: name for cid, name, p in rows if allowed(identity, Permission.CHANNEL_READ, ChannelRef(cid, name, p))
        }

    def _scope(self, identity: Identity, channel: str | None) -> tuple[dict[int, str], int]:
        """The readable channels (only ``channel`` if given) and how many channels exist."""
        with self.ctx.db.session() as s:
            rows = s.execute(select(Channel.id, Channel.name, Channel.privacy)).all()
        read = Permission.CHANNEL_READ
        ids = {cid: name for cid, name, p in rows if allowed(identity, read, ChannelRef(cid, name, p))}
        if channel is None:
            return ids, len(rows)
        ref = self.ctx.channels.for_read(identity, channel)  # the same 403/404 as every channel route
        return ({ref.id: ref.name} if ref.id in ids else {}), len(rows)

    # -- search ------------------------------------------------------------------------------------
    def search(self, identity: Identity, query: SearchQuery) -> dict[str, Any]:
        parsed = qp.parse(query.q)
        channels, n_all = self._scope(identity, query.channel)
        if parsed.spec_channel is not None:
            channels = {cid: n for cid, n in channels.items() if n == parsed.spec_channel}
        ids = Ids(channels)
        ids.everything = len(channels) == n_all
        out: dict[str, Any] = {
            "results": [],
            "total": 0,
            "total_capped": False,
            "page": query.page,
            "per_page": query.per_page,
            "facets": {"channel": {}, "subdir": {}, "license": {}, "score_band": {}},
            "suggestion": None,
            "query_kind": parsed.kind,
        }
        if not channels:
            return out
        with self.ctx.db.session() as s:
            if parsed.record_level:
                pkgs, capped = record_candidates(s, parsed, ids)
            else:
                fuzzy: dict[str, float] = {}
                pkgs, capped = text_candidates(s, parsed, ids, fuzzy)
                if parsed.text:
                    out["suggestion"] = suggest(parsed.text, pkgs, fuzzy)
            subdir = query.subdir or parsed.spec_subdir
            lic = query.license.lower() if query.license else None
            out["facets"] = self._facets(pkgs, channels, subdir, lic, query.score)
            hits = [p for p in pkgs if keep(p, subdir, lic, query.score)]
            hits.sort(key=sort_key(query.sort, channels))
            out["total"] = len(hits)
            out["total_capped"] = capped
            start = (query.page - 1) * query.per_page
            page = hits[start : start + query.per_page]
            out["results"] = shape(s, page, channels, parsed, subdir, lic)
        return out

    def _facets(
        self, pkgs: list[Pkg], channels: dict[int, str], subdir: str | None, lic: str | None, score: str | None
    ) -> dict[str, dict[str, int]]:
        """Counts of packages per value; each facet ignores its own filter (so the others stay choosable)."""
        ch: Counter[int] = Counter()
        sd: Counter[str] = Counter()
        li: Counter[str] = Counter()
        sb: Counter[str] = Counter()
        for p in pkgs:
            in_sd = subdir is None or subdir in p.subdirs
            in_li = lic is None or fnmatch.fnmatchcase((p.license or "").lower(), lic)
            p_band = band(p.max_score)
            in_sb = score is None or p_band == score
            if in_sd and in_li and in_sb:
                ch[p.channel_id] += 1  # by id: named once per channel below
            if in_sd and in_li:
                sb[p_band] += 1
            if in_li and in_sb:
                for x in p.subdirs:
                    sd[x] += 1
            if in_sd and in_sb:
                li[p.license or "unknown"] += 1
        return {
            "channel": {channels[cid]: n for cid, n in ch.most_common(100)},
            "subdir": dict(sorted(sd.items(), key=lambda kv: (-kv[1], kv[0]))),
            "license": dict(li.most_common(50)),
            "score_band": {k: sb[k] for k in BAND_NAMES if sb[k]},
        }

    # -- which package provides a file --------------------------------------------------------------
    def provides(self, identity: Identity, path: str, page: int = 1, per_page: int = 50) -> dict[str, Any]:
        """Every readable file (record) whose package holds ``path`` (exact path inside the package)."""
        p = qp.parse("path:" + path.strip()).paths[0] if path.strip() else ""
        if not p:
            raise InvalidRequest("path must name a file inside a package, e.g. lib/libz.so.1", code="invalid_query")
        if not 1 <= page <= MAX_PAGE or not 1 <= per_page <= MAX_PER_PAGE:
            raise InvalidRequest(f"page must be 1..{MAX_PAGE} and per_page 1..{MAX_PER_PAGE}", code="invalid_query")
        channels = self.readable(identity)
        out: dict[str, Any] = {"path": p, "results": [], "total": 0, "page": page, "per_page": per_page}
        if not channels:
            return out
        R, F = Record, SearchFile
        base = (
            select(R.channel_id, R.subdir, R.filename, R.name, R.version, R.build, F.size, F.sha256)
            .join(F, F.package_sha256 == R.sha256)
            .where(F.path == p, R.channel_id.in_(list(channels)), R.removed.is_(False))
        )
        with self.ctx.db.session() as s:
            out["total"] = int(s.scalar(select(func.count()).select_from(base.subquery())) or 0)
            rows = s.execute(
                base.order_by(R.name, R.version.desc(), R.channel_id, R.subdir, R.filename)
                .limit(per_page)
                .offset((page - 1) * per_page)
            ).all()
        out["results"] = [
            {
                "channel": channels[r.channel_id],
                "subdir": r.subdir,
                "filename": r.filename,
                "name": r.name,
                "version": r.version,
                "build": r.build,
                "path": p,
                "size": r.size,
                "sha256": r.sha256,
            }
            for r in rows
        ]
        return out

    def files(self, channel_id: int, record_id: int, offset: int = 0, limit: int = 500) -> list[dict[str, Any]]:
        """The files inside one record's package (the caller has checked read access to the channel)."""
        if offset < 0 or not 1 <= limit <= 100000:
            raise InvalidRequest("offset must be >= 0 and limit 1..100000", code="invalid_query")
        with self.ctx.db.session() as s:
            sha = s.scalar(select(Record.sha256).where(Record.id == record_id, Record.channel_id == channel_id))
            if sha is None:
                exists = s.scalar(select(Record.id).where(Record.id == record_id, Record.channel_id == channel_id))
                if exists is None:
                    raise NotFound("no such file in this channel", code="file_not_found")
                return []
            rows = s.execute(
                select(SearchFile.path, SearchFile.size, SearchFile.sha256)
                .where(SearchFile.package_sha256 == sha)
                .order_by(SearchFile.path)
                .offset(offset)
                .limit(limit)
            ).all()
        return [{"path": p, "size": z, "sha256": h} for p, z, h in rows]

    def file_count(self, channel_id: int, record_id: int) -> int:
        with self.ctx.db.session() as s:
            sha = s.scalar(select(Record.sha256).where(Record.id == record_id, Record.channel_id == channel_id))
            if sha is None:
                return 0
            return int(s.scalar(select(func.count()).where(SearchFile.package_sha256 == sha)) or 0)
