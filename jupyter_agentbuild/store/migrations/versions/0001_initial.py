"""Initial schema: builds, entry_chunks, quota_uses.

Revision ID: 0001
Revises:
Create Date: 2025-11-26

Hand-written: use plain SQLAlchemy types here (never the package's TypeDecorators), so
this file keeps meaning what it meant when the package's code moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("name", sa.String(255)),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("sandbox_id", sa.String(255)),
        sa.Column("sandbox_state", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("exit_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False, server_default="0"),
        sa.Column("preview", sa.Text),
        sa.Column("artifacts", sa.Text),
        sa.Column("runner_id", sa.String(64)),
        sa.Column("runner_host", sa.String(255)),
        sa.Column("runner_pid", sa.Integer),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.PrimaryKeyConstraint("pk", name="pk_builds"),
        sa.UniqueConstraint("id", name="uq_builds_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_builds_owner_pk", "builds", ["owner", "pk"])
    op.create_index("ix_builds_owner_status", "builds", ["owner", "status"])
    op.create_index("ix_builds_status", "builds", ["status"])

    op.create_table(
        "entry_chunks",
        sa.Column("build_id", sa.String(32), nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("first_seq", sa.Integer, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("build_id", "last_seq", name="pk_entry_chunks"),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["builds.id"],
            name="fk_entry_chunks_build_id_builds",
            ondelete="CASCADE",
        ),
    )

    op.create_table(
        "quota_uses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_quota_uses"),
    )
    op.create_index("ix_quota_uses_owner_created_at", "quota_uses", ["owner", "created_at"])


def downgrade() -> None:
    op.drop_table("quota_uses")
    op.drop_table("entry_chunks")
    op.drop_table("builds")
