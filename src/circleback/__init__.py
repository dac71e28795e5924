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
import importlib
import typing

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

if typing.TYPE_CHECKING:
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

#: Names loaded on first use: the engine brings SQLAlchemy, which a command's
#: ``--help`` or a plugin module importing ``circleback`` for its base classes
#: should not pay for.
_LAZY = {
    "Engine": ".engine.engine",
    "Scheduler": ".engine.scheduler",
    "SchedulerTools": ".tools",
}


def _as_public(value: typing.Any) -> None:
    """Public names report the package as their home, as they are documented."""
    if isinstance(value, type) or callable(value):
        with contextlib.suppress(AttributeError, TypeError):
            value.__module__ = "circleback"


def __getattr__(name: str) -> typing.Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'circleback' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    _as_public(value)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


for _name in __all__:
    if _name not in _LAZY:
        _as_public(globals()[_name])
del _name
