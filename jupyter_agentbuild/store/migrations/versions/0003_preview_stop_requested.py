"""builds.preview_stop_requested: a preview stop (or delete) asked on another server.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

A preview runs on the server that ran its build; a server sharing the database asks that
one to stop it through this flag, as ``cancel_requested`` does for running builds.

Hand-written: plain SQLAlchemy types only (see 0002).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    # A plain ADD COLUMN (SQLite has it for a NOT NULL column with a constant default):
    # batch mode would copy ``builds`` into a new table and lose its AUTOINCREMENT, so
    # the pk of a deleted newest build could come back (a paging cursor's promise).
    op.add_column(
        "builds",
        sa.Column("preview_stop_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_column("builds", "preview_stop_requested")  # SQLite >= 3.35 drops columns in place
