"""search speed: name substrings come from the name trigram table; PostgreSQL's pg_trgm index on
``search_packages.name`` goes

Names containing a word are now found through ``search_trigrams`` (one row per trigram and distinct
name, both databases), so the GIN trigram index on the per-channel documents' names serves nothing any
more; worse, PostgreSQL's planner picked it for ``name = ANY(...)`` (exact-name lookups, ~100x slower
than the B-tree). Dropping it also spares every document write its GIN update. SQLite: nothing.

Revision ID: 0016_search_speed
Revises: 0015_rolling
"""

from __future__ import annotations

from alembic import op

revision = "0016_search_speed"
down_revision = "0015_rolling"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_search_packages_name_trgm")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE INDEX ix_search_packages_name_trgm ON search_packages USING gin (name gin_trgm_ops)")
