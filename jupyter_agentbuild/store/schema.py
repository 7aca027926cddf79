"""The tables, as SQLAlchemy Core metadata.

This is what the code queries; ``migrations/versions`` is what creates it. A test compares
the two, so a column added here without a migration fails CI rather than a deployment.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    false,
)

from .types import JSONText, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

builds = Table(
    "builds",
    metadata,
    # ``pk`` orders builds and is the list cursor: ids are random strings and must never
    # be compared. AUTOINCREMENT keeps SQLite from reusing the pk of a deleted newest build.
    Column("pk", Integer, primary_key=True, autoincrement=True),
    Column("id", String(32), nullable=False, unique=True),
    Column("owner", String(255), nullable=False),
    Column("name", String(255)),
    Column("status", String(32), nullable=False),
    Column("provider", String(32), nullable=False),
    Column("sandbox_id", String(255)),
    Column("sandbox_state", JSONText),
    Column("created_at", UTCDateTime, nullable=False),
    Column("started_at", UTCDateTime),
    Column("finished_at", UTCDateTime),
    Column("exit_code", Integer),
    Column("error", Text),
    Column("spec", JSONText, nullable=False),
    # The newest seq stored in entry_chunks; written in the same transaction as the chunks.
    Column("last_seq", Integer, nullable=False, server_default="0"),
    Column("preview", JSONText),
    Column("artifacts", JSONText),
    # The SERVER running the build (``Runner.server_id``, its host and pid). The columns keep
    # their first name on purpose: renaming them would break every server of the previous
    # version still sharing the database while a deployment upgrades one server at a time
    # (migrations here only add). In Python, the words are ``server_*``.
    Column("runner_id", String(64)),
    Column("runner_host", String(255)),
    Column("runner_pid", Integer),
    Column("heartbeat_at", UTCDateTime),
    # Set by a server that does not run the build; the runner that does polls for it.
    Column("cancel_requested", Boolean, nullable=False, server_default=false()),
    # Set by a server that does not run the build's preview; the one that does polls for it.
    Column("preview_stop_requested", Boolean, nullable=False, server_default=false()),
    Index(None, "owner", "pk"),
    Index(None, "owner", "status"),
    Index(None, "status"),
    sqlite_autoincrement=True,
)

#: The log/event stream in chunks of contiguous seqs. The key (build_id, last_seq) lets a
#: reader seek straight to the first chunk holding ``seq > after``: a read costs what is
#: new, never what is old. ``body`` is the chunk's entries (JSON texts) joined by "\n".
entry_chunks = Table(
    "entry_chunks",
    metadata,
    Column("build_id", String(32), ForeignKey("builds.id", ondelete="CASCADE"), nullable=False),
    Column("last_seq", Integer, nullable=False),
    Column("first_seq", Integer, nullable=False),
    Column("body", Text, nullable=False),
    PrimaryKeyConstraint("build_id", "last_seq"),
)

#: One row per build created, for the per-window rate limit. Separate from ``builds``
#: so that deleting a build does not hand back budget.
quota_uses = Table(
    "quota_uses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("owner", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Index(None, "owner", "created_at"),
)

#: One row per build whose artifacts were collected: the sizes the retention sweep sums
#: per owner, and when they were removed (expired, over quota) if they were.
artifact_sets = Table(
    "artifact_sets",
    metadata,
    Column(
        "build_id",
        String(32),
        ForeignKey("builds.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("owner", String(255), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("file_count", Integer, nullable=False),
    Column("total_size", BigInteger, nullable=False),
    Column("truncated", Boolean, nullable=False, server_default=false()),
    Column("removed_at", UTCDateTime),
    Column("removed_reason", String(32)),
    Index(None, "owner", "created_at"),
    Index(None, "created_at"),
)

#: The manifest: one row per collected file, recorded link or skipped path, in order.
#: ``kind`` is "file" (bytes in the artifact store: blob ``blob`` from ``blob_offset``),
#: "link" (a symlink, never followed) or "skipped" (``reason`` says why).
artifact_files = Table(
    "artifact_files",
    metadata,
    Column("build_id", String(32), ForeignKey("builds.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("path", String(1024), nullable=False),
    Column("kind", String(16), nullable=False),
    Column("size", BigInteger, nullable=False, server_default="0"),
    Column("sha256", String(64)),
    Column("blob", String(128)),
    # Small files share "pack" blobs: their bytes are ``size`` bytes from here.
    Column("blob_offset", BigInteger, nullable=False, server_default="0"),
    Column("target", Text),
    Column("reason", String(64)),
    PrimaryKeyConstraint("build_id", "position"),
    Index(None, "build_id", "path", unique=True),
)
