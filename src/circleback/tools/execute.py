"""Running one tool call: check it, act as the caller, answer JSON.

:meth:`SchedulerTools.execute` takes the call exactly as an orchestrator
forwards it — the tool name, the LLM's arguments, and the context the
orchestrator injects — and always answers a JSON-able object:

- ``{"ok": true, "result": {...}}``, or
- ``{"ok": false, "error": {"code", "message", "field"}}``.

It never raises for bad input. The order of checks is: the tool name
(``unknown_tool``), the context and its ``permission`` (``forbidden`` unless
``admin``), the caller ids in the context, then the arguments against the
rulebook (:mod:`circleback.core.rulebook`: ``invalid`` or one of the codes of
the rules a schema cannot state, naming the field). Nothing is written unless
every check passed.

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
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from ..core import rulebook as verbs
from ..core.errors import CirclebackError, PermissionDenied, UnknownTool, ValidationError
from ..core.models import Caller
from ..core.registry import PluginRegistry
from ..core.rulebook import CONTEXT_FIELDS
from ..core.schema_errors import describe_kind, field_name
from ..core.settings import Settings
from ..core.validation import validate_caller
from ..core.views import job_view
from ..engine.scheduler import Scheduler
from .exports import anthropic_tools, openai_tools, tool_name
from .manifest import (
    ADD_JOB,
    CANCEL_JOB,
    CANCEL_WORKFLOW,
    LIST_JOBS,
    REQUIRED_PERMISSION,
    TOOL_NAMES,
    build_manifest,
)

if TYPE_CHECKING:
    from ..engine.engine import Engine

__all__ = ["CONTEXT_FIELDS", "SchedulerTools", "UnknownTool", "job_view"]

logger = logging.getLogger("circleback.tools")

Handler = Callable[[Caller, Any], Awaitable[dict[str, Any]]]


def _error(exc: CirclebackError) -> dict[str, Any]:
    error = exc.to_dict()
    if isinstance(exc, PermissionDenied) and error["field"] is None:
        error["field"] = "context.permission"
    return {"ok": False, "error": error}


class SchedulerTools:
    """The four scheduler tools over one :class:`~circleback.Scheduler` facade.

    Build it with :meth:`for_engine` from a running engine. :attr:`manifest`
    describes the tools; :meth:`openai_tools` and :meth:`anthropic_tools` give them
    in the shapes those clients take; :meth:`execute` runs one call (see the module
    docstring).
    """

    def __init__(
        self, *, scheduler: Scheduler, plugins: PluginRegistry, settings: Settings
    ) -> None:
        self._scheduler = scheduler
        self._rules = scheduler.rulebook
        self._limits = settings.limits
        self._manifest = build_manifest(plugins, settings, self._rules)
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

    def openai_tools(
        self, *, api: Literal["chat", "responses"] = "chat"
    ) -> list[dict[str, Any]]:
        """The tools as OpenAI-style function tools, named as :meth:`tool_name` reads them.

        ``api="chat"`` gives the Chat Completions shape
        ``{"type": "function", "function": {"name", "description", "parameters"}}``;
        ``api="responses"`` the flat Responses shape
        ``{"type": "function", "name", "description", "parameters"}``.
        """
        return openai_tools(self._manifest, api=api)

    def anthropic_tools(self) -> list[dict[str, Any]]:
        """The tools as Anthropic-style tools: ``{"name", "description", "input_schema"}``."""
        return anthropic_tools(self._manifest)

    @staticmethod
    def tool_name(exported: str) -> str:
        """The name :meth:`execute` takes for an exported one.

        Those APIs allow no dots in names, so ``scheduler.add_job`` is exported
        as ``scheduler__add_job``; a dotted name is returned as it is.
        """
        return tool_name(exported)

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
                shown = field_name(tool) if isinstance(tool, str) else describe_kind(tool)
                raise UnknownTool(f"unknown tool {shown!r}; the tools are {known}")
            caller = self._caller(tool, context)
            result = await self._handlers[tool](caller, {} if arguments is None else arguments)
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
            raise ValidationError("context", f"must be an object, not {describe_kind(context)}")
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

    # -- the tools ---------------------------------------------------------------------------

    async def _add_job(self, caller: Caller, arguments: Any) -> dict[str, Any]:
        job = await self._scheduler.add_job(caller, arguments)
        return {"job": job_view(job, self._limits)}

    async def _list_jobs(self, caller: Caller, arguments: Any) -> dict[str, Any]:
        checked = self._rules.arguments(verbs.LIST_JOBS, arguments)
        workflow = checked.get("workflow_id")
        limit: int = checked.get("limit", self._limits.max_list_results)
        found = await self._scheduler.list_jobs(
            caller,
            status=checked.get("status_filter"),
            workflow_id=uuid.UUID(workflow) if workflow is not None else None,
            limit=limit,
        )
        return {
            "jobs": [job_view(job, self._limits) for job in found],
            "count": len(found),
            "limit": limit,
        }

    async def _cancel_job(self, caller: Caller, arguments: Any) -> dict[str, Any]:
        checked = self._rules.arguments(verbs.CANCEL_JOB, arguments)
        job = await self._scheduler.cancel_job(caller, uuid.UUID(checked["job_id"]))
        return {"job": job_view(job, self._limits)}

    async def _cancel_workflow(self, caller: Caller, arguments: Any) -> dict[str, Any]:
        checked = self._rules.arguments(verbs.CANCEL_WORKFLOW, arguments)
        workflow_id = uuid.UUID(checked["workflow_id"])
        cancelled = await self._scheduler.cancel_workflow(caller, workflow_id)
        return {
            "workflow_id": str(workflow_id),
            "cancelled": [job_view(job, self._limits) for job in cancelled],
            "count": len(cancelled),
        }
