"""The operator's CLI sees every user's jobs, takes id prefixes and cancels workflows.

Jobs are added through the tool service, as an orchestrator adds them for its
users; the installed console script then lists, shows and cancels them without
naming any user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import anyio
import pytest

import circleback
from circleback import Caller
from circleback.tools import SchedulerTools

from ..tools_support import context_of

CIRCLEBACK = Path(sys.executable).with_name("circleback")
ASYNCIO = pytest.mark.parametrize("anyio_backend", ["asyncio"])  # the CLI runs apart


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CIRCLEBACK_")}
    env["CIRCLEBACK_DATABASE_URL"] = url
    return subprocess.run([str(CIRCLEBACK), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


async def add_through_tools(url: str, caller: Caller, specs: list[dict[str, Any]]) -> list[str]:
    settings = circleback.Settings.from_env(database_url=url)
    async with circleback.Engine(settings, worker=False) as engine:
        tools = SchedulerTools.for_engine(engine)
        ids = []
        for spec in specs:
            answer = await tools.execute("scheduler.add_job", spec, context_of(caller))
            assert answer["ok"], answer
            ids.append(answer["result"]["job"]["id"])
        return ids


def delay(workflow: str | None = None) -> dict[str, Any]:
    return {"job_type": "delay", "check_config": {"delay_seconds": 600},
            "on_success_message": "later", "workflow_id": workflow}


@pytest.mark.anyio
@ASYNCIO
async def test_a_tool_job_is_listed_shown_by_prefix_and_cancelled_without_user_flags(
    store_url: str,
) -> None:
    caller = Caller(user_id=f"U{uuid.uuid4().hex[:6]}", platform="slack")
    [job_id] = await add_through_tools(store_url, caller, [delay()])
    listed = await anyio.to_thread.run_sync(cli, store_url, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [row] = [job for job in json.loads(listed.stdout) if job["id"] == job_id]
    assert row["user_id"] == caller.user_id and "next_check_at" in row
    assert "next_run_at" not in row
    shown = await anyio.to_thread.run_sync(cli, store_url, "jobs", "show", job_id[:8], "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == job_id
    narrowed = await anyio.to_thread.run_sync(cli, store_url, "jobs", "show", job_id[:8],
                                              "--user", "someone-else")
    assert narrowed.returncode == 3
    cancelled = await anyio.to_thread.run_sync(cli, store_url, "cancel", job_id[:8])
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"{job_id} cancelled"
    again = await anyio.to_thread.run_sync(cli, store_url, "cancel", job_id)
    assert again.returncode == 1
    assert "already finished" in again.stderr


@pytest.mark.anyio
@ASYNCIO
async def test_cancel_workflow_ends_its_active_jobs_and_nothing_else(store_url: str) -> None:
    caller = Caller(user_id=f"U{uuid.uuid4().hex[:6]}", platform="slack")
    workflow = str(uuid.uuid4())
    ids = await add_through_tools(store_url, caller,
                                  [delay(workflow), delay(workflow), delay(), delay()])
    done = await anyio.to_thread.run_sync(cli, store_url, "cancel", "--workflow", workflow)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()[::2]) == sorted(ids[:2])
    listed = json.loads((await anyio.to_thread.run_sync(
        cli, store_url, "list", "--json", "--user", caller.user_id)).stdout)
    status = {job["id"]: job["status"] for job in listed}
    assert [status[i] for i in ids] == ["cancelled", "cancelled", "active", "active"]
    only = json.loads((await anyio.to_thread.run_sync(
        cli, store_url, "list", "--json", "--workflow", workflow, "--type", "delay",
        "--limit", "1")).stdout)
    assert len(only) == 1 and only[0]["workflow_id"] == workflow


@pytest.mark.anyio
@ASYNCIO
async def test_a_short_prefix_is_refused_and_an_unknown_one_not_found(store_url: str) -> None:
    caller = Caller(user_id=f"U{uuid.uuid4().hex[:6]}", platform="slack")
    await add_through_tools(store_url, caller, [delay()])
    short = await anyio.to_thread.run_sync(cli, store_url, "jobs", "show", "abc")
    assert short.returncode == 4 and "8 or more hex digits" in short.stderr
    found = await anyio.to_thread.run_sync(cli, store_url, "jobs", "show", "00000000")
    assert found.returncode == 3


def test_add_help_lists_each_job_type_with_its_fields_and_an_example() -> None:
    shown = subprocess.run([str(CIRCLEBACK), "add", "--help"], capture_output=True, text=True,
                           check=True)
    text = " ".join(shown.stdout.split())
    for job_type in ("delay", "poll_url", "poll_module"):
        assert f"{job_type}:" in text
    assert "url*: string" in text
    assert '"delay_seconds": 900' in text
