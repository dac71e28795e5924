"""``notify`` over a real Redis: the documented JSON, retries, outages, dead letters."""

from __future__ import annotations

import json
import sys
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import anyio.to_thread
import attrs
import pytest

import circleback
from circleback import Caller, CheckOutcome, EngineTuning, JobStatus, Notification, Settings
from circleback.core.models import DeliveryStatus, NotificationType
from circleback.errors import ConfigurationError
from circleback.notifiers.notify import channel_for, encode_notification
from circleback.testing import TestingPlugin

from .. import services
from ..conftest import TEST_LIMITS
from ..pacing import QUICK, Pacing
from ..subscriber import Subscriber

pytestmark = pytest.mark.redis

DOCUMENTED_FIELDS = {
    "type", "notification_id", "job_id", "workflow_id", "status", "message", "user_id",
    "platform", "platform_channel_id", "platform_thread_id", "conversation_id", "created_at",
}


def delay_job(message: str = "done: {result}", delay: float = 0.01, **extra: Any) -> dict[str, Any]:
    return {"job_type": "delay", "check_config": {"delay_seconds": delay},
            "on_success_message": message, **extra}


async def test_subscriber_gets_the_documented_json_once_per_finished_job(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str
) -> None:
    other = attrs.evolve(caller, platform=caller.platform + "-other", platform_channel_id="C9",
                         platform_thread_id=None, conversation_id=None)
    plugin = TestingPlugin()
    workflow = "6f1c7a52-5b9b-4d67-9d5e-3f0d2c0b7e11"
    settings = make_settings(redis_url=redis_url)
    with Subscriber(redis_url, channel_for(caller.platform)) as mine, \
            Subscriber(redis_url, channel_for(other.platform)) as theirs:
        async with circleback.Engine(
            settings, plugins=[plugin], load_entry_points=False, pacing=QUICK
        ) as engine:
            done = await engine.scheduler.add_job(
                caller, delay_job("build {job_id} done: {result}", workflow_id=workflow))
            failed = await engine.scheduler.add_job(caller, {
                "job_type": "scripted", "check_config": {}, "on_success_message": "ok",
                "on_failure_message": "gave up on {job_id}: {result}", "max_attempts": 1})
            plugin.checker.push(failed.id, CheckOutcome.failed("exit 2", result={"code": 2}))
            elsewhere = await engine.scheduler.add_job(other, delay_job("theirs"))
            with anyio.fail_after(15):
                await engine.wait_until_idle(poll_seconds=0.02)
            outbox = {entry.job_id: entry for entry in await engine.store.list_outbox()}
        await anyio.sleep(0.2)  # a duplicate would be published before the row is marked sent
        received, received_elsewhere = mine.messages, theirs.messages

    assert all(entry.status is DeliveryStatus.SENT for entry in outbox.values())
    assert Counter(m["job_id"] for m in received) == {str(done.id): 1, str(failed.id): 1}
    by_job = {m["job_id"]: m for m in received}
    for message in received:
        assert set(message) == DOCUMENTED_FIELDS
        entry = outbox[uuid.UUID(message["job_id"])]
        assert message == entry.notification.to_dict()
        assert message["notification_id"] == str(entry.id)
        assert message["user_id"] == caller.user_id
        assert message["platform"] == caller.platform
        assert message["platform_channel_id"] == "C1"
        assert message["platform_thread_id"] == "T1"
        assert message["conversation_id"] == caller.conversation_id
    completed = by_job[str(done.id)]
    assert completed["type"] == "scheduler.job_completed"
    assert completed["status"] == "completed"
    assert completed["workflow_id"] == workflow
    assert completed["message"] == f'build {done.id} done: {{"delay_seconds":0.01}}'
    gave_up = by_job[str(failed.id)]
    assert gave_up["type"] == "scheduler.job_failed"
    assert gave_up["status"] == "failed"
    assert gave_up["workflow_id"] is None
    assert gave_up["message"] == f'gave up on {failed.id}: {{"code":2}}'
    [their_message] = received_elsewhere
    assert their_message["job_id"] == str(elsewhere.id)
    assert their_message["platform_channel_id"] == "C9"
    assert their_message["platform_thread_id"] is None


async def test_no_subscriber_is_retried_until_one_listens(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str
) -> None:
    settings = make_settings(redis_url=redis_url)
    async with circleback.Engine(settings, load_entry_points=False, pacing=QUICK) as engine:
        job = await engine.scheduler.add_job(caller, delay_job())
        with anyio.fail_after(15):
            while True:
                [entry] = await engine.store.list_outbox() or [None]
                if entry is not None and entry.attempts >= 3:
                    break
                await anyio.sleep(0.02)
        assert entry.status is DeliveryStatus.PENDING
        assert entry.last_error == f"no subscriber listened on notifications:{caller.platform}"
        with Subscriber(redis_url, channel_for(caller.platform)) as bot:
            [message] = await bot.wait_for(1)
            with anyio.fail_after(15):
                await engine.wait_until_idle(poll_seconds=0.02)
            [entry] = await engine.store.list_outbox()
            await anyio.sleep(0.1)
            assert len(bot.messages) == 1
    assert message["job_id"] == str(job.id)
    assert message["notification_id"] == str(entry.id)
    assert entry.status is DeliveryStatus.SENT
    assert entry.attempts >= 4
    assert entry.delivered_via == "notify"
    assert entry.delivery_note == "1 subscriber"


async def test_fire_and_forget_accepts_zero_subscribers(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str
) -> None:
    settings = make_settings(redis_url=redis_url, notify_require_subscriber=False)
    async with circleback.Engine(settings, load_entry_points=False, pacing=QUICK) as engine:
        await engine.scheduler.add_job(caller, delay_job())
        with anyio.fail_after(15):
            await engine.wait_until_idle(poll_seconds=0.02)
        [entry] = await engine.store.list_outbox()
    assert entry.status is DeliveryStatus.SENT
    assert entry.attempts == 1
    assert entry.delivery_note == "no subscriber listened (fire and forget)"


async def test_dead_letters_are_kept_and_listed_for_operators(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller, redis_url: str
) -> None:
    tuning = EngineTuning(check_timeout_seconds=5.0, lease_seconds=10.0)
    pacing = Pacing(max_sleep_seconds=0.05, delivery_backoff_seconds=0.02,
                    delivery_backoff_max_seconds=0.05, delivery_max_attempts=3)
    settings = make_settings(redis_url=redis_url, tuning=tuning)
    async with circleback.Engine(settings, load_entry_points=False, pacing=pacing) as engine:
        job = await engine.scheduler.add_job(caller, delay_job())
        with anyio.fail_after(15):
            await engine.wait_until_idle(poll_seconds=0.02)
        dead = await engine.store.list_outbox(status=DeliveryStatus.DEAD)
    [entry] = dead
    assert entry.job_id == job.id
    assert entry.attempts == 3
    assert entry.last_error == f"no subscriber listened on notifications:{caller.platform}"

    listed = await anyio.run_process(
        [sys.executable, "-m", "circleback", "--database-url", store_url, "--log-level",
         "ERROR", "outbox", "--status", "dead", "--json"],
    )
    [shown] = json.loads(listed.stdout)
    assert shown["notification_id"] == str(entry.id)
    assert shown["job_id"] == str(job.id)
    assert shown["status"] == "dead"
    assert shown["attempts"] == 3
    assert shown["last_error"] == entry.last_error
    assert shown["notification"] == entry.notification.to_dict()
    table = await anyio.run_process(
        [sys.executable, "-m", "circleback", "--database-url", store_url, "--log-level",
         "ERROR", "outbox"],
    )
    lines = table.stdout.decode().splitlines()
    assert lines[0].split()[:5] == ["NOTIFICATION", "JOB", "MODE", "STATUS", "TRIES"]
    assert lines[1].split()[:5] == [str(entry.id), str(job.id), "notify", "dead", "3"]


async def test_redis_outage_while_jobs_finish_loses_nothing(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    """Redis goes away while 200 jobs finish and comes back on the same port: all arrive."""
    try:
        server = services.RedisServer()
    except FileNotFoundError as exc:
        services.unavailable(str(exc))
    await anyio.to_thread.run_sync(server.start)
    total = 200
    tuning = EngineTuning(check_timeout_seconds=5.0, lease_seconds=10.0,
                          shutdown_grace_seconds=2.0)
    pacing = Pacing(max_sleep_seconds=0.05, delivery_backoff_seconds=0.02,
                    delivery_backoff_max_seconds=0.2, delivery_max_attempts=10_000)
    # One user adds all 200: the adding must not depend on earlier jobs finishing in time.
    limits = attrs.evolve(TEST_LIMITS, max_active_jobs_per_user=total)
    settings = make_settings(redis_url=server.url, tuning=tuning, limits=limits)
    try:
        with Subscriber(server.url, channel_for(caller.platform)) as bot:
            async with circleback.Engine(
                settings, load_entry_points=False, pacing=pacing
            ) as engine:
                jobs = [
                    await engine.scheduler.add_job(
                        caller, delay_job("job {job_id}", delay=0.05 + 0.004 * number))
                    for number in range(total)
                ]
                await bot.wait_for(10)
                await anyio.to_thread.run_sync(server.stop)
                seen_before_outage = len(bot.counts())
                with anyio.fail_after(30):
                    while (await engine.store.count_unfinished())[0]:
                        await anyio.sleep(0.02)
                await anyio.sleep(0.3)  # let deliveries fail against the stopped server
                await anyio.to_thread.run_sync(server.start)
                counts = await bot.wait_for_ids(total)
                with anyio.fail_after(30):
                    await engine.wait_until_idle(poll_seconds=0.05)
                outbox = await engine.store.list_outbox(limit=1000)
            await anyio.sleep(0.2)
            counts = bot.counts()
    finally:
        await anyio.to_thread.run_sync(server.stop)

    assert seen_before_outage < total
    assert {entry.job_id for entry in outbox} == {job.id for job in jobs}
    assert all(entry.status is DeliveryStatus.SENT for entry in outbox)
    assert any(entry.attempts > 1 for entry in outbox), "no delivery met the outage"
    assert set(counts) == {str(entry.id) for entry in outbox}
    assert max(counts.values()) <= 2


def test_wire_json_survives_text_utf8_cannot_carry() -> None:
    notification = Notification(
        notification_id=uuid.uuid4(), type=NotificationType.JOB_COMPLETED, job_id=uuid.uuid4(),
        workflow_id=None, status=JobStatus.COMPLETED, message="é \ud800 ok", user_id="u",
        platform="p", platform_channel_id=None, platform_thread_id=None, conversation_id=None,
        created_at=datetime(2030, 1, 1, tzinfo=UTC),
    )
    text = encode_notification(notification)
    text.encode("utf-8")  # would raise for a raw lone surrogate
    assert json.loads(text) == notification.to_dict()
    plain = attrs.evolve(notification, message="é ok")
    assert "é ok" in encode_notification(plain)  # readable UTF-8 whenever possible


def test_delivery_settings_come_from_the_environment_and_are_checked() -> None:
    settings = Settings.from_env({
        "CIRCLEBACK_NOTIFY_REQUIRE_SUBSCRIBER": "false", "CIRCLEBACK_RESUME_ATTEMPTS": "5",
        "CIRCLEBACK_RESUME_TIMEOUT": "2.5", "CIRCLEBACK_RESUME_BACKOFF": "0.1",
    })
    assert settings.notify_require_subscriber is False
    assert (settings.resume_attempts, settings.resume_timeout_seconds,
            settings.resume_backoff_seconds) == (5, 2.5, 0.1)
    assert Settings.from_env({}).notify_require_subscriber is True
    for name, raw in [("CIRCLEBACK_NOTIFY_REQUIRE_SUBSCRIBER", "maybe"),
                      ("CIRCLEBACK_RESUME_ATTEMPTS", "three"),
                      ("CIRCLEBACK_RESUME_TIMEOUT", "soon")]:
        with pytest.raises(ConfigurationError, match=name):
            Settings.from_env({name: raw})
    with pytest.raises(ConfigurationError, match="resume_attempts"):
        Settings.from_env({"CIRCLEBACK_RESUME_ATTEMPTS": "0"})
