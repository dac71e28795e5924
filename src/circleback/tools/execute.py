"""Running one tool call: check it, act as the caller, answer JSON.

:meth:`SchedulerTools.execute` takes the call exactly as an orchestrator
forwards it — the tool name, the LLM's arguments, and the context the
orchestrator injects — and always answers a JSON-able object:

- ``{"ok": true, "result": {...}}``, or
- ``{"ok": false, "error": {"code", "message", "field"}}``.

It never raises for bad input. The order of checks is: the tool name
(``unknown_tool``), the context and its ``permission`` (``forbidden`` unless
``admin``), the caller ids in the context, then the arguments (``invalid``,
naming the field). Nothing is written unless every check passed.

The caller is taken from the context only. The caller keys (``user_id``,
``platform``, ``platform_channel_id``, ``platform_thread_id``,
``conversation_id``, and ``permission``) inside the arguments are refused with
an ``invalid`` error naming the key, for every tool — never silently dropped,
so a confused or manipulated LLM learns that it cannot act as someone else.
Extra keys in the context are ignored: the context comes from the trusted
orchestrator, which may know more about the caller than circleback needs.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..core.errors import CirclebackError, PermissionDenied, UnknownTool, ValidationError
from ..core.models import Caller, Job, JobStatus
from ..core.registry import PluginRegistry
from ..core.rendering import render_result, wrap_untrusted
from ..core.settings import Limits, Settings
from ..core.validation import CALLER_FIELDS, require_number, validate_caller
from ..engine.scheduler import Scheduler
from .manifest import (
    ADD_JOB,
    CANCEL_JOB,
    CANCEL_WORKFLOW,
    LIST_JOBS,
    REQUIRED_PERMISSION,
    TOOL_NAMES,
    UUID_PATTERN,
    build_manifest,
)

if TYPE_CHECKING:
    from ..engine.engine import Engine

__all__ = ["CONTEXT_FIELDS", "SchedulerTools", "UnknownTool", "job_view"]

logger = logging.getLogger("circleback.tools")

#: What the orchestrator puts in the context; none of it is accepted as an argument.
CONTEXT_FIELDS = frozenset(CALLER_FIELDS | {"permission"})

_UUID = re.compile(UUID_PATTERN.strip("^$"))
_MAX_FIELD_CHARS = 80

Arguments = dict[str, Any]
Handler = Callable[[Caller, Arguments], Awaitable[dict[str, Any]]]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def _field_name(key: str) -> str:
    """A key as it may appear in an error: printable, and cut when absurdly long."""
    shown = key if key.isprintable() else repr(key)[1:-1]
    if len(shown) > _MAX_FIELD_CHARS:
        shown = shown[:_MAX_FIELD_CHARS] + "…"
    return shown


def _uuid_argument(value: Any, field: str) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a UUID string, not {_kind(value)}")
    if len(value) != 36 or not _UUID.fullmatch(value):
        raise ValidationError(
            field, "must be a UUID in the form 0b9e4a52-7d3c-4f1a-8e26-5c4b3a2d1e0f"
        )
    return uuid.UUID(value)


def job_view(job: Job, limits: Limits) -> dict[str, Any]:
    """A job as its user (and their LLM) should see it.

    ``last_result`` and ``last_error`` come from the checked system: they are
    rendered as text, cut to ``limits.max_result_chars`` and marked as
    untrusted data. The caller ids are left out: the caller knows them.
    """

    def untrusted(value: Any) -> str | None:
        if value is None:
            return None
        return wrap_untrusted(render_result(value, limit=limits.max_result_chars))

    active = job.status is JobStatus.ACTIVE
    return {
        "id": str(job.id),
        "job_type": job.job_type,
        "status": job.status.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "interval_seconds": job.interval_seconds,
        "next_check_at": job.next_run_at.isoformat() if active else None,
        "last_checked_at": job.last_checked_at.isoformat() if job.last_checked_at else None,
        "last_result": untrusted(job.last_result),
        "last_error": untrusted(job.last_error),
        "workflow_id": str(job.workflow_id) if job.workflow_id else None,
        "on_complete": job.on_complete,
        "check_config": job.check_config,
        "on_success_message": job.on_success_message,
        "on_failure_message": job.on_failure_message,
        "created_at": job.created_at.isoformat(),
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
    }


def _error(exc: CirclebackError) -> dict[str, Any]:
    error = exc.to_dict()
    if isinstance(exc, PermissionDenied) and error["field"] is None:
        error["field"] = "context.permission"
    return {"ok": False, "error": error}


class SchedulerTools:
    """The four scheduler tools over one :class:`~circleback.Scheduler` facade.

    Build it with :meth:`for_engine` from a running engine. :attr:`manifest`
    describes the tools; :meth:`execute` runs one call (see the module docstring).
    """

    def __init__(
        self, *, scheduler: Scheduler, plugins: PluginRegistry, settings: Settings
    ) -> None:
        self._scheduler = scheduler
        self._limits = settings.limits
        self._manifest = build_manifest(plugins, settings)
        self._parameters = {tool["name"]: tool["parameters"] for tool in self._manifest["tools"]}
        self._handlers: dict[str, Handler] = {
            ADD_JOB: self._add_job,
            LIST_JOBS: self._list_jobs,
            CANCEL_JOB: self._cancel_job,
            CANCEL_WORKFLOW: self._cancel_workflow,
        }

    @classmethod
    def for_engine(cls, engine: Engine) -> SchedulerTools:
        """The tools of a running engine (inside ``async with engine``)."""
        return cls(scheduler=engine.scheduler, plugins=engine.plugins, settings=engine.settings)

    @property
    def manifest(self) -> dict[str, Any]:
        """The module manifest (a fresh copy, so callers may change it)."""
        return copy.deepcopy(self._manifest)

    async def execute(self, tool: Any, arguments: Any, context: Any) -> dict[str, Any]:
        """Run one tool call and answer ``{"ok": true, "result"}`` or ``{"ok": false, "error"}``.

        :param tool: the tool's name, such as ``"scheduler.add_job"``.
        :param arguments: the LLM's arguments (an object; ``None`` counts as ``{}``).
        :param context: the orchestrator's context: ``user_id``, ``platform``,
            ``platform_channel_id``, ``platform_thread_id``, ``conversation_id``
            and ``permission``.
        """
        try:
            if not isinstance(tool, str) or tool not in self._handlers:
                known = ", ".join(TOOL_NAMES)
                shown = _field_name(tool) if isinstance(tool, str) else _kind(tool)
                raise UnknownTool(f"unknown tool {shown!r}; the tools are {known}")
            caller = self._caller(tool, context)
            checked = self._arguments(tool, arguments)
            result = await self._handlers[tool](caller, checked)
        except CirclebackError as exc:
            return _error(exc)
        except Exception:
            logger.exception("tool %s failed unexpectedly", tool)
            return {
                "ok": False,
                "error": {
                    "code": "internal",
                    "message": "the scheduler failed unexpectedly; the operator's log has "
                    "the details",
                    "field": None,
                },
            }
        return {"ok": True, "result": result}

    # -- checks ------------------------------------------------------------------------------

    @staticmethod
    def _caller(tool: str, context: Any) -> Caller:
        if context is None:
            raise ValidationError("context", "is required: the orchestrator passes the caller")
        if not isinstance(context, Mapping):
            raise ValidationError("context", f"must be an object, not {_kind(context)}")
        if context.get("permission") != REQUIRED_PERMISSION:
            raise PermissionDenied(
                f"{tool} requires the {REQUIRED_PERMISSION!r} permission, which this caller "
                "does not have"
            )
        for field in ("user_id", "platform"):
            if context.get(field) is None:
                raise ValidationError(f"context.{field}", "is required")
        caller = Caller(
            user_id=context["user_id"],
            platform=context["platform"],
            platform_channel_id=context.get("platform_channel_id"),
            platform_thread_id=context.get("platform_thread_id"),
            conversation_id=context.get("conversation_id"),
        )
        return validate_caller(caller)

    def _arguments(self, tool: str, arguments: Any) -> Arguments:
        """Refuse unknown and context keys, insist on required ones, drop optional nulls."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise ValidationError("arguments", f"must be an object, not {_kind(arguments)}")
        schema = self._parameters[tool]
        allowed: dict[str, Any] = schema["properties"]
        required: list[str] = schema["required"]
        checked: Arguments = {}
        for key, value in arguments.items():
            if not isinstance(key, str):
                raise ValidationError("arguments", "keys must be strings")
            if key in CONTEXT_FIELDS:
                raise ValidationError(
                    key, "is set from the caller's context and cannot be given as an argument"
                )
            if not key:
                raise ValidationError("arguments", "an argument name must not be empty")
            if key not in allowed:
                raise ValidationError(
                    _field_name(key),
                    f"is not an argument of {tool}; it takes {', '.join(allowed)}",
                )
            if value is None and key not in required:
                continue
            checked[key] = value
        for key in required:
            if key not in checked:
                raise ValidationError(key, "is required")
        return checked

    # -- the tools ---------------------------------------------------------------------------

    async def _add_job(self, caller: Caller, arguments: Arguments) -> dict[str, Any]:
        if "workflow_id" in arguments:
            _uuid_argument(arguments["workflow_id"], "workflow_id")
        job = await self._scheduler.add_job(caller, arguments)
        return {"job": job_view(job, self._limits)}

    async def _list_jobs(self, caller: Caller, arguments: Arguments) -> dict[str, Any]:
        status = arguments.get("status_filter")
        if status is not None:
            known = [member.value for member in JobStatus]
            if not isinstance(status, str) or status not in known:
                raise ValidationError("status_filter", f"must be one of {', '.join(known)}")
        workflow = arguments.get("workflow_id")
        if workflow is not None:
            workflow = _uuid_argument(workflow, "workflow_id")
        most = self._limits.max_list_results
        limit = int(
            require_number(
                arguments.get("limit", most), "limit", integer=True, minimum=1, maximum=most
            )
        )
        found = await self._scheduler.list_jobs(
            caller, status=status, workflow_id=workflow, limit=limit
        )
        return {
            "jobs": [job_view(job, self._limits) for job in found],
            "count": len(found),
            "limit": limit,
        }

    async def _cancel_job(self, caller: Caller, arguments: Arguments) -> dict[str, Any]:
        job_id = _uuid_argument(arguments["job_id"], "job_id")
        job = await self._scheduler.cancel_job(caller, job_id)
        return {"job": job_view(job, self._limits)}

    async def _cancel_workflow(self, caller: Caller, arguments: Arguments) -> dict[str, Any]:
        workflow_id = _uuid_argument(arguments["workflow_id"], "workflow_id")
        cancelled = await self._scheduler.cancel_workflow(caller, workflow_id)
        return {
            "workflow_id": str(workflow_id),
            "cancelled": [job_view(job, self._limits) for job in cancelled],
            "count": len(cancelled),
        }
