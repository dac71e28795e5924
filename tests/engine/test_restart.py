"""Restart safety with real processes and real signals, on SQLite and on PostgreSQL.

- A job added while an engine runs, the engine stopped with SIGTERM before the
  job is due, and started again later: the job fires exactly once.
- An engine killed with SIGKILL in the middle of a check: once its lease has
  expired, a new engine checks the job again, and it finishes once, with one
  message.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import circleback
from circleback import Caller, Settings

from ..plugins_for_subprocess import SlowPlugin
from ..store_rows import job_states, outbox_statuses

ROOT = Path(__file__).resolve().parents[2]
CALLER = Caller(user_id="cli", platform="cli", platform_channel_id="C9")
#: Bounds how long the test waits for a process, so a hang fails instead of blocking the suite.
PATIENCE = 60.0

pytestmark = pytest.mark.slow


def _env(database_url: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("CIRCLEBACK_")}
    env["CIRCLEBACK_DATABASE_URL"] = database_url
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _start(args: list[str], database_url: str, out: Path, err: Path) -> subprocess.Popen[bytes]:
    with out.open("wb") as stdout, err.open("wb") as stderr:
        return subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, env=_env(database_url), stdout=stdout,
            stderr=stderr,
        )


def _run(args: list[str], database_url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=_env(database_url), capture_output=True,
        text=True, timeout=PATIENCE, check=False,
    )


def _wait_for(condition: Callable[[], bool], process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + PATIENCE
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the engine exited ({process.returncode}) before {what}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def _notifications(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def _add_job(database_url: str, backend: str, spec: dict[str, Any]) -> uuid.UUID:
    async def add() -> uuid.UUID:
        async with circleback.Engine(
            Settings(database_url=database_url), worker=False, plugins=[SlowPlugin()],
            load_entry_points=False,
        ) as engine:
            return (await engine.scheduler.add_job(CALLER, spec)).id

    return anyio.run(add, backend=backend)


def _job_row(url: str, job_id: uuid.UUID) -> dict[str, Any]:
    job = job_states(url).get(str(job_id))
    assert job is not None, f"job {job_id} is not in the store"
    status, attempts, lease_owner = job
    return {"status": status, "attempts": attempts, "lease_owner": lease_owner,
            "outbox": outbox_statuses(url, job_id)}


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_job_added_before_a_stop_fires_once_after_the_restart(
    tmp_path: Path, store_url: str, backend: str
) -> None:
    url = store_url
    out, err = tmp_path / "first.out", tmp_path / "first.err"
    first = _start(["-m", "circleback", "--backend", backend, "run"], url, out, err)
    try:
        _wait_for(lambda: "started on" in err.read_text(), first, "the engine to start")
        job_id = _add_job(url, backend, {
            "job_type": "delay", "check_config": {"delay_seconds": 2},
            "on_success_message": "two seconds are up",
        })
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=PATIENCE) == 0, err.read_text()
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert _notifications(out.read_text()) == []
    # Stopped before the job was due: nothing was checked or sent.
    assert _job_row(url, job_id) == {
        "status": "active", "attempts": 0, "lease_owner": None, "outbox": []
    }

    second = _run(["-m", "circleback", "--backend", backend, "run", "--until-idle"], url)
    assert second.returncode == 0, second.stderr
    [notification] = _notifications(second.stdout)
    assert notification["job_id"] == str(job_id)
    assert notification["status"] == "completed"
    assert notification["message"] == "two seconds are up"
    assert notification["platform_channel_id"] == "C9"
    assert _job_row(url, job_id) == {
        "status": "completed", "attempts": 1, "lease_owner": None, "outbox": ["sent"]
    }


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_worker_killed_mid_check_is_taken_over_once_its_lease_expires(
    tmp_path: Path, store_url: str, backend: str
) -> None:
    url = store_url
    marker = tmp_path / "check-started"
    job_id = _add_job(url, backend, {
        "job_type": "slow", "check_config": {"marker": str(marker)},
        "on_success_message": "slow job done: {result}", "interval_seconds": 1,
        "max_attempts": 5,
    })
    out, err = tmp_path / "first.out", tmp_path / "first.err"
    first = _start(["-m", "tests.run_engine", url, "--backend", backend], url, out, err)
    try:
        _wait_for(marker.exists, first, "the first check to start")
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=PATIENCE) == -signal.SIGKILL
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert _notifications(out.read_text()) == []
    # Killed mid-check: nothing recorded, and the dead worker still holds the lease.
    killed = _job_row(url, job_id)
    assert killed["status"] == "active" and killed["attempts"] == 0 and killed["outbox"] == []
    assert killed["lease_owner"] is not None

    second = subprocess.Popen(
        [sys.executable, "-m", "tests.run_engine", url, "--backend", backend, "--until-idle"],
        cwd=ROOT, env=_env(url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        stdout, stderr = second.communicate(timeout=PATIENCE)
    finally:
        if second.poll() is None:
            second.kill()
            second.communicate()
    assert second.returncode == 0, stderr
    [notification] = _notifications(stdout)
    assert notification["job_id"] == str(job_id)
    assert notification["status"] == "completed"
    assert notification["message"] == f'slow job done: {{"checked_by":{second.pid}}}'
    assert _job_row(url, job_id) == {
        "status": "completed", "attempts": 1, "lease_owner": None, "outbox": ["sent"]
    }
    # Checked twice in all: once by the killed worker, once by the one that took over.
    checks = Path(f"{marker}.log").read_text().split()
    assert checks == [str(first.pid), str(second.pid)]
