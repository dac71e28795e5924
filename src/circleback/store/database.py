"""Where the store's transactions run, the same way under asyncio and trio.

Every store verb is a plain function of a SQLAlchemy ``Connection`` that runs
inside one transaction (:func:`transaction`). A runner runs it in one trip:
:class:`ThreadRunner` on a synchronous ``Engine`` (sqlite3, psycopg) in a worker
thread, which works on both anyio backends; :class:`AsyncEngineRunner` on an
embedder's ``AsyncEngine`` through ``AsyncConnection.run_sync`` (asyncio only).
Both use public SQLAlchemy API only.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, TypeVar

import anyio
import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import StaticPool

from ..core.errors import ConfigurationError

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = [
    "AsyncEngineRunner",
    "Runner",
    "ThreadRunner",
    "create_sync_engine",
    "is_memory_sqlite",
    "make_runner",
    "sync_url",
    "target_url",
    "transaction",
]

T = TypeVar("T")
P = ParamSpec("P")
S = TypeVar("S", bound="HasRunner")

_SYNC_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}


def sync_url(url: str | sa.URL) -> sa.URL:
    """``url`` with the synchronous driver (``sqlite://`` → ``sqlite+pysqlite://``)."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend not in _SYNC_DRIVERS:
        raise ConfigurationError(
            f"database URL {parsed.render_as_string(hide_password=True)!r}: circleback "
            "supports sqlite and postgresql"
        )
    return parsed.set(drivername=f"{backend}+{_SYNC_DRIVERS[backend]}")


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
    parsed = sync_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if is_memory_sqlite(parsed):
        options.setdefault("poolclass", StaticPool)
    if sqlite:
        options.setdefault("connect_args", {"check_same_thread": False})
        # Every checkout ends in COMMIT or ROLLBACK (``engine.begin()``): the pool's
        # own ROLLBACK on return would be one more statement per transaction.
        options.setdefault("pool_reset_on_return", None)
    else:
        options.setdefault("pool_pre_ping", True)
    engine = sa.create_engine(parsed, **options)
    if sqlite:
        configure_sqlite(engine, cache_kib=sqlite_cache_kib)
    return engine


#: Engines already given the SQLite settings (an embedder's engine may be handed over twice).
_CONFIGURED: weakref.WeakSet[Engine] = weakref.WeakSet()


def configure_sqlite(engine: Engine, *, cache_kib: int | None = None) -> None:
    """WAL, a busy timeout, and ``BEGIN IMMEDIATE`` so a transaction never upgrades its lock."""
    if engine in _CONFIGURED:
        return
    _CONFIGURED.add(engine)
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


class Runner(Protocol):
    """Runs functions of a ``Connection``, each in one transaction."""

    @property
    def url(self) -> sa.URL:
        """The database URL (as given, with its password)."""

    async def run(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        """Run ``fn(connection, *args)`` in one transaction and return its result."""

    async def aclose(self) -> None:
        """Let go of the connections this runner opened."""


class HasRunner(Protocol):
    """What :func:`transaction` needs of the object whose verbs it wraps."""

    @property
    def runner(self) -> Runner: ...


def transaction(
    *, readonly: bool = False
) -> Callable[
    [Callable[Concatenate[S, Connection, P], T]],
    Callable[Concatenate[S, P], Coroutine[Any, Any, T]],
]:
    """Make a function of a ``Connection`` a verb that runs it in a transaction of its own.

    The verb is written once, as that function; ``__wrapped__`` holds it for
    callers that already have a connection (tests reading query plans).
    """

    def wrap(
        body: Callable[Concatenate[S, Connection, P], T],
    ) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
        async def verb(self: S, /, *args: P.args, **kwargs: P.kwargs) -> T:
            def in_transaction(conn: Connection) -> T:
                return body(self, conn, *args, **kwargs)

            return await self.runner.run(in_transaction, readonly=readonly)

        functools.update_wrapper(verb, body)
        return verb

    return wrap


class ThreadRunner:
    """Runs each transaction on a synchronous ``Engine`` in a worker thread."""

    def __init__(self, engine: Engine, *, owned: bool) -> None:
        self._engine = engine
        self._owned = owned
        self._readonly = engine.execution_options(circleback_readonly=True)
        # SQLite takes one writer at a time: queue in-process instead of spinning on its lock.
        pool_size = int(getattr(engine.pool, "size", lambda: 5)())
        sqlite = engine.dialect.name == "sqlite"
        self._limiter = anyio.CapacityLimiter(1 if sqlite else max(1, pool_size))

    @property
    def url(self) -> sa.URL:
        return self._engine.url

    @property
    def sync_engine(self) -> Engine:
        """The SQLAlchemy engine; call it in a worker thread."""
        return self._engine

    async def run(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        async with self._limiter:
            # A transaction runs to its end: cancelling it half-way would leave the
            # connection in an unknown state.
            with anyio.CancelScope(shield=True):
                for attempt in range(1, _RETRIES + 1):
                    try:
                        return await anyio.to_thread.run_sync(
                            functools.partial(self._run_here, fn, args, readonly)
                        )
                    except DBAPIError as exc:
                        if attempt == _RETRIES or not _is_transient(exc):
                            raise
                        await anyio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _run_here(self, fn: Callable[..., T], args: tuple[Any, ...], readonly: bool) -> T:
        with (self._readonly if readonly else self._engine).begin() as connection:
            return fn(connection, *args)

    async def aclose(self) -> None:
        if self._owned:
            await anyio.to_thread.run_sync(self._engine.dispose)


class AsyncEngineRunner:
    """Runs each transaction on an embedder's ``AsyncEngine`` with ``run_sync`` (asyncio)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._readonly = engine.execution_options(circleback_readonly=True)

    @property
    def url(self) -> sa.URL:
        return self._engine.url

    async def run(self, fn: Callable[..., T], *args: Any, readonly: bool = False) -> T:
        with anyio.CancelScope(shield=True):
            for attempt in range(1, _RETRIES + 1):
                try:
                    async with (self._readonly if readonly else self._engine).begin() as connection:
                        return await connection.run_sync(fn, *args)
                except DBAPIError as exc:
                    if attempt == _RETRIES or not _is_transient(exc):
                        raise
                    await anyio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """The engine is the embedder's: it stays open."""


def target_url(target: str | sa.URL | Engine | AsyncEngine) -> sa.URL:
    """The database URL of what the store was given; refuses anything it cannot use."""
    if isinstance(target, str | sa.URL):
        url = sa.make_url(target)
    elif isinstance(getattr(target, "url", None), sa.URL) and hasattr(target, "dialect"):
        url = target.url
    else:
        raise ConfigurationError(
            "the store takes a database URL, an Engine or an AsyncEngine, "
            f"not {type(target).__name__}"
        )
    sync_url(url)  # an unsupported database is refused here, with its URL named
    return url


def make_runner(target: str | sa.URL | Engine | AsyncEngine) -> Runner:
    """A runner for a database URL (engine created here), an ``Engine`` or an ``AsyncEngine``.

    A given SQLite engine gets the store's connection settings (WAL, a busy
    timeout, ``BEGIN IMMEDIATE``) for the connections it opens from now on.
    """
    if isinstance(target, Engine):
        sync_url(target.url)  # refuses an unsupported database with a clear message
        if target.dialect.name == "sqlite":
            configure_sqlite(target)
        return ThreadRunner(target, owned=False)
    if isinstance(target, str | sa.URL):
        return ThreadRunner(create_sync_engine(target), owned=True)
    from sqlalchemy.ext.asyncio import AsyncEngine

    if isinstance(target, AsyncEngine):
        sync_url(target.url)
        if target.dialect.name == "sqlite":
            configure_sqlite(target.sync_engine)
        return AsyncEngineRunner(target)
    raise ConfigurationError(
        f"the store takes a database URL, an Engine or an AsyncEngine, not {type(target).__name__}"
    )
