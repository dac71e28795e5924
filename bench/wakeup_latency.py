# ruff: noqa: ASYNC110, ASYNC220, ASYNC240 - a timing tool: blocking reads and polling are the point
"""Wake-up latency: from the commit of a job's insert to the start of its first check.

    python -m bench.wakeup_latency [--url postgresql://...] [--rounds 20]

Two cases on an idle system, each with a worker whose longest sleep is a
minute (so only a wake-up explains a prompt check):

- same process: the engine that runs the worker also adds the job;
- other process: a worker process is woken by PostgreSQL ``LISTEN/NOTIFY``.

Prints min / median / p90 / max in milliseconds for each.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import sqlalchemy as sa

import circleback
from circleback import Checker, CheckOutcome, Job, Runtime, Settings
from circleback.engine.pacing import Pacing


class StampChecker(Checker):
    """Writes the wall-clock time of each check to a file named after the job."""

    job_type = "stamp"

    def __init__(self, directory: str) -> None:
        self._directory = directory

    def config_schema(self, context: Any) -> dict[str, Any]:
        return {"type": "object", "maxProperties": 0}

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        Path(self._directory, str(job.id)).write_text(f"{time.time():.6f}")
        return CheckOutcome.met()


class DiscardNotifier(circleback.Notifier):
    """Drops every message: delivery is not what is measured here."""

    name = "discard"

    async def deliver(
        self, notification: circleback.Notification, context: circleback.DeliveryContext
    ) -> circleback.DeliveryReceipt:
        return circleback.DeliveryReceipt(via=self.name)


class StampPlugin:
    def __init__(self, directory: str) -> None:
        self.checker = StampChecker(directory)

    @circleback.hookimpl
    def circleback_register_checkers(self, register: Callable[[Checker], None]) -> None:
        register(self.checker)

    @circleback.hookimpl
    def circleback_register_notifiers(
        self, register: Callable[[circleback.Notifier], None]
    ) -> None:
        register(DiscardNotifier())


def _settings(url: str) -> Settings:
    return Settings(database_url=url)


#: Looks at the store only when woken: what is measured is the wake-up.
_PACING = Pacing(max_sleep_seconds=60.0)


_SPEC = {"job_type": "stamp", "check_config": {}, "on_success_message": "x",
         "on_complete": "discard"}
_CALLER = circleback.Caller(user_id="bench", platform="bench")


async def _wait_for(path: Path) -> float:
    while not path.exists() or not path.read_text():
        await anyio.sleep(0.001)
    return float(path.read_text())


async def same_process(url: str, rounds: int, directory: str) -> list[float]:
    latencies = []
    async with circleback.Engine(
        _settings(url), plugins=[StampPlugin(directory)], load_entry_points=False, pacing=_PACING
    ) as engine:
        await anyio.sleep(0.5)
        for _ in range(rounds):
            job = await engine.scheduler.add_job(_CALLER, _SPEC)
            committed = time.time()
            latencies.append(await _wait_for(Path(directory, str(job.id))) - committed)
            await anyio.sleep(0.2)
    return latencies


async def other_process(url: str, rounds: int, directory: str) -> list[float]:
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.wakeup_latency", "--serve", directory, "--url", url],
        stdout=subprocess.PIPE,
    )
    assert worker.stdout is not None
    worker.stdout.readline()  # READY
    latencies = []
    try:
        async with circleback.Engine(
            _settings(url), plugins=[StampPlugin(directory)], load_entry_points=False,
            worker=False, pacing=_PACING,
        ) as engine:
            await anyio.sleep(0.5)
            for _ in range(rounds):
                job = await engine.scheduler.add_job(_CALLER, _SPEC)
                committed = time.time()
                latencies.append(await _wait_for(Path(directory, str(job.id))) - committed)
                await anyio.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait()
    return latencies


async def serve(url: str, directory: str) -> None:
    async with circleback.Engine(
        _settings(url), plugins=[StampPlugin(directory)], load_entry_points=False, pacing=_PACING
    ):
        print("READY", flush=True)
        await anyio.sleep_forever()


def _report(name: str, values: list[float]) -> None:
    ms = sorted(v * 1000 for v in values)
    print(
        f"{name:14s} n={len(ms)}  min {ms[0]:6.1f}  median {statistics.median(ms):6.1f}  "
        f"p90 {ms[int(0.9 * (len(ms) - 1))]:6.1f}  max {ms[-1]:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get(
        "CIRCLEBACK_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--serve", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        anyio.run(serve, args.url, args.serve)
        return
    schema = f"cb_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(sa.make_url(args.url).set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    url = sa.make_url(args.url).update_query_dict({"options": f"-csearch_path={schema}"})
    url_text = url.render_as_string(hide_password=False)
    try:
        with tempfile.TemporaryDirectory() as directory:
            _report("same process", anyio.run(same_process, url_text, args.rounds, directory))
            _report("other process", anyio.run(other_process, url_text, args.rounds, directory))
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


if __name__ == "__main__":
    main()
