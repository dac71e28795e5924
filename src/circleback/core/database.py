"""Opening a database the same way under asyncio and trio.

Every store verb is a plain function of a SQLAlchemy ``Connection`` that runs
inside one transaction. A :class:`TransactionRunner` decides where it runs:

- ``async`` driver (asyncio only): an engine on an asyncio driver (aiosqlite,
  asyncpg), the whole transaction running in one greenlet the way
  SQLAlchemy's asyncio extension runs its calls (aiosqlite with one trip to
  its thread per statement: :mod:`.aiosqlite_driver`). The extension itself
  is not imported: it brings in the ORM, about 7 MiB that nothing here uses;
- ``thread`` driver (asyncio and trio): a synchronous ``Engine`` (sqlite3,
  psycopg), the function running in a worker thread.

``auto`` picks ``async`` under asyncio and ``thread`` under trio.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import anyio
import anyio.to_thread
import sniffio
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool
from sqlalchemy.util import greenlet_spawn

from .errors import ConfigurationError

__all__ = [
    "DriverMode",
    "TransactionRunner",
    "create_sync_engine",
    "is_memory_sqlite",
    "make_url_for",
    "server_settings_from_options",
]

T = TypeVar("T")
DriverMode = Literal["auto", "async", "thread"]

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
_SYNC_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}


def make_url_for(url: str | sa.URL, mode: Literal["async", "thread"]) -> sa.URL:
    """``url`` with the driver that ``mode`` needs (``sqlite://`` → ``sqlite+aiosqlite://``)."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    drivers = _ASYNC_DRIVERS if mode == "async" else _SYNC_DRIVERS
    if backend not in drivers:
        raise ConfigurationError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: circleback "
            "supports sqlite and postgresql"
        )
    return parsed.set(drivername=f"{backend}+{drivers[backend]}")


def server_settings_from_options(url: sa.URL) -> tuple[sa.URL, dict[str, str]]:
    """Move libpq's ``options=-c name=value`` and ``application_name`` into a settings dict.

    psycopg understands both in the URL; asyncpg takes ``server_settings`` instead.
    """
    settings: dict[str, str] = {}
    name = url.query.get("application_name")
    if name:
        settings["application_name"] = name if isinstance(name, str) else name[0]
        url = url.difference_update_query(["application_name"])
    raw = url.query.get("options")
    if not raw:
        return url, settings
    text = raw if isinstance(raw, str) else " ".join(raw)
    tokens = text.replace("-c ", "-c").split()
    for token in tokens:
        if not token.startswith("-c") or "=" not in token:
            raise ConfigurationError(f"cannot pass the libpq option {token!r} to asyncpg")
        name, _, value = token[2:].partition("=")
        settings[name] = value
    return url.difference_update_query(["options"]), settings


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
    """Runs functions of a ``Connection`` in a transaction, off the event loop's toes."""

    def __init__(
        self,
        url: str | sa.URL,
        *,
        mode: DriverMode = "auto",
        engine_options: dict[str, Any] | None = None,
    ) -> None:
        self._url = sa.make_url(url)
        self._requested_mode = mode
        self._engine_options = dict(engine_options or {})
        self._mode: Literal["async", "thread"] | None = None
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
    def mode(self) -> Literal["async", "thread"]:
        """The driver mode in use (known once opened)."""
        if self._mode is None:
            raise RuntimeError("the runner is not open")
        return self._mode

    @property
    def sync_engine(self) -> Engine:
        """The SQLAlchemy engine (on an asyncio driver in async mode: call it in a greenlet)."""
        if self._engine is None:
            raise RuntimeError("the runner is not open")
        return self._engine

    def open(self) -> None:
        """Create the SQLAlchemy engine for the running async backend."""
        if self._mode is not None:
            return
        mode = self._requested_mode
        backend = sniffio.current_async_library()
        if mode == "auto":
            mode = "async" if backend == "asyncio" else "thread"
        if mode == "async" and backend != "asyncio":
            raise ConfigurationError(
                f"the async database drivers need asyncio; under {backend} use driver 'thread'"
            )
        options = dict(self._engine_options)
        memory = is_memory_sqlite(self._url)
        if memory:
            options.setdefault("poolclass", StaticPool)
        if self.dialect_name == "sqlite":
            options.setdefault("connect_args", {"check_same_thread": False})
            # Every checkout ends in COMMIT or ROLLBACK (``engine.begin()``): the pool's
            # own ROLLBACK on return would be one more round trip to the driver's thread.
            options.setdefault("pool_reset_on_return", None)
        url = make_url_for(self._url, mode)
        if self.dialect_name == "postgresql":
            options.setdefault("pool_pre_ping", True)
            if mode == "async":
                url, server_settings = server_settings_from_options(url)
                if server_settings:
                    options.setdefault("connect_args", {"server_settings": server_settings})
        if mode == "async":
            if self.dialect_name == "sqlite":
                from . import aiosqlite_driver  # imports aiosqlite: only for a SQLite store

                if (module := aiosqlite_driver.dbapi()) is not None:
                    options.setdefault("module", module)
            # What ``create_async_engine`` does before wrapping the engine it makes.
            options["_is_async"] = True
        sync_engine = self._engine = sa.create_engine(url, **options)
        if self.dialect_name == "sqlite":
            _configure_sqlite(sync_engine)
        # SQLite takes one writer at a time: queue in-process instead of spinning on its lock.
        pool_size = int(getattr(sync_engine.pool, "size", lambda: 5)())
        concurrency = 1 if self.dialect_name == "sqlite" else max(1, pool_size)
        self._limiter = anyio.CapacityLimiter(concurrency)
        self._mode = mode

    async def run(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        """Run ``fn(connection, *args)`` in one transaction and return its result."""
        if self._limiter is None:
            raise RuntimeError("the runner is not open")
        async with self._limiter:
            # A transaction runs to its end: cancelling it half-way would leave the
            # connection in an unknown state (and aiosqlite hanging on close).
            with anyio.CancelScope(shield=True):
                for attempt in range(1, _RETRIES + 1):
                    try:
                        result = await self._run(fn, args, readonly)
                        break
                    except DBAPIError as exc:
                        if attempt == _RETRIES or not _is_transient(exc):
                            raise
                        await anyio.sleep(0.01 * attempt)
        return result

    async def _run(self, fn: Callable[..., T], args: tuple[Any, ...], readonly: bool) -> T:
        if self._mode == "async":
            # The driver's awaits inside ``fn`` reach the event loop through the greenlet.
            return await greenlet_spawn(self._run_here, fn, args, readonly)
        return await anyio.to_thread.run_sync(
            functools.partial(self._run_here, fn, args, readonly)
        )

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
            if self._mode == "async":
                await greenlet_spawn(engine.dispose)
            else:
                await anyio.to_thread.run_sync(engine.dispose)
        self._mode = None
