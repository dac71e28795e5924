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
"""

from __future__ import annotations

import contextlib

from .core.abc import (
    Checker,
    DeliveryContext,
    DeliveryFailed,
    DeliveryReceipt,
    ModuleCaller,
    ModuleCallFailed,
    Notifier,
    Runtime,
    ValidationContext,
)
from .core.clock import Clock, ManualClock, SystemClock
from .core.errors import (
    CirclebackError,
    ConfigurationError,
    JobNotFound,
    LimitExceeded,
    PermissionDenied,
    PluginError,
    StoreError,
    ValidationError,
    WorkflowNotFound,
)
from .core.hookspecs import hookimpl, hookspec
from .core.models import (
    Caller,
    CheckOutcome,
    CheckStatus,
    DeliveryStatus,
    Job,
    JobSpec,
    JobStatus,
    Notification,
    NotificationType,
    OutboxEntry,
)
from .core.registry import PluginRegistry
from .core.rendering import render_message, render_result
from .core.settings import EngineTuning, HttpTuning, Limits, Settings
from .core.state import Cancel, CheckResult, Transition, apply_event
from .engine.engine import Engine
from .engine.plugins import make_plugin_manager
from .engine.scheduler import Scheduler
from .store.store import Store
from .tools import SchedulerTools

__version__ = "0.1.0"

__all__ = [
    "Caller",
    "Cancel",
    "CheckOutcome",
    "CheckResult",
    "CheckStatus",
    "Checker",
    "CirclebackError",
    "Clock",
    "ConfigurationError",
    "DeliveryContext",
    "DeliveryFailed",
    "DeliveryReceipt",
    "DeliveryStatus",
    "Engine",
    "EngineTuning",
    "HttpTuning",
    "Job",
    "JobNotFound",
    "JobSpec",
    "JobStatus",
    "LimitExceeded",
    "Limits",
    "ManualClock",
    "ModuleCallFailed",
    "ModuleCaller",
    "Notification",
    "NotificationType",
    "Notifier",
    "OutboxEntry",
    "PermissionDenied",
    "PluginError",
    "PluginRegistry",
    "Runtime",
    "Scheduler",
    "SchedulerTools",
    "Settings",
    "Store",
    "StoreError",
    "SystemClock",
    "Transition",
    "ValidationContext",
    "ValidationError",
    "WorkflowNotFound",
    "__version__",
    "apply_event",
    "hookimpl",
    "hookspec",
    "make_plugin_manager",
    "render_message",
    "render_result",
]

# Public names report the package as their home, as they are documented.
for _name in __all__:
    _value = globals()[_name]
    if isinstance(_value, type) or callable(_value):
        with contextlib.suppress(AttributeError, TypeError):
            _value.__module__ = "circleback"
del _name, _value
