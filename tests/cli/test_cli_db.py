"""What operators see: ``circleback db upgrade``, ``circleback workers``, and leases taken back.

The commands run as the real ``circleback`` console script in a subprocess,
against a SQLite file and against a PostgreSQL schema of the test's own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest
import sqlalchemy as sa

import circleback
from circleback import Caller, CheckOutcome, EngineTuning, JobStatus, Settings
from circleback.store import migrate
from circleback.store.database import create_sync_engine
from circleback.store.schema import jobs, metadata, outbox
from circleback.store.store import Store
from circleback.store.workers import record_heartbeat
from circleback.testing import TestingPlugin

from ..pacing import QUICK, Pacing

CIRCLEBACK = Path(sys.executable).with_name("circleback")
HEAD = migrate.head_revision()


@pytest.fixture
def db(store_url: str) -> Iterator[sa.Engine]:
    """A synchronous engine on the test's database, for setting up and reading back."""
    engine = create_sync_engine(store_url)
    yield engine
    engine.dispose()


def _env(database_url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("CIRCLEBACK_")}
    env["CIRCLEBACK_DATABASE_URL"] = database_url
    return env


def circleback_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``circleback`` console script with the database in the environment."""
    assert CIRCLEBACK.exists(), f"the console script is missing: {CIRCLEBACK}"
    return subprocess.run(
        [str(CIRCLEBACK), *args], env=_env(database_url), capture_output=True, text=True,
        timeout=60, check=False,
    )


async def circleback_cli_async(database_url: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    """The same from async code, without blocking the event loop that runs an engine."""
    assert CIRCLEBACK.exists(), f"the console script is missing: {CIRCLEBACK}"
    with anyio.fail_after(60):
        return await anyio.run_process(
            [str(CIRCLEBACK), *args], env=_env(database_url), check=False
        )


def _insert_due_job(db: sa.Engine, caller: Caller) -> uuid.UUID:
    """A due job row, as the first release wrote them."""
    job_id = uuid.uuid4()
    now = datetime.now(UTC) - timedelta(seconds=1)
    with db.begin() as conn:
        conn.execute(sa.insert(jobs).values(
            id=job_id, user_id=caller.user_id, platform=caller.platform,
            platform_channel_id=None, platform_thread_id=None, conversation_id=None,
            job_type="delay", check_config={"delay_seconds": 0}, on_complete="notify",
            workflow_id=None, interval_seconds=30.0, max_attempts=120,
            on_success_message="done", on_failure_message=None, status="active",
            attempts=0, next_run_at=now, created_at=now, updated_at=now,
        ))
    return job_id


# -- circleback db upgrade ---------------------------------------------------------------------


def test_db_upgrade_creates_the_schema_in_an_empty_database(store_url: str, db: sa.Engine) -> None:
    done = circleback_cli(store_url, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"schema: empty -> {HEAD}"
    with db.connect() as conn:
        assert migrate.current_revision(conn) == HEAD
        assert {"circleback_jobs", "circleback_outbox", "circleback_workers"} <= set(
            sa.inspect(conn).get_table_names()
        )


def test_db_upgrade_brings_a_first_release_database_up_and_keeps_its_jobs(
    store_url: str, db: sa.Engine, caller: Caller
) -> None:
    # What installs from before schema versions have: the two tables and no version row.
    with db.begin() as conn:
        metadata.create_all(conn, tables=[jobs, outbox])
    job_id = _insert_due_job(db, caller)

    refused = circleback_cli(store_url, "workers")
    assert refused.returncode == 5
    assert "circleback db upgrade" in refused.stderr
    assert "Traceback" not in refused.stderr

    done = circleback_cli(store_url, "db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"schema: 0001 -> {HEAD}"
    with db.connect() as conn:
        assert migrate.current_revision(conn) == HEAD
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).one()
    assert (row.status, row.job_type, row.check_config) == ("active", "delay",
                                                             {"delay_seconds": 0})


def test_db_upgrade_refuses_a_database_of_a_newer_circleback(store_url: str) -> None:
    engine = create_sync_engine(store_url)
    with engine.begin() as conn:
        migrate.upgrade(conn)
        conn.execute(sa.text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '9001'"))
    engine.dispose()
    done = circleback_cli(store_url, "db", "upgrade")
    assert done.returncode == 5
    assert "newer circleback" in done.stderr
    assert "Traceback" not in done.stderr


def test_database_url_flag_wins_over_the_environment(tmp_path: Path) -> None:
    chosen = f"sqlite:///{tmp_path / 'chosen.db'}"
    done = circleback_cli(f"sqlite:///{tmp_path / 'ignored.db'}", "--database-url", chosen,
                          "db", "upgrade")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "chosen.db").exists()
    assert not (tmp_path / "ignored.db").exists()


# -- circleback workers -----------------------------------------------------------------------


def _table(stdout: str) -> tuple[list[str], list[list[str]]]:
    """The header and rows of a table the CLI printed (columns are separated by 2+ spaces)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    split = [re.split(r" {2,}", line.strip()) for line in lines]
    return split[0], split[1:]


def test_workers_table_shows_heartbeat_age_holdings_and_state(store_url: str) -> None:
    engine = create_sync_engine(store_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        migrate.upgrade(conn)
        record_heartbeat(conn, "w-alive", "host-a", 101, now, 3, 1)
        record_heartbeat(conn, "w-silent", "host-b", 102, now - timedelta(hours=2), 2, 0)
        record_heartbeat(conn, "w-stopped", "host-c", 103, now - timedelta(minutes=5), 0, 0,
                             stopped=True)
    engine.dispose()

    done = circleback_cli(store_url, "workers")
    assert done.returncode == 0, done.stderr
    header, rows = _table(done.stdout)
    assert header == ["WORKER", "HOST", "PID", "STARTED (UTC)", "LAST HEARTBEAT (UTC)", "AGE",
                      "JOBS", "MESSAGES", "STATE"]
    by_worker = {row[0]: row for row in rows}
    assert [row[0] for row in rows] == ["w-alive", "w-stopped", "w-silent"]  # latest beat first
    alive, stopped, silent = by_worker["w-alive"], by_worker["w-stopped"], by_worker["w-silent"]
    assert alive[1:3] == ["host-a", "101"] and alive[6:] == ["3", "1", "alive"]
    assert silent[5].startswith("2h") and silent[6:8] == ["2", "0"]
    assert " ".join(silent[8:]).startswith("silent, last seen 2h")
    assert stopped[5].startswith("5m") and stopped[8] == "stopped"
    assert alive[4] == now.strftime("%Y-%m-%d %H:%M:%S")


async def test_workers_shows_engines_with_heartbeat_jobs_held_and_stopped_state(
    store_url: str, make_settings: Callable[..., Settings], caller: Caller
) -> None:
    settings = make_settings(
        database_url=store_url,
        tuning=EngineTuning(check_timeout_seconds=5.0, lease_seconds=10.0,
                            shutdown_grace_seconds=0.5),
    )
    pacing = Pacing(max_sleep_seconds=0.05, heartbeat_seconds=0.1)
    async with circleback.Engine(
        settings, load_entry_points=False, pacing=pacing, worker_id="w-finished"
    ) as finished:  # a worker shows up as soon as it started
        assert "w-finished" in {worker.worker_id for worker in await finished.store.list_workers()}
    plugin = TestingPlugin()
    plugin.checker.gate = anyio.Event()
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=pacing, worker_id="w-busy"
    ) as engine:
        await engine.scheduler.add_job(
            caller, {"job_type": "scripted", "check_config": {}, "on_success_message": "ok",
                     "on_complete": "record"},
        )
        with anyio.fail_after(10):
            while not any(worker.worker_id == "w-busy" and worker.jobs_held == 1
                          for worker in await engine.store.list_workers()):
                await anyio.sleep(0.05)
        done = await circleback_cli_async(store_url, "workers", "--json")
        plugin.checker.gate.set()
    assert done.returncode == 0, done.stderr.decode()
    shown = {worker["worker_id"]: worker for worker in json.loads(done.stdout)}
    assert set(shown) == {"w-finished", "w-busy"}
    busy, finished = shown["w-busy"], shown["w-finished"]
    assert busy["hostname"] == socket.gethostname() and busy["pid"] == os.getpid()
    assert busy["jobs_held"] == 1 and busy["messages_held"] == 0
    assert busy["stopped"] is False and busy["stopped_at"] is None and busy["state"] == "alive"
    assert busy["heartbeat_at"] >= busy["started_at"]
    assert busy["heartbeat_age_seconds"] >= 0
    assert finished["stopped"] is True and finished["state"] == "stopped"
    assert finished["jobs_held"] == 0 and finished["stopped_at"] is not None

    store = Store(store_url)
    try:
        await store.open()
        after = {worker.worker_id: worker for worker in await store.list_workers()}
    finally:
        await store.aclose()
    assert after["w-busy"].stopped_at is not None  # a clean stop is recorded
    assert after["w-busy"].jobs_held == 0


# -- expired leases of a dead worker ------------------------------------------------------------


def _messages(records: Sequence[logging.LogRecord], text: str) -> list[str]:
    return [record.getMessage() for record in records if text in record.getMessage()]


async def test_expired_leases_of_a_dead_worker_are_taken_back_and_logged(
    store_url: str, make_settings: Callable[..., Settings], caller: Caller,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A worker died holding three jobs; a running engine's reaper frees them, logs it, runs them.

    The running engine can check one job at a time and is busy with another
    (held by the gate) when the dead worker's leases expire: so its reaper, not
    its claim, is what takes the leases back, and the log must say so.
    """
    caplog.set_level(logging.WARNING, logger="circleback.engine")
    settings = make_settings(
        database_url=store_url,
        tuning=EngineTuning(check_timeout_seconds=3.5, lease_seconds=4.0,
                            max_concurrent_checks=1, shutdown_grace_seconds=0.5),
    )
    pacing = Pacing(max_sleep_seconds=0.05)
    plugin = TestingPlugin()
    spec: dict[str, Any] = {"job_type": "scripted", "check_config": {},
                            "on_success_message": "done {job_id}", "on_complete": "record"}
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=pacing, worker=False
    ) as facade:
        busy = await facade.scheduler.add_job(caller, spec)
        orphans = [await facade.scheduler.add_job(caller, spec) for _ in range(3)]
        claimed = await facade.store.claim_due_jobs(
            "dead-worker", facade.clock.now(), limit=10, lease_seconds=0.2
        )
        assert {job.id for job in claimed} == {busy.id, *(job.id for job in orphans)}
        # The dead worker had given one job back before it died; the engine starts on that one.
        [given_back] = [job for job in claimed if job.id == busy.id]
        assert await facade.store.release_jobs("dead-worker", [given_back]) == 1
    for job in (busy, *orphans):
        plugin.checker.push(job.id, CheckOutcome.met({"job": str(job.id)}))

    plugin.checker.gate = anyio.Event()
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=pacing
    ) as engine:
        with anyio.fail_after(10):
            while not _messages(caplog.records, "took back"):
                await anyio.sleep(0.02)
        assert plugin.checker.checks == [busy.id]  # the orphans waited for the reaper
        plugin.checker.gate.set()
        with anyio.fail_after(10):
            await engine.wait_until_idle(poll_seconds=0.02)
        final = [await engine.scheduler.get_job(caller, job.id) for job in (busy, *orphans)]

    assert _messages(caplog.records, "took back") == [
        "took back 3 expired leases of stalled or dead workers"
    ]
    assert all(job.status is JobStatus.COMPLETED and job.attempts == 1 for job in final)
    assert sorted(plugin.checker.checks) == sorted([busy.id, *(job.id for job in orphans)])
    assert {job_id: len(sent) for job_id, sent in plugin.notifier.by_job().items()} == {
        job.id: 1 for job in (busy, *orphans)
    }


async def test_a_claim_that_takes_over_expired_leases_logs_whose_they_were(
    store_url: str, make_settings: Callable[..., Settings], caller: Caller,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Leases that expired are taken by the next claim as well as by the reaper: both are logged.

    Two jobs and one message were leased by a worker that died; a later claim
    by another worker takes them over and the log names the worker they were
    taken from. Jobs that were never leased are claimed without a word.
    """
    caplog.set_level(logging.INFO, logger="circleback.store")
    settings = make_settings(database_url=store_url)
    spec: dict[str, Any] = {"job_type": "scripted", "check_config": {},
                            "on_success_message": "done", "on_complete": "record"}
    async with circleback.Engine(
        settings, plugins=[TestingPlugin()], load_entry_points=False, pacing=QUICK, worker=False
    ) as facade:
        store = facade.store
        orphans = [await facade.scheduler.add_job(caller, spec) for _ in range(2)]
        now = facade.clock.now()
        held = await store.claim_due_jobs("dead-worker", now, limit=10, lease_seconds=1.0)
        assert {job.id for job in held} == {job.id for job in orphans}
        fresh = await facade.scheduler.add_job(caller, spec)
        assert caplog.records == []

        later = now + timedelta(seconds=2)
        taken = await store.claim_due_jobs("worker-b", later, limit=10, lease_seconds=5.0)

    assert {job.id for job in taken} == {fresh.id, *(job.id for job in orphans)}
    assert _messages(caplog.records, "took over") == [
        "worker-b took over 2 expired job leases from dead-worker"
    ]
