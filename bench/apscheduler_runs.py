"""The workloads on APScheduler 4 (4.0.0a6), in its best configuration for them.

- The per-task limit of one running job is lifted through
  ``AsyncScheduler(task_defaults=TaskDefaults(max_running_jobs=None))``
  (``configure_task(func, max_running_jobs=None)`` would be reset by each
  later ``add_schedule``); the effective value is read back and reported.
- ``max_concurrent_jobs`` equals circleback's ``max_concurrent_checks``.
- On SQLite the store is ``SQLAlchemyDataStore`` on ``sqlite+aiosqlite``
  with the same pragmas circleback uses (WAL, ``synchronous=NORMAL``), which
  roughly doubles its throughput over the default rollback journal; in
  memory it is ``MemoryDataStore``.
- Timers are schedules with a ``DateTrigger``, pollers schedules with an
  ``IntervalTrigger`` (default coalescing: ``latest``); job results are not
  kept (``job_result_expiration_time=0``, the default).
"""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from apscheduler import AsyncScheduler, TaskDefaults, current_job
from apscheduler.abc import DataStore
from apscheduler.datastores.memory import MemoryDataStore
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from . import peer_limits
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
    trivial_job,
    w4_window,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["run"]

#: Seconds per add assumed without calibration (``calibrate=0``: tiny smoke runs).
_UNCALIBRATED_SECONDS_PER_ADD = 0.01

#: As many jobs at once as circleback allows itself checks at once.
MAX_CONCURRENT_JOBS = peer_limits.MAX_CONCURRENT_JOBS


async def poll_job() -> None:
    """The poll body: the shared trivial job, late by the schedule's fire time."""
    job = current_job.get()
    fired = job.scheduled_fire_time
    await trivial_job(fired.timestamp() if fired else time.time())


def _at(moment: float) -> datetime:
    return datetime.fromtimestamp(moment, UTC)


class _Run:
    def __init__(self, params: dict[str, Any], workdir: Path, store: str) -> None:
        self.params = params
        self.workdir = workdir
        self.store_kind = store
        self.timeout = float(params.get("timeout", 900.0))
        self._engines: list[Any] = []
        self.meta: dict[str, Any] = {}

    def data_store(self, name: str = "apscheduler.db") -> DataStore:
        if self.store_kind == "memory":
            return MemoryDataStore()
        from .apscheduler_sqlite import sqlite_store

        store, engine = sqlite_store(self.workdir / name)
        self._engines.append(engine)
        return store

    def scheduler(self, store: DataStore) -> AsyncScheduler:
        return AsyncScheduler(
            store,
            task_defaults=TaskDefaults(max_running_jobs=None),
            max_concurrent_jobs=MAX_CONCURRENT_JOBS,
        )

    async def close(self) -> None:
        for engine in self._engines:
            await engine.dispose()
        self._engines.clear()

    async def note_limits(self, scheduler: AsyncScheduler) -> None:
        tasks = await scheduler.get_tasks()
        self.meta["max_running_jobs"] = {task.id: task.max_running_jobs for task in tasks}
        self.meta["max_concurrent_jobs"] = scheduler.max_concurrent_jobs

    async def seconds_per_add(self) -> float:
        """How long one ``add_schedule`` takes here and now (on a scratch store)."""
        sample = int(self.params.get("calibrate", 100))
        if sample <= 0:
            return _UNCALIBRATED_SECONDS_PER_ADD
        far = _at(time.time() + 86_400)
        async with self.scheduler(self.data_store("calibrate.db")) as scheduler:
            started = time.perf_counter()
            for _ in range(sample):
                await scheduler.add_schedule(trivial_job, DateTrigger(far), args=[0.0])
            return (time.perf_counter() - started) / sample

    async def lead_time(self, count: int) -> float:
        per_add = await self.seconds_per_add()
        return 0.5 + 1.6 * count * per_add * float(self.params.get("lead_factor", 1.0))


async def store_idle_schedules(scheduler: AsyncScheduler, count: int, due: datetime) -> None:
    """Store ``count`` idle date schedules in batched transactions.

    Each row is what ``add_schedule`` writes — one template schedule marshalled
    by the store's own serializer and fire-time conversion — with its own id,
    inserted many per transaction: through ``add_schedule`` a million would
    take hours here.
    """
    store = scheduler.data_store
    task = await scheduler.configure_task(trivial_job)
    if isinstance(store, MemoryDataStore):
        for _ in range(count):
            await scheduler.add_schedule(trivial_job, DateTrigger(due), args=[due.timestamp()])
        return
    from .apscheduler_sqlite import store_idle_rows

    await store_idle_rows(store, task.id, task.job_executor, count, due, IDLE_STORE_CHUNK)


async def _count_schedules(scheduler: AsyncScheduler) -> int:
    store = scheduler.data_store
    if isinstance(store, MemoryDataStore):
        return len(await scheduler.get_schedules())
    from .apscheduler_sqlite import count_schedules

    return await count_schedules(store)


async def burst(params: dict[str, Any], workdir: Path, store: str) -> dict[str, Any]:
    """W1 (and W5 with ``idle``): ``n`` date schedules due at one instant."""
    run = _Run(params, workdir, store)
    count = int(params["n"])
    idle = int(params.get("idle", 0))
    figures: dict[str, Any] = {}
    try:
        lead = await run.lead_time(count)
        async with run.scheduler(run.data_store()) as scheduler:
            if idle:
                started = time.perf_counter()
                await store_idle_schedules(scheduler, idle, datetime.now(UTC) + timedelta(days=1))
                figures["idle_store_s"] = time.perf_counter() - started
                lead += 2.0
            due = time.time() + lead
            started = time.perf_counter()
            for _ in range(count):
                await scheduler.add_schedule(trivial_job, DateTrigger(_at(due)), args=[due])
            figures["setup_s"] = time.perf_counter() - started
            figures["stored_jobs"] = await _count_schedules(scheduler)
            await run.note_limits(scheduler)
            done = RECORDER.expect(count)
            await scheduler.start_in_background()
            check_lead(due)
            await sleep_until(due)
            cpu_start = cpu_seconds()
            mark("start")
            with anyio.fail_after(run.timeout):
                await done.wait()
            cpu = cpu_seconds() - cpu_start
            peak = peak_rss_mb()  # before the figures are worked out
        drain = max(RECORDER.ran_at) - due
        figures.update(
            drain_s=drain,
            jobs_per_s=count / drain if drain > 0 else float("inf"),
            **lateness_figures(RECORDER.lateness),
            cpu_s=cpu,
            peak_rss_mb=peak,
            done=len(RECORDER.ran_at),
            meta=run.meta,
        )
        return figures
    finally:
        await run.close()


async def spread(params: dict[str, Any], workdir: Path, store: str) -> dict[str, Any]:
    """W2: ``n`` date schedules due at random instants over ``spread`` seconds."""
    run = _Run(params, workdir, store)
    count = int(params["n"])
    width = float(params["spread"])
    rng = random.Random(int(params.get("seed", 7)))
    try:
        first = time.time() + await run.lead_time(count)
        dues = [first + rng.uniform(0, width) for _ in range(count)]
        async with run.scheduler(run.data_store()) as scheduler:
            started = time.perf_counter()
            for due in dues:
                await scheduler.add_schedule(trivial_job, DateTrigger(_at(due)), args=[due])
            setup = time.perf_counter() - started
            await run.note_limits(scheduler)
            ran = RECORDER.expect(count)
            await scheduler.start_in_background()
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
            "meta": run.meta,
        }
    finally:
        await run.close()


async def pollers(params: dict[str, Any], workdir: Path, store: str) -> dict[str, Any]:
    """W3: ``n`` interval schedules every ``interval`` s, watched for ``duration`` s."""
    run = _Run(params, workdir, store)
    count = int(params["n"])
    interval = float(params["interval"])
    duration = float(params["duration"])
    try:
        first = time.time() + await run.lead_time(count)
        starts = spread_starts(count, first, interval)
        end = first + duration
        async with run.scheduler(run.data_store()) as scheduler:
            started = time.perf_counter()
            for start in starts:
                trigger = IntervalTrigger(seconds=interval, start_time=_at(start))
                await scheduler.add_schedule(poll_job, trigger)
            setup = time.perf_counter() - started
            await run.note_limits(scheduler)
            await scheduler.start_in_background()
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
        expected = expected_checks(starts, interval, end)
        return {
            "checks_done": len(in_window),
            "checks_expected": expected,
            "done_pct": 100.0 * len(in_window) / expected,
            **lateness_figures(in_window),
            "cpu_s": cpu,
            "peak_rss_mb": peak,
            "setup_s": setup,
            "meta": run.meta,
        }
    finally:
        await run.close()


#: The HTTP client of W4's job body, one per run (like circleback's checker has one).
_HTTP: httpx.AsyncClient | None = None  # httpx is imported by the W4 run only


async def http_poll_job(url: str) -> bool:
    """W4's job body: what ``poll_url`` does at its core — GET, compare the status."""
    assert _HTTP is not None
    response = await _HTTP.get(url)
    return response.status_code == 200


def _http_client() -> httpx.AsyncClient:
    import httpx

    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            peer_limits.READ_TIMEOUT_SECONDS, connect=peer_limits.CONNECT_TIMEOUT_SECONDS
        ),
        limits=httpx.Limits(
            max_connections=peer_limits.MAX_CONNECTIONS,
            max_keepalive_connections=peer_limits.MAX_KEEPALIVE_CONNECTIONS,
        ),
        follow_redirects=False,
        trust_env=False,
    )


async def http_pollers(params: dict[str, Any], workdir: Path, store: str) -> dict[str, Any]:
    """W4: ``n`` interval schedules GETting a local server every ``interval`` s.

    The schedules start spread over one interval; the window of ``duration`` s
    starts one interval later, as for circleback.
    """
    global _HTTP
    run = _Run(params, workdir, store)
    count = int(params["n"])
    interval = float(params["interval"])
    duration = float(params["duration"])
    origins: dict[str, float] = {}
    try:
        lead = await run.lead_time(count)
        async with http_server() as base_url, _http_client() as client:
            _HTTP = client
            async with run.scheduler(run.data_store()) as scheduler:
                first = time.time() + lead
                for index, start in enumerate(spread_starts(count, first, interval)):
                    path = f"/poll/{index}"
                    trigger = IntervalTrigger(seconds=interval, start_time=_at(start))
                    await scheduler.add_schedule(http_poll_job, trigger, args=[base_url + path])
                    origins[path] = start
                await run.note_limits(scheduler)
                await scheduler.start_in_background()
                check_lead(first)
                window = w4_window(first, interval, duration)
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
            "meta": run.meta,
        }
    finally:
        _HTTP = None
        await run.close()


WORKLOADS = {"w1": burst, "w2": spread, "w3": pollers, "w4": http_pollers, "w5": burst}


async def run(workload: str, params: dict[str, Any], workdir: Path, store: str) -> dict[str, Any]:
    """Run one workload once in this process; returns its figures."""
    RECORDER.reset()
    return await WORKLOADS[workload](params, workdir, store)
