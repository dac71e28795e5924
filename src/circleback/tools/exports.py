"""The manifest's tools in the shapes LLM client libraries take.

OpenAI and Anthropic allow only ``[A-Za-z0-9_-]`` in tool names, so
``scheduler.add_job`` is exported as ``scheduler__add_job`` (the dot becomes a
double underscore); :func:`tool_name` turns an exported name back into the
tool name that :meth:`~circleback.SchedulerTools.execute` takes. The
parameters are the manifest's JSON Schemas without the ``$schema`` key; the
description keeps its examples.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["anthropic_tools", "exported_name", "openai_tools", "tool_name"]

_SEPARATOR = "__"


def exported_name(name: str) -> str:
    """``scheduler.add_job`` → ``scheduler__add_job``."""
    return name.replace(".", _SEPARATOR)


def tool_name(exported: str) -> str:
    """``scheduler__add_job`` → ``scheduler.add_job`` (a dotted name is returned as it is)."""
    module, separator, rest = exported.partition(_SEPARATOR)
    return f"{module}.{rest}" if separator else exported


def _parameters(tool: Mapping[str, Any]) -> dict[str, Any]:
    schema = copy.deepcopy(dict(tool["parameters"]))
    schema.pop("$schema", None)
    return schema


def openai_tools(
    manifest: Mapping[str, Any], *, api: Literal["chat", "responses"] = "chat"
) -> list[dict[str, Any]]:
    """Function tools for OpenAI-style APIs.

    ``api="chat"`` gives the Chat Completions shape
    ``{"type": "function", "function": {"name", "description", "parameters"}}``;
    ``api="responses"`` the flat Responses shape
    ``{"type": "function", "name", "description", "parameters"}``.
    """
    tools = []
    for tool in manifest["tools"]:
        function = {
            "name": exported_name(tool["name"]),
            "description": tool["description"],
            "parameters": _parameters(tool),
        }
        if api == "chat":
            tools.append({"type": "function", "function": function})
        else:
            tools.append({"type": "function", **function})
    return tools


def anthropic_tools(manifest: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tools for Anthropic-style APIs: ``{"name", "description", "input_schema"}``."""
    return [
        {
            "name": exported_name(tool["name"]),
            "description": tool["description"],
            "input_schema": _parameters(tool),
        }
        for tool in manifest["tools"]
    ]
