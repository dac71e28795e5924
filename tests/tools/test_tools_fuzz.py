"""Fuzzing execute(): hypothesis-generated arguments, valid and invalid, for every tool.

For every generated argument set, on a real store (SQLite, then PostgreSQL):

- the answer is JSON-able ``{"ok": true, "result"}`` or ``{"ok": false, "error"}``;
  nothing raises;
- an argument set that its tool's JSON Schema refuses is refused with code
  ``invalid`` and an error that names the field;
- a generated valid set is accepted (cancels of unknown ids answer ``not_found``);
- a refused call writes nothing (row counts unchanged, and SQLite's ``data_version`` or
  the ``xmin`` of every PostgreSQL row).

The schema is the oracle, so these tests also prove that the manifest never
promises less than execute() enforces. Each tool gets 500 sets per async
backend on SQLite and 250 on PostgreSQL, 1,500 in all.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from circleback import Caller, Limits, Settings
from circleback.core.schema_errors import field_name
from circleback.service.app import HealthProbe, create_app, status_for
from circleback.tools import CONTEXT_FIELDS, TOOL_NAMES

from ..tools_support import ToolHarness, context_of, tool_harness

#: Argument sets per tool and async backend, by store: fewer on PostgreSQL, where each
#: call and each look at the rows is a round trip to the server.
EXAMPLES_PER_BACKEND = {"sqlite": 500, "postgresql": 250}

#: Codes of the rules a schema cannot state: a schema-valid call may still meet them.
_RULES_BEYOND_THE_SCHEMA = {"oversized", "unstorable_text", "conflict", "address_refused"}

# -- building blocks -------------------------------------------------------------------------

_TEXT = st.characters()
LEAF = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_TEXT, max_size=12)
)
GARBAGE = st.recursive(
    LEAF,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(_TEXT, max_size=8), children, max_size=4),
    max_leaves=6,
)
HUGE_STRING = st.builds(lambda char, n: char * n, _TEXT, st.integers(4_001, 60_000))
NEGATIVE = st.integers(max_value=0) | st.floats(max_value=0.0, allow_nan=False,
                                                allow_infinity=False)
DEEP = st.integers(30, 200).map(lambda depth: _nest(depth))
WRONG = GARBAGE | HUGE_STRING | NEGATIVE | DEEP | st.sampled_from(
    ["", " ", "\x00", "null", "-1", "1e999", "DROP TABLE circleback_jobs", "{result.__class__}"]
)
MESSAGE = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), min_size=1,
                  max_size=120).filter(lambda text: text.strip() != "") | st.just("m" * 4_000)
UUID_TEXT = st.uuids().map(str) | st.uuids().map(lambda u: str(u).upper())


def _nest(depth: int) -> Any:
    value: Any = "bottom"
    for level in range(depth):
        value = [value] if level % 2 else {"x": value}
    return value


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


#: The module the harness configures, so that poll_module jobs can name it.
MODULES = {"deployer": "http://127.0.0.1:9"}
SCALAR = st.none() | st.booleans() | st.integers(-1000, 1000) | st.text(
    st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=10)


def _some(draw: st.DrawFn, options: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    return {key: draw(strategy) for key, strategy in options.items() if draw(st.booleans())}


@st.composite
def valid_check_config(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """A job type and a check_config its checker accepts."""
    job_type = draw(st.sampled_from(["delay", "poll_url", "poll_module"]))
    if job_type == "delay":
        seconds = st.floats(min_value=0.001, max_value=30 * 86_400) | st.integers(1, 30 * 86_400)
        return job_type, {"delay_seconds": draw(seconds)}
    if job_type == "poll_url":
        status = st.integers(100, 599)
        host = draw(st.sampled_from(["ci.example.com", "status.example.org", "EXAMPLE.net"]))
        path = draw(st.text("abcxyz0189-_/", max_size=30))
        return job_type, {
            "url": f"https://{host}/{path}",
            **_some(draw, {
                "method": st.sampled_from(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
                "expected_status": status | st.lists(status, min_size=1, max_size=5,
                                                     unique=True),
            }),
        }
    # Success and failure values never overlap (a value cannot mean both).
    success = st.sampled_from(["ok", "done", "succeeded", None, 0.5, 7])
    failure = st.sampled_from(["failed", "error", -1, False])
    return job_type, {
        "module": "deployer",
        "tool": draw(st.sampled_from(["deployer.status", "builds.get_state", "ci:job-1"])),
        "success_field": draw(st.sampled_from(["state", "deployment.state", "checks.0.status"])),
        "success_values": draw(success | st.lists(success, min_size=1, max_size=4)),
        **_some(draw, {
            "args": st.dictionaries(st.sampled_from(["id", "task_id", "env"]), SCALAR,
                                    max_size=3),
            "failure_values": failure | st.lists(failure, min_size=1, max_size=3),
        }),
    }


@st.composite
def valid_add_job(draw: st.DrawFn) -> dict[str, Any]:
    job_type, check_config = draw(valid_check_config())
    arguments: dict[str, Any] = {
        "job_type": job_type,
        "check_config": check_config,
        "on_success_message": draw(MESSAGE),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "on_failure_message": _optional(MESSAGE),
        "on_complete": st.sampled_from([None, "notify"]),
        "workflow_id": _optional(UUID_TEXT),
        "interval_seconds": _optional(st.floats(1.0, 86_400.0) | st.integers(1, 86_400)),
        "max_attempts": _optional(st.integers(1, 10_000) | st.integers(1, 10_000).map(float)),
        "backoff": _optional(st.floats(1.0, 10.0)),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            arguments[key] = draw(strategy)
    if draw(st.booleans()):
        interval = arguments.get("interval_seconds")
        floor = 30.0 if interval is None else float(interval)
        arguments["max_interval_seconds"] = draw(_optional(st.floats(floor, 86_400.0)))
    return arguments


@st.composite
def valid_list_jobs(draw: st.DrawFn) -> dict[str, Any]:
    optional = {
        "status_filter": draw(_optional(st.sampled_from(
            ["active", "completed", "failed", "cancelled"]))),
        "workflow_id": draw(_optional(UUID_TEXT)),
        "limit": draw(_optional(st.integers(1, 200))),
    }
    return {key: value for key, value in optional.items() if draw(st.booleans())}


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]],
            fields: tuple[str, ...]) -> Any:
    """A valid argument set with one to three things broken (it may, rarely, stay valid)."""
    arguments: dict[str, Any] = dict(draw(valid))
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["replace", "drop", "extra", "caller", "config",
                                    "config_field", "job_type"]))
        if how == "replace":
            arguments[draw(st.sampled_from(fields))] = draw(WRONG)
        elif how == "drop" and arguments:
            del arguments[draw(st.sampled_from(sorted(arguments)))]
        elif how == "extra":
            arguments[draw(st.text(_TEXT, max_size=30) | HUGE_STRING)] = draw(GARBAGE)
        elif how == "caller":
            arguments[draw(st.sampled_from(sorted(CONTEXT_FIELDS)))] = draw(
                st.sampled_from(["someone-else", "admin", None]))
        elif how == "config":
            arguments["check_config"] = draw(WRONG | st.dictionaries(
                st.text(_TEXT, max_size=10), GARBAGE, max_size=5))
        elif how == "config_field" and isinstance(arguments.get("check_config"), dict):
            config = dict(arguments["check_config"])
            key = draw(st.sampled_from([*sorted(config), "url", "module", "delay_seconds",
                                        "headers", "json", "user_id"]))
            if key in config and draw(st.booleans()):
                del config[key]
            else:
                config[key] = draw(WRONG)
            arguments["check_config"] = config
        elif how == "job_type":
            arguments["job_type"] = draw(st.sampled_from(["delay", "poll_url", "poll_module"]))
    return arguments


def arguments_for(
    valid: st.SearchStrategy[dict[str, Any]], fields: tuple[str, ...]
) -> st.SearchStrategy[tuple[Any, bool]]:
    """(arguments, generated-as-valid): a third valid, the rest mutated or plain garbage."""
    return st.one_of(
        valid.map(lambda arguments: (arguments, True)),
        mutated(valid, fields).map(lambda arguments: (arguments, False)),
        (GARBAGE | WRONG).map(lambda arguments: (arguments, False)),
    )


# -- the harness ------------------------------------------------------------------------------


@pytest.fixture(params=["asyncio", "trio"])
def harness(request: pytest.FixtureRequest, store_url: str) -> Iterator[ToolHarness]:
    """Tools on a fresh store, default limits but room for every accepted job."""
    fuzz_settings = Settings(database_url=store_url, modules=MODULES,
                             limits=Limits(max_active_jobs_per_user=1_000_000))
    with tool_harness(str(request.param), fuzz_settings) as running:
        yield running


def _tag(name: str) -> Caller:
    tag = uuid.uuid4().hex[:8]
    return Caller(user_id=f"{name}-{tag}", platform=f"fuzz-{tag}", platform_channel_id="C",
                  platform_thread_id="T", conversation_id="conv")


def _seed_jobs(harness: ToolHarness, caller: Caller) -> tuple[list[str], list[str]]:
    """A few jobs in a few workflows for ``caller``; returns (job ids, workflow ids)."""
    workflows = [str(uuid.uuid4()) for _ in range(2)]
    jobs = []
    for index in range(4):
        answer = harness.execute(
            "scheduler.add_job",
            {"job_type": "delay", "check_config": {"delay_seconds": 3_600},
             "on_success_message": "seed", "workflow_id": workflows[index % 2]},
            context_of(caller),
        )
        jobs.append(answer["result"]["job"]["id"])
    return jobs, workflows


def _names_a_field(field: Any, arguments: Any, properties: dict[str, Any]) -> bool:
    if not isinstance(field, str) or not field:
        return False
    if field == "arguments":
        return True
    if isinstance(arguments, dict) and any(
        isinstance(key, str) and field == field_name(key) for key in arguments
    ):
        return True
    return field.split(".", 1)[0] in properties


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "…"


class Oracle:
    """Runs one call and checks everything the module docstring promises."""

    def __init__(self, harness: ToolHarness, tool: str, caller: Caller,
                 client: httpx.AsyncClient | None = None) -> None:
        self.harness = harness
        self.client = client
        self.tool = tool
        self.context = context_of(caller)
        [spec] = [t for t in harness.tools.manifest["tools"] if t["name"] == tool]
        self.properties: dict[str, Any] = spec["parameters"]["properties"]
        self.validator = Draft202012Validator(spec["parameters"])
        self.seen = {"accepted": 0, "refused": 0, "schema_invalid": 0, "answered_valid": 0}

    def __call__(self, arguments: Any, generated_valid: bool) -> None:
        before = self.harness.rows.snapshot()
        if self.client is None:
            answer = self.harness.execute(self.tool, arguments, self.context)
            json.dumps(answer)
        else:
            call = {"tool": self.tool, "arguments": arguments, "context": self.context}
            # ASCII JSON: a lone surrogate travels as a \ud800 escape, as JSON allows.
            body = json.dumps(call).encode()
            response = self.harness.portal.call(
                functools.partial(self.client.post, "/execute", content=body,
                                  headers={"Content-Type": "application/json"}))
            answer = response.json()
            assert response.status_code < 500, _short((arguments, answer))
            assert response.status_code == status_for(answer)
        after = self.harness.rows.snapshot()
        # Documented: arguments given as null count as an empty object.
        schema_valid = self.validator.is_valid({} if arguments is None else arguments)
        self.seen["schema_invalid"] += not schema_valid
        if answer["ok"] is True or answer["error"]["code"] != "invalid":
            self.seen["answered_valid"] += 1
        if answer["ok"] is True:
            self.seen["accepted"] += 1
            assert set(answer) == {"ok", "result"}
            assert schema_valid, _short((arguments, answer))
            if self.tool == "scheduler.add_job":
                assert after[0] == before[0] + 1
                assert answer["result"]["job"]["status"] == "active"
            elif self.tool == "scheduler.list_jobs":
                assert after == before
            else:
                assert after[:2] == before[:2]
            return
        self.seen["refused"] += 1
        assert answer["ok"] is False and set(answer) == {"ok", "error"}
        error = answer["error"]
        assert set(error) == {"code", "message", "field"}
        assert after == before, _short((arguments, answer))
        if not schema_valid:
            assert error["code"] == "invalid", _short((arguments, answer))
        if error["code"] == "invalid":
            assert not generated_valid, _short((arguments, answer))
        if error["code"] in _RULES_BEYOND_THE_SCHEMA or error["code"] == "invalid":
            assert _names_a_field(error["field"], arguments, self.properties), _short(
                (arguments, error))
            assert error["message"].startswith(f"{error['field']}: ")
        else:
            assert error["code"] == "not_found", _short((arguments, answer))
            assert self.tool in ("scheduler.cancel_job", "scheduler.cancel_workflow")
            assert error["field"] in ("job_id", "workflow_id")


_SETTINGS = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def _examples(harness: ToolHarness, per_store: dict[str, int]) -> int:
    return per_store[harness.engine.store.dialect_name]


def _run(oracle: Oracle, strategy: st.SearchStrategy[tuple[Any, bool]]) -> None:
    examples = _examples(oracle.harness, EXAMPLES_PER_BACKEND)

    @settings(_SETTINGS, max_examples=examples)
    @given(strategy)
    def fuzz(case: tuple[Any, bool]) -> None:
        oracle(*case)

    fuzz()
    total = oracle.seen["accepted"] + oracle.seen["refused"]
    assert total >= examples
    # Both sides were exercised in earnest.
    assert oracle.seen["answered_valid"] >= examples // 20, oracle.seen
    assert oracle.seen["schema_invalid"] >= examples // 4, oracle.seen


ADD_FIELDS = ("job_type", "check_config", "on_success_message", "on_failure_message",
              "on_complete", "workflow_id", "interval_seconds", "max_attempts", "backoff",
              "max_interval_seconds")


def test_fuzz_add_job(harness: ToolHarness) -> None:
    _run(Oracle(harness, "scheduler.add_job", _tag("adder")),
         arguments_for(valid_add_job(), ADD_FIELDS))


def test_fuzz_list_jobs(harness: ToolHarness) -> None:
    caller = _tag("lister")
    _seed_jobs(harness, caller)
    _run(Oracle(harness, "scheduler.list_jobs", caller),
         arguments_for(valid_list_jobs(), ("status_filter", "workflow_id", "limit")))


def _cancel_case(
    harness: ToolHarness, field: str, pick: Callable[[list[str], list[str]], list[str]]
) -> tuple[Caller, st.SearchStrategy[tuple[Any, bool]]]:
    caller, stranger = _tag("owner"), _tag("stranger")
    ids = pick(*_seed_jobs(harness, caller)) + pick(*_seed_jobs(harness, stranger))
    valid = st.fixed_dictionaries({field: st.sampled_from(ids) | UUID_TEXT})
    return caller, arguments_for(valid, (field,))


def test_fuzz_cancel_job(harness: ToolHarness) -> None:
    caller, strategy = _cancel_case(harness, "job_id", lambda jobs, workflows: jobs)
    _run(Oracle(harness, "scheduler.cancel_job", caller), strategy)


def test_fuzz_cancel_workflow(harness: ToolHarness) -> None:
    caller, strategy = _cancel_case(harness, "workflow_id", lambda jobs, workflows: workflows)
    _run(Oracle(harness, "scheduler.cancel_workflow", caller), strategy)


HTTP_EXAMPLES_PER_BACKEND = {"sqlite": 200, "postgresql": 100}


def test_fuzz_through_the_http_app(harness: ToolHarness) -> None:
    """A smaller sample of every tool through POST /execute: never a 5xx, same promises."""
    app = create_app(harness.tools, api_token=None, health=HealthProbe(harness.engine),
                     max_body_bytes=8_000_000)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                               base_url="http://circleback.test")
    caller = _tag("http")
    jobs, workflows = _seed_jobs(harness, caller)
    cases = {
        "scheduler.add_job": arguments_for(valid_add_job(), ADD_FIELDS),
        "scheduler.list_jobs": arguments_for(
            valid_list_jobs(), ("status_filter", "workflow_id", "limit")),
        "scheduler.cancel_job": arguments_for(
            st.fixed_dictionaries({"job_id": st.sampled_from(jobs) | UUID_TEXT}), ("job_id",)),
        "scheduler.cancel_workflow": arguments_for(
            st.fixed_dictionaries({"workflow_id": st.sampled_from(workflows) | UUID_TEXT}),
            ("workflow_id",)),
    }
    with harness.portal.wrap_async_context_manager(client):
        oracles = {tool: Oracle(harness, tool, caller, client) for tool in TOOL_NAMES}

        examples = _examples(harness, HTTP_EXAMPLES_PER_BACKEND)

        @settings(_SETTINGS, max_examples=examples)
        @given(st.sampled_from(TOOL_NAMES).flatmap(
            lambda tool: cases[tool].map(lambda case: (tool, case))))
        def fuzz(call: tuple[str, tuple[Any, bool]]) -> None:
            tool, (arguments, generated_valid) = call
            oracles[tool](arguments, generated_valid)

        fuzz()
    calls = sum(o.seen["accepted"] + o.seen["refused"] for o in oracles.values())
    assert calls >= examples
    assert all(o.seen["accepted"] + o.seen["refused"] for o in oracles.values())


def test_every_tool_is_fuzzed() -> None:
    fuzzed = {name.removeprefix("test_fuzz_") for name in globals() if
              name.startswith("test_fuzz_") and name != "test_fuzz_through_the_http_app"}
    assert {f"scheduler.{name}" for name in fuzzed} == set(TOOL_NAMES)
