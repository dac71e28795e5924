"""What both systems' runs share: the job body, the recorder, figures, process usage.

The job body is the same trivial coroutine for both systems
(:func:`trivial_job`): it notes the wall-clock moment it ran and how late that
was against the moment the job was due. Each run lives in its own process, so
the recorder is a module-level object and peak RSS is the run's own.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from array import array
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import anyio
import anyio.to_thread

__all__ = [
    "OVERRAN",
    "RECORDER",
    "Recorder",
    "check_lead",
    "cpu_seconds",
    "expected_checks",
    "http_arrivals",
    "http_figures",
    "http_server",
    "lateness_figures",
    "mark",
    "peak_rss_mb",
    "percentile",
    "sleep_until",
    "spread_starts",
    "trivial_job",
    "w4_window",
]


#: The error text of a run whose jobs were still being added when they fell due.
OVERRAN = "adding the jobs overran their due time"

#: Rows per transaction when a run stores W5's idle jobs in bulk, the same for both
#: systems. Small enough that the rows being built do not set the process's peak RSS
#: (10,000 at once put about 21 MiB into circleback's, more than the scheduler's own).
IDLE_STORE_CHUNK = 1_000


def check_lead(due: float) -> None:
    """Raise when ``due`` passed before the jobs due then were all added."""
    if time.time() > due:
        raise RuntimeError(f"{OVERRAN}; raise lead_factor")


class Recorder:
    """Collects when each job body ran and how late; signals once ``target`` ran."""

    def __init__(self) -> None:
        # Packed doubles: 8 bytes a run, so the bookkeeping of a system that runs
        # more jobs does not weigh on its peak RSS (a list of floats costs 32).
        self.lateness = array("d")
        self.ran_at = array("d")
        self.target: int | None = None
        self.done: anyio.Event | None = None

    def expect(self, target: int) -> anyio.Event:
        """Arm the recorder: the returned event is set once ``target`` bodies have run."""
        self.target = target
        self.done = anyio.Event()
        if len(self.ran_at) >= target:
            self.done.set()
        return self.done

    def ran(self, due: float) -> None:
        now = time.time()
        self.ran_at.append(now)
        self.lateness.append(now - due)
        if self.done is not None and self.target is not None and len(self.ran_at) >= self.target:
            self.done.set()

    def reset(self) -> None:
        """Forget everything (for several runs in one process, as in the smoke test)."""
        del self.lateness[:]
        del self.ran_at[:]
        self.target = None
        self.done = None


#: The recorder of this process (each run has a process of its own).
RECORDER = Recorder()


async def trivial_job(due: float) -> None:
    """The job body of every workload on both systems: note the time, nothing else."""
    RECORDER.ran(due)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile (``fraction`` in 0..1) of ``values``; NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def lateness_figures(lateness: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max of lateness samples (seconds in), in milliseconds."""
    return {
        "late_p50_ms": percentile(lateness, 0.50) * 1000,
        "late_p99_ms": percentile(lateness, 0.99) * 1000,
        "late_max_ms": (max(lateness) * 1000) if lateness else math.nan,
    }


def cpu_seconds() -> float:
    """User + system CPU seconds this process has used so far (all its threads)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def sleep_until(moment: float) -> None:
    """Sleep until the wall clock reads ``moment`` (epoch seconds)."""
    delay = moment - time.time()
    if delay > 0:
        await anyio.sleep(delay)


#: W4's window opens this long after one interval from the first start, so that
#: adding the last jobs (due just before the interval ends) is over by then.
W4_SETTLE_SECONDS = 0.25


def w4_window(first: float, interval: float, duration: float) -> tuple[float, float]:
    """W4's measured window: ``duration`` s from one interval (and a settling moment) on."""
    start = first + interval + W4_SETTLE_SECONDS
    return start, start + duration


def spread_starts(count: int, first: float, interval: float) -> list[float]:
    """``count`` start moments spread evenly over one interval from ``first``."""
    return [first + interval * index / count for index in range(count)]


def mark(event: str) -> None:
    """Note ``event`` (``start`` / ``end`` of the measured window) in ``$BENCH_MARK_FILE``.

    For profiling only the measured window: a profiler attaches when ``start`` appears.
    """
    path = os.environ.get("BENCH_MARK_FILE")
    if path:
        with open(path, "a") as marks:
            marks.write(f"{event} {time.time():.6f}\n")


_ROOT = Path(__file__).resolve().parent.parent


def _read_or_empty(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return ""


@contextlib.asynccontextmanager
async def http_server() -> AsyncIterator[str]:
    """Start :mod:`bench.http_server` in its own process; yields its base URL."""
    with tempfile.TemporaryDirectory(prefix="circleback-bench-http-") as tmp:
        port_file = Path(tmp) / "port"
        process = await anyio.open_process(
            [sys.executable, "-m", "bench.http_server", str(port_file)],
            cwd=_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=None,
            stderr=None,
        )
        try:
            port = ""
            with anyio.fail_after(30):
                while not port:
                    if process.returncode is not None:
                        raise RuntimeError("the HTTP server exited at start")
                    await anyio.sleep(0.02)
                    port = await anyio.to_thread.run_sync(_read_or_empty, port_file)
            yield f"http://127.0.0.1:{port}"
        finally:
            with anyio.CancelScope(shield=True):
                process.terminate()
                await process.wait()
                await process.aclose()


async def http_arrivals(base_url: str) -> list[tuple[str, float]]:
    """Every request the server received: (path, arrival epoch seconds)."""
    import httpx  # here: a run's process pays only for what the run itself uses

    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.get(f"{base_url}/__stats")
        response.raise_for_status()
        return [(path, float(at)) for path, at in response.json()["arrivals"]]


def http_figures(
    arrivals: Sequence[tuple[str, float]],
    origins: dict[str, float],
    interval: float,
    window: tuple[float, float],
) -> dict[str, float]:
    """Requests done vs expected in ``window``, and their lateness.

    ``origins`` maps each poll's path to its first due moment; it is due every
    ``interval`` from there. A request is late by the time since the latest due
    moment before it arrived — so lateness is seen modulo the interval, and a
    poll that falls a whole interval behind shows up as requests not done.
    """
    start, end = window
    lateness = []
    for path, at in arrivals:
        if start <= at < end and path in origins:
            since = at - origins[path]
            lateness.append(since - math.floor(since / interval) * interval)
    expected = sum(
        max(0, math.ceil((end - origin) / interval))
        - max(0, math.ceil((start - origin) / interval))
        for origin in origins.values()
    )
    return {
        "requests_done": len(lateness),
        "requests_expected": expected,
        "done_pct": 100.0 * len(lateness) / expected if expected else math.nan,
        **lateness_figures(lateness),
    }


def expected_checks(starts: Sequence[float], interval: float, end: float) -> int:
    """How many checks polls starting at ``starts`` are due before ``end``."""
    return sum(max(0, math.ceil((end - start) / interval)) for start in starts)
