"""``python -m bench.http_cost``: CPU per request of the HTTP clients a poll may use.

Sends ``--requests`` GETs to the W4 server (:mod:`bench.http_server`, its own
process, so its CPU is not counted) with ``--width`` of them in flight at a
time, and prints the CPU (user + system) this process spent per request:

- ``httpx``: a plain ``httpx.AsyncClient`` (what W4's APScheduler job body uses);
- ``guarded``: circleback's :class:`~circleback.net.guarded_client.GuardedClient`,
  the client ``poll_url`` requests through, with its address checks;
- ``engine check``: one whole ``poll_url`` check through the engine's check step
  (``Checks.run_one``: the client plus what the checker does around it), one at a time.

Each is warmed up with a tenth of the requests first.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Awaitable, Callable

import anyio
import httpx

import circleback
from circleback import Caller, HttpTuning, Settings
from circleback.net.guarded_client import GuardedClient
from circleback.net.netguard import NetworkPolicy, parse_http_url

from .common import cpu_seconds, http_server

Request = Callable[[int], Awaitable[None]]


async def _per_request(send: Request, count: int, width: int) -> float:
    """CPU seconds per call of ``send``, ``width`` at a time, after a warm-up."""

    async def lane(first: int, total: int) -> None:
        for index in range(first, total, width):
            await send(index)

    for total in (max(1, count // 10), count):
        started = cpu_seconds()
        async with anyio.create_task_group() as group:
            for first in range(min(width, total)):
                group.start_soon(lane, first, total)
    return (cpu_seconds() - started) / count


async def measure(count: int, width: int) -> dict[str, float]:
    """Microseconds of CPU per request for each client."""
    figures: dict[str, float] = {}
    async with http_server() as base_url:
        async with httpx.AsyncClient(trust_env=False) as plain:

            async def with_httpx(index: int) -> None:
                (await plain.get(f"{base_url}/poll/{index % 500}")).raise_for_status()

            figures["httpx"] = await _per_request(with_httpx, count, width)

        guarded = GuardedClient(HttpTuning(), NetworkPolicy(("127.0.0.1/32",)))

        async def with_guarded(index: int) -> None:
            url = parse_http_url(f"{base_url}/poll/{index % 500}")
            async with guarded.request("GET", url) as response:
                await response.read_capped(65_536)

        figures["guarded"] = await _per_request(with_guarded, count, width)
        await guarded.aclose()

        with tempfile.TemporaryDirectory(prefix="circleback-bench-http-") as tmp:
            settings = Settings(database_url=f"sqlite:///{tmp}/circleback.db",
                                allow_networks=("127.0.0.1/32",))
            async with circleback.Engine(
                settings, load_entry_points=False, worker=False
            ) as engine, await engine.start_plugins():
                job = await engine.scheduler.add_job(
                    Caller(user_id="bench", platform="bench"),
                    {"job_type": "poll_url", "check_config": {"url": f"{base_url}/poll/0"},
                     "on_success_message": "answered"},
                )

                async def with_engine(index: int) -> None:
                    await engine._checks.run_one(job)

                figures["engine check"] = await _per_request(with_engine, count, 1)
    return {name: seconds * 1e6 for name, seconds in figures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.http_cost", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--width", type=int, default=8, help="requests in flight at a time")
    args = parser.parse_args(argv)
    figures = anyio.run(measure, args.requests, args.width)
    for name, micros in figures.items():
        width = 1 if name == "engine check" else args.width
        print(f"{name:>13}: {micros:6.0f} µs of CPU per request ({width} in flight)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
