"""``poll_module`` against a real module service on 127.0.0.1, and through a host's own caller.

The module service speaks the module protocol (``POST /execute``); its URL is
the operator's configuration (``Settings.modules``), so unlike ``poll_url`` it
needs no allowance to be on loopback.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import circleback
from circleback import Caller, JobStatus, ModuleCaller, ModuleCallFailed, Settings, ValidationError
from circleback.checkers.poll_module import PollModuleChecker
from circleback.core.abc import ValidationContext
from circleback.core.dotted import FieldMissing, lookup, matches
from circleback.core.registry import PluginRegistry
from circleback.core.rulebook import Rulebook
from circleback.engine.plugins import make_plugin_manager
from circleback.testing import ManualClock, TestingPlugin

from ..http_servers import HttpServer, Reply, Request, json_reply
from ..pacing import QUICK
from ..services import free_port


class ModuleService:
    """A module with a few tools; ``deployer.task_status`` turns completed after ``k`` polls."""

    def __init__(self, k: int = 3) -> None:
        self.k = k
        self.polls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def __call__(self, request: Request) -> Reply:
        if request.method != "POST" or request.path != "/execute":
            return json_reply({"ok": False, "error": {"code": "not_found"}}, 404)
        call = request.json()
        tool, args = call["tool"], call["arguments"]
        if tool == "deployer.task_status":
            with self._lock:
                self.polls[args["task_id"]] += 1
                count = self.polls[args["task_id"]]
            state = "completed" if count >= self.k else "running"
            return json_reply({"ok": True, "result": {"task_id": args["task_id"],
                                                      "task_status": state, "polls": count}})
        if tool == "builder.build_status":
            return json_reply({"ok": True, "result": {"build": {"state": "failed",
                                                                "log": "tests failed"}}})
        if tool == "deployer.odd":
            return json_reply({"ok": True, "result": {"something_else": 1}})
        if tool == "deployer.text":
            return Reply(status=502, body=b"Bad gateway", headers={"Content-Type": "text/plain"})
        return json_reply({"ok": False, "error": {"code": "unknown_tool",
                                                  "message": f"no tool {tool}",
                                                  "field": "tool"}}, 400)


@pytest.fixture
def service() -> Iterator[tuple[HttpServer, ModuleService]]:
    module = ModuleService(k=3)
    with HttpServer(module) as server:
        yield server, module


@asynccontextmanager
async def stepping(
    settings: Settings, *plugins: object, clock: ManualClock | None = None
) -> AsyncIterator[tuple[circleback.Engine, TestingPlugin]]:
    testing = TestingPlugin()
    async with circleback.Engine(
        settings, plugins=[testing, *plugins], load_entry_points=False, pacing=QUICK, worker=False,
        clock=clock or ManualClock(),
    ) as engine, await engine.start_plugins():
        yield engine, testing


def poll(tool: str, args: Mapping[str, Any] | None = None, **config: Any) -> dict[str, Any]:
    extra = {key: config.pop(key) for key in ("interval_seconds", "max_attempts",
                                              "on_failure_message") if key in config}
    check = {"module": config.pop("module", "deployer"), "tool": tool,
             "success_field": "task_status", "success_values": ["completed"], **config}
    if args is not None:
        check["args"] = dict(args)
    return {"job_type": "poll_module", "check_config": check,
            "on_success_message": "deployed: {result}", "on_complete": "record",
            "interval_seconds": 1, **extra}


async def test_task_status_completes_after_k_polls_with_the_result_in_the_message(
    make_settings: Callable[..., Settings], caller: Caller,
    service: tuple[HttpServer, ModuleService],
) -> None:
    server, module = service
    settings = make_settings(modules={"deployer": server.url})
    plugin = TestingPlugin()
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=QUICK
    ) as engine:
        job = await engine.scheduler.add_job(
            caller, poll("deployer.task_status", {"task_id": "t-42"}, interval_seconds=0.02)
        )
        with anyio.fail_after(20):
            await engine.wait_until_idle(poll_seconds=0.02)
        final = await engine.scheduler.get_job(caller, job.id)
    assert final.status is JobStatus.COMPLETED
    assert final.attempts == 3
    assert module.polls["t-42"] == 3
    [note] = plugin.notifier.delivered
    assert note.message == (
        'deployed: {"task_id":"t-42","task_status":"completed","polls":3}'
    )
    for request in server.requests:
        assert request.method == "POST"
        assert request.path == "/execute"
        assert request.json() == {
            "tool": "deployer.task_status",
            "arguments": {"task_id": "t-42"},
            "context": {
                "user_id": caller.user_id,
                "platform": caller.platform,
                "platform_channel_id": caller.platform_channel_id,
                "platform_thread_id": caller.platform_thread_id,
                "conversation_id": caller.conversation_id,
                "permission": "user",
            },
        }


async def test_not_yet_checks_keep_what_the_tool_said(
    make_settings: Callable[..., Settings], caller: Caller,
    service: tuple[HttpServer, ModuleService],
) -> None:
    server, _ = service
    clock = ManualClock()
    async with stepping(make_settings(modules={"deployer": server.url}), clock=clock) as (
        engine, _
    ):
        job = await engine.scheduler.add_job(caller, poll("deployer.task_status", {"task_id": "a"}))
        assert await engine.run_due_jobs() == 1
        first = await engine.scheduler.get_job(caller, job.id)
    assert first.status is JobStatus.ACTIVE
    assert first.last_error == 'task_status is "running", waiting for one of ["completed"]'
    assert first.last_result == {"task_id": "a", "task_status": "running", "polls": 1}


async def test_failure_values_fail_the_job_at_once(
    make_settings: Callable[..., Settings], caller: Caller,
    service: tuple[HttpServer, ModuleService],
) -> None:
    server, _ = service
    async with stepping(make_settings(modules={"builder": server.url})) as (engine, plugin):
        job = await engine.scheduler.add_job(caller, poll(
            "builder.build_status", {"build": 7}, module="builder",
            success_field="build.state", success_values=["passed"],
            failure_values=["failed", "cancelled"], max_attempts=60,
            on_failure_message="build broke: {result}",
        ))
        assert await engine.run_due_jobs() == 1
        assert await engine.deliver_due() == 1
        final = await engine.scheduler.get_job(caller, job.id)
    assert final.status is JobStatus.FAILED
    assert final.attempts == 1
    assert final.check_config["failure_field"] == "build.state"
    assert final.last_error == 'build.state is "failed"'
    [note] = plugin.notifier.delivered
    assert note.status is JobStatus.FAILED
    assert note.message == 'build broke: {"build":{"state":"failed","log":"tests failed"}}'


@pytest.mark.parametrize(
    ("tool", "modules", "error"),
    [
        ("deployer.nope", None, "tool deployer.nope failed (unknown_tool): no tool deployer.nope"),
        ("deployer.odd", None,
         "success_field task_status is missing: the top level has no key 'task_status'"),
        ("deployer.text", None,
         "module 'deployer' answered HTTP 502 without a module protocol answer"),
        ("deployer.task_status", "down", "module 'deployer' is unreachable: "),
    ],
)
async def test_tool_errors_missing_fields_and_unreachable_modules_are_not_yet(
    make_settings: Callable[..., Settings], caller: Caller,
    service: tuple[HttpServer, ModuleService], tool: str, modules: str | None, error: str,
) -> None:
    server, _ = service
    url = f"http://127.0.0.1:{free_port()}" if modules == "down" else server.url
    async with stepping(make_settings(modules={"deployer": url})) as (engine, _):
        job = await engine.scheduler.add_job(caller, poll(tool, {"task_id": "x"}))
        assert await engine.run_due_jobs() == 1
        current = await engine.scheduler.get_job(caller, job.id)
    assert current.status is JobStatus.ACTIVE
    assert current.attempts == 1
    assert current.last_error is not None
    assert current.last_error.startswith(error)


async def test_a_module_dropped_from_the_configuration_is_not_yet(
    make_settings: Callable[..., Settings], caller: Caller,
    service: tuple[HttpServer, ModuleService],
) -> None:
    server, _ = service
    clock = ManualClock()
    async with stepping(make_settings(modules={"deployer": server.url}), clock=clock) as (
        engine, _
    ):
        job = await engine.scheduler.add_job(caller, poll("deployer.task_status", {"task_id": "b"}))
    async with stepping(make_settings(modules={}), clock=clock) as (engine, _):
        assert await engine.run_due_jobs() == 1
        current = await engine.scheduler.get_job(caller, job.id)
    assert current.status is JobStatus.ACTIVE
    assert current.last_error == "module 'deployer' is not configured"
    assert server.requests == []


class InProcessCaller(ModuleCaller):
    """A host platform's own way of calling tools: no HTTP at all."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any], Caller]] = []
        self.closed = False

    async def call(
        self, module: str, tool: str, arguments: Mapping[str, Any], caller: Caller
    ) -> Any:
        self.calls.append((module, tool, dict(arguments), caller))
        if tool == "ci.explode":
            raise ModuleCallFailed("the host refused the call", code="forbidden")
        earlier = sum(1 for call in self.calls if call[1] == tool)
        return {"phase": {"state": "done" if earlier > 1 else "building"}}

    async def aclose(self) -> None:
        self.closed = True


class HostPlugin:
    def __init__(self) -> None:
        self.caller = InProcessCaller()
        self.asked_with: list[Settings] = []

    @circleback.hookimpl
    def circleback_module_caller(self, settings: Settings) -> ModuleCaller:
        self.asked_with.append(settings)
        return self.caller


async def test_a_host_platform_plugs_in_its_own_module_caller(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    host = HostPlugin()
    clock = ManualClock()
    settings = make_settings(modules={"ci": "host-internal:ci"})
    async with stepping(settings, host, clock=clock) as (engine, _):
        job = await engine.scheduler.add_job(caller, poll(
            "ci.pipeline", {"id": 3}, module="ci", success_field="phase.state",
            success_values="done",
        ))
        boom = await engine.scheduler.add_job(caller, poll("ci.explode", module="ci"))
        assert await engine.run_due_jobs() == 2
        clock.advance(1)
        assert await engine.run_due_jobs() == 2
        finished = await engine.scheduler.get_job(caller, job.id)
        exploded = await engine.scheduler.get_job(caller, boom.id)
        assert not host.caller.closed
    assert host.caller.closed  # closed when the engine stopped
    assert host.asked_with == [settings]
    assert finished.status is JobStatus.COMPLETED
    assert finished.last_result == {"phase": {"state": "done"}}
    assert exploded.status is JobStatus.ACTIVE
    assert exploded.last_error == "the host refused the call"
    pipeline_calls = [call for call in host.caller.calls if call[1] == "ci.pipeline"]
    assert [(m, t, a) for m, t, a, _ in pipeline_calls] == [("ci", "ci.pipeline", {"id": 3})] * 2
    assert all(who == caller for *_, who in host.caller.calls)


# -- validation --------------------------------------------------------------------------------

GOOD = {"module": "deployer", "tool": "deployer.task_status", "success_field": "task_status",
        "success_values": ["completed"]}

BAD_CONFIGS: list[tuple[dict[str, Any], str, str]] = [
    ({}, "check_config.module", "is required"),
    ({**GOOD, "module": "payments"}, "check_config.module",
     "is not a configured module (deployer)"),
    ({**GOOD, "module": 7}, "check_config.module", "must be a string"),
    ({**GOOD, "tool": "drop table"}, "check_config.tool", "must be a tool name"),
    ({**GOOD, "tool": "scheduler.add_job"}, "check_config.tool", "scheduler's own tools"),
    ({**GOOD, "args": ["t-1"]}, "check_config.args", "must be an object"),
    ({**GOOD, "args": {"user_id": "someone-else"}}, "check_config.args.user_id",
     "caller context"),
    ({k: v for k, v in GOOD.items() if k != "success_field"}, "check_config.success_field",
     "is required"),
    ({**GOOD, "success_field": ""}, "check_config.success_field", "must not be empty"),
    ({**GOOD, "success_field": ".status"}, "check_config.success_field", "empty parts"),
    ({**GOOD, "success_values": []}, "check_config.success_values", "at least one"),
    ({**GOOD, "success_values": ["ok", {"a": 1}]}, "check_config.success_values.1",
     "must be a string, a number"),
    ({**GOOD, "success_values": {"a": 1}}, "check_config.success_values", "or a list of"),
    ({**GOOD, "failure_field": "state"}, "check_config.failure_values", "is required"),
    ({**GOOD, "failure_values": ["completed", "failed"]}, "check_config.failure_values",
     '"completed" is also a success value'),
    ({**GOOD, "retries": 3}, "check_config.retries", "not a known setting"),
]


@pytest.mark.parametrize(("config", "field", "reason"), BAD_CONFIGS)
async def test_bad_config_names_the_field_and_writes_nothing(
    make_settings: Callable[..., Settings],
    caller: Caller,
    config: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    settings = make_settings(modules={"deployer": "http://deployer.internal:8000"})
    async with circleback.Engine(
        settings, load_entry_points=False, pacing=QUICK, worker=False
    ) as engine:
        spec = {"job_type": "poll_module", "check_config": config, "on_success_message": "ok"}
        with pytest.raises(ValidationError) as caught:
            await engine.scheduler.add_job(caller, spec)
        assert await engine.scheduler.list_jobs(caller) == []
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_config_is_normalised_with_defaults(settings: Settings) -> None:
    registry = PluginRegistry.from_manager(make_plugin_manager(load_entry_points=False))
    rules = Rulebook(registry, Settings(modules={"deployer": "http://d:1"}))
    spec = rules.job_spec(
        {"job_type": "poll_module", "on_success_message": "ok",
         "check_config": {**GOOD, "success_values": "completed", "failure_values": False}})
    assert spec.check_config == {
        "module": "deployer", "tool": "deployer.task_status", "args": {},
        "success_field": "task_status", "success_values": ["completed"],
        "failure_field": "task_status", "failure_values": [False],
    }


def test_config_schema_lists_exactly_the_accepted_settings() -> None:
    checker = PollModuleChecker()
    schema = checker.config_schema(ValidationContext(settings=_SETTINGS))
    assert set(schema["properties"]) == {"module", "tool", "args", "success_field",
                                         "success_values", "failure_field", "failure_values"}
    assert schema["required"] == ["module", "tool", "success_field", "success_values"]
    assert schema["additionalProperties"] is False
    assert checker.describe(GOOD) == (
        'deployer tool deployer.task_status (waiting for task_status in ["completed"])'
    )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)
_keys = st.sampled_from(["module", "tool", "args", "success_field", "success_values",
                         "failure_field", "failure_values", "extra"])
_REGISTRY = PluginRegistry.from_manager(make_plugin_manager(load_entry_points=False))
_SETTINGS = Settings(modules={"deployer": "http://d:1"})
_RULES = Rulebook(_REGISTRY, _SETTINGS)


@hypothesis_settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(_keys, _json, max_size=4), drop=st.sets(_keys, max_size=2))
def test_any_config_is_either_valid_or_refused_with_its_field(
    overrides: dict[str, Any], drop: set[str]
) -> None:
    config = {key: value for key, value in {**GOOD, **overrides}.items() if key not in drop}
    spec = {"job_type": "poll_module", "check_config": config, "on_success_message": "ok"}
    try:
        valid = _RULES.job_spec(spec)
    except ValidationError as exc:
        assert exc.field.startswith("check_config.")
        assert exc.reason
        return
    assert valid.check_config["module"] == "deployer"
    assert isinstance(valid.check_config["args"], dict)
    assert valid.check_config["success_values"]


# -- dotted paths ------------------------------------------------------------------------------

DATA = {"status": "ok", "phase": {"state": "done"}, "items": [{"state": "a"}, {"state": "b"}],
        "flag": True, "count": 1, "none": None}


@pytest.mark.parametrize(
    ("path", "value"),
    [("status", "ok"), ("phase.state", "done"), ("items.0.state", "a"), ("items.-1.state", "b"),
     ("items.1", {"state": "b"}), ("flag", True), ("none", None)],
)
def test_dotted_lookup_finds_the_value(path: str, value: Any) -> None:
    assert lookup(DATA, path) == value


@pytest.mark.parametrize(
    ("path", "message"),
    [("missing", "the top level has no key 'missing'"),
     ("phase.nope", "phase has no key 'nope'"),
     ("items.2.state", "items has 2 items, so no item 2"),
     ("items.first", "items is a list, and 'first' is not an index"),
     ("status.length", "status is a string, not an object or a list"),
     ("count.0", "count is a number, not an object or a list")],
)
def test_dotted_lookup_says_where_it_stopped(path: str, message: str) -> None:
    with pytest.raises(FieldMissing) as caught:
        lookup(DATA, path)
    assert str(caught.value) == message


def test_values_compare_as_json_does() -> None:
    assert matches(1, [1.0])
    assert not matches(True, [1])
    assert not matches(1, [True])
    assert matches(False, [False])
    assert not matches(0, [False, None])
    assert matches(None, [None])
    assert not matches("1", [1])
    assert not matches({"a": 1}, ["ok"])
