"""``poll_module``: call another module's tool every interval until a field of its result says done.

``check_config``::

    {"module": "deployer",                   # one of Settings.modules (CIRCLEBACK_MODULES)
     "tool": "deployer.task_status",         # the tool's name as the module's manifest gives it
     "args": {"task_id": "t-42"},            # its arguments (optional; null or absent: {})
     "success_field": "task_status",         # dotted path into the tool's result
     "success_values": ["completed"],        # values that complete the job
     "failure_field": "task_status",         # optional; defaults to success_field
     "failure_values": ["failed"]}           # optional: values that fail the job at once

The tool is reached through a :class:`~circleback.ModuleCaller` that the
``circleback_module_caller`` hook hands over (first non-None answer wins). The
default, :class:`HttpModuleCaller`, speaks the module protocol of the tool
service: ``POST {module_url}/execute`` with ``{"tool", "arguments", "context"}``,
the context being the job's caller (the call acts as the job's user, never as
the scheduler), and reads ``{"ok": true, "result": ...}`` or ``{"ok": false,
"error": {"code", "message"}}``.

An unconfigured module, an unreachable one, a tool error or a missing field is
"not yet" with a clear last error; a module name that is not configured at all
is refused when the job is added. The tool's result is handed to ``{result}``.

httpx and the HTTP client module are imported at the first call of a module's
tool, so an engine whose jobs never poll a module does not load them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from ..core.abc import (
    Checker,
    ModuleCaller,
    ModuleCallFailed,
    Runtime,
    ValidationContext,
)
from ..core.dotted import (
    FieldMissing,
    as_values,
    describe_value,
    lookup,
    matches,
    path_schema,
    values_schema,
)
from ..core.errors import ConfigurationError, ConflictingValues, PluginError
from ..core.hookspecs import hookimpl
from ..core.models import Caller, CheckOutcome, Job
from ..core.schema import ERROR_MESSAGE, needs, object_of
from ..core.settings import Settings
from ..core.validation import CALLER_FIELDS

if TYPE_CHECKING:
    import httpx

__all__ = ["HttpModuleCaller", "PollModuleChecker"]

_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$")
#: Tools of the scheduler itself: a poll must not add or cancel jobs on every interval.
_OWN_TOOL_PREFIX = "scheduler."


class HttpModuleCaller(ModuleCaller):
    """Calls a module's tool over HTTP: ``POST {module_url}/execute`` (the module protocol).

    Module URLs come from ``Settings.modules``; they are the operator's, so
    unlike ``poll_url`` they may be internal addresses. Answers are read up to
    ``Settings.http.max_response_bytes``, under the HTTP timeouts.
    """

    #: The permission the call carries: a poll reads status, it never acts with the
    #: ``admin`` rights that scheduling it required.
    permission: ClassVar[str] = "user"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: httpx.AsyncClient | None = None
        for name, base in settings.modules.items():
            if not base.lower().startswith(("http://", "https://")):
                raise ConfigurationError(
                    f"module {name!r} has the URL {base!r}; module URLs must be http or https"
                )

    def _http(self) -> httpx.AsyncClient:
        """The client, made on first use (nothing awaits between the test and the assignment)."""
        if self._client is None:
            from ..net.httpclient import make_http_client

            self._client = make_http_client(self._settings.http)
        return self._client

    async def call(
        self, module: str, tool: str, arguments: Mapping[str, Any], caller: Caller
    ) -> Any:
        base = self._settings.modules.get(module)
        if base is None:
            raise ModuleCallFailed(f"module {module!r} is not configured", code="not_configured")
        payload = {
            "tool": tool,
            "arguments": dict(arguments),
            "context": {
                "user_id": caller.user_id,
                "platform": caller.platform,
                "platform_channel_id": caller.platform_channel_id,
                "platform_thread_id": caller.platform_thread_id,
                "conversation_id": caller.conversation_id,
                "permission": self.permission,
            },
        }
        import httpx

        from ..net.httpclient import read_capped

        limit = self._settings.http.max_response_bytes
        url = base.rstrip("/") + "/execute"
        try:
            async with self._http().stream("POST", url, json=payload) as response:
                body, truncated = await read_capped(response, limit)
                status = response.status_code
        except httpx.TimeoutException:
            raise ModuleCallFailed(
                f"module {module!r} did not answer in time", code="timeout"
            ) from None
        except httpx.HTTPError as exc:
            detail = str(exc) or type(exc).__name__
            raise ModuleCallFailed(
                f"module {module!r} is unreachable: {detail}", code="unreachable"
            ) from None
        if truncated:
            raise ModuleCallFailed(
                f"module {module!r} answered with more than {limit} bytes", code="too_large"
            )
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            raise ModuleCallFailed(
                f"module {module!r} answered HTTP {status} without a module protocol answer",
                code="bad_answer",
            )
        if answer["ok"]:
            return answer.get("result")
        error = answer.get("error")
        error = error if isinstance(error, dict) else {}
        code = str(error.get("code") or "error")[:64]
        message = str(error.get("message") or "no message")[:500]
        raise ModuleCallFailed(f"tool {tool} failed ({code}): {message}", code="tool_error")

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


class PollModuleChecker(Checker):
    """Calls a module's tool each interval; done when a field of its result has a given value."""

    job_type = "poll_module"
    description = (
        "Call another module's tool every interval until a field of its result has one of "
        "the success values (or one of the failure values, which fails the job at once)."
    )

    def __init__(self) -> None:
        self._caller: ModuleCaller | None = None

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        configured = sorted(context.settings.modules)
        known = ", ".join(configured) or "none are configured"
        values = values_schema
        return object_of(
            {
                "module": {
                    "type": "string",
                    "enum": configured,
                    ERROR_MESSAGE: {"enum": f"is not a configured module ({known})"},
                    "description": "The module to call, one of those configured.",
                },
                "tool": {
                    "type": "string",
                    "maxLength": 128,
                    "allOf": [
                        {"pattern": _NAME.pattern,
                         ERROR_MESSAGE: "must be a tool name such as 'deployer.task_status'"},
                        {"not": {"pattern": f"^{re.escape(_OWN_TOOL_PREFIX)}"},
                         ERROR_MESSAGE: "a poll may not call the scheduler's own tools"},
                    ],
                    "description": "The tool's name, as in 'deployer.task_status'; not one of "
                    "the scheduler's own tools.",
                },
                "args": {
                    "type": ["object", "null"],
                    "propertyNames": {
                        "not": {"enum": sorted(CALLER_FIELDS)},
                        ERROR_MESSAGE: "comes from the job's caller context and cannot be given",
                    },
                    "description": "The tool's arguments (without user or channel ids: the "
                    "call carries the job's own context); null or left out means none.",
                },
                "success_field": path_schema(
                    "Dotted path into the tool's result, such as 'status' or 'items.0.state'.",
                ),
                "success_values": values("Values of success_field that complete the job."),
                "failure_field": path_schema(
                    "Dotted path checked for failure_values; defaults to success_field.",
                ),
                "failure_values": values(
                    "Values that fail the job at once; none of them may also be a success "
                    "value of the same field."
                ),
            },
            ["module", "tool", "success_field", "success_values"],
            allOf=[needs("failure_field", "failure_values")],
        )

    def refine_config(
        self, config: dict[str, Any], context: ValidationContext
    ) -> dict[str, Any]:
        """Fill in ``args`` and ``failure_field``, make every value list a list.

        The rule a schema cannot state: a failure value that is also a success
        value of the same field (``conflict``).
        """
        normal: dict[str, Any] = {
            "module": config["module"],
            "tool": config["tool"],
            "args": dict(config.get("args") or {}),
            "success_field": config["success_field"],
            "success_values": as_values(config["success_values"]),
        }
        if "failure_values" in config:
            normal["failure_field"] = config.get("failure_field", normal["success_field"])
            normal["failure_values"] = as_values(config["failure_values"])
            if normal["failure_field"] == normal["success_field"]:
                successes = normal["success_values"]
                overlap = [v for v in normal["failure_values"] if matches(v, successes)]
                if overlap:
                    raise ConflictingValues(
                        "failure_values",
                        f"{describe_value(overlap[0])} is also a success value",
                    )
        return normal

    def describe(self, config: Mapping[str, Any]) -> str:
        return (
            f"{config.get('module')} tool {config.get('tool')} (waiting for "
            f"{config.get('success_field')} in {describe_value(config.get('success_values'))})"
        )

    async def start(self, runtime: Runtime) -> None:
        caller = runtime.plugins.hook.circleback_module_caller(settings=runtime.settings)
        if not isinstance(caller, ModuleCaller):
            raise PluginError(
                f"circleback_module_caller returned {type(caller).__name__}, not a ModuleCaller"
            )
        self._caller = caller

    async def stop(self) -> None:
        caller, self._caller = self._caller, None
        if caller is not None:
            await caller.aclose()

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        caller = self._caller
        if caller is None:
            return CheckOutcome.not_yet("poll_module is not running (its engine did not start it)")
        config = job.check_config
        try:
            result = await caller.call(config["module"], config["tool"], config["args"], job.caller)
        except ModuleCallFailed as exc:
            return CheckOutcome.not_yet(exc.reason)
        success_field: str = config["success_field"]
        missing: str | None = None
        value: Any = None
        try:
            value = lookup(result, success_field)
        except FieldMissing as exc:
            missing = str(exc)
        else:
            if matches(value, config["success_values"]):
                return CheckOutcome.met(result)
        if "failure_values" in config:
            failure_field: str = config["failure_field"]
            try:
                failed_value = lookup(result, failure_field)
            except FieldMissing:
                pass
            else:
                if matches(failed_value, config["failure_values"]):
                    return CheckOutcome.failed(
                        f"{failure_field} is {describe_value(failed_value)}", result
                    )
        if missing is not None:
            return CheckOutcome.not_yet(f"success_field {success_field} is missing: {missing}",
                                        result)
        return CheckOutcome.not_yet(
            f"{success_field} is {describe_value(value)}, waiting for one of "
            f"{describe_value(config['success_values'])}",
            result,
        )


@hookimpl
def circleback_register_checkers(register: Callable[[Checker], None]) -> None:
    """Register the ``poll_module`` job type."""
    register(PollModuleChecker())


@hookimpl(trylast=True)
def circleback_module_caller(settings: Settings) -> ModuleCaller:
    """The default way to call a module's tool: HTTP, as :class:`HttpModuleCaller`."""
    return HttpModuleCaller(settings)
