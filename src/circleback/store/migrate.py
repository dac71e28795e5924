"""Schema versions: create, upgrade and check circleback's tables with Alembic.

A store refuses to run against a schema older or newer than the code: an
older one needs ``circleback db upgrade``, a newer one a newer circleback.
An empty database is brought to the current schema on first use, so the
embedded default needs no setup step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from ..core.errors import StoreError
from .schema import metadata

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "SCHEMA_REVISION",
    "VERSION_TABLE",
    "current_revision",
    "ensure_schema",
    "head_revision",
    "upgrade",
]

#: The newest revision in ``circleback/store/migrations`` (a test keeps the two equal). A start
#: against an up-to-date schema reads the version row and is done: Alembic, which
#: costs a worker about 12 MiB of memory, is imported only to create or change a schema.
SCHEMA_REVISION = "0002"

#: Alembic's version table, named so that it never collides with a host application's.
VERSION_TABLE = "circleback_alembic_version"
#: The revision of databases made before versioning: the tables, without a version row.
_FIRST_REVISION = "0001"
#: Key of the PostgreSQL advisory lock held while the schema is checked or changed.
_SCHEMA_LOCK_KEY = 0x63626B31  # "cbk1"


def _config(connection: Connection | None = None) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", "circleback.store:migrations")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    """The revision this version of circleback expects (read from the migration scripts)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def _lock(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _SCHEMA_LOCK_KEY})


def current_revision(connection: Connection) -> str | None:
    """The schema revision stored in the database; ``None`` for a database without our tables."""
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    revision = context.get_current_revision()
    if revision is None and inspect(connection).has_table("circleback_jobs"):
        return _FIRST_REVISION
    return revision


def upgrade(connection: Connection, revision: str = "head") -> None:
    """Migrate the schema to ``revision`` inside the connection's transaction.

    Refuses (:class:`StoreError`) a schema made by a newer circleback: no
    migration here knows the way from it.
    """
    from alembic import command
    from alembic.runtime.migration import MigrationContext

    _lock(connection)
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    found = context.get_current_revision()
    if found is None and inspect(connection).has_table("circleback_jobs"):
        command.stamp(_config(connection), _FIRST_REVISION)
    elif found is not None and found not in _known_revisions():
        raise _newer_schema(found)
    command.upgrade(_config(connection), revision)


def _known_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return {script.revision for script in ScriptDirectory.from_config(_config()).walk_revisions()}


def _newer_schema(found: str) -> StoreError:
    return StoreError(
        f"the database schema is at revision {found}, which this circleback (schema "
        f"{head_revision()}) does not know: it was made by a newer circleback; "
        "upgrade circleback to use it"
    )


def _stored_revision(connection: Connection) -> str | None:
    """The version row, read with a plain query (``None`` without one)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    return rows[0] if len(rows) == 1 else None


def _version_table() -> sa.Table:
    """Alembic's version table, declared as Alembic declares it."""
    return sa.Table(
        VERSION_TABLE,
        sa.MetaData(),
        sa.Column("version_num", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
    )


def _create_current_schema(connection: Connection) -> None:
    """Bring an empty database straight to the current schema, without Alembic.

    The models are the current schema (``tests/test_migrations.py`` holds
    the migrations to exactly that), so creating them and writing the version
    row leaves what running every migration would, at no cost in memory: the
    embedded default makes its database on first start.
    """
    metadata.create_all(connection)
    version = _version_table()
    version.create(connection)
    connection.execute(version.insert().values(version_num=SCHEMA_REVISION))


def ensure_schema(connection: Connection) -> None:
    """Create the schema in an empty database; refuse one of another revision."""
    _lock(connection)
    if _stored_revision(connection) == SCHEMA_REVISION:
        return
    names = set(inspect(connection).get_table_names())
    if not names & {VERSION_TABLE, *metadata.tables}:
        _create_current_schema(connection)
        return
    found = current_revision(connection)
    head = head_revision()
    if found is None:
        upgrade(connection, "head")
        return
    if found == head:
        return
    if found in _known_revisions():
        raise StoreError(
            f"the database schema is at revision {found}, older than this circleback's "
            f"{head}: run 'circleback db upgrade' (with the same CIRCLEBACK_DATABASE_URL) first"
        )
    raise _newer_schema(found)
