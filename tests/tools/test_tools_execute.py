"""execute(): permission, the caller from the context only, tenant isolation, answers."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import pytest

import circleback
from circleback import Caller, Checker, Limits, Settings, ValidationContext
from circleback.testing import ManualClock
from circleback.tools import (
    CONTEXT_FIELDS,
    TOOL_NAMES,
    SchedulerTools,
    anthropic_tools,
    openai_tools,
)

from ..pacing import QUICK
from ..store_rows import RowWatch
from ..tools_support import context_of


@attrs.define
class Running:
    engine: circleback.Engine
    tools: SchedulerTools
    clock: ManualClock
    rows: RowWatch

    async def call(self, tool: str, arguments: Any, context: Any) -> dict[str, Any]:
        return await self.tools.execute(tool, arguments, context)


@pytest.fixture
async def running(settings: Settings) -> AsyncIterator[Running]:
    clock = ManualClock()
    async with circleback.Engine(
        settings, worker=False, clock=clock, load_entry_points=False, pacing=QUICK
    ) as engine:
        rows = RowWatch(settings.database_url)
        try:
            yield Running(engine, SchedulerTools.for_engine(engine), clock, rows)
        finally:
            rows.close()


def _delay(seconds: float = 60, **extra: Any) -> dict[str, Any]:
    return {"job_type": "delay", "check_config": {"delay_seconds": seconds},
            "on_success_message": "time is up: {result}", **extra}


def _user(name: str) -> Caller:
    tag = uuid.uuid4().hex[:6]
    return Caller(user_id=f"{name}-{tag}", platform=f"test-{tag}", platform_channel_id="C",
                  platform_thread_id="T", conversation_id=f"conv-{name}")


def _valid_arguments(job_id: str, workflow_id: str) -> dict[str, dict[str, Any]]:
    return {
        "scheduler.add_job": _delay(),
        "scheduler.list_jobs": {"status_filter": "active"},
        "scheduler.cancel_job": {"job_id": job_id},
        "scheduler.cancel_workflow": {"workflow_id": workflow_id},
    }


async def test_add_list_cancel_answer_the_job_as_the_user_sees_it(
    running: Running, caller: Caller
) -> None:
    context = context_of(caller)
    workflow = str(uuid.uuid4())
    added = await running.call("scheduler.add_job", _delay(5, workflow_id=workflow), context)
    assert added["ok"] is True, added
    job = added["result"]["job"]
    assert set(job) == {
        "id", "job_type", "status", "attempts", "max_attempts", "interval_seconds",
        "next_check_at", "last_checked_at", "last_result", "last_error", "workflow_id",
        "on_complete", "check_config", "on_success_message", "on_failure_message",
        "created_at", "completed_at",
    }
    assert (job["job_type"], job["status"], job["attempts"]) == ("delay", "active", 0)
    assert (job["max_attempts"], job["interval_seconds"], job["on_complete"]) == (
        120, 30, "notify")
    assert job["workflow_id"] == workflow
    assert job["next_check_at"] is not None
    assert "user_id" not in job  # the caller ids stay out of the LLM's view

    listed = await running.call("scheduler.list_jobs", {}, context)
    assert listed["ok"] and listed["result"]["count"] == 1
    assert [j["id"] for j in listed["result"]["jobs"]] == [job["id"]]

    cancelled = await running.call("scheduler.cancel_job", {"job_id": job["id"]}, context)
    assert cancelled["ok"] and cancelled["result"]["job"]["status"] == "cancelled"
    assert cancelled["result"]["job"]["next_check_at"] is None
    again = await running.call("scheduler.cancel_job", {"job_id": job["id"]}, context)
    assert again["ok"] and again["result"]["job"]["status"] == "cancelled"
    gone = await running.call("scheduler.cancel_workflow", {"workflow_id": workflow}, context)
    assert gone == {"ok": True, "result": {"workflow_id": workflow, "cancelled": [],
                                            "count": 0}}


async def test_a_call_from_an_llm_client_runs_under_its_exported_name(
    running: Running, caller: Caller
) -> None:
    tools = running.tools
    assert tools.openai_tools() == openai_tools(tools.manifest)
    assert tools.openai_tools(api="responses") == openai_tools(tools.manifest, api="responses")
    assert tools.anthropic_tools() == anthropic_tools(tools.manifest)
    names = [tool["name"] for tool in tools.anthropic_tools()]
    assert [SchedulerTools.tool_name(name) for name in names] == list(TOOL_NAMES)
    assert "scheduler__add_job" in names
    answer = await tools.execute(
        tools.tool_name("scheduler__add_job"), _delay(5), context_of(caller)
    )
    assert answer["ok"] is True, answer
    # The exports are copies: changing one leaves the tools' manifest alone.
    tools.openai_tools()[0]["function"]["parameters"]["properties"].clear()
    assert tools.manifest["tools"][0]["parameters"]["properties"]


async def test_last_result_reaches_the_llm_marked_as_untrusted(
    running: Running, caller: Caller
) -> None:
    added = await running.call("scheduler.add_job", _delay(2), context_of(caller))
    running.clock.advance(2)
    assert await running.engine.run_due_jobs() == 1
    [job] = (await running.call("scheduler.list_jobs", {"status_filter": "completed"},
                                context_of(caller)))["result"]["jobs"]
    assert job["id"] == added["result"]["job"]["id"]
    assert job["attempts"] == 1 and job["completed_at"] is not None
    assert job["last_result"] == (
        '<untrusted-data source="checked system">{"delay_seconds":2}</untrusted-data>'
    )


async def test_three_users_see_and_cancel_only_their_own_jobs(running: Running) -> None:
    alice, bob, carol = _user("alice"), _user("bob"), _user("carol")
    shared_workflow = str(uuid.uuid4())  # the same workflow id, chosen by all three
    own: dict[str, list[str]] = {}
    for person in (alice, bob, carol):
        ids = []
        for extra in ({}, {"workflow_id": shared_workflow}):
            answer = await running.call("scheduler.add_job", _delay(**extra), context_of(person))
            ids.append(answer["result"]["job"]["id"])
        own[person.user_id] = ids

    for person in (alice, bob, carol):
        for arguments in ({}, {"workflow_id": shared_workflow}, {"status_filter": "active"}):
            listed = await running.call("scheduler.list_jobs", arguments, context_of(person))
            seen = {job["id"] for job in listed["result"]["jobs"]}
            assert seen <= set(own[person.user_id])
            assert seen, (person.user_id, arguments)

    # Bob goes after Alice's jobs and her workflow: "not found", and nothing changes.
    alice_only_workflow = str(uuid.uuid4())
    await running.call("scheduler.add_job", _delay(workflow_id=alice_only_workflow),
                       context_of(alice))
    before = running.rows.snapshot()
    for job_id in own[alice.user_id]:
        answer = await running.call("scheduler.cancel_job", {"job_id": job_id}, context_of(bob))
        assert answer["ok"] is False
        assert answer["error"] == {"code": "not_found", "message": f"job {job_id} not found",
                                   "field": "job_id"}
    answer = await running.call("scheduler.cancel_workflow",
                                {"workflow_id": alice_only_workflow}, context_of(bob))
    assert answer["error"]["code"] == "not_found"
    assert answer["error"]["field"] == "workflow_id"
    assert running.rows.snapshot() == before

    # Carol cancels "the" shared workflow: only her own job in it is cancelled.
    answer = await running.call("scheduler.cancel_workflow", {"workflow_id": shared_workflow},
                                context_of(carol))
    assert answer["ok"] and [job["id"] for job in answer["result"]["cancelled"]] == [
        own[carol.user_id][1]]
    for person in (alice, bob):
        listed = await running.call("scheduler.list_jobs", {"status_filter": "active"},
                                    context_of(person))
        assert set(own[person.user_id]) <= {job["id"] for job in listed["result"]["jobs"]}


_NOT_ADMIN = ["user", "Admin", "ADMIN", " admin", "", None, ["admin"], {"admin": True}, True, 1,
              "missing"]


async def test_a_caller_without_admin_is_refused_every_tool(
    running: Running, caller: Caller
) -> None:
    job = (await running.call("scheduler.add_job", _delay(), context_of(caller)))["result"]["job"]
    before = running.rows.snapshot()
    for permission in _NOT_ADMIN:
        context = context_of(caller, permission)
        if permission == "missing":
            del context["permission"]
        for tool, arguments in _valid_arguments(job["id"], str(uuid.uuid4())).items():
            answer = await running.call(tool, arguments, context)
            assert answer["ok"] is False
            assert answer["error"]["code"] == "forbidden", (tool, permission, answer)
            assert answer["error"]["field"] == "context.permission"
            assert "admin" in answer["error"]["message"]
    assert running.rows.snapshot() == before
    listed = await running.call("scheduler.list_jobs", {}, context_of(caller))
    assert [j["status"] for j in listed["result"]["jobs"]] == ["active"]


async def test_caller_keys_inside_the_arguments_are_refused_for_every_tool(
    running: Running, caller: Caller
) -> None:
    job = (await running.call("scheduler.add_job", _delay(), context_of(caller)))["result"]["job"]
    valid = _valid_arguments(job["id"], str(uuid.uuid4()))
    before = running.rows.snapshot()
    for tool in TOOL_NAMES:
        for key in sorted(CONTEXT_FIELDS):
            for value in ("someone-else", None, caller.user_id):
                answer = await running.call(tool, {**valid[tool], key: value},
                                            context_of(caller))
                assert answer["ok"] is False, (tool, key)
                assert answer["error"] == {
                    "code": "invalid",
                    "message": f"{key}: is set from the caller's context and cannot be given "
                               "as an argument",
                    "field": key,
                }
    assert running.rows.snapshot() == before


_BAD_CONTEXTS: list[tuple[Any, str]] = [
    (None, "context"),
    ("alice", "context"),
    ({"permission": "admin", "platform": "p"}, "context.user_id"),
    ({"permission": "admin", "user_id": "u"}, "context.platform"),
    ({"permission": "admin", "user_id": 7, "platform": "p"}, "context.user_id"),
    ({"permission": "admin", "user_id": "  ", "platform": "p"}, "context.user_id"),
    ({"permission": "admin", "user_id": "u" * 256, "platform": "p"}, "context.user_id"),
    ({"permission": "admin", "user_id": "u", "platform": "p", "platform_thread_id": 5},
     "context.platform_thread_id"),
]


async def test_a_bad_context_is_refused_naming_its_field(running: Running) -> None:
    before = running.rows.snapshot()
    for context, field in _BAD_CONTEXTS:
        answer = await running.call("scheduler.add_job", _delay(), context)
        assert answer["ok"] is False
        assert answer["error"]["code"] == "invalid", context
        assert answer["error"]["field"] == field
    assert running.rows.snapshot() == before


async def test_extra_context_keys_are_ignored(running: Running, caller: Caller) -> None:
    context = {**context_of(caller), "roles": ["ops"], "user_name": "Alice"}
    assert (await running.call("scheduler.add_job", _delay(), context))["ok"]


_BAD_ARGUMENTS: list[tuple[str, Any, str]] = [
    ("scheduler.add_job", {}, "job_type"),
    ("scheduler.add_job", None, "job_type"),
    ("scheduler.add_job", ["delay"], "arguments"),
    ("scheduler.add_job", {**_delay(), "job_type": None}, "job_type"),
    ("scheduler.add_job", {**_delay(), "job_type": "cron"}, "job_type"),
    ("scheduler.add_job", {**_delay(), "check_config": {"delay_seconds": -1}},
     "check_config.delay_seconds"),
    ("scheduler.add_job", {**_delay(), "check_config": {"delay": 1}}, "check_config.delay"),
    ("scheduler.add_job", {**_delay(), "on_success_message": " \n"}, "on_success_message"),
    ("scheduler.add_job", {**_delay(), "on_success_message": "x" * 4001},
     "on_success_message"),
    ("scheduler.add_job", {**_delay(), "interval_seconds": 0}, "interval_seconds"),
    ("scheduler.add_job", {**_delay(), "interval_seconds": "30"}, "interval_seconds"),
    ("scheduler.add_job", {**_delay(), "max_attempts": 2.5}, "max_attempts"),
    ("scheduler.add_job", {**_delay(), "max_attempts": True}, "max_attempts"),
    ("scheduler.add_job", {**_delay(), "max_attempts": -3}, "max_attempts"),
    ("scheduler.add_job", {**_delay(), "on_complete": "email"}, "on_complete"),
    ("scheduler.add_job", {**_delay(), "workflow_id": "42"}, "workflow_id"),
    ("scheduler.add_job", {**_delay(), "workflow_id": "urn:uuid:" + str(uuid.UUID(int=1))},
     "workflow_id"),
    ("scheduler.add_job", {**_delay(), "schedule": "hourly"}, "schedule"),
    ("scheduler.list_jobs", {"status_filter": "done"}, "status_filter"),
    ("scheduler.list_jobs", {"limit": 0}, "limit"),
    ("scheduler.list_jobs", {"limit": 10_000}, "limit"),
    ("scheduler.list_jobs", "active", "arguments"),
    ("scheduler.cancel_job", {}, "job_id"),
    ("scheduler.cancel_job", {"job_id": None}, "job_id"),
    ("scheduler.cancel_job", {"job_id": 12}, "job_id"),
    ("scheduler.cancel_job", {"job_id": str(uuid.uuid4()).replace("-", "")}, "job_id"),
    ("scheduler.cancel_workflow", {"workflow_id": ""}, "workflow_id"),
    ("scheduler.cancel_workflow", {"workflow_id": str(uuid.uuid4()), "force": True},
     "force"),
]


async def test_bad_arguments_are_refused_naming_the_field(
    running: Running, caller: Caller
) -> None:
    before = running.rows.snapshot()
    for tool, arguments, field in _BAD_ARGUMENTS:
        answer = await running.call(tool, arguments, context_of(caller))
        assert answer["ok"] is False, (tool, arguments, answer)
        assert answer["error"]["code"] == "invalid"
        assert answer["error"]["field"] == field, (tool, arguments, answer)
        assert answer["error"]["message"].startswith(f"{field}: ")
    assert running.rows.snapshot() == before


async def test_optional_arguments_given_as_null_count_as_not_given(
    running: Running, caller: Caller
) -> None:
    nulls = {"on_failure_message": None, "on_complete": None, "workflow_id": None,
             "interval_seconds": None, "max_attempts": None, "backoff": None,
             "max_interval_seconds": None}
    answer = await running.call("scheduler.add_job", _delay(**nulls), context_of(caller))
    assert answer["ok"], answer
    job = answer["result"]["job"]
    assert (job["on_complete"], job["interval_seconds"], job["max_attempts"]) == (
        "notify", 30, 120)
    listed = await running.call(
        "scheduler.list_jobs", {"status_filter": None, "workflow_id": None, "limit": None},
        context_of(caller))
    assert listed["result"]["count"] == 1


async def test_an_unknown_tool_is_named(running: Running, caller: Caller) -> None:
    for tool in ("scheduler.delete_everything", "add_job", None, 3):
        answer = await running.call(tool, {}, context_of(caller))
        assert answer["ok"] is False
        assert answer["error"]["code"] == "unknown_tool"
        assert answer["error"]["field"] == "tool"
        assert "scheduler.add_job" in answer["error"]["message"]


async def test_the_active_jobs_quota_is_a_structured_refusal(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    settings = make_settings(limits=Limits(min_interval_seconds=0.01, max_active_jobs_per_user=2))
    async with circleback.Engine(
        settings, worker=False, load_entry_points=False, pacing=QUICK
    ) as engine:
        tools = SchedulerTools.for_engine(engine)
        for _ in range(2):
            assert (await tools.execute("scheduler.add_job", _delay(), context_of(caller)))["ok"]
        rows = RowWatch(settings.database_url)
        try:
            before = rows.snapshot()
            answer = await tools.execute("scheduler.add_job", _delay(), context_of(caller))
            assert rows.snapshot() == before
        finally:
            rows.close()
    assert answer["ok"] is False
    assert answer["error"]["code"] == "limit_exceeded"
    assert "active jobs" in answer["error"]["message"]


class _BrokenChecker(Checker):
    """A third-party job type whose validation has a bug (raises a plain exception)."""

    job_type = "broken"

    def config_schema(self, context: ValidationContext) -> dict[str, Any]:
        return {"type": "object"}

    def refine_config(
        self, config: dict[str, Any], context: ValidationContext
    ) -> dict[str, Any]:
        raise RuntimeError("bug in a plugin")

    async def check(self, job: Any, runtime: Any) -> Any:
        raise AssertionError("never checked")


class _BrokenPlugin:
    @circleback.hookimpl
    def circleback_register_checkers(self, register: Callable[[Checker], None]) -> None:
        register(_BrokenChecker())


async def test_an_unexpected_failure_is_an_internal_error_not_an_exception(
    settings: Settings, caller: Caller, caplog: pytest.LogCaptureFixture
) -> None:
    async with circleback.Engine(
        settings, worker=False, load_entry_points=False, pacing=QUICK, plugins=[_BrokenPlugin()]
    ) as engine:
        tools = SchedulerTools.for_engine(engine)
        answer = await tools.execute(
            "scheduler.add_job",
            {"job_type": "broken", "check_config": {}, "on_success_message": "x"},
            context_of(caller),
        )
        listed = await tools.execute("scheduler.list_jobs", {}, context_of(caller))
    assert answer["ok"] is False
    assert answer["error"]["code"] == "internal"
    assert "bug in a plugin" not in answer["error"]["message"]
    assert "bug in a plugin" in caplog.text
    assert listed["result"]["count"] == 0
