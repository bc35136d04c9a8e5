"""mirror: placeholder, filled by the mirror domain

Revision ID: 0003_mirror
Revises: 0002_auth
"""

from __future__ import annotations

revision = "0003_mirror"
down_revision = "0002_auth"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
