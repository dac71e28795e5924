"""PUBLISHes gathered into batches: one round trip for the messages that arrive together.

The batching is driven here by a send function the test controls (it holds
a batch out until told), so which messages go together is exact; the last
test sends through ``notify`` to a real Redis with a subscriber.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import anyio
import anyio.abc
import pytest

from circleback import JobStatus, Notification, Settings
from circleback.core.abc import DeliveryContext, Runtime
from circleback.core.clock import SystemClock
from circleback.core.models import NotificationType
from circleback.core.registry import PluginRegistry
from circleback.engine.plugins import make_plugin_manager
from circleback.notifiers.notify import NotifyNotifier, channel_for
from circleback.notifiers.publish_batches import BatchingPublisher

from ..subscriber import Subscriber


class HeldBatches:
    """A send function that notes each batch and holds it out until released."""

    def __init__(self, answers: dict[str, object] | None = None) -> None:
        self.batches: list[list[str]] = []
        self.answers = answers or {}
        self.fail_with: BaseException | None = None
        self._gates: list[anyio.Event] = []
        self._held = True
        self._sent = anyio.Event()

    def release(self, index: int | None = None) -> None:
        """Let batch ``index`` be answered; with no index, every batch, now and later."""
        if index is None:
            self._held = False
            for gate in self._gates:
                gate.set()
        else:
            self._gates[index].set()

    async def until_out(self, count: int) -> None:
        """Wait until ``count`` batches have been sent."""
        while len(self.batches) < count:
            await self._sent.wait()

    async def send(self, pairs: list[tuple[str, str]]) -> Sequence[object]:
        self.batches.append([message for _, message in pairs])
        gate = anyio.Event()
        self._gates.append(gate)
        sent, self._sent = self._sent, anyio.Event()
        sent.set()
        if self._held:
            await gate.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [self.answers.get(message, len(message)) for _, message in pairs]


async def _publish_into(
    publisher: BatchingPublisher, message: str, into: dict[str, object]
) -> None:
    try:
        into[message] = await publisher.publish("channel", message)
    except Exception as exc:
        into[message] = exc


@contextlib.asynccontextmanager
async def _publishing(
    held: HeldBatches,
) -> AsyncIterator[tuple[BatchingPublisher, anyio.abc.TaskGroup]]:
    """A publisher sending through ``held``, and a task group for its callers.

    On leaving, every batch is answered (also when the test failed, so that
    no batch stays held out) and every caller has returned.
    """
    publisher = BatchingPublisher(held.send)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            try:
                yield publisher, group
            finally:
                held.release()


async def test_a_lone_message_goes_at_once_and_those_arriving_meanwhile_go_together() -> None:
    held = HeldBatches()
    answers: dict[str, object] = {}
    async with _publishing(held) as (publisher, group):
        group.start_soon(_publish_into, publisher, "a", answers)
        await held.until_out(1)  # "a" is out on its own, not held back for company
        assert held.batches == [["a"]]
        for message in ("bb", "ccc", "dddd"):
            group.start_soon(_publish_into, publisher, message, answers)
        await anyio.wait_all_tasks_blocked()
    assert [sorted(batch) for batch in held.batches] == [["a"], ["bb", "ccc", "dddd"]]
    # Each caller gets its own answer: here, the length of its message.
    assert answers == {"a": 1, "bb": 2, "ccc": 3, "dddd": 4}


async def test_a_command_that_failed_fails_only_its_own_caller() -> None:
    refused = ValueError("WRONGTYPE")
    held = HeldBatches(answers={"bad": refused})
    held.release()
    answers: dict[str, object] = {}
    async with _publishing(held) as (publisher, group):
        for message in ("good", "bad", "fine"):
            group.start_soon(_publish_into, publisher, message, answers)
    assert answers == {"good": 4, "bad": refused, "fine": 4}


async def test_a_batch_that_could_not_be_sent_fails_every_message_in_it() -> None:
    held = HeldBatches()
    held.fail_with = ConnectionError("Redis went away")
    answers: dict[str, object] = {}
    async with _publishing(held) as (publisher, group):
        group.start_soon(_publish_into, publisher, "first", answers)
        await held.until_out(1)
        group.start_soon(_publish_into, publisher, "second", answers)
        group.start_soon(_publish_into, publisher, "third", answers)
        await anyio.wait_all_tasks_blocked()
    assert [sorted(batch) for batch in held.batches] == [["first"], ["second", "third"]]
    assert all(answer is held.fail_with for answer in answers.values()), answers
    # Nothing is left holding the lead: the next message goes out.
    held.fail_with = None
    with anyio.fail_after(10):
        assert await publisher.publish("channel", "later") == 5


async def test_a_caller_cancelled_while_waiting_takes_its_message_back() -> None:
    held = HeldBatches()
    answers: dict[str, object] = {}
    async with _publishing(held) as (publisher, group):
        group.start_soon(_publish_into, publisher, "first", answers)
        await held.until_out(1)
        with anyio.CancelScope() as gone:
            gone.cancel()
            await publisher.publish("channel", "withdrawn")
        group.start_soon(_publish_into, publisher, "kept", answers)
        await anyio.wait_all_tasks_blocked()
    assert held.batches == [["first"], ["kept"]]
    assert answers == {"first": 5, "kept": 4}


async def _lead_out_and_two_waiting(
    group: anyio.abc.TaskGroup,
    held: HeldBatches,
    publisher: BatchingPublisher,
    answers: dict[str, object],
    cancelled: list[str],
) -> anyio.CancelScope:
    """"lead" sent and held out; "f1" (returned: its cancel scope) and "f2" waiting."""

    async def cancellable(message: str, scope: anyio.CancelScope) -> None:
        with scope:
            answers[message] = await publisher.publish("channel", message)
        if scope.cancelled_caught:
            cancelled.append(message)

    group.start_soon(_publish_into, publisher, "lead", answers)
    await held.until_out(1)
    first = anyio.CancelScope()
    group.start_soon(cancellable, "f1", first)
    group.start_soon(_publish_into, publisher, "f2", answers)
    await anyio.wait_all_tasks_blocked()
    return first


async def test_the_sender_cancelled_while_its_batch_is_out_still_answers_the_others() -> None:
    held = HeldBatches()
    answers: dict[str, object] = {}
    cancelled: list[str] = []
    async with _publishing(held) as (publisher, group):
        first = await _lead_out_and_two_waiting(group, held, publisher, answers, cancelled)
        held.release(0)  # "lead" is answered and hands the lead to the first waiting
        await held.until_out(2)
        first.cancel()  # "f1" is in the batch out: it goes out to its end
        await anyio.wait_all_tasks_blocked()
        held.release(1)
    assert [sorted(batch) for batch in held.batches] == [["lead"], ["f1", "f2"]]
    # "f1" was sent and answered: it returns the answer or, at a later turn, is cancelled.
    assert (answers.get("f1"), cancelled) in ((2, []), (None, ["f1"]))
    assert answers["lead"] == 4
    assert answers["f2"] == 2


async def test_a_caller_cancelled_as_the_lead_comes_to_it_passes_the_lead_on() -> None:
    held = HeldBatches()
    answers: dict[str, object] = {}
    cancelled: list[str] = []
    async with _publishing(held) as (publisher, group):
        first = await _lead_out_and_two_waiting(group, held, publisher, answers, cancelled)
        # Whichever comes first — "f1" giving up, or the lead reaching it — "f2" is sent.
        first.cancel()
    assert held.batches == [["lead"], ["f2"]]
    assert cancelled == ["f1"]
    assert answers == {"lead": 4, "f2": 2}


@pytest.mark.redis
async def test_notify_publishes_a_burst_to_a_real_redis_each_with_its_own_answer(
    redis_url: str,
) -> None:
    platform = f"batches-{uuid.uuid4().hex[:12]}"
    settings = Settings(database_url="sqlite://", redis_url=redis_url)
    registry = PluginRegistry.from_manager(make_plugin_manager([], load_entry_points=False))
    runtime = Runtime(settings=settings, clock=SystemClock(), plugins=registry,
                      logger=logging.getLogger("test"))
    notifier = NotifyNotifier()
    notifications = [
        Notification(
            notification_id=uuid.uuid4(), type=NotificationType.JOB_COMPLETED,
            job_id=uuid.uuid4(), workflow_id=None, status=JobStatus.COMPLETED,
            message=f"message {index}", user_id="u", platform=platform,
            platform_channel_id="C1", platform_thread_id=None, conversation_id=None,
            created_at=datetime.now(UTC),
        )
        for index in range(60)
    ]
    notes: list[str | None] = []

    async def deliver(notification: Notification) -> None:
        context = DeliveryContext(runtime=runtime, result=None, attempt=1)
        notes.append((await notifier.deliver(notification, context)).note)

    with Subscriber(redis_url, channel_for(platform)) as subscriber:
        await notifier.start(runtime)
        try:
            with anyio.fail_after(20):
                async with anyio.create_task_group() as group:
                    for notification in notifications:
                        group.start_soon(deliver, notification)
        finally:
            await notifier.stop()
        with anyio.fail_after(10):
            while len(subscriber.messages) < len(notifications):
                await anyio.sleep(0.02)
    assert notes == ["1 subscriber"] * len(notifications)
    assert sorted(m["message"] for m in subscriber.messages) == sorted(
        n.message for n in notifications
    )
