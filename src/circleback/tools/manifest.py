"""The module manifest: what an agent platform shows its LLM about the scheduler tools.

The manifest is built from a running engine's plugins and limits, so the job
types, the completion modes, the ``check_config`` shape of every job type and
the bounds of every number are exactly the ones the engine accepts. Each tool
carries a JSON Schema (draft 2020-12) for its arguments, a description with
worked examples, and ``required_permission``.

Conventions every schema follows (and :mod:`circleback.tools.execute` enforces):

- no argument outside the schema is accepted (``additionalProperties: false``);
  in particular the caller's ``user_id``, ``platform``, ``platform_channel_id``,
  ``platform_thread_id`` and ``conversation_id`` come from the orchestrator's
  context and are refused inside the arguments;
- an optional argument given as ``null`` counts as not given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ..core.models import JobStatus
from ..core.registry import PluginRegistry
from ..core.settings import Limits, Settings
from ..core.validation import _MAX_BACKOFF

__all__ = [
    "ADD_JOB",
    "CANCEL_JOB",
    "CANCEL_WORKFLOW",
    "JSON_SCHEMA_DIALECT",
    "LIST_JOBS",
    "MODULE_NAME",
    "REQUIRED_PERMISSION",
    "TOOL_NAMES",
    "UUID_PATTERN",
    "build_manifest",
]

#: The module's name: tools are called ``scheduler.<tool>``.
MODULE_NAME: Final = "scheduler"
#: Every scheduler tool requires this permission of the caller.
REQUIRED_PERMISSION: Final = "admin"
#: The JSON Schema dialect of every ``parameters`` object.
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"

ADD_JOB: Final = "scheduler.add_job"
LIST_JOBS: Final = "scheduler.list_jobs"
CANCEL_JOB: Final = "scheduler.cancel_job"
CANCEL_WORKFLOW: Final = "scheduler.cancel_workflow"
#: The tools, in the order the manifest lists them.
TOOL_NAMES: Final = (ADD_JOB, LIST_JOBS, CANCEL_JOB, CANCEL_WORKFLOW)

#: A UUID in its canonical 8-4-4-4-12 hexadecimal form, the only form the tools take.
UUID_PATTERN: Final = (
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_EXAMPLE_WORKFLOW = "6f1c2b1e-8a4d-4c2b-9a51-3d0e7c9b2f10"
_EXAMPLE_JOB = "0b9e4a52-7d3c-4f1a-8e26-5c4b3a2d1e0f"

MODULE_DESCRIPTION: Final = (
    "Background jobs that watch something long-running and circle back when it is done. "
    "Use it after starting a build, a deployment or any slow task: add a job that checks "
    "the condition every interval_seconds (up to max_attempts times), and circleback "
    "sends the success message to the user (on_complete='notify') or resumes this "
    "conversation with it (on_complete='resume_conversation') so you can take the next "
    "step. When attempts run out, the failure message goes out instead. Group related "
    "jobs with one workflow_id to list or cancel them together. The user, platform, "
    "channel, thread and conversation are known from the context: never pass them."
)

# Worked examples of check_config per built-in job type; a job type without one here
# gets no add_job example (its schema still documents it).
_CHECK_CONFIG_EXAMPLES: Final[Mapping[str, tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "delay": (
        "Remind the user in 15 minutes.",
        {"delay_seconds": 900},
        {"on_success_message": "Reminder: the maintenance window starts now."},
    ),
    "poll_url": (
        "Tell the user when a service's health endpoint answers 200, checking every minute "
        "for at most an hour.",
        {"url": "https://status.example.com/api/health", "method": "GET",
         "expected_status": 200},
        {
            "on_success_message": "The service is healthy again.",
            "on_failure_message": "The service was still down after an hour.",
            "interval_seconds": 60,
            "max_attempts": 60,
        },
    ),
    "poll_module": (
        "Resume this conversation when the deployer reports the deployment as finished, "
        "as step 1 of a workflow.",
        {
            "module": "deployer",
            "tool": "deployer.status",
            "args": {"deployment_id": "dep-1234"},
            "success_field": "deployment.state",
            "success_values": ["succeeded"],
        },
        {
            "on_success_message": "Deployment dep-1234 finished: {result}",
            "on_complete": "resume_conversation",
            "workflow_id": _EXAMPLE_WORKFLOW,
            "interval_seconds": 30,
            "max_attempts": 120,
        },
    ),
}


def _optional(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` that also takes ``null`` (meaning: not given)."""
    result = dict(schema)
    kind = result.get("type")
    if isinstance(kind, str):
        result["type"] = [kind, "null"]
    if "enum" in result:
        result["enum"] = [*result["enum"], None]
    return result


def _text(max_chars: int, description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_chars,
        # At least one character that is not white space.
        "pattern": "\\S",
        "description": description,
    }


def _uuid(description: str) -> dict[str, Any]:
    return {"type": "string", "format": "uuid", "pattern": UUID_PATTERN,
            "description": description}


def _object(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "$schema": JSON_SCHEMA_DIALECT,
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _add_job_schema(plugins: PluginRegistry, limits: Limits) -> dict[str, Any]:
    job_types = sorted(plugins.checkers)
    modes = sorted(plugins.notifiers)
    per_type = "; ".join(
        f"{name}: {plugins.checkers[name].description or 'see the schema'}" for name in job_types
    )
    per_mode = "; ".join(
        f"{name}: {plugins.notifiers[name].description or name}" for name in modes
    )
    properties: dict[str, Any] = {
        "job_type": {
            "type": "string",
            "enum": job_types,
            "description": f"What to watch. {per_type}",
        },
        "check_config": {
            "type": "object",
            "description": (
                "The condition's settings; their shape depends on job_type (see the "
                f"conditional schemas below). At most {limits.max_check_config_bytes} bytes "
                "as JSON."
            ),
        },
        "on_success_message": _text(
            limits.max_message_chars,
            "Sent when the condition is met. {result} is replaced by the check's result "
            "(as text, shortened), {job_id} and {workflow_id} by the ids; no other "
            "placeholders exist. Must not contain NUL characters.",
        ),
        "on_failure_message": _optional(
            _text(
                limits.max_message_chars,
                "Sent when the job gives up (max_attempts checks without success). "
                "Same placeholders as on_success_message. Default: a message naming the "
                "job and its last error.",
            )
        ),
        "on_complete": _optional(
            {
                "type": "string",
                "enum": modes,
                "default": "notify",
                "description": f"What to do with the message. {per_mode}",
            }
        ),
        "workflow_id": _optional(
            _uuid(
                "Groups related jobs (a plain UUID you choose), so that list_jobs and "
                "cancel_workflow can act on them together."
            )
        ),
        "interval_seconds": _optional(
            {
                "type": "number",
                "minimum": limits.min_interval_seconds,
                "maximum": limits.max_interval_seconds,
                "default": 30,
                "description": "Seconds between checks of a poll (the first check is "
                "immediate).",
            }
        ),
        "max_attempts": _optional(
            {
                "type": "integer",
                "minimum": 1,
                "maximum": limits.max_attempts,
                "default": 120,
                "description": "Checks before the job gives up and fails (120 checks at 30 s "
                "is about an hour).",
            }
        ),
        "backoff": _optional(
            {
                "type": "number",
                "minimum": 1,
                "maximum": _MAX_BACKOFF,
                "default": 1,
                "description": "Multiply the interval by this after every unmet check "
                "(1: a fixed interval).",
            }
        ),
        "max_interval_seconds": _optional(
            {
                "type": "number",
                "minimum": limits.min_interval_seconds,
                "maximum": limits.max_interval_seconds,
                "description": "Upper bound of the backed-off interval; at least "
                "interval_seconds.",
            }
        ),
    }
    schema = _object(properties, ["job_type", "check_config", "on_success_message"])
    schema["allOf"] = [
        {
            "if": {"properties": {"job_type": {"const": name}}, "required": ["job_type"]},
            "then": {"properties": {"check_config": plugins.checkers[name].config_schema()}},
        }
        for name in job_types
    ]
    return schema


def _list_jobs_schema(limits: Limits) -> dict[str, Any]:
    return _object(
        {
            "status_filter": _optional(
                {
                    "type": "string",
                    "enum": [status.value for status in JobStatus],
                    "description": "Only jobs in this state; all of them when not given.",
                }
            ),
            "workflow_id": _optional(_uuid("Only the jobs of this workflow.")),
            "limit": _optional(
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": limits.max_list_results,
                    "default": limits.max_list_results,
                    "description": "At most this many jobs, newest first.",
                }
            ),
        },
        [],
    )


def _examples(plugins: PluginRegistry) -> dict[str, list[dict[str, Any]]]:
    add_examples = []
    for job_type, (summary, config, extra) in _CHECK_CONFIG_EXAMPLES.items():
        if job_type in plugins.checkers:
            arguments = {"job_type": job_type, "check_config": config, **extra}
            if arguments.get("on_complete", "notify") in plugins.notifiers:
                add_examples.append({"summary": summary, "arguments": arguments})
    return {
        ADD_JOB: add_examples,
        LIST_JOBS: [
            {"summary": "Show every job of this user.", "arguments": {}},
            {"summary": "Show the jobs still being watched.",
             "arguments": {"status_filter": "active"}},
            {"summary": "Show the jobs of one workflow.",
             "arguments": {"workflow_id": _EXAMPLE_WORKFLOW}},
        ],
        CANCEL_JOB: [
            {"summary": "Stop watching one job.", "arguments": {"job_id": _EXAMPLE_JOB}},
        ],
        CANCEL_WORKFLOW: [
            {"summary": "Stop every active job of a workflow.",
             "arguments": {"workflow_id": _EXAMPLE_WORKFLOW}},
        ],
    }


_DESCRIPTIONS: Final[Mapping[str, str]] = {
    ADD_JOB: (
        "Schedule a background job that checks a condition every interval_seconds and, "
        "when it is met, sends on_success_message (on_complete='notify') or resumes this "
        "conversation with it (on_complete='resume_conversation'). After max_attempts "
        "unmet checks the job fails and on_failure_message is sent. Answers the new job "
        "with its id; keep the id to cancel it."
    ),
    LIST_JOBS: (
        "List this user's jobs, newest first, optionally only those in one state "
        "(active, completed, failed, cancelled) or one workflow. Each job shows its id, "
        "type, status, attempts, next check, last result or error, and workflow."
    ),
    CANCEL_JOB: (
        "Cancel one active job by its id; nothing is sent for a cancelled job. A job that "
        "has already finished is answered unchanged (its status says how it ended)."
    ),
    CANCEL_WORKFLOW: (
        "Cancel every active job of a workflow; answers the jobs that were cancelled."
    ),
}


def _describe(tool: str, examples: list[dict[str, Any]]) -> str:
    lines = [_DESCRIPTIONS[tool]]
    if examples:
        lines.append("")
        lines.append("Examples:")
        for example in examples:
            arguments = json.dumps(example["arguments"], separators=(", ", ": "))
            lines.append(f"- {example['summary']} {arguments}")
    return "\n".join(lines)


def build_manifest(plugins: PluginRegistry, settings: Settings) -> dict[str, Any]:
    """The manifest for an engine with these plugins and settings (plain JSON data).

    ``{"name", "description", "tools": [{"name", "description", "parameters",
    "required_permission", "examples"}]}``, where ``parameters`` is a JSON Schema
    (draft 2020-12) and each example is ``{"summary", "arguments"}``.
    """
    limits = settings.limits
    schemas = {
        ADD_JOB: _add_job_schema(plugins, limits),
        LIST_JOBS: _list_jobs_schema(limits),
        CANCEL_JOB: _object(
            {"job_id": _uuid("The id of the job, as add_job or list_jobs answered it.")},
            ["job_id"],
        ),
        CANCEL_WORKFLOW: _object(
            {"workflow_id": _uuid("The workflow_id the jobs were added with.")},
            ["workflow_id"],
        ),
    }
    examples = _examples(plugins)
    return {
        "name": MODULE_NAME,
        "description": MODULE_DESCRIPTION,
        "tools": [
            {
                "name": tool,
                "description": _describe(tool, examples[tool]),
                "parameters": schemas[tool],
                "required_permission": REQUIRED_PERMISSION,
                "examples": examples[tool],
            }
            for tool in TOOL_NAMES
        ],
    }
