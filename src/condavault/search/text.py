"""Free text: exact name, prefix, FTS (SQLite FTS5 trigram / PostgreSQL tsvector), typo-tolerant names.

Produces candidate packages (``Pkg``, from ``search_packages``) with their relevance; see docs/search.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, text
from sqlalchemy.orm import Session

from condavault.search import query as qp
from condavault.search.common import (
    EXACT,
    FUZZY,
    FUZZY_MIN,
    MAX_CANDIDATES,
    NAME_SUBSTRING,
    PREFIX,
    SUGGEST_MIN,
    TEXT,
    Pkg,
    like_escape,
    one_of,
    scope_sql,
    within,
)
from condavault.search.index import chunks, trigrams
from condavault.search.models import SearchPackage, SearchTrigram


class _Found:
    """Candidate documents by id: the ``search_packages`` columns a result needs and the best relevance."""

    def __init__(self) -> None:
        self.rows: dict[int, Any] = {}
        self.scores: dict[int, float] = {}

    def add(self, row: Any, score: float) -> None:
        pk = row[0]
        if score > self.scores.get(pk, -1.0):
            self.scores[pk] = score
            self.rows[pk] = row

    def pkgs(self) -> list[Pkg]:
        scores, rows = self.scores, self.rows
        keys = sorted(scores, key=scores.__getitem__, reverse=True)[:MAX_CANDIDATES]  # stable: ties keep order
        return [
            Pkg(r[1], r[2], scores[pk], set(r[3].split()), r[4], r[5], r[6] or 0, doc_id=pk, latest_id=r[7])
            for pk, r in ((pk, rows[pk]) for pk in keys)
        ]


def _cols() -> tuple[Any, ...]:
    P = SearchPackage
    return (P.id, P.channel_id, P.name, P.subdirs, P.license, P.max_score, P.latest_timestamp, P.latest_id)


# the same columns as SQL text (FTS statements), for a ``search_packages`` aliased ``p``
_COLS_SQL = "p.id, p.channel_id, p.name, p.subdirs, p.license, p.max_score, p.latest_timestamp, p.latest_id"


def text_candidates(
    s: Session, parsed: qp.Parsed, ids: list[int], fuzzy: dict[str, float] | None = None
) -> tuple[list[Pkg], bool]:
    """Packages the free text finds, with their relevance: exact name (B-tree equality), names starting
    with the text (B-tree range), names containing every word (the distinct names' trigram table), then
    the text anywhere (FTS5 / tsvector; the first ``MAX_CANDIDATES`` matches: beyond them the total is
    "at least"). Typo-tolerant matching runs only when no readable name equals or starts with the text
    (it then also feeds the suggestion, via ``fuzzy``). Every statement carries the channel filter."""
    P = SearchPackage
    in_scope = within(s, P.channel_id, ids)
    found = _Found()
    textq = parsed.text
    capped = False
    if not textq:  # no text: every package (browse), by name
        for row in s.execute(select(*_cols()).where(in_scope).order_by(P.name, P.channel_id).limit(MAX_CANDIDATES + 1)):
            found.add(row, 0.0)
    else:
        dialect = s.get_bind().dialect.name
        name_q = textq.replace(" ", "-")
        exact = False  # an exact (or prefix) name match: no typo-tolerant step
        for row in s.execute(select(*_cols()).where(in_scope, one_of(s, P.name, sorted({textq, name_q})))):
            found.add(row, EXACT)
            exact = True
        prefix: ColumnElement[bool]
        if dialect == "postgresql":  # the text_pattern_ops index serves LIKE 'prefix%' (backslash escapes)
            prefix = P.name.like(like_escape(name_q) + "%")
        else:  # a range on the name index (LIKE is case-insensitive in SQLite: no index)
            prefix = and_(P.name >= name_q, P.name < name_q + "\uffff")
        for row in s.execute(select(*_cols()).where(in_scope, prefix).limit(MAX_CANDIDATES)):
            if row.name.startswith(name_q):
                found.add(row, PREFIX - min(len(row.name) - len(name_q), 99))
                exact = True  # a name starts with the text: no typo to tolerate
        _name_substrings(s, parsed, ids, found)
        n_text = (fts_sqlite if dialect == "sqlite" else fts_pg)(s, parsed, ids, found)
        capped = n_text >= MAX_CANDIDATES
        if not exact:
            names = dict(fuzzy_names(s, name_q))
            if names:  # their documents in readable channels (a name without any is not suggested)
                for row in s.execute(select(*_cols()).where(in_scope, one_of(s, P.name, list(names)))):
                    found.add(row, FUZZY * names[row.name])
                    if fuzzy is not None:
                        fuzzy[row.name] = names[row.name]
    return found.pkgs(), capped or len(found.scores) > MAX_CANDIDATES


def names_containing(s: Session, words: list[str], limit: int = MAX_CANDIDATES) -> list[str]:
    """Distinct indexed names that contain every word (words of 3+ characters through the trigram table:
    a name holding a word holds each of the word's trigrams; shorter words checked here), shortest first.
    Reads a few index ranges of ``search_trigrams`` (one row per trigram and distinct name), however many
    channels hold the names."""
    long = [w for w in words if len(w) >= 3]
    if not long:
        return []
    names: set[str] | None = None
    for w in sorted(long, key=len, reverse=True)[:8]:  # the longest words are the most selective
        grams = sorted({w[i : i + 3] for i in range(len(w) - 2)})
        got = set(
            s.scalars(
                select(SearchTrigram.name)
                .where(SearchTrigram.trigram.in_(grams))
                .group_by(SearchTrigram.name)
                .having(func.count() == len(grams))
            )
        )
        names = got if names is None else names & got
        if not names:
            return []
    return sorted((n for n in names or () if all(w in n.lower() for w in words)), key=lambda n: (len(n), n))[:limit]


def _name_substrings(s: Session, parsed: qp.Parsed, ids: list[int], found: _Found) -> None:
    """Documents whose name contains every word (the higher text tier), shorter names first."""
    P = SearchPackage
    words = parsed.words
    in_scope = within(s, P.channel_id, ids)
    if not any(len(w) >= 3 for w in words):  # only 1-2 character words: a name scan, stopped at the cap
        if not words:
            return
        op = P.name.ilike if s.get_bind().dialect.name == "postgresql" else P.name.like
        conds = [op(f"%{like_escape(w)}%", escape="\\") for w in words]
        for row in s.execute(select(*_cols()).where(in_scope, *conds).limit(MAX_CANDIDATES)):
            found.add(row, NAME_SUBSTRING)
        return
    names = names_containing(s, words)
    letters = sum(len(w) for w in words)
    n = 0
    for part in chunks(names, 100):
        for row in s.execute(select(*_cols()).where(in_scope, one_of(s, P.name, list(part)))):
            found.add(row, NAME_SUBSTRING + max(0.0, 99.0 - (len(row.name) - letters)))
            n += 1
        if n >= MAX_CANDIDATES:
            return


def fts_sqlite(s: Session, parsed: qp.Parsed, ids: list[int], found: _Found) -> int:
    """FTS5 (trigram tokenizer): every word of 3+ characters as a substring, in any column, the shorter
    ones in the name; the first ``MAX_CANDIDATES`` matches in rowid order (no ranking: ordering every
    match of common words costs time in proportion to the catalogue), ranked here like the other tiers
    (by name length). Returns how many matched (up to the cap)."""
    long = [w for w in parsed.words if len(w) >= 3]
    short = [w for w in parsed.words if len(w) < 3]
    if not long:
        return 0
    quoted = ['"' + w.replace('"', '""') + '"' for w in long]
    short_sql = "".join(f" AND p.name LIKE :s{i} ESCAPE '\\'" for i in range(len(short)))
    params: dict[str, Any] = {"lim": MAX_CANDIDATES, "q": " AND ".join(quoted)}
    params.update({f"s{i}": f"%{like_escape(w)}%" for i, w in enumerate(short)})
    sql = (
        f"SELECT {_COLS_SQL} FROM search_fts JOIN search_packages p ON p.id = search_fts.rowid "
        f"WHERE search_fts MATCH :q AND {scope_sql(ids, 'p.channel_id')}{short_sql} LIMIT :lim"
    )
    return _rank_text(s.execute(text(sql), params).all(), parsed.words, found)


def fts_pg(s: Session, parsed: qp.Parsed, ids: list[int], found: _Found) -> int:
    """PostgreSQL: words (prefixes) through the tsvector GIN index, the first ``MAX_CANDIDATES`` matches,
    ranked like the other tiers by name length (``ts_rank`` would rank every match). The stored
    ``search_tsv`` is matched: a document is not parsed again per query."""
    terms = qp.words_of(parsed.text)
    if any(len(t) >= 3 for t in terms):
        # a prefix of 1-2 characters (the ``r`` of ``r-base``, a half-typed word) would read a large part
        # of the GIN index: such words are left to the name match, as the trigram FTS5 does
        terms = [t for t in terms if len(t) >= 3]
    if not terms:
        return 0
    tsq = " & ".join(f"{t}:*" if len(t) >= 3 else t for t in terms[:16])
    # search_tsv: the document's stored tsvector (a generated column, GIN-indexed; migration 0017_search_tsv)
    sql = (
        f"SELECT {_COLS_SQL} FROM search_packages p WHERE p.search_tsv @@ to_tsquery('simple', :tsq) "
        f"AND {scope_sql(ids, 'p.channel_id')} LIMIT :lim"
    )
    return _rank_text(s.execute(text(sql), {"tsq": tsq, "lim": MAX_CANDIDATES}).all(), parsed.words, found)


def _rank_text(rows: Sequence[Any], words: list[str], found: _Found) -> int:
    """The text tier's relevance: the name tier when the name holds every word, else text; shorter names
    first. Returns how many rows there were."""
    add = found.add
    for row in rows:
        name = row[2]  # _cols() order
        low = name.lower()
        tier = NAME_SUBSTRING if all(w in low for w in words) else TEXT
        add(row, tier + max(0.0, 99.0 - float(len(name))))
    return len(rows)


def fuzzy_names(s: Session, word: str, limit: int = 30) -> list[tuple[str, float]]:
    """Indexed names similar to ``word`` (trigram similarity >= FUZZY_MIN), best first; which of them
    the caller may see is decided by the caller's query of their documents."""
    if len(word) < 3 or len(word) > 100:
        return []
    grams = sorted(trigrams(word))
    # similarity = shared / (|word's| + |name's| - shared) >= FUZZY_MIN needs shared >= FUZZY_MIN * |word's|
    # (the union holds at least the word's trigrams): names sharing fewer are never read
    need = max(1, math.ceil(len(grams) * FUZZY_MIN - 1e-9))
    shared = func.count()
    cand = s.execute(
        select(SearchTrigram.name, shared)
        .where(SearchTrigram.trigram.in_(grams))
        .group_by(SearchTrigram.name)
        .having(shared >= need)
        .order_by(shared.desc())
        .limit(2000)
    ).all()
    # the shared count comes from the table (one row per trigram and name): only the name's own
    # trigrams are counted here, which gives pg_trgm's similarity without intersecting sets
    scored = [(n, k / (len(grams) + len(trigrams(n)) - k)) for n, k in cand]
    return sorted((x for x in scored if x[1] >= FUZZY_MIN), key=lambda x: (-x[1], x[0]))[:limit]


def suggest(text_q: str, pkgs: list[Pkg], fuzzy: dict[str, float]) -> str | None:
    """ "Did you mean": the most similar other name, when no readable package has exactly this name
    (``fuzzy`` holds the readable names the typo-tolerant step found; empty when the name exists)."""
    word = text_q.replace(" ", "-")
    best = sorted(
        ((sim, n) for n, sim in fuzzy.items() if n != word and sim >= SUGGEST_MIN), key=lambda x: (-x[0], x[1])
    )
    return best[0][1] if best else None
