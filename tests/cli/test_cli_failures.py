"""Setup mistakes end in a few lines a person can act on, and an exit code by class.

Each case runs the installed console script in a fresh directory, as an operator
on a new machine would: at most three lines on standard error, no traceback,
the hint, and the documented exit code. A missing extra is a module that
cannot be imported, put first on ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .. import services

CIRCLEBACK = Path(sys.executable).with_name("circleback")
DELAY = ["add", "delay", "--config", '{"delay_seconds": 1}', "--message", "hi"]


def run(cwd: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``circleback ARGS`` in ``cwd`` with no CIRCLEBACK_* setting but those in ``env``."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CIRCLEBACK_")}
    clean.pop("PYTHONPATH", None)
    clean.update(env or {})
    return subprocess.run([str(CIRCLEBACK), *args], cwd=cwd, env=clean, capture_output=True,
                          text=True, timeout=timeout, check=False)


def assert_explained(result: subprocess.CompletedProcess[str], code: int, *hints: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, result.stderr
    assert 1 <= len(lines) <= 3, result.stderr
    assert "Traceback" not in result.stderr
    for hint in hints:
        assert hint in result.stderr


def blocker(tmp_path: Path, module: str) -> dict[str, str]:
    """An environment in which ``module`` cannot be imported, as when it is not installed."""
    folder = tmp_path / "blocked"
    folder.mkdir(exist_ok=True)
    (folder / f"{module}.py").write_text(
        f"raise ModuleNotFoundError(\"No module named '{module}'\", name={module!r})\n"
    )
    return {"PYTHONPATH": str(folder)}


def test_sqlite_directory_missing(tmp_path: Path) -> None:
    result = run(tmp_path, "--database-url", "sqlite:///nowhere/jobs.db", *DELAY)
    assert_explained(result, 5, "mkdir -p nowhere")


def test_read_only_database_refused_by_add_and_by_run_within_five_seconds(
    tmp_path: Path,
) -> None:
    assert run(tmp_path, *DELAY).returncode == 0
    read_only = "sqlite:///file:circleback.db?mode=ro&uri=true"
    assert_explained(run(tmp_path, "--database-url", read_only, *DELAY), 5, "read-only",
                     "CIRCLEBACK_DATABASE_URL")
    started = time.monotonic()
    result = run(tmp_path, "--database-url", read_only, "run", timeout=30)
    assert time.monotonic() - started < 5
    assert_explained(result, 5, "read-only")


def test_postgresql_without_the_extra(tmp_path: Path) -> None:
    result = run(tmp_path, "--database-url", "postgresql://postgres@127.0.0.1/test", "list",
                 env=blocker(tmp_path, "psycopg"))
    assert_explained(result, 5, "pip install 'circleback[postgres]'")


def test_trio_backend_without_trio(tmp_path: Path) -> None:
    result = run(tmp_path, "--backend", "trio", *DELAY, env=blocker(tmp_path, "trio"))
    assert_explained(result, 5, "pip install trio")


def test_unreachable_postgresql(tmp_path: Path) -> None:
    port = services.free_port()
    result = run(tmp_path, "--database-url", f"postgresql://postgres@127.0.0.1:{port}/x", "list")
    assert_explained(result, 5, "cannot reach the database server", "CIRCLEBACK_DATABASE_URL")


@pytest.mark.postgres
def test_database_that_does_not_exist(tmp_path: Path, postgres_admin_url: str) -> None:
    base = postgres_admin_url.rsplit("/", 1)[0]
    result = run(tmp_path, "--database-url", f"{base}/circleback_no_such_db", "list")
    assert_explained(result, 5, "createdb circleback_no_such_db")


def test_unparsable_url(tmp_path: Path) -> None:
    result = run(tmp_path, "--database-url", "sqlite//::jobs", "list")
    assert_explained(result, 5, "sqlite:///path/to/file.db")


def test_reading_commands_create_no_database(tmp_path: Path) -> None:
    for command in (["list"], ["outbox"], ["workers"], ["jobs", "show", "0123abcd"]):
        assert_explained(run(tmp_path, *command), 5, "no database", "circleback db upgrade")
    assert not (tmp_path / "circleback.db").exists()


def test_not_found_refused_and_usage_have_their_codes(tmp_path: Path) -> None:
    assert run(tmp_path, *DELAY).returncode == 0
    assert_explained(run(tmp_path, "jobs", "show", "3f2b8c9e-0000-4000-8000-000000000000"), 3,
                     "not found")
    assert_explained(run(tmp_path, "add", "nosuch", "--config", "{}", "--message", "m"), 4,
                     "job_type")
    assert run(tmp_path, "list", "--no-such-option").returncode == 2


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run(tmp_path, "--log-level", "debug", "--database-url", "sqlite:///nowhere/j.db",
                 *DELAY)
    assert result.returncode == 5
    assert "Traceback" in result.stderr
    assert "mkdir -p nowhere" in result.stderr


def test_help_names_the_exit_codes(tmp_path: Path) -> None:
    result = run(tmp_path, "--help")
    assert "3 not found" in " ".join(result.stdout.split())
