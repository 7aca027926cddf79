"""Artifacts: the manifest (artifact_files) and per-build totals (artifact_sets).

Revision ID: 0002
Revises: 0001
Create Date: 2025-11-27

Hand-written: use plain SQLAlchemy types here (never the package's TypeDecorators), so
this file keeps meaning what it meant when the package's code moves on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "artifact_sets",
        sa.Column("build_id", sa.String(32), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("file_count", sa.Integer, nullable=False),
        sa.Column("total_size", sa.BigInteger, nullable=False),
        sa.Column("truncated", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("removed_at", sa.DateTime(timezone=True)),
        sa.Column("removed_reason", sa.String(32)),
        sa.PrimaryKeyConstraint("build_id", name="pk_artifact_sets"),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["builds.id"],
            name="fk_artifact_sets_build_id_builds",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_artifact_sets_owner_created_at", "artifact_sets", ["owner", "created_at"])
    op.create_index("ix_artifact_sets_created_at", "artifact_sets", ["created_at"])

    op.create_table(
        "artifact_files",
        sa.Column("build_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("sha256", sa.String(64)),
        sa.Column("blob", sa.String(128)),
        sa.Column("blob_offset", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("target", sa.Text),
        sa.Column("reason", sa.String(64)),
        sa.PrimaryKeyConstraint("build_id", "position", name="pk_artifact_files"),
        sa.ForeignKeyConstraint(
            ["build_id"],
            ["builds.id"],
            name="fk_artifact_files_build_id_builds",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_artifact_files_build_id_path", "artifact_files", ["build_id", "path"], unique=True
    )


def downgrade() -> None:
    op.drop_table("artifact_files")
    op.drop_table("artifact_sets")
