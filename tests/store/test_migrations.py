"""Schema versions with Alembic, on SQLite and on PostgreSQL.

A database is brought to the current schema from empty on first use; one at an
older revision (the first released schema, with or without a version table) is
refused until ``circleback db upgrade`` ran, after which its jobs are still
there and run; one made by a newer circleback is refused. The migrated schema
is exactly the schema the models declare.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Connection

import circleback
from circleback import Caller, CheckOutcome, JobStatus, Settings
from circleback.errors import StoreError
from circleback.store import migrate
from circleback.store.database import create_sync_engine
from circleback.store.schema import jobs, metadata, outbox
from circleback.store.store import Store
from circleback.testing import TestingPlugin

from ..pacing import QUICK

FIRST_RELEASED = "0001"
OUR_TABLES = {"circleback_jobs", "circleback_outbox", "circleback_workers"}


@contextlib.contextmanager
def connect(url: str) -> Iterator[Connection]:
    """One transaction on ``url`` through a synchronous engine of its own."""
    engine = create_sync_engine(url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    with connect(url) as conn:
        return migrate.current_revision(conn)


def tables_of(url: str) -> set[str]:
    with connect(url) as conn:
        return set(sa.inspect(conn).get_table_names())


def make_released_database(url: str, how: str) -> None:
    """A database as the first release left it.

    ``stamped``: migrated to revision 0001 (jobs and outbox, version row 0001).
    ``unversioned``: what installs from before schema versions have: the jobs and
    outbox tables made by ``metadata.create_all``, no version table. (The models'
    jobs and outbox tables are still those of the first release; once a migration
    changes them, this must build the first release's tables instead.)
    """
    with connect(url) as conn:
        if how == "stamped":
            migrate.upgrade(conn, FIRST_RELEASED)
        else:
            metadata.create_all(conn, tables=[jobs, outbox])


def insert_released_job(url: str, caller: Caller) -> uuid.UUID:
    """A due job row written with the first released schema's columns only."""
    job_id = uuid.uuid4()
    now = datetime.now(UTC)
    with connect(url) as conn:
        conn.execute(
            sa.insert(jobs).values(
                id=job_id,
                user_id=caller.user_id,
                platform=caller.platform,
                platform_channel_id=caller.platform_channel_id,
                platform_thread_id=caller.platform_thread_id,
                conversation_id=caller.conversation_id,
                job_type="scripted",
                check_config={"label": "written by the first release"},
                on_complete="record",
                workflow_id=None,
                interval_seconds=30.0,
                max_attempts=120,
                on_success_message="done: {result}",
                on_failure_message=None,
                status="active",
                attempts=0,
                next_run_at=now - timedelta(seconds=1),
                created_at=now - timedelta(seconds=1),
                updated_at=now - timedelta(seconds=1),
            )
        )
    return job_id


def schema_differences(conn: Connection) -> list[object]:
    """What Alembic's autogenerate finds between the database and the models.

    Types and server defaults are compared too; nothing is ignored, because on
    both backends the migrations produce exactly what the models declare.
    """
    context = MigrationContext.configure(
        conn,
        opts={
            "version_table": migrate.VERSION_TABLE,
            "compare_type": True,
            "compare_server_default": True,
        },
    )
    return list(compare_metadata(context, metadata))


# -- from an empty database ------------------------------------------------------------------


async def test_store_open_creates_the_current_schema_in_an_empty_database(store_url: str) -> None:
    assert revision_of(store_url) is None
    store = Store(store_url)
    try:
        await store.open()
        assert await store.list_workers() == []
    finally:
        await store.aclose()
    assert revision_of(store_url) == migrate.head_revision()
    assert tables_of(store_url) >= OUR_TABLES
    again = Store(store_url)  # a second start finds the schema current and changes nothing
    try:
        await again.open()
    finally:
        await again.aclose()
    assert revision_of(store_url) == migrate.head_revision()


async def test_store_upgrade_of_an_empty_database_reports_none_to_head(store_url: str) -> None:
    store = Store(store_url)
    try:
        assert await store.upgrade() == (None, migrate.head_revision())
        assert await store.upgrade() == (migrate.head_revision(), migrate.head_revision())
    finally:
        await store.aclose()
    assert tables_of(store_url) >= OUR_TABLES


def test_migrate_upgrade_of_an_empty_database_gives_head(store_url: str) -> None:
    with connect(store_url) as conn:
        migrate.upgrade(conn)
    assert revision_of(store_url) == migrate.head_revision()
    with connect(store_url) as conn:
        assert schema_differences(conn) == []


# -- from the first released schema ----------------------------------------------------------


@pytest.mark.parametrize("how", ["stamped", "unversioned"])
async def test_first_released_schema_is_refused_until_upgraded_then_its_jobs_run(
    store_url: str, how: str, make_settings: Callable[..., Settings], caller: Caller
) -> None:
    make_released_database(store_url, how)
    job_id = insert_released_job(store_url, caller)
    assert revision_of(store_url) == FIRST_RELEASED

    refused = Store(store_url)
    try:
        with pytest.raises(StoreError) as caught:
            await refused.open()
    finally:
        await refused.aclose()
    message = caught.value.message
    assert "circleback db upgrade" in message
    assert f"revision {FIRST_RELEASED}" in message
    assert "older" in message
    # The refusal changed nothing: still the first release's tables, no version row added.
    assert tables_of(store_url) & OUR_TABLES == {"circleback_jobs", "circleback_outbox"}
    with connect(store_url) as conn:
        version = MigrationContext.configure(
            conn, opts={"version_table": migrate.VERSION_TABLE}
        ).get_current_revision()
    assert version == (FIRST_RELEASED if how == "stamped" else None)

    upgrading = Store(store_url)
    try:
        assert await upgrading.upgrade() == (FIRST_RELEASED, migrate.head_revision())
    finally:
        await upgrading.aclose()
    assert revision_of(store_url) == migrate.head_revision()

    plugin = TestingPlugin()
    async with circleback.Engine(
        make_settings(database_url=store_url), plugins=[plugin], load_entry_points=False,
        pacing=QUICK, worker=False,
    ) as engine:
        kept = await engine.scheduler.get_job(caller, job_id)
        assert kept.status is JobStatus.ACTIVE
        assert kept.check_config == {"label": "written by the first release"}
        assert kept.backoff == 1.0 and kept.lease_token == 0  # server defaults of 0001
        plugin.checker.push(job_id, CheckOutcome.met({"build": "green"}))
        assert await engine.run_due_jobs() == 1
        assert await engine.deliver_due() == 1
        done = await engine.scheduler.get_job(caller, job_id)
    assert done.status is JobStatus.COMPLETED
    assert [(n.job_id, n.message) for n in plugin.notifier.delivered] == [
        (job_id, 'done: {"build":"green"}')
    ]


def schema_shape(conn: Connection) -> dict[str, dict[str, object]]:
    """Every table's columns, keys and indexes, as the database reports them."""
    inspector = sa.inspect(conn)
    return {
        table: {
            "columns": [
                (column["name"], str(column["type"]), column["nullable"], column.get("default"))
                for column in inspector.get_columns(table)
            ],
            "primary_key": inspector.get_pk_constraint(table),
            "indexes": sorted(inspector.get_indexes(table), key=lambda index: index["name"]),
            "unique": inspector.get_unique_constraints(table),
            "foreign_keys": inspector.get_foreign_keys(table),
        }
        for table in sorted(inspector.get_table_names())
    }


def test_an_empty_database_is_made_as_the_migrations_make_it(store_url: str) -> None:
    """First use creates the models' tables and the version row without Alembic: the same."""
    with connect(store_url) as conn:
        migrate.ensure_schema(conn)
    with connect(store_url) as conn:
        made = schema_shape(conn)
        assert schema_differences(conn) == []
    assert revision_of(store_url) == migrate.head_revision()
    with connect(store_url) as conn:
        metadata.drop_all(conn)
        conn.execute(sa.text(f"DROP TABLE {migrate.VERSION_TABLE}"))
        assert sa.inspect(conn).get_table_names() == []
        migrate.upgrade(conn)
    with connect(store_url) as conn:
        migrated = schema_shape(conn)
    assert set(made) == OUR_TABLES | {migrate.VERSION_TABLE}
    assert made == migrated


# -- the migrated schema is the models' schema -----------------------------------------------


@pytest.mark.parametrize("start", ["empty", "stamped", "unversioned"])
def test_migrated_schema_equals_the_models_schema(store_url: str, start: str) -> None:
    if start != "empty":
        make_released_database(store_url, start)
    with connect(store_url) as conn:
        migrate.upgrade(conn)
    with connect(store_url) as conn:
        assert schema_differences(conn) == []
        # The comparison does see a difference when there is one.
        conn.execute(sa.text("DROP INDEX ix_circleback_jobs_lease"))
        found = schema_differences(conn)
    assert [diff[0] for diff in found if isinstance(diff, tuple)] == ["add_index"]
    assert "ix_circleback_jobs_lease" in repr(found)


def test_first_released_revision_equals_the_first_released_tables(store_url: str) -> None:
    """Migration 0001 makes what ``create_all`` of the first release made (and nothing else)."""
    make_released_database(store_url, "stamped")
    first_release = sa.MetaData()
    for table in (jobs, outbox):
        table.to_metadata(first_release)
    with connect(store_url) as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": migrate.VERSION_TABLE,
                "compare_type": True,
                "compare_server_default": True,
            },
        )
        assert compare_metadata(context, first_release) == []


# -- from a newer circleback -----------------------------------------------------------------


FUTURE = "9001_from_the_future"


async def _refusal_of_a_newer_schema(store_url: str, verb: str) -> str:
    """Stamp the database as a newer circleback's, call ``Store.<verb>``; its StoreError text."""
    with connect(store_url) as conn:
        migrate.upgrade(conn)
        conn.execute(
            sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = :future"),
            {"future": FUTURE},
        )
    store = Store(store_url)
    try:
        with pytest.raises(StoreError) as caught:
            await getattr(store, verb)()
    finally:
        await store.aclose()
    assert revision_of(store_url) == FUTURE  # nothing was changed
    return caught.value.message


async def test_schema_of_a_newer_circleback_is_refused(store_url: str) -> None:
    message = await _refusal_of_a_newer_schema(store_url, "open")
    assert FUTURE in message
    assert "newer circleback" in message
    assert "circleback db upgrade" not in message  # upgrading the database cannot help


async def test_upgrading_the_schema_of_a_newer_circleback_is_refused(store_url: str) -> None:
    """``Store.upgrade`` (what ``circleback db upgrade`` calls) says why, and changes nothing."""
    message = await _refusal_of_a_newer_schema(store_url, "upgrade")
    assert FUTURE in message
    assert "newer circleback" in message


def test_the_revision_a_start_expects_is_the_newest_migration() -> None:
    """A start checks the version row against a constant, without loading Alembic."""
    assert migrate.head_revision() == migrate.SCHEMA_REVISION


def test_importing_circleback_does_not_load_alembic() -> None:
    """Alembic is loaded only to create or change a schema (it costs a worker ~12 MiB)."""
    code = "import sys, circleback; print(any(m.startswith('alembic') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "False"
