"""The workloads on circleback, through its public API.

Jobs are added with ``engine.scheduler.add_job`` on an engine without worker
loops (``Engine(worker=False)``), so adding them costs no claim passes; then a
normal engine (default settings, a SQLite file through aiosqlite) runs them.
The only path around the facade is :func:`store_idle_jobs` for W5's million
idle jobs, which writes the same rows ``add_job`` would, in batches.
"""

from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import attrs
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from circleback import Caller, Engine, Job, JobStatus, Settings
from circleback.store.schema import jobs as jobs_table

from .common import (
    IDLE_STORE_CHUNK,
    RECORDER,
    check_lead,
    cpu_seconds,
    expected_checks,
    http_arrivals,
    http_figures,
    http_server,
    lateness_figures,
    mark,
    peak_rss_mb,
    sleep_until,
    spread_starts,
    w4_window,
)
from .plugin import BenchPlugin

__all__ = ["run"]

#: Seconds per add assumed without calibration (``calibrate=0``: tiny smoke runs).
_UNCALIBRATED_SECONDS_PER_ADD = 0.01

#: Jobs per user: the default limit is 100 active jobs per user.
_JOBS_PER_USER = 50


def _caller(index: int) -> Caller:
    return Caller(user_id=f"bench-user-{index // _JOBS_PER_USER}", platform="bench")


def _timer_spec(due: float) -> dict[str, Any]:
    return {
        "job_type": "bench_timer",
        "check_config": {"due": due},
        "on_success_message": "timer {job_id} fired",
        "on_complete": "bench_sink",
    }


def _poll_spec(start: float, interval: float) -> dict[str, Any]:
    return {
        "job_type": "bench_poll",
        "check_config": {"start": start},
        "on_success_message": "poll {job_id} met",
        "on_complete": "bench_sink",
        "interval_seconds": interval,
        "max_attempts": 10_000,
    }


class _Run:
    def __init__(self, params: dict[str, Any], workdir: Path) -> None:
        self.params = params
        self.settings = Settings(
            database_url=f"sqlite:///{workdir / 'circleback.db'}",
            allow_networks=("127.0.0.1/32",),
        )
        self.scratch = Settings(database_url=f"sqlite:///{workdir / 'calibrate.db'}")
        self.plugin = BenchPlugin()
        self.timeout = float(params.get("timeout", 900.0))
        self.worker: Engine | None = None

    def engine(self, *, worker: bool, settings: Settings | None = None) -> Engine:
        return Engine(settings or self.settings, plugins=[self.plugin], worker=worker)

    @property
    def worker_engine(self) -> Engine:
        assert self.worker is not None
        return self.worker

    async def seconds_per_add(self) -> float:
        """How long one ``add_job`` takes here and now (on a scratch database)."""
        sample = int(self.params.get("calibrate", 100))
        if sample <= 0:
            return _UNCALIBRATED_SECONDS_PER_ADD
        far = time.time() + 86_400
        async with self.engine(worker=False, settings=self.scratch) as engine:
            started = time.perf_counter()
            for index in range(sample):
                await engine.scheduler.add_job(_caller(index), _timer_spec(far))
            return (time.perf_counter() - started) / sample

    async def lead_time(self, count: int) -> float:
        """Seconds from now to leave for adding ``count`` jobs to an open engine."""
        per_add = await self.seconds_per_add()
        return 0.5 + 1.6 * count * per_add * float(self.params.get("lead_factor", 1.0))

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Engine]:
        """A worker engine, running before the jobs are added, as with ``circleback run``."""
        async with self.engine(worker=True) as engine:
            self.worker = engine
            try:
                yield engine
            finally:
                self.worker = None

    async def add_all(self, specs: Callable[[], list[dict[str, Any]]]) -> float:
        """Add the jobs ``specs()`` describes through a second engine's facade (no worker).

        ``specs`` is called once that engine is open, so due times can be chosen then.
        """
        async with self.engine(worker=False) as engine:
            chosen = specs()
            started = time.perf_counter()
            for index, spec in enumerate(chosen):
                await engine.scheduler.add_job(_caller(index), spec)
            took = time.perf_counter() - started
        if self.worker is not None:
            # Another engine wrote the jobs: tell the worker, as a wake-up channel would.
            self.worker.wake()
        return took


def _insert_rows(conn: Connection, rows: list[dict[str, Any]]) -> None:
    conn.execute(sa.insert(jobs_table), rows)


async def store_idle_jobs(engine: Engine, count: int, due: datetime) -> None:
    """Store ``count`` idle timers due at ``due``, in batched transactions.

    Each row is the row ``Scheduler.add_job`` writes for a validated
    ``bench_timer`` spec (one user per 50 jobs), built from one template job
    with its own id and user; only the per-call transaction and the per-user
    limit check are skipped, which would make a million inserts take most of
    an hour.
    """
    spec = engine.scheduler.validate(_timer_spec(due.timestamp()))
    now = engine.clock.now()
    template = Job(
        id=uuid.uuid4(),
        user_id="bench-idle",
        platform="bench",
        platform_channel_id=None,
        platform_thread_id=None,
        conversation_id=None,
        job_type=spec.job_type,
        check_config=spec.check_config,
        on_complete=spec.on_complete,
        workflow_id=None,
        interval_seconds=spec.interval_seconds,
        max_attempts=spec.max_attempts,
        backoff=spec.backoff,
        max_interval_seconds=spec.max_interval_seconds,
        on_success_message=spec.on_success_message,
        on_failure_message=spec.on_failure_message,
        status=JobStatus.ACTIVE,
        attempts=0,
        next_run_at=due,
        created_at=now,
        updated_at=now,
    )
    columns = set(jobs_table.c.keys())
    base = {name: value for name, value in attrs.asdict(template, recurse=False).items()
            if name in columns}
    base["status"] = template.status.value
    for first in range(0, count, IDLE_STORE_CHUNK):
        rows = [
            dict(base, id=uuid.uuid4(), user_id=f"bench-idle-{index // _JOBS_PER_USER}")
            for index in range(first, min(count, first + IDLE_STORE_CHUNK))
        ]
        await engine.store.runner.run(_insert_rows, rows)


async def burst(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """W1 (and W5 with ``idle``): ``n`` timers due at one instant; drain and lateness."""
    run = _Run(params, workdir)
    count = int(params["n"])
    idle = int(params.get("idle", 0))
    lead = await run.lead_time(count)
    figures: dict[str, Any] = {}
    due = 0.0

    def timers() -> list[dict[str, Any]]:
        nonlocal due
        due = time.time() + lead
        return [_timer_spec(due) for _ in range(count)]

    async with run.running():
        if idle:
            async with run.engine(worker=False) as engine:
                started = time.perf_counter()
                await store_idle_jobs(engine, idle, datetime.now(UTC) + timedelta(days=1))
                figures["idle_store_s"] = time.perf_counter() - started
        figures["setup_s"] = await run.add_all(timers)
        check_lead(due)
        figures["stored_jobs"] = (await run.worker_engine.store.count_unfinished())[0]
        done = run.plugin.sink.expect(count)
        await sleep_until(due)
        cpu_start = cpu_seconds()
        mark("start")
        with anyio.fail_after(run.timeout):
            await done.wait()
        cpu = cpu_seconds() - cpu_start
        peak = peak_rss_mb()  # before the figures are worked out
    drain = run.plugin.sink.last_at - due
    figures.update(
        drain_s=drain,
        jobs_per_s=count / drain if drain > 0 else float("inf"),
        **lateness_figures(RECORDER.lateness),
        cpu_s=cpu,
        peak_rss_mb=peak,
        done=len(RECORDER.ran_at),
        delivered=run.plugin.sink.count,
    )
    return figures


async def spread(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """W2: ``n`` timers due at random instants over ``spread`` seconds."""
    run = _Run(params, workdir)
    count = int(params["n"])
    width = float(params["spread"])
    rng = random.Random(int(params.get("seed", 7)))
    lead = await run.lead_time(count)
    first = 0.0

    def timers() -> list[dict[str, Any]]:
        nonlocal first
        first = time.time() + lead
        return [_timer_spec(first + rng.uniform(0, width)) for _ in range(count)]

    async with run.running():
        setup = await run.add_all(timers)
        check_lead(first)
        ran = RECORDER.expect(count)
        await sleep_until(first)
        cpu_start = cpu_seconds()
        mark("start")
        with anyio.fail_after(width + run.timeout):
            await ran.wait()
        cpu = cpu_seconds() - cpu_start
        peak = peak_rss_mb()  # before the figures are worked out
    return {
        **lateness_figures(RECORDER.lateness),
        "done": len(RECORDER.ran_at),
        "cpu_s": cpu,
        "peak_rss_mb": peak,
        "setup_s": setup,
    }


async def pollers(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """W3: ``n`` polls every ``interval`` s, never met, watched for ``duration`` s."""
    run = _Run(params, workdir)
    count = int(params["n"])
    interval = float(params["interval"])
    duration = float(params["duration"])
    lead = await run.lead_time(count)
    first = 0.0

    starts: list[float] = []

    def polls() -> list[dict[str, Any]]:
        nonlocal first
        first = time.time() + lead
        starts.extend(spread_starts(count, first, interval))
        return [_poll_spec(start, interval) for start in starts]

    async with run.running():
        setup = await run.add_all(polls)
        check_lead(first)
        end = first + duration
        await sleep_until(first)
        cpu_start = cpu_seconds()
        mark("start")
        await sleep_until(end)
        cpu = cpu_seconds() - cpu_start
        peak = peak_rss_mb()  # before the figures are worked out
        in_window = [
            late for at, late in zip(RECORDER.ran_at, RECORDER.lateness, strict=True)
            if first <= at < end
        ]
    expected = expected_checks(starts, interval, first + duration)
    return {
        "checks_done": len(in_window),
        "checks_expected": expected,
        "done_pct": 100.0 * len(in_window) / expected,
        **lateness_figures(in_window),
        "cpu_s": cpu,
        "peak_rss_mb": peak,
        "setup_s": setup,
    }


def _due_group(starts: list[float], first: int, now: float) -> list[int]:
    """From index ``first`` on, the indices of one user whose start has come by ``now``."""
    group = [first]
    user = first // _JOBS_PER_USER
    index = first + 1
    while index < len(starts) and starts[index] <= now and index // _JOBS_PER_USER == user:
        group.append(index)
        index += 1
    return group


async def http_pollers(params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """W4: ``n`` ``poll_url`` jobs every ``interval`` s against a local server.

    The jobs are added through the running engine's facade, spread over one
    interval (each polls at once when added, then every interval), each at
    its start; when adding falls behind, the jobs of one user whose start has
    come are added together, with one ``add_jobs`` call. The window of
    ``duration`` s starts one interval later, once all are polling.
    """
    run = _Run(params, workdir)
    count = int(params["n"])
    interval = float(params["interval"])
    duration = float(params["duration"])
    origins: dict[str, float] = {}
    async with http_server() as base_url, run.running() as engine:
        first = time.time() + 0.5
        starts = spread_starts(count, first, interval)
        next_index = 0
        while next_index < count:
            await sleep_until(starts[next_index])
            group = _due_group(starts, next_index, time.time())
            next_index = group[-1] + 1
            specs = [{
                "job_type": "poll_url",
                "check_config": {"url": f"{base_url}/poll/{index}", "expected_status": 200},
                "on_success_message": "{job_id} answered",
                "on_complete": "bench_sink",
                "interval_seconds": interval,
                "max_attempts": 10_000,
            } for index in group]
            jobs = await engine.scheduler.add_jobs(_caller(group[0]), specs)
            for index, job in zip(group, jobs, strict=True):
                origins[f"/poll/{index}"] = job.next_run_at.timestamp()
        window = w4_window(first, interval, duration)
        check_lead(window[0])  # adding must not eat into the window, or it measures nothing
        await sleep_until(window[0])
        cpu_start = cpu_seconds()
        mark("start")
        await sleep_until(window[1])
        cpu = cpu_seconds() - cpu_start
        peak = peak_rss_mb()  # before the figures are worked out
        arrivals = await http_arrivals(base_url)
    return {
        **http_figures(arrivals, origins, interval, window),
        "cpu_s": cpu,
        "peak_rss_mb": peak,
    }


WORKLOADS = {"w1": burst, "w2": spread, "w3": pollers, "w4": http_pollers, "w5": burst}


async def run(workload: str, params: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Run one workload once in this process; returns its figures."""
    RECORDER.reset()
    return await WORKLOADS[workload](params, workdir)
