"""The store takes a database URL, an embedder's ``Engine`` or an ``AsyncEngine``."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

import circleback
from circleback import Caller, JobStatus, Settings
from circleback.errors import ConfigurationError
from circleback.store.database import create_sync_engine
from circleback.store.store import Store

from ..pacing import QUICK


def _delay_spec(seconds: float = 0.05) -> dict[str, Any]:
    return {"job_type": "delay", "check_config": {"delay_seconds": seconds},
            "on_success_message": "done"}


async def _run_one_job(engine: circleback.Engine, caller: Caller) -> None:
    job = await engine.scheduler.add_job(caller, _delay_spec())
    with anyio.fail_after(10):
        await engine.wait_until_idle(poll_seconds=0.02)
    assert (await engine.scheduler.get_job(caller, job.id)).status is JobStatus.COMPLETED


async def test_an_embedders_engine_runs_jobs_and_stays_open(
    make_settings: Callable[..., Settings],
    store_url: str,
    caller: Caller,
    capsys: pytest.CaptureFixture[str],
) -> None:
    given = create_sync_engine(store_url)
    try:
        async with circleback.Engine(
            make_settings(), database=given, load_entry_points=False, pacing=QUICK
        ) as engine:
            await _run_one_job(engine, caller)
        # Left open: the embedder's engine still answers after circleback stopped.
        with given.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM circleback_jobs")).scalar_one() == 1
    finally:
        given.dispose()
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert json.loads(line)["message"] == "done"


_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+psycopg"}


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_async_engine_runs_jobs_under_asyncio(
    make_settings: Callable[..., Settings],
    store_url: str,
    caller: Caller,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    url = sa.make_url(store_url)
    given = create_async_engine(url.set(drivername=_ASYNC_DRIVERS[url.get_backend_name()]))
    try:
        async with circleback.Engine(
            make_settings(), database=given, load_entry_points=False, pacing=QUICK
        ) as engine:
            await _run_one_job(engine, caller)
        async with given.connect() as conn:
            count = await conn.execute(sa.text("SELECT count(*) FROM circleback_jobs"))
            assert count.scalar_one() == 1
    finally:
        await given.dispose()
    [line] = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert json.loads(line)["message"] == "done"


async def test_a_store_made_from_a_url_can_be_opened_again_after_closing(sqlite_url: str) -> None:
    store = Store(sqlite_url)
    await store.open()
    await store.aclose()
    await store.open()
    try:
        assert await store.count_unfinished() == (0, 0)
    finally:
        await store.aclose()


@pytest.mark.parametrize("kind", ["url", "engine"])
def test_an_unsupported_database_is_refused_with_its_url_and_no_password(kind: str) -> None:
    url = "mysql://u:secret@db/x"
    target: Any = url
    if kind == "engine":
        target = sa.create_engine(url, module=SimpleNamespace(paramstyle="format"))
    with pytest.raises(ConfigurationError) as caught:
        Store(target)
    assert "mysql://u:***@db/x" in caught.value.message
    assert "secret" not in caught.value.message
    assert "supports sqlite and postgresql" in caught.value.message


def test_something_else_is_refused_naming_what_the_store_takes() -> None:
    with pytest.raises(ConfigurationError, match="a database URL, an Engine or an AsyncEngine"):
        Store(42)  # type: ignore[arg-type]
