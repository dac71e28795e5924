"""Opening a database the same way under asyncio and trio.

Every store verb is a plain function of a SQLAlchemy ``Connection`` that runs
inside one transaction. A :class:`TransactionRunner` runs it on a synchronous
``Engine`` (sqlite3, psycopg) in a worker thread, the whole transaction in one
trip: the path that works on both anyio backends through public APIs only, and
on SQLite the faster one (``bench/RESULTS.md``, "W1 by database driver").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from .errors import ConfigurationError

__all__ = [
    "DriverMode",
    "TransactionRunner",
    "create_sync_engine",
    "is_memory_sqlite",
    "make_url_for",
]

T = TypeVar("T")
DriverMode = Literal["auto", "thread"]

_SYNC_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}


def make_url_for(url: str | sa.URL, mode: Literal["thread"] = "thread") -> sa.URL:
    """``url`` with the synchronous driver (``sqlite://`` → ``sqlite+pysqlite://``)."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    drivers = _SYNC_DRIVERS
    if backend not in drivers:
        raise ConfigurationError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: circleback "
            "supports sqlite and postgresql"
        )
    return parsed.set(drivername=f"{backend}+{drivers[backend]}")


def is_memory_sqlite(url: sa.URL) -> bool:
    """Whether ``url`` names an in-memory SQLite database (private to one connection pool)."""
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


def create_sync_engine(
    url: str | sa.URL, *, sqlite_cache_kib: int | None = None, **options: Any
) -> Engine:
    """A synchronous engine for ``url`` configured like the store's (SQLite pragmas and all).

    ``sqlite_cache_kib`` bounds each SQLite connection's page cache (SQLite's
    default is 2,000 KiB); other databases ignore it.
    """
    parsed = make_url_for(url, "thread")
    if parsed.get_backend_name() == "sqlite":
        options.setdefault("connect_args", {"check_same_thread": False})
    else:
        options.setdefault("pool_pre_ping", True)
    engine = sa.create_engine(parsed, **options)
    if parsed.get_backend_name() == "sqlite":
        _configure_sqlite(engine, cache_kib=sqlite_cache_kib)
    return engine


def _configure_sqlite(engine: Engine, *, cache_kib: int | None = None) -> None:
    """WAL, a busy timeout, and ``BEGIN IMMEDIATE`` so a transaction never upgrades its lock."""
    pragmas = ["PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=30000"]
    if cache_kib is not None:
        pragmas.append(f"PRAGMA cache_size=-{int(cache_kib)}")  # negative: KiB, not pages

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy emits BEGIN itself, below
        cursor = dbapi_connection.cursor()
        for pragma in pragmas:
            cursor.execute(pragma)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        if connection.get_execution_options().get("circleback_readonly"):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


#: Tries of one transaction that PostgreSQL aborted to break a deadlock or a serialisation conflict.
_RETRIES = 3
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})


def _is_transient(exc: DBAPIError) -> bool:
    """Whether the database aborted the transaction only to resolve a conflict (safe to retry)."""
    original = exc.orig
    code = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return code in _TRANSIENT_SQLSTATES


class TransactionRunner:
    """Runs functions of a ``Connection`` in a transaction, in a worker thread."""

    def __init__(
        self,
        url: str | sa.URL,
        *,
        mode: DriverMode = "auto",
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        if mode not in ("auto", "thread"):
            raise ConfigurationError(f"unknown database driver mode {mode!r}: use 'thread'")
        self._url = sa.make_url(url)
        self._engine_options = dict(engine_options or {})
        self._engine: Engine | None = None
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def dialect_name(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self._url.get_backend_name()

    @property
    def url(self) -> sa.URL:
        """The database URL as configured (without a driver chosen)."""
        return self._url

    @property
    def mode(self) -> Literal["thread"]:
        """The driver mode in use: a synchronous engine in worker threads."""
        if self._engine is None:
            raise RuntimeError("the runner is not open")
        return "thread"

    @property
    def sync_engine(self) -> Engine:
        """The SQLAlchemy engine; call it in a worker thread."""
        if self._engine is None:
            raise RuntimeError("the runner is not open")
        return self._engine

    def open(self) -> None:
        """Create the SQLAlchemy engine."""
        if self._engine is not None:
            return
        options = dict(self._engine_options)
        if is_memory_sqlite(self._url):
            options.setdefault("poolclass", StaticPool)
        if self.dialect_name == "sqlite":
            options.setdefault("connect_args", {"check_same_thread": False})
            # Every checkout ends in COMMIT or ROLLBACK (``engine.begin()``): the pool's
            # own ROLLBACK on return would be one more statement per transaction.
            options.setdefault("pool_reset_on_return", None)
        else:
            options.setdefault("pool_pre_ping", True)
        engine = self._engine = sa.create_engine(make_url_for(self._url), **options)
        if self.dialect_name == "sqlite":
            _configure_sqlite(engine)
        # SQLite takes one writer at a time: queue in-process instead of spinning on its lock.
        pool_size = int(getattr(engine.pool, "size", lambda: 5)())
        concurrency = 1 if self.dialect_name == "sqlite" else max(1, pool_size)
        self._limiter = anyio.CapacityLimiter(concurrency)

    async def run(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        """Run ``fn(connection, *args)`` in one transaction and return its result."""
        if self._limiter is None:
            raise RuntimeError("the runner is not open")
        async with self._limiter:
            # A transaction runs to its end: cancelling it half-way would leave the
            # connection in an unknown state.
            with anyio.CancelScope(shield=True):
                for attempt in range(1, _RETRIES + 1):
                    try:
                        result = await anyio.to_thread.run_sync(
                            functools.partial(self._run_here, fn, args, readonly)
                        )
                        break
                    except DBAPIError as exc:
                        if attempt == _RETRIES or not _is_transient(exc):
                            raise
                        await anyio.sleep(0.01 * attempt)
        return result

    def _run_here(self, fn: Callable[..., T], args: tuple[Any, ...], readonly: bool) -> T:
        engine = self.sync_engine
        if readonly:
            engine = engine.execution_options(circleback_readonly=True)
        with engine.begin() as connection:
            return fn(connection, *args)

    async def aclose(self) -> None:
        """Dispose of the connection pool."""
        engine, self._engine = self._engine, None
        if engine is not None:
            await anyio.to_thread.run_sync(engine.dispose)
