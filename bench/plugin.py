"""The circleback plugin the benchmark registers: two job types and one completion mode.

- ``bench_timer`` (``check_config: {"due": epoch seconds}``): a one-shot timer
  due at ``due``; its check runs the shared job body and is met.
- ``bench_poll`` (``check_config: {"start": epoch seconds}``): a poll whose
  first check is due at ``start``; each check runs the shared job body and
  answers "not yet".
- ``bench_sink`` (completion mode): does what the embedded ``notify`` mode
  does — one JSON line per notification to a stream, here ``/dev/null`` — and
  notes when each message went out, so the harness knows when a burst drained.

They are registered like any third-party plugin (``Engine(plugins=[...])``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import anyio

import circleback
from circleback import (
    Checker,
    CheckOutcome,
    DeliveryContext,
    DeliveryReceipt,
    Job,
    Notification,
    Notifier,
    Runtime,
    ValidationContext,
)

from .common import trivial_job

__all__ = ["BenchPlugin", "BenchPollChecker", "BenchSink", "BenchTimerChecker"]


def _epoch_schema(field: str) -> dict[str, Any]:
    """A ``check_config`` of one number: epoch seconds."""
    return {
        "type": "object",
        "additionalProperties": False,
        "required": [field],
        "properties": {field: {"type": "number", "description": "epoch seconds"}},
    }


class BenchTimerChecker(Checker):
    """A one-shot timer due at an absolute moment."""

    job_type = "bench_timer"
    description = "Benchmark timer: met at check_config.due (epoch seconds)."

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        return _epoch_schema("due")

    def first_check_delay(self, config: Mapping[str, Any]) -> float:
        return max(0.0, float(config["due"]) - time.time())

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        await trivial_job(float(job.check_config["due"]))
        return CheckOutcome.met()


class BenchPollChecker(Checker):
    """A poll that is never met; its first check is due at ``start``."""

    job_type = "bench_poll"
    description = "Benchmark poll: never met; first check at check_config.start."

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        return _epoch_schema("start")

    def first_check_delay(self, config: Mapping[str, Any]) -> float:
        return max(0.0, float(config["start"]) - time.time())

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        await trivial_job(job.next_run_at.timestamp())
        return CheckOutcome.not_yet("bench: not yet")


class BenchSink(Notifier):
    """Writes each notification as a JSON line (like ``notify``) and counts them."""

    name = "bench_sink"
    description = "Benchmark sink: a JSON line to /dev/null, timed."

    def __init__(self) -> None:
        self.count = 0
        self.last_at = 0.0
        self._target: int | None = None
        self._done: anyio.Event | None = None
        self._stream: TextIO | None = None

    def expect(self, target: int) -> anyio.Event:
        """An event set once ``target`` messages went out."""
        self._target = target
        self._done = anyio.Event()
        if self.count >= target:
            self._done.set()
        return self._done

    async def start(self, runtime: Runtime) -> None:
        self._stream = open(os.devnull, "w")  # noqa: ASYNC230, SIM115 - closed in stop()

    async def stop(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    async def deliver(
        self, notification: Notification, context: DeliveryContext
    ) -> DeliveryReceipt:
        line = json.dumps(notification.to_dict(), ensure_ascii=False, separators=(",", ":"))
        if self._stream is not None:
            self._stream.write(line + "\n")
            self._stream.flush()
        self.count += 1
        self.last_at = time.time()
        if self._done is not None and self._target is not None and self.count >= self._target:
            self._done.set()
        return DeliveryReceipt(via=self.name)


class BenchPlugin:
    """Registers the benchmark's job types and completion mode."""

    def __init__(self) -> None:
        self.sink = BenchSink()

    @circleback.hookimpl
    def circleback_register_checkers(self, register: Callable[[Checker], None]) -> None:
        register(BenchTimerChecker())
        register(BenchPollChecker())

    @circleback.hookimpl
    def circleback_register_notifiers(self, register: Callable[[Notifier], None]) -> None:
        register(self.sink)
