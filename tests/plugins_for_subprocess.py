"""A slow, observable job type for the restart tests (used in and out of the test process).

Job type ``slow``, ``check_config = {"marker": PATH}``. Every check appends the
checking process's pid to ``PATH.log``. The first check (no file at ``PATH``
yet) creates ``PATH`` and then hangs, so a test can kill the process in the
middle of it; any later check finds ``PATH`` and reports the condition met.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import anyio

import circleback
from circleback import Checker, CheckOutcome, Job, Runtime, ValidationContext


class SlowChecker(Checker):
    """Hangs in its first check (after leaving a marker file); met on every later one."""

    job_type = "slow"
    description = "Hang in the first check, succeed in the next (for restart tests)."

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        return {
            "type": "object",
            "additionalProperties": False,
            "required": ["marker"],
            "properties": {"marker": {"type": "string", "minLength": 1}},
        }

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        marker = anyio.Path(job.check_config["marker"])
        log = anyio.Path(f"{marker}.log")
        async with await log.open("a") as stream:
            await stream.write(f"{os.getpid()}\n")
        if await marker.exists():
            return CheckOutcome.met({"checked_by": os.getpid()})
        await marker.write_text(str(os.getpid()))
        await anyio.sleep(3600)  # killed (or cut off by the check timeout) before this ends
        return CheckOutcome.not_yet("woke up")


class SlowPlugin:
    """Registers :class:`SlowChecker`."""

    @circleback.hookimpl
    def circleback_register_checkers(self, register: Callable[[Checker], None]) -> None:
        register(SlowChecker())
