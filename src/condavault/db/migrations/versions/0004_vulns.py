"""vulns: placeholder, filled by the vulns domain

Revision ID: 0004_vulns
Revises: 0003_mirror
"""

from __future__ import annotations

revision = "0004_vulns"
down_revision = "0003_mirror"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
