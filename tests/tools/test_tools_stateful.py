"""Tenant isolation as a state machine: many users, many steps, through execute().

A plain model records which user owns which job, its workflow, when it is due
and its status. Users add jobs (often in workflow ids that other users chose
too), cancel jobs and workflows — their own and everybody else's — and time
passes, completing due timers. After every step each user's ``list_jobs`` must
show exactly that user's jobs, with the model's statuses; cancelling what
belongs to someone else must answer "not found" and write nothing. The machine
runs on a SQLite file and on a PostgreSQL schema of its own.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, note, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from circleback import Caller, Limits, Settings
from circleback.testing import ManualClock

from ..services import drop_postgres_schema, postgres_schema
from ..tools_support import ToolHarness, context_of, tool_harness

USERS = ("alice", "bob", "carol", "dave")
WORKFLOWS = tuple(str(uuid.UUID(int=n + 1)) for n in range(3))


@attrs.define
class ModelJob:
    owner: str
    workflow: str | None
    due: float
    status: str = "active"


def _context(user: str) -> dict[str, Any]:
    return context_of(Caller(user_id=user, platform="test", platform_channel_id="C",
                             platform_thread_id="T", conversation_id=f"conv-{user}"))


class TenantIsolation(RuleBasedStateMachine):
    backend = "asyncio"
    database = "sqlite"

    def __init__(self) -> None:
        super().__init__()
        self._directory = Path(tempfile.mkdtemp(prefix="circleback-tenants-"))
        self._stack = contextlib.ExitStack()
        self.clock = ManualClock()
        self.elapsed = 0.0
        store = Settings(
            database_url=self._database_url(),
            limits=Limits(min_interval_seconds=0.01, max_active_jobs_per_user=1_000),
        )
        self.harness: ToolHarness = self._stack.enter_context(
            tool_harness(self.backend, store, clock=self.clock)
        )
        self.model: dict[str, ModelJob] = {}

    def _database_url(self) -> str:
        if self.database == "sqlite":
            return f"sqlite:///{self._directory / 'tenants.db'}"
        schema, url = postgres_schema()
        self._stack.callback(drop_postgres_schema, schema)
        return url

    def teardown(self) -> None:
        self._stack.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    def call(self, tool: str, arguments: dict[str, Any], user: str) -> dict[str, Any]:
        answer = self.harness.execute(tool, arguments, _context(user))
        note(f"{user}: {tool}({arguments}) -> {answer.get('error') or 'ok'}")
        return answer

    # -- rules -------------------------------------------------------------------------------

    @rule(user=st.sampled_from(USERS), delay=st.integers(1, 20),
          workflow=st.none() | st.sampled_from(WORKFLOWS))
    def add_job(self, user: str, delay: int, workflow: str | None) -> None:
        arguments = {"job_type": "delay", "check_config": {"delay_seconds": delay},
                     "on_success_message": f"{user}'s timer", "workflow_id": workflow}
        answer = self.call("scheduler.add_job", arguments, user)
        assert answer["ok"], answer
        job = answer["result"]["job"]
        assert job["id"] not in self.model
        self.model[job["id"]] = ModelJob(owner=user, workflow=workflow, due=self.elapsed + delay)

    @rule(user=st.sampled_from(USERS), data=st.data())
    def cancel_job(self, user: str, data: st.DataObject) -> None:
        known = sorted(self.model)
        unknown = st.uuids().map(str)
        job_id = data.draw(
            st.sampled_from(known) if known and data.draw(st.integers(0, 9)) else unknown,
            label="job_id",
        )
        target = self.model.get(job_id)
        before = self.harness.rows.snapshot()
        answer = self.call("scheduler.cancel_job", {"job_id": job_id}, user)
        if target is None or target.owner != user:
            assert answer["ok"] is False
            assert answer["error"]["code"] == "not_found"
            assert answer["error"]["field"] == "job_id"
            assert self.harness.rows.snapshot() == before
            return
        assert answer["ok"], answer
        if target.status == "active":
            target.status = "cancelled"
        assert answer["result"]["job"]["status"] == target.status

    @rule(user=st.sampled_from(USERS), workflow=st.sampled_from(WORKFLOWS))
    def cancel_workflow(self, user: str, workflow: str) -> None:
        mine = [job for job in self.model.values()
                if job.owner == user and job.workflow == workflow]
        before = self.harness.rows.snapshot()
        answer = self.call("scheduler.cancel_workflow", {"workflow_id": workflow}, user)
        if not mine:
            assert answer["ok"] is False
            assert answer["error"]["code"] == "not_found"
            assert answer["error"]["field"] == "workflow_id"
            assert self.harness.rows.snapshot() == before
            return
        assert answer["ok"], answer
        expected = {job_id for job_id, job in self.model.items()
                    if job.owner == user and job.workflow == workflow and job.status == "active"}
        assert {job["id"] for job in answer["result"]["cancelled"]} == expected
        for job_id in expected:
            self.model[job_id].status = "cancelled"

    @rule(seconds=st.integers(1, 15))
    def time_passes(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.elapsed += seconds
        while self.harness.portal.call(self.harness.engine.run_due_jobs):
            pass
        for job in self.model.values():
            if job.status == "active" and job.due <= self.elapsed:
                job.status = "completed"
        note(f"{seconds} s pass (t={self.elapsed:g})")

    @rule(user=st.sampled_from(USERS),
          status=st.none() | st.sampled_from(["active", "completed", "cancelled", "failed"]),
          workflow=st.none() | st.sampled_from(WORKFLOWS))
    def list_filtered(self, user: str, status: str | None, workflow: str | None) -> None:
        answer = self.call("scheduler.list_jobs",
                           {"status_filter": status, "workflow_id": workflow}, user)
        expected = {
            job_id: job.status for job_id, job in self.model.items()
            if job.owner == user and status in (None, job.status)
            and workflow in (None, job.workflow)
        }
        assert {job["id"]: job["status"] for job in answer["result"]["jobs"]} == expected

    # -- the invariant -----------------------------------------------------------------------

    @invariant()
    def every_user_sees_exactly_their_own_jobs(self) -> None:
        for user in USERS:
            answer = self.harness.execute("scheduler.list_jobs", {}, _context(user))
            assert answer["ok"], answer
            seen = {job["id"]: job["status"] for job in answer["result"]["jobs"]}
            expected = {job_id: job.status for job_id, job in self.model.items()
                        if job.owner == user}
            assert seen == expected, user


@pytest.mark.parametrize(
    "database", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_tenant_isolation_holds_over_many_steps(backend: str, database: str) -> None:
    machine = type(f"TenantIsolation_{backend}_{database}", (TenantIsolation,),
                   {"backend": backend, "database": database})
    # Half the runs on PostgreSQL (each on a fresh schema), to keep the suite quick.
    run_state_machine_as_test(
        machine,
        settings=settings(max_examples=10 if database == "sqlite" else 5,
                          stateful_step_count=30, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow]),
    )
