"""``run --until-idle`` tells what it waits for, ends when told, and ends on a closed pipe."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

CIRCLEBACK = Path(sys.executable).with_name("circleback")


def env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("CIRCLEBACK_")}


def add(cwd: Path, seconds: float, message: str) -> None:
    subprocess.run([str(CIRCLEBACK), "add", "delay", "--config",
                    f'{{"delay_seconds": {seconds}}}', "--message", message],
                   cwd=cwd, env=env(), check=True, capture_output=True)


def test_until_idle_piped_into_head_ends(tmp_path: Path) -> None:
    for n in range(3):
        add(tmp_path, 1, f"message {n}")
    started = time.monotonic()
    done = subprocess.run(f"'{CIRCLEBACK}' run --until-idle | head -n 1", shell=True,
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert time.monotonic() - started < 30
    assert done.stdout.count("\n") == 1 and "scheduler.job_completed" in done.stdout
    assert "Traceback" not in done.stderr


def test_timeout_bounds_a_run_that_would_wait_and_progress_is_told(tmp_path: Path) -> None:
    add(tmp_path, 600, "much later")
    started = time.monotonic()
    done = subprocess.run([str(CIRCLEBACK), "run", "--until-idle", "--timeout", "2"],
                          cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=60,
                          check=False)
    assert 2 <= time.monotonic() - started < 15
    assert done.returncode == 1
    assert "waiting: 1 active jobs, 0 messages to send" in done.stderr
    assert "not idle after 2 s" in done.stderr
