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
    with op.batch_alter_table("builds") as batch:
        batch.add_column(
            sa.Column(
                "preview_stop_requested", sa.Boolean, nullable=False, server_default=sa.false()
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("preview_stop_requested")
