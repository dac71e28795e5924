"""The worker's log says what happened: one INFO line per finished job and dead message.

A completed, a failed and a dead job run through a real engine on the test's
store; the lines are read back through the formatter the commands use, in
text and as ``--log-format json``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import anyio
import pytest

import circleback
from circleback import CheckOutcome, Notification, Notifier, Settings
from circleback.cli.logs import JsonFormatter, configure_logging
from circleback.core.abc import DeliveryContext, DeliveryReceipt
from circleback.errors import DeliveryFailed
from circleback.testing import TestingPlugin

from ..pacing import QUICK


class Refusing(Notifier):
    """A completion mode whose every delivery fails for good: its messages go dead."""

    name = "refuse"

    async def deliver(self, notification: Notification,
                      context: DeliveryContext) -> DeliveryReceipt:
        raise DeliveryFailed("the receiver refused it", retryable=False)


class RefusingPlugin:
    @circleback.hookimpl
    def circleback_register_notifiers(self, register: Callable[[Notifier], None]) -> None:
        register(Refusing())


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def job(**extra: Any) -> dict[str, Any]:
    return {"job_type": "scripted", "check_config": {}, "on_success_message": "done",
            "interval_seconds": 1, "on_complete": "record", **extra}


@pytest.mark.anyio
async def test_info_lines_for_a_completed_a_failed_and_a_dead_job(
    settings: Settings, caller: circleback.Caller,
) -> None:
    testing = TestingPlugin()
    lines = Lines()
    log = logging.getLogger("circleback")
    log.addHandler(lines)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        async with circleback.Engine(settings, plugins=[testing, RefusingPlugin()],
                                     load_entry_points=False, pacing=QUICK) as engine:
            gate = testing.checker.gate = anyio.Event()  # checks wait for their outcomes
            workflow = "6f1c2b1e-8a4d-4c2b-9a51-3d0e7c9b2f10"
            done = await engine.scheduler.add_job(caller, job(workflow_id=workflow))
            failed = await engine.scheduler.add_job(caller, job(max_attempts=1))
            dead = await engine.scheduler.add_job(caller, job(on_complete="refuse"))
            testing.checker.push(done.id, CheckOutcome.met({"ok": True}))
            testing.checker.push(failed.id, CheckOutcome.failed("the build broke"))
            testing.checker.push(dead.id, CheckOutcome.met({"ok": True}))
            gate.set()
            with anyio.fail_after(20):
                await engine.wait_until_idle(poll_seconds=0.05)
    finally:
        log.removeHandler(lines)
        log.setLevel(old_level)
    info = [r for r in lines.records if r.levelno >= logging.INFO]
    finished = {getattr(r, "job_id", None): r.getMessage() for r in info
                if "attempts" in r.getMessage() and "after it was added" in r.getMessage()}
    assert f"job {done.id} (scripted) completed after 1 of 120 attempts" in finished[str(done.id)]
    assert f"job {failed.id} (scripted) failed after 1 of 1 attempts" in finished[str(failed.id)]
    assert "the build broke" in finished[str(failed.id)]
    assert str(dead.id) in finished
    [gave_up] = [r for r in info if r.getMessage().startswith("giving up on message")]
    assert gave_up.levelno == logging.ERROR and gave_up.job_id == str(dead.id)
    assert any(r.getMessage().startswith(f"worker {engine.worker_id} started") for r in info)
    assert any(r.getMessage() == f"worker {engine.worker_id} stopped" for r in info)
    assert not any("check of job" in r.getMessage() for r in info), "checks are DEBUG lines"

    [record] = [r for r in info if getattr(r, "job_id", None) == str(done.id)
                and "completed" in r.getMessage()]
    as_json = json.loads(JsonFormatter().format(record))
    assert as_json["job_id"] == str(done.id)
    assert as_json["workflow_id"] == workflow
    assert as_json["user_id"] == caller.user_id
    assert as_json["level"] == "INFO" and as_json["logger"] == "circleback.engine"


def test_other_libraries_log_at_warning_unless_asked() -> None:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogger("circleback").level)
    try:
        configure_logging("DEBUG")
        assert logging.getLogger("circleback.engine").isEnabledFor(logging.DEBUG)
        assert not logging.getLogger("httpx").isEnabledFor(logging.INFO)
        assert not logging.getLogger("sqlalchemy.engine").isEnabledFor(logging.INFO)
        configure_logging("INFO", library_level="DEBUG", json_lines=True)
        assert logging.getLogger("httpx").isEnabledFor(logging.DEBUG)
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.getLogger("circleback").setLevel(saved[2])
