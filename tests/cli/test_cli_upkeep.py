"""Operating the outbox and the workers table: requeue dead messages, purge sent ones, prune.

Real engines make a dead and a sent message; the commands then act on them
through the CLI, and a worker row whose heartbeats stopped shows as silent.
"""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

import anyio
from click.testing import CliRunner

import circleback
from circleback import CheckOutcome, Settings
from circleback.cli import cli
from circleback.core.clock import SystemClock
from circleback.store.database import create_sync_engine
from circleback.store.workers import record_heartbeat
from circleback.testing import TestingPlugin

from ..pacing import QUICK
from .test_cli_logs import RefusingPlugin


def invoke(url: str, *args: str, code: int = 0) -> str:
    result = CliRunner().invoke(cli, ["--database-url", url, *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result.output


async def finish(settings: Settings, caller: circleback.Caller, on_complete: str) -> None:
    testing = TestingPlugin()
    async with circleback.Engine(settings, plugins=[testing, RefusingPlugin()],
                                 load_entry_points=False, pacing=QUICK) as engine:
        testing.checker.gate = gate = anyio.Event()
        job = await engine.scheduler.add_job(caller, {
            "job_type": "scripted", "check_config": {}, "on_success_message": "done",
            "on_complete": on_complete})
        testing.checker.push(job.id, CheckOutcome.met(None))
        gate.set()
        with anyio.fail_after(20):
            await engine.wait_until_idle(poll_seconds=0.05)


def test_requeue_a_dead_message_and_purge_sent_ones(
    settings: Settings, caller: circleback.Caller, store_url: str
) -> None:
    anyio.run(finish, settings, caller, "refuse")
    anyio.run(finish, settings, caller, "record")
    [dead] = json.loads(invoke(store_url, "outbox", "--status", "dead", "--json"))
    missing = str(uuid.uuid4())
    assert f"{missing}" in invoke(store_url, "outbox", "requeue", missing, code=3)
    assert invoke(store_url, "outbox", "requeue", dead["notification_id"]).strip() == (
        f"{dead['notification_id']} requeued")
    [pending] = json.loads(invoke(store_url, "outbox", "--status", "pending", "--json"))
    assert pending["notification_id"] == dead["notification_id"] and pending["attempts"] == 0
    assert "no dead messages" in invoke(store_url, "outbox", "requeue", "--dead")
    assert invoke(store_url, "outbox", "purge", "--sent", "--older-than", "7d").strip() == (
        "0 sent messages deleted")
    assert invoke(store_url, "outbox", "purge", "--sent", "--older-than", "0s").strip() == (
        "1 sent messages deleted")
    assert json.loads(invoke(store_url, "outbox", "--status", "sent", "--json")) == []
    assert "not a duration" in invoke(store_url, "outbox", "purge", "--sent", "--older-than",
                                      "soon", code=2)


def test_a_worker_past_its_heartbeat_deadline_is_silent_and_prune_forgets(
    store_url: str,
) -> None:
    invoke(store_url, "db", "upgrade")
    engine = create_sync_engine(store_url)
    now = SystemClock().now()
    rows: list[tuple[str, Any, bool]] = [
        ("alive-1", now, False), ("silent-1", now - timedelta(seconds=40), False),
        ("gone-1", now - timedelta(days=2), False), ("stopped-1", now, True)]
    try:
        with engine.begin() as conn:
            for worker_id, seen, stopped in rows:
                record_heartbeat(conn, worker_id, "host", 1, seen, 0, 0, stopped=stopped)
    finally:
        engine.dispose()
    states = {w["worker_id"]: w for w in json.loads(invoke(store_url, "workers", "--json"))}
    assert states["alive-1"]["state"] == "alive"
    assert states["silent-1"]["state"] == "silent"
    assert states["silent-1"]["last_seen_at"] == states["silent-1"]["heartbeat_at"]
    assert "silent, last seen 40s ago" in invoke(store_url, "workers")
    assert invoke(store_url, "workers", "prune").strip() == "2 workers forgotten"
    left = {w["worker_id"] for w in json.loads(invoke(store_url, "workers", "--json"))}
    assert left == {"alive-1", "silent-1"}
