"""The embedded store reaches aiosqlite's thread once per statement.

SQLAlchemy's stock adapter makes four trips to aiosqlite's thread for a query
and three for other statements; each costs about 70 µs of CPU between the
threads, more than a small indexed statement costs SQLite. These tests count
the trips and check that results, row counts, errors and rollbacks are what
the stock adapter gives.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from circleback.core import aiosqlite_driver
from circleback.core.database import TransactionRunner

pytestmark = pytest.mark.anyio

_TABLE = sa.Table(
    "things", sa.MetaData(),
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String, nullable=False, unique=True),
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiosqlite runs on asyncio only


@contextmanager
def _trips() -> Iterator[list[str]]:
    """Every call made on an aiosqlite connection's thread, by name, while inside."""
    seen: list[str] = []
    original = aiosqlite.Connection._execute

    async def counting(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(getattr(fn, "__name__", repr(fn)))
        return await original(self, fn, *args, **kwargs)

    aiosqlite.Connection._execute = counting  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        aiosqlite.Connection._execute = original  # type: ignore[method-assign]


async def _runner(tmp_path: Path) -> TransactionRunner:
    runner = TransactionRunner(f"sqlite:///{tmp_path / 'db.sqlite'}", mode="async")
    runner.open()

    def create(conn: sa.Connection) -> None:
        _TABLE.metadata.create_all(conn)
        conn.execute(sa.insert(_TABLE), [{"name": f"n{i}"} for i in range(5)])

    await runner.run(create)
    return runner


async def test_a_transaction_costs_one_trip_per_statement_plus_its_commit(
    tmp_path: Path,
) -> None:
    runner = await _runner(tmp_path)
    try:

        def three_statements(conn: sa.Connection) -> tuple[list[str], int, list[int]]:
            names = list(conn.execute(sa.select(_TABLE.c.name).order_by(_TABLE.c.id)).scalars())
            updated = conn.execute(
                sa.update(_TABLE).where(_TABLE.c.id > 3).values(name=_TABLE.c.name + "!")
            ).rowcount
            returned = list(
                conn.execute(
                    sa.delete(_TABLE).where(_TABLE.c.id <= 2).returning(_TABLE.c.id)
                ).scalars()
            )
            return names, updated, sorted(returned)

        with _trips() as trips:
            names, updated, returned = await runner.run(three_statements)
        assert names == ["n0", "n1", "n2", "n3", "n4"]
        assert updated == 2
        assert returned == [1, 2]
        # BEGIN IMMEDIATE, the three statements, COMMIT: the stock adapter made 14.
        assert trips == ["_execute_and_fetch"] * 4 + ["commit"]

        def read(conn: sa.Connection) -> list[str]:
            return list(conn.execute(sa.select(_TABLE.c.name).order_by(_TABLE.c.id)).scalars())

        assert await runner.run(read, readonly=True) == ["n2", "n3!", "n4!"]
    finally:
        await runner.aclose()


async def test_executemany_counts_rows_and_a_failed_statement_rolls_back(tmp_path: Path) -> None:
    runner = await _runner(tmp_path)
    try:

        def rename(conn: sa.Connection) -> int:
            return conn.execute(
                sa.update(_TABLE).where(_TABLE.c.id == sa.bindparam("b_id")).values(
                    name=sa.bindparam("b_name")
                ),
                [{"b_id": 1, "b_name": "one"}, {"b_id": 2, "b_name": "two"}],
            ).rowcount

        assert await runner.run(rename) == 2

        def clash(conn: sa.Connection) -> None:
            conn.execute(sa.insert(_TABLE).values(name="fresh"))
            conn.execute(sa.insert(_TABLE).values(name="one"))  # unique name taken

        with pytest.raises(IntegrityError) as caught:
            await runner.run(clash)
        assert isinstance(caught.value.orig, sqlite3.IntegrityError)

        def names(conn: sa.Connection) -> list[str]:
            return sorted(conn.execute(sa.select(_TABLE.c.name)).scalars())

        # Nothing of the failed transaction was kept, and the connection still works.
        assert await runner.run(names, readonly=True) == ["n2", "n3", "n4", "one", "two"]
    finally:
        await runner.aclose()


async def test_an_aiosqlite_without_the_thread_hook_gets_the_stock_adapter(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert aiosqlite_driver.dbapi() is not None
    with monkeypatch.context() as patched:
        patched.delattr(aiosqlite.Connection, "_execute")
        assert aiosqlite_driver.dbapi() is None
    # The stock adapter, which that fallback uses, gives the same results in more trips.
    monkeypatch.setattr(aiosqlite_driver, "dbapi", lambda: None)
    runner = await _runner(tmp_path)
    try:

        def read(conn: sa.Connection) -> list[str]:
            return list(conn.execute(sa.select(_TABLE.c.name).order_by(_TABLE.c.id)).scalars())

        with _trips() as trips:
            assert await runner.run(read) == ["n0", "n1", "n2", "n3", "n4"]
        assert "_execute_and_fetch" not in trips
        assert len(trips) > 3
    finally:
        await runner.aclose()


async def test_connection_options_of_the_embedder_keep_one_trip_statements_working(
    tmp_path: Path,
) -> None:
    """Cursors open where the caller runs, so the connection must allow other threads,
    whatever ``connect_args`` an embedder passes."""
    runner = TransactionRunner(
        f"sqlite:///{tmp_path / 'db.sqlite'}", mode="async",
        engine_options={"connect_args": {"timeout": 5}},
    )
    runner.open()
    try:

        def count(conn: sa.Connection) -> int:
            return int(conn.execute(sa.text("SELECT count(*) FROM sqlite_master")).scalar_one())

        with _trips() as trips:
            assert await runner.run(count) == 0
        assert "_execute_and_fetch" in trips
    finally:
        await runner.aclose()
