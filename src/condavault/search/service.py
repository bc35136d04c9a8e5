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
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Integer, String, and_, any_, bindparam, func, or_, select, text, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from condavault.auth.identity import Identity
from condavault.auth.permissions import Permission
from condavault.auth.policy import ChannelRef, allowed
from condavault.channels.models import Channel, Record
from condavault.errors import InvalidRequest, NotFound
from condavault.packages.filename import is_subdir
from condavault.packages.specs import version_key
from condavault.search import query as qp
from condavault.search.index import chunks, similarity, trigrams
from condavault.search.models import SearchFile, SearchPackage, SearchTrigram
from condavault.vulns.models import VulnAdvisory, VulnAdvisoryId, VulnLinkRow, counting_clause

if TYPE_CHECKING:
    from condavault.context import Context

SORTS = ("relevance", "name", "newest")
MAX_PAGE = 1000
MAX_PER_PAGE = 100
MAX_CANDIDATES = 2000  # packages a text query ranks (the total says "at least" beyond: total_capped)
MAX_RECORDS = 50000  # records a field query reads
FUZZY_MIN = 0.3
SUGGEST_MIN = 0.35
SCORE_BANDS = (("critical", 9.0), ("high", 7.0), ("medium", 4.0), ("low", 0.0))
BAND_NAMES = ("critical", "high", "medium", "low", "none")
# relevance of a text match (exact name first, then prefix, then substring/text, then fuzzy)
EXACT, PREFIX, NAME_SUBSTRING, TEXT, FUZZY = 1000.0, 500.0, 300.0, 100.0, 50.0


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


@dataclass
class _Pkg:
    """One result before paging: a (channel, name) with its relevance and facet values."""

    channel_id: int
    name: str
    score: float
    subdirs: set[str]
    license: str | None
    max_score: float | None
    timestamp: int
    record_ids: list[int] | None = None  # record-level queries: the matching records
    matched: str | None = None
    doc_id: int | None = None  # text queries: the search_packages row
    latest_id: int | None = None  # text queries: the newest record of the package


class Ids(list[int]):
    """Readable channel ids; ``everything``: they are all the channels (no filter needed)."""

    everything: bool = False


def within(s: Session, col: Any, ids: list[int]) -> ColumnElement[bool]:
    """``col`` is one of ``ids``: nothing when they are all channels; one array parameter on PostgreSQL."""
    if getattr(ids, "everything", False):
        return true()
    if s.get_bind().dialect.name == "postgresql":
        return col == any_(bindparam("scope_ids", list(ids), type_=postgresql.ARRAY(Integer)))  # type: ignore[no-any-return]
    return col.in_(list(ids))  # type: ignore[no-any-return]


def one_of(s: Session, col: Any, values: list[str]) -> ColumnElement[bool]:
    """``col IN values`` (one array parameter on PostgreSQL). Run it with :func:`by_btree`."""
    if s.get_bind().dialect.name == "postgresql":
        return col == any_(bindparam("names", list(values), type_=postgresql.ARRAY(String)))  # type: ignore[no-any-return]
    return col.in_(list(values))  # type: ignore[no-any-return]


def by_btree(s: Session, stmt: Any) -> list[Any]:
    """Run a name-equality lookup through the B-tree index. PostgreSQL's planner otherwise picks the
    trigram GIN index for ``name = ANY(...)`` (it supports equality, ~100x slower here); a GIN index is
    only usable through bitmap scans, so they are off for this one statement."""
    if s.get_bind().dialect.name != "postgresql":
        return list(s.execute(stmt).all())
    s.execute(text("SET LOCAL enable_bitmapscan = off"))
    try:
        return list(s.execute(stmt).all())
    finally:
        s.execute(text("SET LOCAL enable_bitmapscan = on"))


def _scope_sql(ids: list[int], column: str) -> str:
    """The same, as SQL text (the ids are integers from the database)."""
    if getattr(ids, "everything", False):
        return "1=1"
    return f"{column} IN ({','.join(str(int(i)) for i in ids) or 'NULL'})"


def band(score: float | None) -> str:
    if score is None:
        return "none"
    for name, low in SCORE_BANDS:
        if score >= low:
            return name
    return "none"


def _like_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _glob_like(s: str) -> str:
    return _like_escape(s).replace("*", "%")


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
                pkgs, capped = self._record_candidates(s, parsed, ids)
            else:
                fuzzy: dict[str, float] = {}
                pkgs, capped = self._text_candidates(s, parsed, ids, fuzzy)
                if parsed.text:
                    out["suggestion"] = self._suggest(parsed.text, pkgs, fuzzy)
            subdir = query.subdir or parsed.spec_subdir
            lic = query.license.lower() if query.license else None
            out["facets"] = self._facets(pkgs, channels, subdir, lic, query.score)
            hits = [p for p in pkgs if _keep(p, subdir, lic, query.score)]
            hits.sort(key=_sort_key(query.sort, channels))
            out["total"] = len(hits)
            out["total_capped"] = capped
            start = (query.page - 1) * query.per_page
            page = hits[start : start + query.per_page]
            out["results"] = self._shape(s, page, channels, parsed, subdir, lic)
        return out

    def _facets(
        self, pkgs: list[_Pkg], channels: dict[int, str], subdir: str | None, lic: str | None, score: str | None
    ) -> dict[str, dict[str, int]]:
        """Counts of packages per value; each facet ignores its own filter (so the others stay choosable)."""
        ch: Counter[str] = Counter()
        sd: Counter[str] = Counter()
        li: Counter[str] = Counter()
        sb: Counter[str] = Counter()
        for p in pkgs:
            in_sd = subdir is None or subdir in p.subdirs
            in_li = lic is None or fnmatch.fnmatchcase((p.license or "").lower(), lic)
            p_band = band(p.max_score)
            in_sb = score is None or p_band == score
            if in_sd and in_li and in_sb:
                ch[channels[p.channel_id]] += 1
            if in_sd and in_li:
                sb[p_band] += 1
            if in_li and in_sb:
                sd.update(p.subdirs)
            if in_sd and in_sb:
                li[p.license or "unknown"] += 1
        return {
            "channel": dict(ch.most_common(100)),
            "subdir": dict(sorted(sd.items(), key=lambda kv: (-kv[1], kv[0]))),
            "license": dict(li.most_common(50)),
            "score_band": {k: sb[k] for k in BAND_NAMES if sb[k]},
        }

    # -- free text ---------------------------------------------------------------------------------
    def _text_candidates(
        self, s: Session, parsed: qp.Parsed, ids: list[int], fuzzy: dict[str, float] | None = None
    ) -> tuple[list[_Pkg], bool]:
        """Packages the free text finds, with their relevance. Typo-tolerant matching runs only when no
        readable package has exactly the typed name (it then also feeds the suggestion, via ``fuzzy``)."""
        P = SearchPackage
        in_scope = within(s, P.channel_id, ids)
        scores: dict[int, float] = {}

        def add(pk: int, score: float) -> None:
            if score > scores.get(pk, -1.0):
                scores[pk] = score

        textq = parsed.text
        capped = False
        if not textq:  # no text: every package (browse), by name
            rows = s.execute(select(P.id).where(in_scope).order_by(P.name, P.channel_id).limit(MAX_CANDIDATES + 1))
            for (pk,) in rows:
                add(pk, 0.0)
        else:
            dialect = s.get_bind().dialect.name
            name_q = textq.replace(" ", "-")
            exact = False  # an exact (or prefix) name match: no typo-tolerant step
            for (pk,) in by_btree(s, select(P.id).where(in_scope, one_of(s, P.name, sorted({textq, name_q})))):
                add(pk, EXACT)
                exact = True
            prefix: ColumnElement[bool]
            if dialect == "postgresql":  # the text_pattern_ops index serves LIKE 'prefix%' (backslash escapes)
                prefix = P.name.like(_like_escape(name_q) + "%")
            else:  # a range on the name index (LIKE is case-insensitive in SQLite: no index)
                prefix = and_(P.name >= name_q, P.name < name_q + "\uffff")
            for pk, name in s.execute(select(P.id, P.name).where(in_scope, prefix).limit(MAX_CANDIDATES)):
                if name.startswith(name_q):
                    add(pk, PREFIX - min(len(name) - len(name_q), 99))
                    exact = True  # a name starts with the text: no typo to tolerate
            found = (self._fts_sqlite if dialect == "sqlite" else self._fts_pg)(s, parsed, ids)
            capped = len(found) >= MAX_CANDIDATES
            for pk, score in found:
                add(pk, score)
            if not exact:
                names = dict(self._fuzzy_names(s, name_q))
                if names:  # their documents in readable channels (a name without any is not suggested)
                    for pk, n in by_btree(s, select(P.id, P.name).where(in_scope, one_of(s, P.name, list(names)))):
                        add(pk, FUZZY * names[n])
                        if fuzzy is not None:
                            fuzzy[n] = names[n]
        if not scores:
            return [], capped
        return self._load_pkgs(s, scores), capped or len(scores) > MAX_CANDIDATES

    def _load_pkgs(self, s: Session, scores: dict[int, float]) -> list[_Pkg]:
        P = SearchPackage
        out = []
        keys = sorted(scores, key=lambda k: -scores[k])[:MAX_CANDIDATES]
        cols = (P.id, P.channel_id, P.name, P.subdirs, P.license, P.max_score, P.latest_timestamp, P.latest_id)
        for part in chunks(keys):
            for pk, cid, name, subdirs, lic, mx, ts, latest in s.execute(select(*cols).where(P.id.in_(part))):
                out.append(
                    _Pkg(cid, name, scores[pk], set(subdirs.split()), lic, mx, ts or 0, doc_id=pk, latest_id=latest)
                )
        return out

    def _fts_sqlite(self, s: Session, parsed: qp.Parsed, ids: list[int]) -> list[tuple[int, float]]:
        """FTS5 (trigram tokenizer): every word of 3+ characters as a substring, in any column; shorter
        words as a name substring. Name matches rank above text-only ones."""
        long = [w for w in parsed.words if len(w) >= 3]
        short = [w for w in parsed.words if len(w) < 3]
        if not long:
            if not short:
                return []
            conds = [SearchPackage.name.like(f"%{_like_escape(w)}%", escape="\\") for w in short]
            rows = s.execute(
                select(SearchPackage.id).where(within(s, SearchPackage.channel_id, ids), *conds).limit(MAX_CANDIDATES)
            )
            return [(pk, NAME_SUBSTRING) for (pk,) in rows]
        quoted = ['"' + w.replace('"', '""') + '"' for w in long]
        scope = _scope_sql(ids, "p.channel_id")
        short_sql = "".join(f" AND p.name LIKE :s{i} ESCAPE '\\'" for i in range(len(short)))
        params: dict[str, Any] = {"lim": MAX_CANDIDATES}
        params.update({f"s{i}": f"%{_like_escape(w)}%" for i, w in enumerate(short)})
        base = (
            "SELECT p.id, p.name, bm25(search_fts, 10.0, 4.0, 1.0, 3.0) FROM search_fts JOIN search_packages p "
            f"ON p.id = search_fts.rowid WHERE search_fts MATCH :q AND {scope}{short_sql}"
        )
        out: dict[int, float] = {}
        # 1. every word inside the name (the higher tier), ranked: few documents, all of them scored
        for pk, _name, rank in s.execute(
            text(base + " ORDER BY rank LIMIT :lim"), {**params, "q": " AND ".join(f"name : {q}" for q in quoted)}
        ):
            out[pk] = NAME_SUBSTRING + min(-float(rank), 99.0)
        # 2. anywhere in the text: the first MAX_CANDIDATES matches, scored as they come (ranking every
        # match of common words costs time in proportion to the catalogue; beyond it the total is capped)
        for pk, name, rank in s.execute(text(base + " LIMIT :lim"), {**params, "q": " AND ".join(quoted)}):
            tier = NAME_SUBSTRING if all(w in name for w in long) else TEXT
            out.setdefault(pk, tier + min(-float(rank), 99.0))
        return list(out.items())

    def _fts_pg(self, s: Session, parsed: qp.Parsed, ids: list[int]) -> list[tuple[int, float]]:
        """PostgreSQL: name substrings through pg_trgm (ILIKE), words (prefixes) through the tsvector."""
        P = SearchPackage
        out: dict[int, float] = {}
        conds = [P.name.ilike(f"%{_like_escape(w)}%", escape="\\") for w in parsed.words]
        if conds:
            for (pk,) in s.execute(select(P.id).where(within(s, P.channel_id, ids), *conds).limit(MAX_CANDIDATES)):
                out[pk] = NAME_SUBSTRING
        terms = qp.words_of(parsed.text)
        if any(len(t) >= 3 for t in terms):
            # a prefix of 1-2 characters (the ``r`` of ``r-base``, a half-typed word) would read a large part
            # of the GIN index: such words are left to the name match above, as the trigram FTS5 does
            terms = [t for t in terms if len(t) >= 3]
        if terms:
            tsq = " & ".join(f"{t}:*" if len(t) >= 3 else t for t in terms[:16])
            doc = "to_tsvector('simple', name || ' ' || summary || ' ' || keywords || ' ' || description)"
            # matched through the GIN index; ranked by name length (ts_rank would re-parse every document)
            # the first MAX_CANDIDATES matches (no ORDER BY: sorting every match of common words costs time in
            # proportion to the catalogue), ranked here by name length; beyond them the total is capped
            sql = (
                f"SELECT id, length(name) FROM search_packages WHERE {doc} @@ to_tsquery('simple', :tsq) "
                f"AND {_scope_sql(ids, 'channel_id')} LIMIT :lim"
            )
            for pk, length in s.execute(text(sql), {"tsq": tsq, "lim": MAX_CANDIDATES}):
                out.setdefault(pk, TEXT + max(0.0, 99.0 - float(length)))
        return list(out.items())

    def _fuzzy_names(self, s: Session, word: str, limit: int = 30) -> list[tuple[str, float]]:
        """Indexed names similar to ``word`` (trigram similarity >= FUZZY_MIN), best first; which of them
        the caller may see is decided by the caller's query of their documents."""
        if len(word) < 3 or len(word) > 100:
            return []
        grams = sorted(trigrams(word))
        need = max(1, int(len(grams) * FUZZY_MIN) - 1)
        cand = (
            s.execute(
                select(SearchTrigram.name)
                .where(SearchTrigram.trigram.in_(grams))
                .group_by(SearchTrigram.name)
                .having(func.count() >= need)
                .order_by(func.count().desc())
                .limit(2000)
            )
            .scalars()
            .all()
        )
        scored = sorted(((n, similarity(word, n)) for n in cand), key=lambda x: (-x[1], x[0]))
        return [x for x in scored if x[1] >= FUZZY_MIN][:limit]

    @staticmethod
    def _suggest(text_q: str, pkgs: list[_Pkg], fuzzy: dict[str, float]) -> str | None:
        """ "Did you mean": the most similar other name, when no readable package has exactly this name
        (``fuzzy`` holds the readable names the typo-tolerant step found; empty when the name exists)."""
        word = text_q.replace(" ", "-")
        best = sorted(
            ((sim, n) for n, sim in fuzzy.items() if n != word and sim >= SUGGEST_MIN), key=lambda x: (-x[0], x[1])
        )
        return best[0][1] if best else None

    # -- record-level queries ----------------------------------------------------------------------
    def _record_conditions(self, s: Session, parsed: qp.Parsed) -> tuple[list[ColumnElement[bool]], dict[str, Any]]:
        R = Record
        conds: list[ColumnElement[bool]] = []
        info: dict[str, Any] = {}
        if parsed.spec is not None:
            name = parsed.spec.name
            conds.append(R.name.like(_glob_like(name), escape="\\") if "*" in name else R.name == name)
            if parsed.spec_subdir:
                conds.append(R.subdir == parsed.spec_subdir)
        # files resolve to package digests first (their own indexes), then records by digest
        for p in parsed.paths:
            holders = list(s.scalars(select(SearchFile.package_sha256).where(SearchFile.path == p).limit(MAX_RECORDS)))
            conds.append(R.sha256.in_(holders))
            info["matched"] = f"path:{p}"
        for h in parsed.sha256:
            found = select(SearchFile.package_sha256).where(SearchFile.sha256 == h).limit(MAX_RECORDS)
            holders = list(s.scalars(found))
            conds.append(R.sha256.in_([h, *holders]))
        for c in parsed.cves:
            adv = select(VulnAdvisory.id).where(
                or_(
                    VulnAdvisory.advisory_id == c,
                    VulnAdvisory.id.in_(select(VulnAdvisoryId.advisory_pk).where(VulnAdvisoryId.ident == c)),
                )
            )
            conds.append(
                R.id.in_(select(VulnLinkRow.record_id).where(VulnLinkRow.advisory_pk.in_(adv), counting_clause()))
            )
            info["matched"] = f"cve:{c}"
        for pu in parsed.purls:
            conds.append(R.name == pu.name)
            if pu.version:
                conds.append(R.version == pu.version)
            if pu.subdir:
                conds.append(R.subdir == pu.subdir)
            if pu.build:
                conds.append(R.build == pu.build)
            if pu.channel:
                info.setdefault("channels", set()).add(pu.channel)
        for lic in parsed.licenses:
            conds.append(func.lower(R.license).like(_glob_like(lic.lower()), escape="\\"))
        for flag in parsed.has:
            keys = qp.HAS[flag]
            if keys is None:
                conds.append(R.id.in_(select(VulnLinkRow.record_id).where(counting_clause())))
            else:
                conds.append(or_(*(R.paths_summary.like(f'%"{k}": true%') for k in keys)))
        return conds, info

    def _record_candidates(self, s: Session, parsed: qp.Parsed, ids: list[int]) -> tuple[list[_Pkg], bool]:
        R = Record
        conds, info = self._record_conditions(s, parsed)
        if info.get("channels"):
            names = {c: n for c, n in s.execute(select(Channel.id, Channel.name).where(Channel.id.in_(ids)))}
            ids = [cid for cid in ids if names.get(cid) in info["channels"]]
            if not ids:
                return [], False
        if parsed.text:  # free text next to field terms: only packages the text finds
            text_pkgs, _ = self._text_candidates(s, qp.Parsed(text=parsed.text), ids)
            keys = {(p.channel_id, p.name) for p in text_pkgs}
            if not keys:
                return [], False
            conds.append(R.name.in_(sorted({n for _, n in keys})))
        else:
            keys = None
        stmt = (
            select(R.id, R.channel_id, R.name, R.version, R.build, R.subdir, R.license, R.timestamp)
            .where(within(s, R.channel_id, ids), R.removed.is_(False), *conds)
            .order_by(R.id.desc())
            .limit(MAX_RECORDS + 1)
        )
        rows = s.execute(stmt).all()
        capped = len(rows) > MAX_RECORDS
        rows = rows[:MAX_RECORDS]
        spec = parsed.spec
        if spec is not None:
            rows = [r for r in rows if spec.matches(r.version, r.build)]
        grouped: dict[tuple[int, str], list[Any]] = defaultdict(list)
        for r in rows:
            if keys is None or (r.channel_id, r.name) in keys:
                grouped[(r.channel_id, r.name)].append(r)
        scores = self._record_scores(s, [r.id for rs in grouped.values() for r in rs])
        out = []
        for (cid, name), rs in grouped.items():
            best = max(rs, key=lambda r: (version_key(r.version), r.timestamp or 0, r.id))
            mx = max((scores[r.id] for r in rs if r.id in scores), default=None)
            out.append(
                _Pkg(
                    cid,
                    name,
                    0.0,
                    {r.subdir for r in rs},
                    best.license,
                    mx,
                    best.timestamp or 0,
                    record_ids=[r.id for r in rs],
                    matched=info.get("matched"),
                )
            )
        return out, capped

    def _record_scores(self, s: Session, record_ids: Sequence[int]) -> dict[int, float]:
        out: dict[int, float] = {}
        for part in chunks(list(record_ids)):
            for rid, score in s.execute(
                select(VulnLinkRow.record_id, func.max(VulnAdvisory.score))
                .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
                .where(VulnLinkRow.record_id.in_(part), counting_clause())
                .group_by(VulnLinkRow.record_id)
            ):
                if score is not None:
                    out[rid] = float(score)
        return out

    # -- shaping a page ----------------------------------------------------------------------------
    def _shape(
        self,
        s: Session,
        page: list[_Pkg],
        channels: dict[int, str],
        parsed: qp.Parsed,
        subdir: str | None,
        lic: str | None,
    ) -> list[dict[str, Any]]:
        if not page:
            return []
        R = Record
        cols = (
            R.id,
            R.channel_id,
            R.name,
            R.version,
            R.build,
            R.build_number,
            R.subdir,
            R.license,
            R.timestamp,
            R.filename,
            R.sha256,
        )
        # the candidate records of each package on the page
        cand: dict[tuple[int, str], list[Any]] = defaultdict(list)
        ids = [rid for p in page for rid in (p.record_ids or [])]
        if ids:
            for part in chunks(ids):
                for row in s.execute(select(*cols).where(R.id.in_(part))):
                    cand[(row.channel_id, row.name)].append(row)
        text_pkgs = [p for p in page if p.record_ids is None]
        if text_pkgs and subdir is None and lic is None:  # the newest build, as the document says
            latest = [p.latest_id for p in text_pkgs if p.latest_id is not None]
            for row in s.execute(select(*cols).where(R.id.in_(latest), R.removed.is_(False))):
                cand[(row.channel_id, row.name)].append(row)
            text_pkgs = [p for p in text_pkgs if (p.channel_id, p.name) not in cand]
        if text_pkgs:  # filtered (or a stale document): the builds of these packages, chosen below
            wanted = {(p.channel_id, p.name) for p in text_pkgs}
            stmt = select(*cols).where(
                R.name.in_(sorted({n for _, n in wanted})),
                R.channel_id.in_(sorted({c for c, _ in wanted})),
                R.removed.is_(False),
            )
            for row in s.execute(stmt):
                if (row.channel_id, row.name) in wanted:
                    cand[(row.channel_id, row.name)].append(row)
        docs: dict[tuple[int, str], tuple[str, str | None]] = {}
        doc_ids = [p.doc_id for p in page if p.doc_id is not None]
        if doc_ids:
            P = SearchPackage
            for c, n, summ, lic_ in s.execute(
                select(P.channel_id, P.name, P.summary, P.license).where(P.id.in_(doc_ids))
            ):
                docs[(c, n)] = (summ, lic_)
        rec_keys = {(p.channel_id, p.name) for p in page if p.doc_id is None}
        if rec_keys:
            P = SearchPackage
            for c, n, summ, lic_ in s.execute(
                select(P.channel_id, P.name, P.summary, P.license).where(
                    P.name.in_(sorted({n for _, n in rec_keys})), P.channel_id.in_(sorted({c for c, _ in rec_keys}))
                )
            ):
                if (c, n) in rec_keys:
                    docs[(c, n)] = (summ, lic_)
        chosen: dict[tuple[int, str], Any] = {}  # Any: a Row of ``cols``
        for p in page:
            rs = cand.get((p.channel_id, p.name), [])
            keep = [
                r
                for r in rs
                if (subdir is None or r.subdir == subdir)
                and (lic is None or fnmatch.fnmatchcase((r.license or "").lower(), lic))
            ] or rs
            if keep:
                chosen[(p.channel_id, p.name)] = max(
                    keep, key=lambda r: (version_key(r.version), r.build_number, r.timestamp or 0, r.id)
                )
        rids = [r.id for r in chosen.values()]
        cves: Counter[int] = Counter()
        maxes: dict[int, float] = {}
        for part in chunks(rids):
            for rid, n_links, mx in s.execute(
                select(VulnLinkRow.record_id, func.count(), func.max(VulnAdvisory.score))
                .join(VulnAdvisory, VulnAdvisory.id == VulnLinkRow.advisory_pk)
                .where(VulnLinkRow.record_id.in_(part), counting_clause())
                .group_by(VulnLinkRow.record_id)
            ):
                cves[rid] = int(n_links)
                if mx is not None:
                    maxes[rid] = float(mx)
        file_hits = self._file_hits(s, [r.sha256 for r in chosen.values() if r.sha256], parsed)
        out = []
        for p in page:
            r = chosen.get((p.channel_id, p.name))
            summary, doc_lic = docs.get((p.channel_id, p.name), ("", None))
            if r is None:  # the records went away between the two queries: show the document
                out.append(
                    {
                        "channel": channels[p.channel_id],
                        "name": p.name,
                        "version": None,
                        "build": None,
                        "subdir": None,
                        "summary": summary,
                        "license": doc_lic,
                        "max_score": None,
                        "cves": 0,
                        "timestamp": None,
                        "filename": None,
                        "sha256": None,
                        "matched": p.matched,
                        "score": p.score,
                        "builds": 0,
                    }
                )
                continue
            matched = p.matched
            if r.sha256 in file_hits:
                matched = file_hits[r.sha256]
            out.append(
                {
                    "channel": channels[p.channel_id],
                    "name": p.name,
                    "version": r.version,
                    "build": r.build,
                    "subdir": r.subdir,
                    "summary": summary,
                    "license": r.license or doc_lic,
                    "max_score": maxes.get(r.id),
                    "cves": cves.get(r.id, 0),
                    "timestamp": r.timestamp,
                    "filename": r.filename,
                    "sha256": r.sha256,
                    "matched": matched,
                    "score": round(p.score, 3),
                    "builds": len(p.record_ids if p.record_ids is not None else cand.get((p.channel_id, p.name), [])),
                }
            )
        return out

    def _file_hits(self, s: Session, shas: list[str], parsed: qp.Parsed) -> dict[str, str]:
        """For ``sha256:`` queries: which file of a shown package carries the digest (``sha256:<path>``)."""
        out: dict[str, str] = {}
        for h in parsed.sha256:
            for pkg, path in s.execute(
                select(SearchFile.package_sha256, SearchFile.path).where(
                    SearchFile.sha256 == h, SearchFile.package_sha256.in_(shas)
                )
            ):
                out.setdefault(pkg, f"path:{path}")
        return out

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


def _keep(p: _Pkg, subdir: str | None, lic: str | None, score: str | None = None) -> bool:
    if subdir is not None and subdir not in p.subdirs:
        return False
    if score is not None and band(p.max_score) != score:
        return False
    return lic is None or fnmatch.fnmatchcase((p.license or "").lower(), lic)


def _sort_key(sort: str, channels: dict[int, str]) -> Callable[[_Pkg], Any]:
    if sort == "name":
        return lambda p: (p.name, channels[p.channel_id], p.channel_id)
    if sort == "newest":
        return lambda p: (-p.timestamp, p.name, channels[p.channel_id], p.channel_id)
    return lambda p: (-p.score, len(p.name), p.name, channels[p.channel_id], p.channel_id)
