"""The job commands for people and scripts: tables, --json, ``circleback jobs show ID``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from click.testing import CliRunner, Result

from circleback.cli import cli


@pytest.fixture(params=["asyncio", "trio"])
def run(request: pytest.FixtureRequest, store_url: str) -> Any:
    """Invoke the CLI on the test's store under one backend."""
    runner = CliRunner()

    def invoke(*args: str, ok: bool = True) -> Result:
        result = runner.invoke(
            cli, ["--database-url", store_url, "--backend", str(request.param), *args],
            catch_exceptions=False,
        )
        assert (result.exit_code == 0) is ok, result.output
        return result

    return invoke


def test_add_list_show_cancel_as_tables_and_as_json(run: Any) -> None:
    user = ["--user", f"ann-{uuid.uuid4().hex[:6]}"]
    caller = [*user, "--platform", "cli-test"]
    workflow = str(uuid.uuid4())
    plain_id = run("add", "delay", "--config", '{"delay_seconds": 600}', "--message", "later",
                   *caller).stdout.strip()
    assert uuid.UUID(plain_id)
    added = json.loads(run("add", "delay", "--config", '{"delay_seconds": 900}', "--message",
                           "much later\nwith a second line", "--workflow", workflow, "--json",
                           *caller).stdout)
    assert added["status"] == "active" and added["workflow_id"] == workflow

    table = run("list", *user).stdout.splitlines()
    assert table[0].split() == ["ID", "USER", "TYPE", "STATUS", "ATTEMPTS", "NEXT/DONE", "(UTC)",
                                "WORKFLOW", "LAST", "ERROR"]
    assert {line.split()[0] for line in table[1:]} == {plain_id, added["id"]}
    assert any(workflow[:8] in line for line in table[1:])
    assert run("jobs", "list", *user).stdout == run("list", *user).stdout
    as_json = json.loads(run("list", "--json", *user).stdout)
    assert {job["id"] for job in as_json} == {plain_id, added["id"]}

    shown = run("jobs", "show", added["id"], *user).stdout.splitlines()
    fields = {line[:15].strip(): line[17:] for line in shown}
    assert fields["id"] == added["id"]
    assert fields["status"] == "active"
    assert fields["attempts"] == "0 of 120"
    assert fields["workflow"] == workflow
    assert fields["check config"] == '{"delay_seconds": 900}'
    assert fields["success message"] == "much later"
    following = shown[shown.index(f"success message  {fields['success message']}") + 1]
    assert following == " " * 17 + "with a second line"
    assert json.loads(run("jobs", "show", "--json", added["id"], *user).stdout) == added

    cancelled = json.loads(run("cancel", "--json", added["id"], *user).stdout)
    assert cancelled["status"] == "cancelled"
    assert run("jobs", "cancel", plain_id, *user).stdout.strip() == f"{plain_id} cancelled"
    shown = run("jobs", "show", plain_id, *user).stdout
    assert "cancelled" in shown and "finished" in shown


def test_show_answers_not_found_for_another_users_job(run: Any) -> None:
    job_id = run("add", "delay", "--config", '{"delay_seconds": 60}', "--message", "x",
                 "--user", "owner").stdout.strip()
    result = run("jobs", "show", job_id, "--user", "someone-else", ok=False)
    assert f"job {job_id} not found" in result.output
    result = run("jobs", "show", "not-a-uuid", ok=False)
    assert "job_id" in result.output
