"""The search tables' statements on a real database (SQLite and PostgreSQL): the typo step's similarity
computed from the trigram table equals pg_trgm's formula, and the text tier follows document rewrites
(FTS5 triggers on SQLite, the stored ``search_tsv`` column on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import insert, select, update

from condavault.channels.models import Channel
from condavault.db import migrate
from condavault.db.session import Database
from condavault.search import query as qp
from condavault.search.common import FUZZY_MIN, Ids
from condavault.search.index import rebuild_trigrams, similarity
from condavault.search.models import SearchPackage
from condavault.search.text import fuzzy_names, text_candidates
from tests.support.server import database_url, drop_pg_database

pytestmark = pytest.mark.both_databases  # database-specific code: SQLite and PostgreSQL (tests/conftest.py)

NAMES = ["zlib", "zziplib", "libzip", "zlib-ng", "numpy", "numpy-base", "numba", "pandas", "jupyter-core", "jupyter"]


@pytest.fixture
def db(tmp_path: Path, db_backend: str) -> Iterator[Database]:
    url, pg_name = database_url(db_backend, tmp_path)
    try:
        migrate.upgrade(url)
        database = Database(url)
        with database.write_session() as s:
            s.execute(insert(Channel), [{"name": "main", "privacy": "public", "description": ""}])
            cid = s.scalar(select(Channel.id))
            s.execute(
                insert(SearchPackage),
                [
                    {"channel_id": cid, "name": n, "summary": f"the {n} package", "description": "", "keywords": ""}
                    for n in NAMES
                ],
            )
            rebuild_trigrams(s)
        yield database
        database.dispose()
    finally:
        if pg_name:
            drop_pg_database(pg_name)


@pytest.mark.parametrize("word", ["zlibb", "nmupy", "numpy-bsae", "jupyter-cor", "pandsa", "xyz"])
def test_typo_similarity_is_pg_trgm_similarity(db: Database, word: str) -> None:
    expected = sorted(
        ((n, similarity(word, n)) for n in NAMES if similarity(word, n) >= FUZZY_MIN), key=lambda x: (-x[1], x[0])
    )
    with db.session() as s:
        got = fuzzy_names(s, word)
    assert [n for n, _ in got] == [n for n, _ in expected]
    assert [round(x, 9) for _, x in got] == [round(x, 9) for _, x in expected]


def _text(db: Database, q: str) -> set[str]:
    with db.session() as s:
        ids = Ids(s.scalars(select(Channel.id)))
        ids.everything = True
        pkgs, _ = text_candidates(s, qp.parse(q), ids)
    return {p.name for p in pkgs}


def test_text_tier_follows_document_rewrites(db: Database) -> None:
    assert "pandas" in _text(db, "package")
    assert _text(db, "dataframes") == set()
    with db.write_session() as s:
        s.execute(update(SearchPackage).where(SearchPackage.name == "pandas").values(summary="labelled dataframes"))
    assert _text(db, "dataframes") == {"pandas"}
    assert "pandas" not in _text(db, "package")
