"""The agent's tools: the ``scheduler`` module manifest, tool execution, and their exports.

An orchestrator that embeds the engine uses :class:`SchedulerTools`::

    async with circleback.Engine() as engine:
        tools = SchedulerTools.for_engine(engine)
        manifest = tools.manifest                        # name, description, tools
        answer = await tools.execute("scheduler.list_jobs", {}, context)

``tools.openai_tools()`` and ``tools.anthropic_tools()`` give the same tools
in the shapes those clients take (:mod:`.exports`), and
``SchedulerTools.tool_name()`` maps their names back. ``circleback serve`` puts all of it
behind HTTP (see :mod:`circleback.service.app` and :mod:`circleback.service.serve`,
which import the HTTP stack only when used).
"""

from __future__ import annotations

from .execute import CONTEXT_FIELDS, SchedulerTools, UnknownTool, job_view
from .exports import anthropic_tools, exported_name, openai_tools, tool_name
from .manifest import (
    ADD_JOB,
    CANCEL_JOB,
    CANCEL_WORKFLOW,
    LIST_JOBS,
    MODULE_NAME,
    REQUIRED_PERMISSION,
    TOOL_NAMES,
    build_manifest,
)

__all__ = [
    "ADD_JOB",
    "CANCEL_JOB",
    "CANCEL_WORKFLOW",
    "CONTEXT_FIELDS",
    "LIST_JOBS",
    "MODULE_NAME",
    "REQUIRED_PERMISSION",
    "TOOL_NAMES",
    "SchedulerTools",
    "UnknownTool",
    "anthropic_tools",
    "build_manifest",
    "exported_name",
    "job_view",
    "openai_tools",
    "tool_name",
]
