"""``python -m bench.outbox_backlog``: how fast a worker drains a backlog of messages.

Messages pile up in the outbox when jobs finish while no worker delivers
(a worker restarted, a notifier that was down), or faster than the
deliverer's capacity takes them. This finishes ``--n`` benchmark timers on an
engine without worker loops, so every message waits in the outbox, then
starts a worker engine and times how long it takes to deliver them all:
claims of up to the deliverer's capacity (200 messages) at a time,
each delivered and recorded.

By default the messages go to the benchmark's sink (a JSON line to
``/dev/null``, like ``notify`` without Redis). With ``--redis-url`` they go
through ``notify`` to that Redis, on a channel of their own, with one
subscriber listening in a process of its own (PUBLISH to no subscriber
counts as not delivered).

    python -m bench.outbox_backlog --n 3000 --rounds 3
    python -m bench.outbox_backlog --n 3000 --redis-url redis://127.0.0.1:6379/0
    python -m bench.outbox_backlog --backend trio   # SQLite and Redis in worker threads
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from circleback import Engine, Settings
from circleback.notifiers.notify import channel_for
from circleback.store.schema import jobs as jobs_table

from .circleback_runs import store_idle_jobs
from .plugin import BenchPlugin

#: A subscriber that listens on one channel until killed (argv: Redis URL, channel).
_SUBSCRIBER = """
import sys, redis
listening = redis.Redis.from_url(sys.argv[1]).pubsub()
listening.subscribe(sys.argv[2])
for _ in listening.listen():
    pass
"""


def _to_notify(platform: str) -> object:
    def change(conn: Connection) -> None:
        conn.execute(sa.update(jobs_table).values(on_complete="notify", platform=platform))

    return change


async def _drain_once(count: int, workdir: Path, redis_url: str | None, platform: str) -> float:
    settings = Settings(
        database_url=f"sqlite:///{workdir / 'circleback.db'}", redis_url=redis_url
    )
    plugin = BenchPlugin()
    async with Engine(settings, plugins=[plugin], worker=False) as engine:
        await store_idle_jobs(engine, count, datetime.now(UTC))
        if redis_url:
            await engine.store.runner.run(_to_notify(platform))
        checked = await engine.run_due_jobs()
        if checked != count:
            raise RuntimeError(f"{checked} of {count} jobs finished before the drain")
    done = plugin.sink.expect(count)
    started = time.perf_counter()
    async with Engine(settings, plugins=[plugin]) as engine:
        with anyio.fail_after(600):
            if not redis_url:
                await done.wait()
            else:
                await engine.wait_until_idle(poll_seconds=0.01)
        return time.perf_counter() - started


@contextlib.contextmanager
def _subscriber(redis_url: str, channel: str) -> Iterator[None]:
    """One subscriber on ``channel``, in its own process, listening once this returns."""
    import redis

    process = subprocess.Popen([sys.executable, "-c", _SUBSCRIBER, redis_url, channel])
    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + 30
        while dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) < 1:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the subscriber on {channel} did not start")
            time.sleep(0.05)
        yield
    finally:
        process.kill()
        process.wait()
        client.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.outbox_backlog", description=__doc__)
    parser.add_argument("--n", type=int, default=3000, help="messages in the backlog")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", help="deliver through notify to this Redis")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    platform = f"backlog-{uuid.uuid4().hex[:12]}"
    via = f"notify ({channel_for(platform)})" if args.redis_url else "the benchmark's sink"
    times = []
    with _subscriber(args.redis_url, channel_for(platform)) if args.redis_url else (
        contextlib.nullcontext()
    ):
        for round_number in range(1, args.rounds + 1):
            with tempfile.TemporaryDirectory(prefix="circleback-backlog-") as tmp:
                took = anyio.run(
                    _drain_once, args.n, Path(tmp), args.redis_url, platform,
                    backend=args.backend,
                )
            times.append(took)
            print(f"round {round_number}: {args.n:,} messages delivered via {via} in "
                  f"{took:.3f} s ({args.n / took:,.0f} messages/s)")
    print(f"min / median / max: {min(times):.3f} / {statistics.median(times):.3f} / "
          f"{max(times):.3f} s")


if __name__ == "__main__":
    main()
