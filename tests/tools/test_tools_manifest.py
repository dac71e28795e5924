"""The manifest: valid JSON Schemas (draft 2020-12), examples that pass them, exports."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from jsonschema import Draft202012Validator

from circleback import Caller, JobStatus, Limits, Settings
from circleback.core.abc import ValidationContext
from circleback.core.models import JobSpec
from circleback.core.registry import PluginRegistry
from circleback.core.validation import CALLER_FIELDS
from circleback.engine.plugins import make_plugin_manager
from circleback.testing import TestingPlugin
from circleback.tools import (
    CONTEXT_FIELDS,
    TOOL_NAMES,
    anthropic_tools,
    build_manifest,
    exported_name,
    openai_tools,
    tool_name,
)

from ..tools_support import ToolHarness, context_of, tool_harness

#: add_job's arguments: the fields of a job spec.
SPEC_FIELDS = frozenset(field.name for field in attrs.fields(JobSpec))


def _registry(*plugins: object) -> PluginRegistry:
    return PluginRegistry.from_manager(make_plugin_manager(plugins, load_entry_points=False))


def _tools(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {tool["name"]: tool for tool in manifest["tools"]}


@pytest.fixture
def manifest(settings: Settings) -> dict[str, Any]:
    return build_manifest(_registry(), settings)


def test_manifest_names_the_module_and_its_four_admin_tools(manifest: dict[str, Any]) -> None:
    assert manifest["name"] == "scheduler"
    assert "never pass them" in manifest["description"]
    assert [tool["name"] for tool in manifest["tools"]] == list(TOOL_NAMES) == [
        "scheduler.add_job", "scheduler.list_jobs", "scheduler.cancel_job",
        "scheduler.cancel_workflow",
    ]
    for tool in manifest["tools"]:
        assert set(tool) == {"name", "description", "parameters", "required_permission",
                             "examples"}
        assert tool["required_permission"] == "admin"
        assert tool["examples"], f"{tool['name']} has no example"
    json.dumps(manifest)  # plain JSON data


def test_every_parameters_object_is_a_valid_draft_2020_12_schema(
    manifest: dict[str, Any],
) -> None:
    for tool in manifest["tools"]:
        schema = tool["parameters"]
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        Draft202012Validator.check_schema(schema)


def test_every_example_passes_its_own_schema_and_appears_in_the_description(
    manifest: dict[str, Any],
) -> None:
    for tool in manifest["tools"]:
        validator = Draft202012Validator(tool["parameters"])
        for example in tool["examples"]:
            errors = [error.message for error in validator.iter_errors(example["arguments"])]
            assert errors == [], (tool["name"], example)
            assert example["summary"] in tool["description"]
            assert json.dumps(example["arguments"], separators=(", ", ": ")) in (
                tool["description"]
            )


def test_examples_are_accepted_by_execute(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    """What the manifest shows the LLM works: every example runs (the job id in the
    cancel_job example names no job, so that one answers "not found", not "invalid")."""
    settings = make_settings(modules={"deployer": "http://127.0.0.1:9"})
    with tool_harness("asyncio", settings) as harness:
        for tool in harness.tools.manifest["tools"]:
            for example in tool["examples"]:
                answer = harness.execute(tool["name"], example["arguments"], context_of(caller))
                if tool["name"] == "scheduler.cancel_job":
                    assert answer["error"]["code"] == "not_found", answer
                elif tool["name"] == "scheduler.cancel_workflow":
                    # Its workflow is the one of the poll_module example, when that is shown.
                    assert answer["ok"] or answer["error"]["code"] == "not_found", answer
                else:
                    assert answer["ok"], (tool["name"], example, answer)


def _add_job_verdicts(
    harness: ToolHarness, arguments: dict[str, Any], caller: Caller
) -> tuple[dict[str, Any], bool]:
    """execute()'s answer to scheduler.add_job ``arguments``, and whether its schema takes them."""
    [add_job] = [t for t in harness.tools.manifest["tools"] if t["name"] == "scheduler.add_job"]
    answer = harness.execute("scheduler.add_job", arguments, context_of(caller))
    return answer, Draft202012Validator(add_job["parameters"]).is_valid(arguments)


def test_an_optional_check_config_field_given_as_null_is_taken_iff_the_schema_takes_it(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    """execute() and the manifest agree on null for every optional field of every shipped
    job type (starting from the manifest's examples), and a refusal names a field."""
    settings = make_settings(modules={"deployer": "http://127.0.0.1:9"})
    checkers = _registry().checkers
    with tool_harness("asyncio", settings) as harness:
        [add_job] = [t for t in harness.tools.manifest["tools"] if t["name"] == "scheduler.add_job"]
        tried = set()
        for example in add_job["examples"]:
            arguments = example["arguments"]
            job_type = arguments["job_type"]
            config_schema = checkers[job_type].config_schema(ValidationContext(settings=settings))
            optional = set(config_schema["properties"]) - set(config_schema.get("required", ()))
            for field in sorted(optional):
                given = {**arguments, "check_config": {**arguments["check_config"], field: None}}
                answer, schema_takes = _add_job_verdicts(harness, given, caller)
                assert answer["ok"] is schema_takes, (job_type, field, answer)
                if not answer["ok"]:
                    # It names the field, or the one it goes with (response_values).
                    assert answer["error"]["field"].startswith("check_config."), answer
                tried.add(job_type)
    assert tried == {"poll_url", "poll_module"}  # delay has no optional field


@pytest.mark.parametrize(("method", "taken"), [
    ("GET", True), ("get", True), ("Post", True), ("dELETE", True),
    ("FETCH", False), ("po\u017ft", False),  # the long s upper-cases to S, but is not ASCII
])
def test_a_poll_url_method_is_taken_in_any_ascii_case_by_execute_and_the_schema_alike(
    make_settings: Callable[..., Settings], caller: Caller, method: str, taken: bool
) -> None:
    arguments = {"job_type": "poll_url", "on_success_message": "up",
                 "check_config": {"url": "https://status.example.com/health", "method": method}}
    with tool_harness("asyncio", make_settings()) as harness:
        answer, schema_takes = _add_job_verdicts(harness, arguments, caller)
    assert (answer["ok"], schema_takes) == (taken, taken), answer
    if not taken:
        assert answer["error"]["field"] == "check_config.method"


@pytest.mark.parametrize("method", [None, "GET", "head", "HEAD", "POST", "delete"])
@pytest.mark.parametrize("extra", [
    {"json": {"deploy": 1}}, {"json": None}, {"response_field": "state", "response_values": "ok"},
], ids=["json", "json-null", "response-field"])
def test_poll_url_rules_across_fields_are_in_the_schema_too(
    make_settings: Callable[..., Settings], caller: Caller, method: str | None,
    extra: dict[str, Any],
) -> None:
    """No body on a GET or HEAD (the default method is GET), nothing to look into on a HEAD:
    the schema says so too, so an LLM that checks its arguments first learns it there."""
    config: dict[str, Any] = {"url": "https://status.example.com/health", **extra}
    if method is not None:
        config["method"] = method
    arguments = {"job_type": "poll_url", "on_success_message": "up", "check_config": config}
    with tool_harness("asyncio", make_settings()) as harness:
        answer, schema_takes = _add_job_verdicts(harness, arguments, caller)
    assert answer["ok"] is schema_takes, answer


def test_add_job_schema_follows_the_registered_plugins(settings: Settings) -> None:
    plugin = TestingPlugin()
    registry = _registry(plugin)
    schema = _tools(build_manifest(registry, settings))["scheduler.add_job"]["parameters"]
    properties = schema["properties"]
    assert properties["job_type"]["enum"] == sorted(registry.checkers)
    assert {"delay", "scripted"} <= set(properties["job_type"]["enum"])
    assert properties["on_complete"]["enum"] == [*sorted(registry.notifiers), None]
    assert {"notify", "record"} <= set(properties["on_complete"]["enum"])
    assert properties["on_complete"]["default"] == "notify"
    # check_config is pinned per job type by the checker's own schema.
    branches = {
        branch["if"]["properties"]["job_type"]["const"]: branch["then"]["properties"]
        ["check_config"]
        for branch in schema["allOf"]
    }
    assert set(branches) == set(registry.checkers)
    for job_type, checker in registry.checkers.items():
        assert branches[job_type] == checker.config_schema(ValidationContext(settings=settings))
    validator = Draft202012Validator(schema)
    assert validator.is_valid(
        {"job_type": "delay", "check_config": {"delay_seconds": 1}, "on_success_message": "x"}
    )
    assert not validator.is_valid(
        {"job_type": "delay", "check_config": {"label": "x"}, "on_success_message": "x"}
    )


def test_bounds_and_defaults_come_from_the_limits(make_settings: Callable[..., Settings]) -> None:
    limits = Limits(min_interval_seconds=5, max_interval_seconds=600, max_attempts=50,
                    max_message_chars=300, max_list_results=25)
    tools = _tools(build_manifest(_registry(), make_settings(limits=limits)))
    add = tools["scheduler.add_job"]["parameters"]["properties"]
    assert (add["interval_seconds"]["minimum"], add["interval_seconds"]["maximum"]) == (5, 600)
    assert add["interval_seconds"]["default"] == 30
    assert (add["max_attempts"]["minimum"], add["max_attempts"]["maximum"]) == (1, 50)
    assert add["max_attempts"]["default"] == 120
    assert add["max_attempts"]["type"] == ["integer", "null"]
    assert add["on_success_message"]["maxLength"] == 300
    assert add["workflow_id"]["format"] == "uuid"
    listing = tools["scheduler.list_jobs"]["parameters"]["properties"]
    assert listing["status_filter"]["enum"] == [*(status.value for status in JobStatus), None]
    assert listing["limit"]["maximum"] == 25
    for name in ("scheduler.cancel_job", "scheduler.cancel_workflow"):
        parameters = tools[name]["parameters"]
        [field] = parameters["required"]
        assert parameters["properties"][field]["format"] == "uuid"
        assert Draft202012Validator(parameters).is_valid({field: str(uuid.uuid4())})
        assert not Draft202012Validator(parameters).is_valid({field: "not-a-uuid"})


def test_schemas_take_exactly_the_job_fields_and_never_the_caller(
    manifest: dict[str, Any],
) -> None:
    tools = _tools(manifest)
    assert set(tools["scheduler.add_job"]["parameters"]["properties"]) == SPEC_FIELDS
    assert CALLER_FIELDS < CONTEXT_FIELDS
    for tool in manifest["tools"]:
        assert not set(tool["parameters"]["properties"]) & CONTEXT_FIELDS
        validator = Draft202012Validator(tool["parameters"])
        for example in tool["examples"]:
            for field in CONTEXT_FIELDS:
                assert not validator.is_valid({**example["arguments"], field: "someone-else"})


_EXPORT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def test_openai_and_anthropic_exports_carry_the_same_tools(manifest: dict[str, Any]) -> None:
    chat = openai_tools(manifest)
    responses = openai_tools(manifest, api="responses")
    anthropic = anthropic_tools(manifest)
    assert len(chat) == len(responses) == len(anthropic) == len(TOOL_NAMES)
    for tool, chat_tool, flat_tool, claude_tool in zip(
        manifest["tools"], chat, responses, anthropic, strict=True
    ):
        expected_schema = {k: v for k, v in tool["parameters"].items() if k != "$schema"}
        assert chat_tool == {
            "type": "function",
            "function": {"name": exported_name(tool["name"]),
                         "description": tool["description"], "parameters": expected_schema},
        }
        assert flat_tool == {"type": "function", **chat_tool["function"]}
        assert claude_tool == {"name": exported_name(tool["name"]),
                               "description": tool["description"],
                               "input_schema": expected_schema}
        assert _EXPORT_NAME.match(claude_tool["name"])
        assert tool_name(claude_tool["name"]) == tool["name"]
        Draft202012Validator.check_schema(claude_tool["input_schema"])
    assert tool_name("scheduler.add_job") == "scheduler.add_job"
    assert exported_name("scheduler.cancel_workflow") == "scheduler__cancel_workflow"
    # The exports are copies: changing one leaves the manifest alone.
    chat[0]["function"]["parameters"]["properties"].clear()
    assert manifest["tools"][0]["parameters"]["properties"]
