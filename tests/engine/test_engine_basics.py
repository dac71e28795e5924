"""The engine end to end on SQLite: add → check → record → deliver, on asyncio and trio."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import circleback
from circleback import Caller, CheckOutcome, JobStatus, Settings
from circleback.core.models import DeliveryStatus
from circleback.notifiers.notify import NotifyNotifier
from circleback.testing import ManualClock, TestingPlugin

from ..pacing import QUICK


async def test_delay_job_fires_once_and_notifies_on_stdout(
    make_settings: Callable[..., Settings],
    store_url: str,
    caller: Caller,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = make_settings(database_url=store_url)
    async with circleback.Engine(settings, load_entry_points=False, pacing=QUICK) as engine:
        job = await engine.scheduler.add_job(
            caller,
            {"job_type": "delay", "check_config": {"delay_seconds": 0.2},
             "on_success_message": "done: {result} ({job_id})"},
        )
        with anyio.fail_after(10):
            await engine.wait_until_idle(poll_seconds=0.02)
        stored = await engine.scheduler.get_job(caller, job.id)
    assert stored.status is JobStatus.COMPLETED
    assert stored.attempts == 1
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    payload = json.loads(lines[0])
    assert payload["type"] == "scheduler.job_completed"
    assert payload["job_id"] == str(job.id)
    assert payload["message"] == f'done: {{"delay_seconds":0.2}} ({job.id})'
    assert payload["platform_channel_id"] == "C1"
    assert payload["platform_thread_id"] == "T1"
    assert set(payload) == {
        "type", "notification_id", "job_id", "workflow_id", "status", "message", "user_id",
        "platform", "platform_channel_id", "platform_thread_id", "conversation_id", "created_at",
    }


async def test_poll_fails_after_max_attempts_with_default_message(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller
) -> None:
    plugin = TestingPlugin()
    clock = ManualClock()
    async with circleback.Engine(
        make_settings(database_url=store_url),
        plugins=[plugin],
        load_entry_points=False, pacing=QUICK,
        worker=False,
        clock=clock,
    ) as engine:
        job = await engine.scheduler.add_job(
            caller,
            {"job_type": "scripted", "check_config": {}, "on_success_message": "ok",
             "on_complete": "record", "interval_seconds": 5, "max_attempts": 3},
        )
        for expected_attempts in (1, 2):
            assert await engine.run_due_jobs() == 1
            assert await engine.run_due_jobs() == 0  # not due again until the interval passed
            current = await engine.scheduler.get_job(caller, job.id)
            assert current.status is JobStatus.ACTIVE
            assert current.attempts == expected_attempts
            clock.advance(5)
        assert await engine.run_due_jobs() == 1
        assert await engine.deliver_due() == 1
        final = await engine.scheduler.get_job(caller, job.id)
    assert final.status is JobStatus.FAILED
    assert final.attempts == 3
    [notification] = plugin.notifier.delivered
    assert notification.status is JobStatus.FAILED
    assert "after 3 checks" in notification.message
    assert "scripted: nothing queued" in notification.message


async def test_cancel_wins_over_a_check_in_flight(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller
) -> None:
    plugin = TestingPlugin()
    plugin.checker.gate = anyio.Event()
    async with circleback.Engine(
        make_settings(database_url=store_url), plugins=[plugin], load_entry_points=False,
        pacing=QUICK,
    ) as engine:
        job = await engine.scheduler.add_job(
            caller,
            {"job_type": "scripted", "check_config": {}, "on_success_message": "ok",
             "on_complete": "record", "interval_seconds": 1},
        )
        plugin.checker.push(job.id, CheckOutcome.met("late"))
        with anyio.fail_after(5):
            while not plugin.checker.checks:
                await anyio.sleep(0.01)
        cancelled = await engine.scheduler.cancel_job(caller, job.id)
        assert cancelled.status is JobStatus.CANCELLED
        plugin.checker.gate.set()
        await anyio.sleep(0.3)
        assert (await engine.scheduler.get_job(caller, job.id)).status is JobStatus.CANCELLED
    assert plugin.notifier.delivered == []


async def test_stdout_notifier_writes_one_json_line() -> None:
    stream = io.StringIO()
    notifier = NotifyNotifier(stream=stream)
    assert notifier.name == "notify"
    assert stream.getvalue() == ""


async def test_an_engine_left_at_once_stops_at_once(
    make_settings: Callable[..., Settings], store_url: str
) -> None:
    settings = make_settings(database_url=store_url)
    with anyio.fail_after(30):
        async with circleback.Engine(settings, load_entry_points=False, pacing=QUICK):
            pass


async def test_a_batch_of_results_equal_in_value_but_not_in_type_is_recorded_exactly(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller
) -> None:
    """One batch writes jobs whose results compare equal in Python (True == 1 == 1.0):
    jobs with the same new values share one write, and each must read back its own."""
    results = [True, 1, 1.0, "1", None, [1], [True], {"a": 1}, {"a": True}, {"a": 1.0}]
    plugin = TestingPlugin()
    clock = ManualClock()
    spec = {"job_type": "scripted", "check_config": {}, "on_success_message": "ok",
            "on_complete": "record", "interval_seconds": 5, "max_attempts": 3}
    async with circleback.Engine(
        make_settings(database_url=store_url), plugins=[plugin], load_entry_points=False,
        pacing=QUICK, worker=False, clock=clock,
    ) as engine:
        added = [(await engine.scheduler.add_job(caller, spec), result)
                 for result in results for _ in range(2)]
        for job, result in added:
            plugin.checker.push(job.id, CheckOutcome.not_yet("waiting", result=result))
        assert await engine.run_due_jobs() == len(added)
        stored = [(await engine.scheduler.get_job(caller, job.id), result)
                  for job, result in added]
    for job, result in stored:
        assert job.status is JobStatus.ACTIVE and job.attempts == 1
        assert job.last_error == "waiting"
        assert job.last_result == result
        if isinstance(result, float) and store_url.startswith("sqlite"):
            # A JSON column has numeric affinity in SQLite: a whole float comes back an int.
            assert type(job.last_result) in (int, float)
        else:
            assert type(job.last_result) is type(result)
        if isinstance(result, list | dict):
            assert json.dumps(job.last_result) == json.dumps(result)


async def test_a_finished_jobs_message_goes_straight_to_the_deliverer(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller
) -> None:
    """The worker that records a finish delivers its message without claiming it back.

    The outbox row is written already leased to that worker; delivery claims
    find nothing, and the row ends sent with one attempt and no lease.
    """
    plugin = TestingPlugin()
    spec = {"job_type": "scripted", "check_config": {}, "on_success_message": "done {job_id}",
            "on_complete": "record"}
    settings = make_settings(database_url=store_url)
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=QUICK, worker=False
    ) as facade:
        jobs = [await facade.scheduler.add_job(caller, spec) for _ in range(20)]
    for job in jobs:
        plugin.checker.push(job.id, CheckOutcome.met())
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=QUICK
    ) as engine:
        claimed: list[int] = []
        claim = engine.store.claim_deliveries

        async def counting_claim(*args: Any, **kwargs: Any) -> Any:
            entries = await claim(*args, **kwargs)
            claimed.append(len(entries))
            return entries

        engine.store.claim_deliveries = counting_claim  # type: ignore[method-assign]
        engine.wake()
        with anyio.fail_after(10):
            await engine.wait_until_idle(poll_seconds=0.02)
        outbox = await engine.store.list_outbox(limit=100)
    assert sum(claimed) == 0
    assert sorted(n.job_id for n in plugin.notifier.delivered) == sorted(j.id for j in jobs)
    assert all(entry.status is DeliveryStatus.SENT and entry.attempts == 1 for entry in outbox)
    assert {entry.lease_token for entry in outbox} == {1}
