"""Plugins for testing code that embeds circleback (and for circleback's own tests).

- :class:`ScriptedChecker` (job type ``scripted``): each check returns what the
  test scripted for that job, "not yet" by default.
- :class:`RecordingNotifier` (completion mode ``record``): keeps every
  notification it is handed, in order.
- :class:`ManualClock`: a clock that moves only when told, for
  ``Engine(worker=False, clock=ManualClock())``.

Register them with ``Engine(plugins=[TestingPlugin()])``.
"""

from __future__ import annotations

import uuid
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Any

import anyio

from .core.abc import (
    Checker,
    DeliveryContext,
    DeliveryFailed,
    DeliveryReceipt,
    Notifier,
    Runtime,
    ValidationContext,
)
from .core.clock import ManualClock
from .core.hookspecs import hookimpl
from .core.models import CheckOutcome, Job, Notification

__all__ = ["ManualClock", "RecordingNotifier", "ScriptedChecker", "TestingPlugin"]


class ScriptedChecker(Checker):
    """Checks answer from a script: per job, a queue of outcomes (then the default)."""

    job_type = "scripted"
    description = "A check whose outcomes the test decides."

    def __init__(self) -> None:
        self.default = CheckOutcome.not_yet("scripted: nothing queued")
        self.queued: dict[uuid.UUID, deque[CheckOutcome]] = defaultdict(deque)
        self.checks: list[uuid.UUID] = []
        #: When set, every check waits for it (to hold checks in flight).
        self.gate: anyio.Event | None = None

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        # Open: a test may pass any settings; only ``label`` has a shape.
        return {"type": "object", "properties": {"label": {"type": "string"}}}

    def push(self, job_id: uuid.UUID, *outcomes: CheckOutcome) -> None:
        """Queue outcomes for the next checks of ``job_id``."""
        self.queued[job_id].extend(outcomes)

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        self.checks.append(job.id)
        if self.gate is not None:
            await self.gate.wait()
        queue = self.queued.get(job.id)
        if queue:
            return queue.popleft()
        return self.default


class RecordingNotifier(Notifier):
    """Keeps every notification; can be told to fail the next deliveries."""

    name = "record"
    description = "Keep the notification in memory (for tests)."

    def __init__(self) -> None:
        self.delivered: list[Notification] = []
        self.failures_left = 0

    async def deliver(
        self, notification: Notification, context: DeliveryContext
    ) -> DeliveryReceipt:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise DeliveryFailed("recording notifier told to fail")
        self.delivered.append(notification)
        return DeliveryReceipt(via=self.name)

    def by_job(self) -> dict[uuid.UUID, list[Notification]]:
        """Delivered notifications grouped by job id."""
        grouped: dict[uuid.UUID, list[Notification]] = defaultdict(list)
        for notification in self.delivered:
            grouped[notification.job_id].append(notification)
        return dict(grouped)


class TestingPlugin:
    """Registers one :class:`ScriptedChecker` and one :class:`RecordingNotifier`."""

    __test__ = False  # not a pytest test class

    def __init__(self) -> None:
        self.checker = ScriptedChecker()
        self.notifier = RecordingNotifier()

    @hookimpl
    def circleback_register_checkers(self, register: Callable[[Checker], None]) -> None:
        register(self.checker)

    @hookimpl
    def circleback_register_notifiers(self, register: Callable[[Notifier], None]) -> None:
        register(self.notifier)
