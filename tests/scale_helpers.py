"""Starting worker processes and reading what they did, for the scale-out tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa

import circleback
from circleback import Caller, Limits, Settings
from circleback.store.database import create_sync_engine

REPO = Path(__file__).resolve().parent.parent


class Worker:
    """One ``tests.worker_process`` process with its own stdout, stderr and check log."""

    def __init__(self, directory: Path, url: str, name: str, backend: str, *extra: str) -> None:
        self.name = name
        self.stdout_path = directory / f"{name}.out"
        self.stderr_path = directory / f"{name}.err"
        self.log_path = directory / f"{name}.checks"
        self.url = url
        self.backend = backend
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self.generation = 0
        self._ready_before = 0

    def _ready_lines(self) -> int:
        return self.stdout_path.read_text().count("READY") if self.stdout_path.exists() else 0

    def start(self) -> None:
        self.generation += 1
        self._ready_before = self._ready_lines()
        stdout = open(self.stdout_path, "ab")  # noqa: SIM115 - handed to the child
        stderr = open(self.stderr_path, "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.worker_process", self.url, str(self.log_path),
             "--backend", self.backend, "--worker", f"{self.name}.{self.generation}",
             *self.extra],
            cwd=REPO,
            stdout=stdout,
            stderr=stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        stdout.close()
        stderr.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._ready_lines() > self._ready_before:
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.stderr_path.read_text()[-3000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} did not start: {self.stderr_path.read_text()[-3000:]}")

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def notifications(self) -> list[dict[str, Any]]:
        return [notification for _, notification in self.notifications_by_run()]

    def notifications_by_run(self) -> list[tuple[int, dict[str, Any]]]:
        """Notifications with the number of the run (counted by READY lines) that printed them.

        A run killed before it printed READY counts with the run before it.
        """
        found = []
        run = 0
        for line in self.stdout_path.read_text().splitlines():
            if line.startswith("READY"):
                run += 1
            elif line.startswith("{"):
                try:
                    found.append((run, json.loads(line)))
                except json.JSONDecodeError:
                    continue  # a line cut short by SIGKILL
        return found

    def checks(self) -> list[tuple[str, int, str]]:
        if not self.log_path.exists():
            return []
        found = []
        for line in self.log_path.read_text().splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[1].isdigit():
                found.append((parts[0], int(parts[1]), parts[2]))
        return found


def add_tally_jobs(url: str, met_after: Iterable[int], *, interval: float = 0.1) -> list[str]:
    """Add one ``tally`` job per value (in one transaction); returns their ids."""
    from tests.worker_process import TallyChecker, TallyPlugin

    specs = [
        {"job_type": "tally", "check_config": {"met_after": n}, "on_success_message": "met",
         "interval_seconds": interval, "max_attempts": 50}
        for n in met_after
    ]
    settings = Settings(
        database_url=url, limits=Limits(min_interval_seconds=0.01, max_active_jobs_per_user=10**7)
    )
    caller = Caller(user_id="scale", platform=f"scale-{uuid.uuid4().hex[:6]}")
    checker = TallyChecker(None, "adder", None, "as_configured")

    async def add() -> list[str]:
        async with circleback.Engine(
            settings, worker=False, plugins=[TallyPlugin(checker)], load_entry_points=False
        ) as engine:
            jobs = await engine.scheduler.add_jobs(caller, specs)
            return [str(job.id) for job in jobs]

    return anyio.run(add)


def sync_engine(url: str) -> sa.Engine:
    return create_sync_engine(url)


def wait_until_done(engine: sa.Engine, *, timeout: float = 180.0) -> None:
    """Wait until no job is active and no message is pending (a guard against hangs)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            active = conn.execute(sa.text(
                "SELECT count(*) FROM circleback_jobs WHERE status = 'active'")).scalar_one()
            pending = conn.execute(sa.text(
                "SELECT count(*) FROM circleback_outbox WHERE status = 'pending'")).scalar_one()
        if not active and not pending:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{active} jobs still active, {pending} messages pending")


def duplicates(pairs: Iterable[Any]) -> dict[Any, int]:
    return {key: count for key, count in Counter(pairs).items() if count > 1}
