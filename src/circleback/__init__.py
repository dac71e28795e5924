"""circleback: durable background jobs for LLM agent platforms.

An agent starts something long and asks circleback to watch it: poll a
condition every ``interval_seconds`` up to ``max_attempts`` times, then circle
back — publish a notification, or resume the agent's conversation.

::

    import anyio, circleback

    async def main() -> None:
        async with circleback.Engine() as engine:
            caller = circleback.Caller(user_id="u1", platform="slack")
            await engine.scheduler.add_job(caller, {
                "job_type": "delay",
                "check_config": {"delay_seconds": 2},
                "on_success_message": "Two seconds have passed.",
            })
            await engine.wait_until_idle()

    anyio.run(main)

The names below are the whole public API, with two public modules beside it:
:mod:`circleback.errors` holds every error circleback raises (drawn as a tree
with each ``code``) and :mod:`circleback.testing` the helpers for tests, such
as :class:`~circleback.testing.ManualClock`. Every other module is private.
"""

from __future__ import annotations

import contextlib

from .core.abc import (
    Checker,
    DeliveryContext,
    DeliveryReceipt,
    ModuleCaller,
    Notifier,
    Runtime,
    ValidationContext,
)
from .core.errors import CirclebackError, DeliveryFailed, ModuleCallFailed, ValidationError
from .core.hookspecs import hookimpl
from .core.models import Caller, CheckOutcome, Job, JobStatus, Notification
from .core.settings import EngineTuning, HttpTuning, Limits, Settings
from .engine.engine import Engine
from .engine.scheduler import Scheduler
from .tools import SchedulerTools

__version__ = "0.1.0"

__all__ = [
    "Caller",
    "CheckOutcome",
    "Checker",
    "CirclebackError",
    "DeliveryContext",
    "DeliveryFailed",
    "DeliveryReceipt",
    "Engine",
    "EngineTuning",
    "HttpTuning",
    "Job",
    "JobStatus",
    "Limits",
    "ModuleCallFailed",
    "ModuleCaller",
    "Notification",
    "Notifier",
    "Runtime",
    "Scheduler",
    "SchedulerTools",
    "Settings",
    "ValidationContext",
    "ValidationError",
    "__version__",
    "hookimpl",
]

# Public names report the package as their home, as they are documented.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type) or callable(_value):
        with contextlib.suppress(AttributeError, TypeError):
            _value.__module__ = "circleback"
del _name, _value
