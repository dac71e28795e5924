"""A worker process for the scale-out tests: ``python -m tests.worker_process URL LOGFILE``.

It runs a real engine with the ``tally`` job type: each check appends
``job_id attempt worker`` to LOGFILE before it answers, and the job is met once
``attempt >= check_config.met_after``. With ``--hold FILE`` a check waits while
FILE exists (so a test can catch the worker mid-check), and ``--answer not_yet``
makes every check unmet. Notifications go to standard output (the built-in
``notify`` without Redis).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import anyio

import circleback
from circleback import Checker, CheckOutcome, EngineTuning, Job, Limits, Runtime, Settings
from circleback.engine.pacing import Pacing


class TallyChecker(Checker):
    job_type = "tally"
    description = "Counts checks in a log file; met after check_config.met_after checks."

    def __init__(self, log_path: str | None, worker: str, hold: str | None, answer: str) -> None:
        # The log lives as long as the process; None: a checker used only to validate.
        self._log = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
        self._worker = worker
        self._hold = hold
        self._answer = answer

    def config_schema(self, context: Any) -> dict[str, Any]:
        return {"type": "object", "properties": {"met_after": {"type": "integer", "minimum": 1}}}

    def refine_config(self, config: dict[str, Any], context: Any) -> dict[str, Any]:
        return {"met_after": int(config.get("met_after", 1))}

    async def check(self, job: Job, runtime: Runtime) -> CheckOutcome:
        attempt = job.attempts + 1
        assert self._log is not None
        self._log.write(f"{job.id} {attempt} {self._worker} {time.time():.3f}\n")
        while self._hold and await anyio.Path(self._hold).exists():
            await anyio.sleep(0.02)
        if self._answer == "not_yet" or attempt < job.check_config["met_after"]:
            return CheckOutcome.not_yet(f"check {attempt} by {self._worker}")
        return CheckOutcome.met({"attempt": attempt, "worker": self._worker})


class TallyPlugin:
    def __init__(self, checker: TallyChecker) -> None:
        self.checker = checker

    @circleback.hookimpl
    def circleback_register_checkers(self, register: Callable[[Checker], None]) -> None:
        register(self.checker)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("log")
    parser.add_argument("--backend", default="asyncio")
    parser.add_argument("--worker", default=f"w{os.getpid()}")
    parser.add_argument("--lease", type=float, default=2.0)
    parser.add_argument("--max-sleep", type=float, default=0.2)
    parser.add_argument("--hold", default=None)
    parser.add_argument("--answer", default="as_configured")
    args = parser.parse_args()
    logging.basicConfig(
        level=os.environ.get("CB_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )

    settings = Settings(
        database_url=args.url,
        limits=Limits(min_interval_seconds=0.01),
        tuning=EngineTuning(
            lease_seconds=args.lease,
            check_timeout_seconds=args.lease / 2,
            shutdown_grace_seconds=1.0,
        ),
    )
    pacing = Pacing(
        heartbeat_seconds=args.lease / 4,
        max_sleep_seconds=args.max_sleep,
        delivery_backoff_seconds=0.05,
        delivery_backoff_max_seconds=0.5,
    )
    checker = TallyChecker(args.log, args.worker, args.hold, args.answer)

    async def run() -> None:
        async with circleback.Engine(
            settings, plugins=[TallyPlugin(checker)], load_entry_points=False,
            worker_id=args.worker, pacing=pacing,
        ):
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                print("READY", flush=True)
                async for _ in signals:
                    return

    anyio.run(run, backend=args.backend)


if __name__ == "__main__":
    main()
