"""Alembic environment: migrations always run on a connection circleback hands over."""

from __future__ import annotations

from alembic import context

from circleback.store.migrate import VERSION_TABLE
from circleback.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
