"""The module manifest: what an agent platform shows its LLM about the scheduler tools.

Each tool carries the JSON Schema (draft 2020-12) of its arguments, taken from
the engine's :class:`~circleback.core.rulebook.Rulebook` (the very schema its
calls are checked against), a description with worked examples, and
``required_permission``.

Conventions every schema follows:

- no argument outside the schema is accepted (``additionalProperties: false``);
  in particular the caller's ``user_id``, ``platform``, ``platform_channel_id``,
  ``platform_thread_id`` and ``conversation_id`` come from the orchestrator's
  context and are refused inside the arguments;
- an optional argument given as ``null`` counts as not given.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any, Final

from ..core import rulebook as verbs
from ..core.registry import PluginRegistry
from ..core.rulebook import Rulebook
from ..core.schema import JSON_SCHEMA_DIALECT, UUID_PATTERN
from ..core.settings import Settings

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
    "VERB_OF",
    "build_manifest",
    "check_config_example",
]

#: The module's name: tools are called ``scheduler.<tool>``.
MODULE_NAME: Final = "scheduler"
#: Every scheduler tool requires this permission of the caller.
REQUIRED_PERMISSION: Final = "admin"
ADD_JOB: Final = f"{MODULE_NAME}.{verbs.ADD_JOB}"
LIST_JOBS: Final = f"{MODULE_NAME}.{verbs.LIST_JOBS}"
CANCEL_JOB: Final = f"{MODULE_NAME}.{verbs.CANCEL_JOB}"
CANCEL_WORKFLOW: Final = f"{MODULE_NAME}.{verbs.CANCEL_WORKFLOW}"
#: The tools, in the order the manifest lists them.
TOOL_NAMES: Final = (ADD_JOB, LIST_JOBS, CANCEL_JOB, CANCEL_WORKFLOW)
#: The rulebook's verb behind each tool.
VERB_OF: Final[Mapping[str, str]] = dict(zip(TOOL_NAMES, verbs.VERBS, strict=True))
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


def _examples(plugins: PluginRegistry, settings: Settings) -> dict[str, list[dict[str, Any]]]:
    add_examples = []
    for job_type, (summary, config, extra) in _CHECK_CONFIG_EXAMPLES.items():
        if "module" in config and config["module"] not in settings.modules:
            continue  # an example the engine would refuse teaches the wrong thing
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


def build_manifest(
    plugins: PluginRegistry, settings: Settings, rulebook: Rulebook | None = None
) -> dict[str, Any]:
    """The manifest for an engine with these plugins and settings (plain JSON data).

    ``{"name", "description", "tools": [{"name", "description", "parameters",
    "required_permission", "examples"}]}``, where ``parameters`` is the
    rulebook's JSON Schema (draft 2020-12) of the tool's arguments and each
    example is ``{"summary", "arguments"}``.
    """
    rules = rulebook if rulebook is not None else Rulebook(plugins, settings)
    examples = _examples(plugins, settings)
    return {
        "name": MODULE_NAME,
        "description": MODULE_DESCRIPTION,
        "tools": [
            {
                "name": tool,
                "description": _describe(tool, examples[tool]),
                "parameters": rules.schema(VERB_OF[tool]),
                "required_permission": REQUIRED_PERMISSION,
                "examples": examples[tool],
            }
            for tool in TOOL_NAMES
        ],
    }


def check_config_example(job_type: str) -> dict[str, Any] | None:
    """The worked ``check_config`` example of a built-in job type (``None`` for others)."""
    found = _CHECK_CONFIG_EXAMPLES.get(job_type)
    return copy.deepcopy(found[1]) if found else None
