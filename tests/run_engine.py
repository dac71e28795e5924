"""An engine process for the restart tests: ``python -m tests.run_engine DATABASE_URL``.

It runs a real engine with the ``slow`` job type (tests/plugins_for_subprocess.py)
and short leases, so that a job whose worker was killed is taken over quickly.
Notifications go to standard output as JSON lines (the built-in ``notify``
without Redis). ``--until-idle`` exits once nothing is left to do; otherwise
it runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import signal

import anyio

import circleback
from circleback import EngineTuning, Settings
from circleback.engine.pacing import Pacing

from .plugins_for_subprocess import SlowPlugin

#: A lease that outlasts the check timeout, and little else: a dead worker's job is free soon.
TUNING = EngineTuning(
    lease_seconds=1.5,
    check_timeout_seconds=1.0,
    shutdown_grace_seconds=0.5,
)
PACING = Pacing(max_sleep_seconds=0.2)


async def run(database_url: str, until_idle: bool) -> None:
    settings = Settings(database_url=database_url, tuning=TUNING)
    async with (
        circleback.Engine(
            settings, plugins=[SlowPlugin()], load_entry_points=False, pacing=PACING
        ) as engine,
        anyio.create_task_group() as group,
    ):
        logging.getLogger("run_engine").info("engine %s running", engine.worker_id)

        async def stop_on_signal() -> None:
            with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    group.cancel_scope.cancel()
                    return

        group.start_soon(stop_on_signal)
        if until_idle:
            await engine.wait_until_idle(poll_seconds=0.1)
            group.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("database_url")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument("--until-idle", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    anyio.run(run, args.database_url, args.until_idle, backend=args.backend)


if __name__ == "__main__":
    main()
