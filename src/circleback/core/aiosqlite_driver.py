"""aiosqlite with one trip to its thread per statement.

aiosqlite runs each call on the connection's own thread and wakes the event
loop with the result. SQLAlchemy's adapter makes four such trips for a query
(open a cursor, execute, fetch the rows, close the cursor) and three for any
other statement; each costs about 70 µs of CPU between the two threads,
several times what a small indexed statement costs SQLite itself. A short
transaction (adding one job, a claim, a look at the next due time) paid for
a dozen of them: adding a job took 1.9 ms, now 1.2.

This adapter makes one trip per statement: the statement runs and its rows
are fetched in one call on aiosqlite's thread, and cursors are opened and
closed where the caller runs — a sqlite3 cursor is a plain object until it
executes, and closing a finished one resets nothing that is in use. Commit and
rollback are still one trip each. Everything else is SQLAlchemy's own
aiosqlite dialect: :func:`dbapi` is handed to the engine as its ``module``.

It calls aiosqlite's ``Connection._execute`` (the method its own cursors use
to reach the thread), as SQLAlchemy's dialect does with aiosqlite's queue.
Where an aiosqlite release no longer has it, :func:`dbapi` returns None and
the stock adapter is used.
"""

from __future__ import annotations

import collections
import sqlite3
from typing import Any, cast

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)

__all__ = ["dbapi"]


def _execute_and_fetch(
    cursor: sqlite3.Cursor, operation: str, parameters: Any
) -> list[Any] | None:
    """Run on aiosqlite's thread: execute, and fetch every row if the statement returns any."""
    cursor.execute(operation, () if parameters is None else parameters)
    return cursor.fetchall() if cursor.description else None


class _OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A buffered cursor whose execute (with its fetch) is one trip to aiosqlite's thread."""

    __slots__ = ()

    def _make_new_cursor(self, connection: Any) -> Any:
        return aiosqlite.Cursor(connection, connection._conn.cursor())

    def _aenter_cursor(self, cursor: Any) -> Any:
        return cursor

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        async with self._adapt_connection._execute_mutex:
            rows = await self._connection._execute(
                _execute_and_fetch, self._sqlite_cursor(), operation, parameters
            )
            if rows is not None:
                self._rows = collections.deque(rows)
            return self._cursor

    async def _async_soft_close(self) -> None:
        if self._soft_closed_memoized:
            return
        self._soft_closed_memoized = self._soft_closed_memoized.union(
            {"description": self._cursor.description}
        )
        self._sqlite_cursor().close()

    def close(self) -> None:
        self._rows.clear()
        if not self._soft_closed_memoized:
            self._sqlite_cursor().close()

    def _sqlite_cursor(self) -> sqlite3.Cursor:
        return cast(aiosqlite.Cursor, self._cursor)._cursor


class _OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()

    _cursor_cls = _OneTripCursor


class _OneTripDbapi(AsyncAdapt_aiosqlite_dbapi):
    """SQLAlchemy's aiosqlite module adapter, handing out :class:`_OneTripConnection`."""

    def connect(self, *arg: Any, **kw: Any) -> AsyncAdapt_aiosqlite_connection:
        stock = super().connect(*arg, **kw)
        return _OneTripConnection(self, stock._connection)


def _supported() -> bool:
    return callable(getattr(aiosqlite.Connection, "_execute", None)) and isinstance(
        getattr(aiosqlite.Connection, "_conn", None), property
    )


def dbapi() -> AsyncAdapt_aiosqlite_dbapi | None:
    """The DBAPI module for ``create_engine(..., module=...)``; None: use the stock one."""
    if not _supported():
        return None
    return _OneTripDbapi(aiosqlite, sqlite3)

