"""The HTTP clients, redis, Alembic and SQLAlchemy's PostgreSQL dialect load only when used.

SQLAlchemy's ORM (and its asyncio extension, which imports the ORM) never
loads: the store speaks SQLAlchemy Core, and the ORM alone is about 7 MiB.

Every built-in plugin is registered when an engine starts, but an engine on
the embedded SQLite store that only runs ``delay`` jobs and notifies on
standard output must not pay the memory of the HTTP and Redis clients, nor of
the PostgreSQL dialect and its driver modules, nor of Alembic when it makes its
database on first start. The engine cases run in a fresh interpreter, so
what is in ``sys.modules`` is what the engine itself imported. The clients made
on first use are made once, however many checks or deliveries start together.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

import circleback
from circleback import Caller, CheckOutcome, HttpTuning, JobStatus, Settings
from circleback.core.models import CheckStatus
from circleback.net import guarded_client
from circleback.notifiers import resume_conversation

from .. import services
from ..conftest import TEST_LIMITS
from ..continue_server import ContinueServer

#: The libraries an engine loads only when a job or a setting needs them.
LAZY = (
    "httpx", "httpcore", "h11", "httptools", "redis", "alembic", "sqlalchemy.dialects.postgresql",
    "sqlalchemy.orm", "sqlalchemy.ext.asyncio",
)

#: Starts an engine with the default plugins on a SQLite file, runs one job to its end,
#: and prints the job's status, its last error and which of LAZY were loaded.
_SCRIPT = """
import json, sys
import anyio
import circleback
from circleback import Caller, EngineTuning, Limits, Settings
from circleback.engine.pacing import Pacing

database, spec, allow, lazy = sys.argv[1], *(json.loads(arg) for arg in sys.argv[2:5])


async def main() -> dict:
    settings = Settings(
        database_url=f"sqlite:///{database}",
        limits=Limits(min_interval_seconds=0.01),
        tuning=EngineTuning(check_timeout_seconds=5.0, shutdown_grace_seconds=2.0),
        allow_networks=tuple(allow),
    )
    pacing = Pacing(max_sleep_seconds=0.05)
    async with circleback.Engine(settings, load_entry_points=False, pacing=pacing) as engine:
        registered = {"checkers": sorted(engine.plugins.checkers),
                      "notifiers": sorted(engine.plugins.notifiers)}
        caller = Caller(user_id="u1", platform="test", platform_channel_id="C1")
        job = await engine.scheduler.add_job(caller, spec)
        after_add = [name for name in lazy if name in sys.modules]
        with anyio.fail_after(10):
            await engine.wait_until_idle(poll_seconds=0.02)
        done = await engine.scheduler.get_job(caller, job.id)
    return {**registered, "status": done.status.value, "last_error": done.last_error,
            "after_add": after_add,
            "loaded": [name for name in lazy if name in sys.modules]}


report = anyio.run(main)
print("REPORT " + json.dumps(report))
"""


def _run_engine(tmp_path: Path, spec: dict[str, Any], allow: tuple[str, ...] = ()) -> Any:
    """Run one job in a fresh interpreter; return its report and what it wrote to stdout."""
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("CIRCLEBACK_")}
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(tmp_path / "circleback.db"), json.dumps(spec),
         json.dumps(list(allow)), json.dumps(LAZY)],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    [report] = [json.loads(line[len("REPORT "):]) for line in lines if line.startswith("REPORT ")]
    printed = [line for line in lines if line.strip() and not line.startswith("REPORT ")]
    return report, printed


def test_a_delay_engine_notifying_on_stdout_loads_no_http_or_redis(tmp_path: Path) -> None:
    report, printed = _run_engine(
        tmp_path,
        {"job_type": "delay", "check_config": {"delay_seconds": 0.05},
         "on_success_message": "done"},
    )
    assert {"delay", "poll_url", "poll_module"} <= set(report["checkers"])
    assert {"notify", "resume_conversation"} <= set(report["notifiers"])
    assert report["status"] == "completed"
    [notification] = printed
    assert json.loads(notification)["message"] == "done"
    assert report["loaded"] == []


def test_a_poll_url_job_loads_httpx_when_added(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{services.free_port()}/health"
    report, printed = _run_engine(
        tmp_path,
        {"job_type": "poll_url", "check_config": {"url": url}, "max_attempts": 1,
         "interval_seconds": 0.01, "on_success_message": "up"},
        allow=("127.0.0.1",),
    )
    assert "httpx" in report["after_add"]  # the URL was parsed when the job was validated
    assert report["status"] == "failed"
    assert report["last_error"].startswith(f"request to {url} failed")
    assert len(printed) == 1
    # The check made the client: llhttp's parser on anyio, without httpx's own transport.
    assert report["loaded"] == ["httpx", "httptools"]


# -- one client, made on first use -----------------------------------------------------------


def _settings(sqlite_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=sqlite_url, limits=TEST_LIMITS, **overrides)


async def test_checks_that_start_together_share_one_poll_url_client(
    sqlite_url: str, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[guarded_client.GuardedClient] = []
    make = guarded_client.GuardedClient

    def counting(*args: Any, **kwargs: Any) -> guarded_client.GuardedClient:
        made.append(make(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(guarded_client, "GuardedClient", counting)
    url = f"http://127.0.0.1:{services.free_port()}/health"
    settings = _settings(sqlite_url, allow_networks=("127.0.0.1",))
    async with circleback.Engine(
        settings, load_entry_points=False, worker=False
    ) as engine, await engine.start_plugins():
        job = await engine.scheduler.add_job(
            caller, {"job_type": "poll_url", "check_config": {"url": url},
                     "on_success_message": "up"},
        )
        assert made == []  # started, but no check yet: no client
        checker = engine.plugins.checkers["poll_url"]
        outcomes: list[CheckOutcome] = []

        async def check() -> None:
            outcomes.append(await checker.check(job, engine.runtime))

        with anyio.fail_after(10):
            async with anyio.create_task_group() as group:
                for _ in range(5):
                    group.start_soon(check)
        assert len(made) == 1
        assert all(outcome.status is CheckStatus.NOT_YET for outcome in outcomes)
        assert all(f"request to {url} failed" in (o.error or "") for o in outcomes)
    assert made[0].is_closed  # the engine closed it when it stopped


async def test_deliveries_that_start_together_share_one_resume_client(
    sqlite_url: str, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[httpx.AsyncClient] = []
    new_client = resume_conversation._new_client

    def counting(tuning: HttpTuning) -> httpx.AsyncClient:
        made.append(new_client(tuning))
        return made[-1]

    monkeypatch.setattr(resume_conversation, "_new_client", counting)
    with ContinueServer(default=200) as core:
        settings = _settings(sqlite_url, core_url=core.url)
        async with circleback.Engine(settings, load_entry_points=False) as engine:
            jobs = [
                await engine.scheduler.add_job(
                    caller, {"job_type": "delay", "check_config": {"delay_seconds": 0.01},
                             "on_success_message": f"done {n}",
                             "on_complete": "resume_conversation"},
                )
                for n in range(4)
            ]
            with anyio.fail_after(10):
                await engine.wait_until_idle(poll_seconds=0.02)
            done = [await engine.scheduler.get_job(caller, job.id) for job in jobs]
            entries = await engine.store.list_outbox()
        requests = core.requests
    assert all(job.status is JobStatus.COMPLETED for job in done)
    assert len(requests) == 4
    assert {entry.delivered_via for entry in entries} == {"resume_conversation"}
    assert len(made) == 1
    assert made[0].is_closed
