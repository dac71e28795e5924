"""``delay``: a timer. One check, ``delay_seconds`` after the job was added; it always succeeds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..core.abc import Checker, Runtime, ValidationContext
from ..core.hookspecs import hookimpl
from ..core.models import CheckOutcome, Job
from ..core.schema import object_of

__all__ = ["DelayChecker"]


class DelayChecker(Checker):
    """Fires once after ``delay_seconds``."""

    job_type = "delay"
    description = "Wait delay_seconds after the job is added, then send the success message."

    def first_check_delay(self, config: Mapping[str, Any]) -> float:
        return float(config["delay_seconds"])

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        return object_of(
            {
                "delay_seconds": {
                    "type": "number",
                    "exclusiveMinimum": 0,
                    "maximum": context.limits.max_delay_seconds,
                    "description": "Seconds to wait before sending the message.",
                }
            },
            ["delay_seconds"],
        )

    def describe(self, config: Mapping[str, Any]) -> str:
        return f"a {config.get('delay_seconds')} s timer"

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        return CheckOutcome.met({"delay_seconds": job.check_config.get("delay_seconds")})


@hookimpl
def circleback_register_checkers(register: Callable[[Checker], None]) -> None:
    """Register the ``delay`` job type."""
    register(DelayChecker())
