"""The README quickstart, run as a newcomer would: the installed ``circleback`` script.

In an empty directory (so the database is the default ``./circleback.db``) and
with no ``CIRCLEBACK_*`` variables set: add a 2-second delay job, run the engine
until it is idle, and look at the job; then cancel a second job and filter the
list by status.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

#: The console script installed next to the interpreter running the tests.
CIRCLEBACK = Path(sys.executable).with_name("circleback")
README = Path(__file__).resolve().parents[2] / "README.md"

pytestmark = pytest.mark.slow


def circleback(cwd: Path, *args: str, expect: int = 0) -> str:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("CIRCLEBACK_")}
    done = subprocess.run(
        [str(CIRCLEBACK), *args], cwd=cwd, env=env, capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert done.returncode == expect, (args, done.stdout, done.stderr)
    return done.stdout


def _table(stdout: str) -> dict[str, dict[str, str]]:
    """``circleback list`` output as {job id: {column: value}}."""
    header, *rows = stdout.splitlines()
    columns = header.split()
    assert columns[:5] == ["ID", "USER", "TYPE", "STATUS", "ATTEMPTS"], header
    table = {}
    for row in rows:
        cells = row.split()
        table[cells[0]] = dict(zip(["id", "user", "type", "status", "attempts"], cells[:5],
                                   strict=True))
    return table


def test_the_readme_quickstart_then_status_filters_and_cancel(tmp_path: Path) -> None:
    assert CIRCLEBACK.exists(), "the circleback console script is not installed in this venv"
    quickstart = README.read_text()
    assert "circleback add delay --config '{\"delay_seconds\": 2}'" in quickstart
    assert "circleback run --until-idle" in quickstart

    added = circleback(
        tmp_path, "add", "delay", "--config", '{"delay_seconds": 2}',
        "--message", "Two seconds have passed",
    )
    job_id = str(uuid.UUID(added.strip()))  # the output is exactly the new job's id
    assert (tmp_path / "circleback.db").exists()  # the default database, in the current directory

    ran = circleback(tmp_path, "run", "--until-idle")
    lines = [line for line in ran.splitlines() if line.strip()]
    assert len(lines) == 1, ran
    notification: dict[str, Any] = json.loads(lines[0])
    assert notification["type"] == "scheduler.job_completed"
    assert notification["job_id"] == job_id
    assert notification["status"] == "completed"
    assert notification["message"] == "Two seconds have passed"
    assert notification["user_id"] == "cli"

    listed = _table(circleback(tmp_path, "list"))
    assert listed == {
        job_id: {"id": job_id, "user": "cli", "type": "delay", "status": "completed",
                 "attempts": "1/120"}
    }

    # A second job, cancelled before it is due; each status filter shows only its own job.
    later = circleback(
        tmp_path, "add", "delay", "--config", '{"delay_seconds": 3600}', "--message", "later",
    ).strip()
    assert circleback(tmp_path, "cancel", later).split() == [later, "cancelled"]
    assert list(_table(circleback(tmp_path, "list", "--status", "cancelled"))) == [later]
    completed = json.loads(circleback(tmp_path, "list", "--status", "completed", "--json"))
    assert [(job["id"], job["status"]) for job in completed] == [(job_id, "completed")]
