"""Alembic environment: runs on the connection that ``store.migrate.upgrade`` passes in.

There is no alembic.ini and no logging set-up here: the server owns the connection, the
transaction and the log configuration; this file only runs the revision scripts.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from jupyter_agentbuild.store.schema import metadata

connection: Connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    # SQLite cannot ALTER most things: let future revisions use batch operations.
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
