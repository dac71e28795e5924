"""``python -m bench.outbox_backlog``: how fast a worker drains a backlog of messages.

Messages pile up in the outbox when jobs finish while no worker delivers
(a worker restarted, a notifier that was down), or faster than the
deliverer's capacity takes them. This finishes ``--n`` benchmark timers on an
engine without worker loops, so every message waits in the outbox, then
starts a worker engine and times how long it takes to deliver them all:
claims of up to ``max_concurrent_deliveries`` (200 by default) at a time,
each delivered to the benchmark's sink and recorded.

    python -m bench.outbox_backlog --n 3000 --rounds 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import anyio

from circleback import Engine, Settings

from .circleback_runs import store_idle_jobs
from .plugin import BenchPlugin


async def _drain_once(count: int, workdir: Path) -> float:
    settings = Settings(database_url=f"sqlite:///{workdir / 'circleback.db'}")
    plugin = BenchPlugin()
    async with Engine(settings, plugins=[plugin], worker=False) as engine:
        await store_idle_jobs(engine, count, datetime.now(UTC))
        checked = await engine.run_due_jobs()
        if checked != count:
            raise RuntimeError(f"{checked} of {count} jobs finished before the drain")
    done = plugin.sink.expect(count)
    started = time.perf_counter()
    async with Engine(settings, plugins=[plugin]):
        with anyio.fail_after(600):
            await done.wait()
        return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox_backlog", description=__doc__)
    parser.add_argument("--n", type=int, default=3000, help="messages in the backlog")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    times = []
    for round_number in range(1, args.rounds + 1):
        with tempfile.TemporaryDirectory(prefix="circleback-backlog-") as tmp:
            took = anyio.run(_drain_once, args.n, Path(tmp))
        times.append(took)
        print(f"round {round_number}: {args.n:,} messages delivered in {took:.3f} s "
              f"({args.n / took:,.0f} messages/s)")
    print(f"min / median / max: {min(times):.3f} / {statistics.median(times):.3f} / "
          f"{max(times):.3f} s")


if __name__ == "__main__":
    main()
