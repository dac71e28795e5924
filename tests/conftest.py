"""Shared fixtures: both anyio backends, real Redis and PostgreSQL, engines on temporary stores."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

import circleback
from circleback import Caller, EngineTuning, Limits, Settings

from . import services
from .pacing import QUICK

#: Limits for tests: intervals down to 10 ms so polls can be watched in real time.
TEST_LIMITS = Limits(min_interval_seconds=0.01)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs once under asyncio and once under trio."""
    return str(request.param)


@pytest.fixture
def caller() -> Caller:
    """A caller with every context field set, unique per test."""
    tag = uuid.uuid4().hex[:8]
    return Caller(
        user_id=f"user-{tag}",
        platform=f"test-{tag}",
        platform_channel_id="C1",
        platform_thread_id="T1",
        conversation_id=f"conv-{tag}",
    )


@pytest.fixture
def sqlite_url(tmp_path: Any) -> str:
    """A SQLite file of the test's own: for tests that are about SQLite itself."""
    return f"sqlite:///{tmp_path / 'circleback.db'}"


@pytest.fixture
def make_settings(store_url: str) -> Callable[..., Settings]:
    """Settings on the test's store, with test limits and short timeouts and leases.

    Engines on them take ``pacing=QUICK`` (tests/pacing.py) to look at the store often.
    """

    def make(**overrides: Any) -> Settings:
        tuning = overrides.pop("tuning", None) or EngineTuning(
            check_timeout_seconds=5.0,
            lease_seconds=10.0,
            shutdown_grace_seconds=2.0,
        )
        values: dict[str, Any] = {"database_url": store_url, "limits": TEST_LIMITS,
                                  "tuning": tuning}
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[circleback.Engine]:
    """A running engine (worker loops on) on the test's store."""
    async with circleback.Engine(settings, load_entry_points=False, pacing=QUICK) as running:
        yield running


# -- real services --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis: the shared one on 127.0.0.1:6379, or one the suite starts."""
    configured = os.environ.get("CIRCLEBACK_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    if services.port_answers(6379):
        yield "redis://127.0.0.1:6379/0"
        return
    try:
        with services.redis_server() as server:
            yield server.url
    except (FileNotFoundError, TimeoutError) as exc:
        services.unavailable(f"no Redis answers on 127.0.0.1:6379 and none could be started: {exc}")


@pytest.fixture(scope="session")
def postgres_admin_url() -> Iterator[str]:
    """URL of a real PostgreSQL database this suite may create schemas in."""
    configured = os.environ.get("CIRCLEBACK_TEST_POSTGRES_URL")
    if configured:
        yield configured
        return
    if services.port_answers(5432):
        yield "postgresql://postgres@127.0.0.1:5432/test"
        return
    try:
        with services.postgres_cluster() as url:
            yield url
    except (FileNotFoundError, OSError) as exc:
        services.unavailable(
            f"no PostgreSQL answers on 127.0.0.1:5432 and none could be started: {exc}"
        )


@pytest.fixture
def postgres_url(postgres_admin_url: str) -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema of this test's own (dropped after)."""
    schema, url = services.postgres_schema(postgres_admin_url)
    try:
        yield url
    finally:
        services.drop_postgres_schema(schema, postgres_admin_url)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The store under test: every test that takes it (or settings, or an engine) runs twice.

    Once on a SQLite file of its own (the same as :func:`sqlite_url`), once on a
    fresh PostgreSQL schema of its own (:func:`postgres_url`).
    """
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))
