"""The engine: checks due jobs, records outcomes, delivers messages.

``Engine`` is an async context manager. Inside ``async with Engine(...)`` its
worker loops run as tasks of the caller's task tree (on asyncio or trio), and
``engine.scheduler`` is the facade through which jobs are added and cancelled.
Leaving the block stops claiming, lets checks in flight finish for a grace
period, gives back the leases of the rest, and closes everything, shielded.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import anyio.lowlevel
import attrs
import sqlalchemy as sa

from ..core.abc import Checker, DeliveryContext, DeliveryFailed, DeliveryReceipt, Notifier, Runtime
from ..core.clock import Clock, SystemClock
from ..core.models import (
    CheckOutcome,
    CheckStatus,
    DeliveryStatus,
    DeliveryUpdate,
    Job,
    JobStatus,
    OutboxEntry,
)
from ..core.registry import PluginRegistry
from ..core.settings import Settings
from ..core.state import CheckResult, apply_event, ends_job, next_interval
from ..store.database import is_memory_sqlite
from ..store.store import Store
from ..store.wakeups import PostgresWakeups
from .heartbeat import Heartbeat
from .operations import Operations
from .pipeline import WorkPipeline
from .plugins import make_plugin_manager
from .scheduler import Scheduler

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Engine"]

logger = logging.getLogger("circleback.engine")

#: Workers silent for this long are dropped from the workers table.
_FORGET_WORKERS_AFTER = timedelta(days=1)
#: Largest JSON text of a check result kept with the job and its message.
_MAX_STORED_RESULT_CHARS = 16_384
#: Strings this short fit the limit however JSON escapes them (12 characters at most each).
_SHORT_TEXT_CHARS = (_MAX_STORED_RESULT_CHARS - 2) // 12
_EXACT_INT = 10**15
#: Check results turned into transitions between two turns given to other tasks.
_TRANSITIONS_BETWEEN_TURNS = 64


def _next_run_at(job: Job) -> datetime:
    return job.next_run_at


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _storable(value: Any) -> Any:
    """``value`` as JSON data of bounded size (opaque objects become their type name)."""
    kind = type(value)
    if value is None or kind is bool or (kind is int and -_EXACT_INT < value < _EXACT_INT):
        return value  # already its own JSON form: skip the round trip
    if kind is str and len(value) <= _SHORT_TEXT_CHARS:
        return value
    try:
        text = json.dumps(value, default=lambda obj: f"<{type(obj).__name__}>")
    except (TypeError, ValueError, RecursionError):
        return f"<unserialisable {type(value).__name__}>"
    if len(text) > _MAX_STORED_RESULT_CHARS:
        return text[:_MAX_STORED_RESULT_CHARS] + "…[cut]"
    return json.loads(text)


class Engine:
    """Runs circleback: the worker loops and the :class:`~circleback.Scheduler` facade.

    :param settings: the configuration; ``Settings.from_env()`` when omitted.
    :param store: a store to use instead of one opened from ``settings.database_url``.
    :param clock: where time comes from; tests pass a :class:`~circleback.testing.ManualClock`.
    :param plugins: extra plugin objects (modules or instances with hook implementations).
    :param load_entry_points: also load plugins installed under the ``circleback`` group.
    :param worker: run the worker loops; ``False`` gives the facade only (the CLI's
        ``add`` and ``list``), or an engine that tests step with :meth:`run_due_jobs`.
    :param database: where jobs are kept, instead of ``settings.database_url``: a URL,
        or an embedder's SQLAlchemy ``Engine`` or ``AsyncEngine`` (left open).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        store: Store | None = None,
        clock: Clock | None = None,
        plugins: Iterable[object] = (),
        load_entry_points: bool = True,
        worker: bool = True,
        worker_id: str | None = None,
        database: str | sa.URL | sa.Engine | AsyncEngine | None = None,
    ) -> None:
        self.settings = settings if settings is not None else Settings.from_env()
        self.clock: Clock = clock or SystemClock()
        self.worker_id = worker_id or _default_worker_id()
        self._own_store = store is None
        self.store = store or Store(database or self.settings.database_url)
        self._plugin_objects = list(plugins)
        self._load_entry_points = load_entry_points
        self._run_worker = worker
        self._exit_stack: AsyncExitStack | None = None
        self._registry: PluginRegistry | None = None
        self._runtime: Runtime | None = None
        self._scheduler: Scheduler | None = None
        self._heartbeat_runs = False
        #: The PostgreSQL wake-up listener, while one runs.
        self.wakeups: PostgresWakeups | None = None
        tuning = self.settings.tuning
        self._jobs = WorkPipeline[Job, CheckOutcome](
            name="checks",
            claim=self._claim_jobs,
            work=self._check,
            record=self._record_checks,
            release=self._release_jobs,
            next_due=self.store.next_due_time,
            clock=self.clock,
            capacity=tuning.max_concurrent_checks,
            batch_size=tuning.batch_size,
            max_sleep_seconds=tuning.max_sleep_seconds,
            logger=logger,
            due_at=_next_run_at,
            lookahead_seconds=tuning.claim_ahead,
            record_linger_seconds=tuning.record_linger_seconds,
            linger_for=self._linger_for_check,
            timer_slack_seconds=tuning.timer_slack_seconds,
            dense_slack_seconds=tuning.dense_timer_slack_seconds,
            timeout_seconds=tuning.check_timeout_seconds,
            timed_out=self._check_timed_out,
        )
        self._deliveries = WorkPipeline[OutboxEntry, DeliveryUpdate](
            name="deliveries",
            claim=self._claim_deliveries,
            work=self._deliver,
            record=self._record_deliveries,
            release=self._release_deliveries,
            next_due=self.store.next_delivery_time,
            clock=self.clock,
            capacity=tuning.max_concurrent_deliveries,
            batch_size=tuning.batch_size,
            max_sleep_seconds=tuning.max_sleep_seconds,
            logger=logger,
            record_linger_seconds=tuning.record_linger_seconds,
            timeout_seconds=tuning.delivery_timeout_seconds,
            timed_out=self._delivery_timed_out,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def scheduler(self) -> Scheduler:
        """The facade for adding, listing and cancelling jobs."""
        if self._scheduler is None:
            raise RuntimeError("the engine is not running; use 'async with Engine(...)'")
        return self._scheduler

    @property
    def operations(self) -> Operations:
        """Operator verbs on this engine's database: workers, the outbox, a ping."""
        return Operations(self.store)

    @property
    def plugins(self) -> PluginRegistry:
        """The checkers and notifiers this engine uses."""
        if self._registry is None:
            raise RuntimeError("the engine is not running; use 'async with Engine(...)'")
        return self._registry

    @property
    def runtime(self) -> Runtime:
        """What plugins see of the engine."""
        if self._runtime is None:
            raise RuntimeError("the engine is not running; use 'async with Engine(...)'")
        return self._runtime

    async def __aenter__(self) -> Self:
        stack = AsyncExitStack()
        await stack.__aenter__()
        try:
            manager = make_plugin_manager(
                self._plugin_objects, load_entry_points=self._load_entry_points
            )
            self._registry = PluginRegistry.from_manager(manager)
            self._runtime = Runtime(
                settings=self.settings, clock=self.clock, plugins=self._registry, logger=logger
            )
            await self.store.open()
            if self._own_store:
                stack.push_async_callback(self._shielded, self.store.aclose)
            self._scheduler = Scheduler(
                store=self.store,
                plugins=self._registry,
                settings=self.settings,
                clock=self.clock,
                on_change=self._jobs.wake,
                on_cancel=self._forget_cancelled,
            )
            if self._run_worker:
                await self._start_plugins(stack)
                self._heartbeat_runs = not is_memory_sqlite(self.store.url)
                if self._heartbeat_runs:
                    heartbeat = self._make_heartbeat()
                    await heartbeat.start()
                    stack.push_async_callback(self._shielded, heartbeat.stop)
                group = await stack.enter_async_context(anyio.create_task_group())
                # Background tasks run in scopes made here, so that leaving at once
                # cancels them even before they first run.
                reaper = anyio.CancelScope()
                stack.callback(reaper.cancel)
                if self.store.dialect_name == "postgresql":
                    self.wakeups = PostgresWakeups(self.store.url, self.wake, logger)
                    listener = anyio.CancelScope()
                    stack.callback(listener.cancel)
                    group.start_soon(self._in_scope, listener, self.wakeups.run)
                grace = self.settings.tuning.shutdown_grace_seconds
                await group.start(self._jobs_loop, grace)
                await group.start(self._deliveries_loop, grace)
                group.start_soon(self._in_scope, reaper, self._reap_forever)
                stack.callback(self._deliveries.stop)
                stack.callback(self._jobs.stop)
        except BaseException:
            await stack.aclose()
            raise
        self._exit_stack = stack
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack, self._exit_stack = self._exit_stack, None
        if stack is not None:
            return await stack.__aexit__(exc_type, exc, tb)
        return None

    async def start_plugins(self) -> AsyncExitStack:
        """Start every plugin for an engine without worker loops; close the stack to stop them."""
        stack = AsyncExitStack()
        await self._start_plugins(stack)
        return stack

    async def _start_plugins(self, stack: AsyncExitStack) -> None:
        plugins: list[Checker | Notifier] = [
            *self.plugins.checkers.values(),
            *self.plugins.notifiers.values(),
        ]
        for plugin in plugins:
            await plugin.start(self.runtime)
            stack.push_async_callback(self._shielded, plugin.stop)

    @staticmethod
    async def _shielded(close: Any) -> None:
        with anyio.CancelScope(shield=True):
            await close()

    async def _jobs_loop(
        self, grace: float, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self._jobs.run(grace_seconds=grace, task_status=task_status)

    async def _deliveries_loop(
        self, grace: float, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        await self._deliveries.run(grace_seconds=grace, task_status=task_status)

    def _make_heartbeat(self) -> Heartbeat:
        tuning = self.settings.tuning

        def ids(items: list[Job] | list[OutboxEntry]) -> list[uuid.UUID]:
            return [item.id for item in items]

        return Heartbeat(
            url=self.store.url,
            worker_id=self.worker_id,
            clock=self.clock,
            period=tuning.heartbeat_interval,
            lease_seconds=tuning.lease_seconds,
            held_jobs=lambda: ids(self._jobs.held()),
            held_deliveries=lambda: ids(self._deliveries.held()),
            logger=logger,
        )

    @staticmethod
    async def _in_scope(scope: anyio.CancelScope, run: Callable[[], Awaitable[None]]) -> None:
        with scope:
            await run()

    async def _reap_forever(self) -> None:
        period = self.settings.tuning.lease_seconds / 3
        while True:
            await anyio.sleep(period)
            try:
                reaped = await self.store.reap_expired_leases(self.clock.now())
            except Exception:
                logger.exception("reaping expired leases failed")
                continue
            if reaped:
                logger.warning("took back %d expired leases of stalled or dead workers", reaped)
                self._jobs.wake()
                self._deliveries.wake()
            with contextlib.suppress(Exception):
                await self.store.forget_workers(self.clock.now() - _FORGET_WORKERS_AFTER)

    def wake(self) -> None:
        """Look for due jobs and messages now (after a change the engine did not see)."""
        self._jobs.wake()
        self._deliveries.wake()

    # -- stepping by hand ----------------------------------------------------------------------

    async def run_due_jobs(self) -> int:
        """Check every job due now and record the outcomes; returns how many were checked.

        For engines started with ``worker=False`` (tests, tools) that step time themselves.
        """
        return await self._jobs.run_once()

    async def deliver_due(self) -> int:
        """Deliver every message due now; returns how many deliveries were attempted."""
        return await self._deliveries.run_once()

    async def wait_until_idle(self, *, poll_seconds: float = 0.2) -> None:
        """Return once no job is active and no message is waiting to go out."""
        while True:
            active, pending = await self.store.count_unfinished()
            if not active and not pending:
                return
            await anyio.sleep(poll_seconds)

    # -- checks --------------------------------------------------------------------------------

    async def _claim_jobs(self, limit: int, ahead_seconds: float) -> list[Job]:
        tuning = self.settings.tuning
        now = self.clock.now()
        return await self.store.claim_due_jobs(
            self.worker_id, now, limit=limit, lease_seconds=tuning.lease_seconds,
            due_by=now + timedelta(seconds=ahead_seconds),
        )

    def _forget_cancelled(self, cancelled: list[Job]) -> None:
        """Drop cancelled jobs claimed ahead and waiting to fall due: their checks never run."""
        ids = {job.id for job in cancelled}
        self._jobs.discard_waiting(lambda job: job.id in ids)

    async def _check(self, job: Job) -> CheckOutcome:
        """Run the job's check (the pipeline cuts it off at its time limit)."""
        checker = self.plugins.checkers.get(job.job_type)
        if checker is None:
            return CheckOutcome.not_yet(f"no checker is installed for job type {job.job_type!r}")
        try:
            outcome = await checker.check(job, self.runtime)
        except Exception as exc:
            logger.debug("check of job %s raised", job.id, exc_info=True)
            return CheckOutcome.not_yet(f"the check failed: {type(exc).__name__}: {exc}"[:1000])
        if not isinstance(outcome, CheckOutcome):
            return CheckOutcome.not_yet(
                f"checker {job.job_type!r} returned {type(outcome).__name__}, not a CheckOutcome"
            )
        result = _storable(outcome.result)
        error = outcome.error[:2000] if outcome.error else None
        if result is outcome.result and error is outcome.error:
            return outcome
        return attrs.evolve(outcome, result=result, error=error)

    def _check_timed_out(self, job: Job) -> CheckOutcome:
        """The outcome of a check cut off at its time limit."""
        timeout = self.settings.tuning.check_timeout_seconds
        return CheckOutcome.not_yet(f"the check took longer than {timeout:g} s")

    def _linger_for_check(self, job: Job, outcome: CheckOutcome) -> float:
        """How long a check's result may wait to be recorded with others.

        A result that finishes the job has a message someone waits for. One that
        leaves the job waiting may wait longer, but must be written before the
        claim that would take the job's next check: until then the job is still
        leased here, and that claim would miss it.
        """
        tuning = self.settings.tuning
        if ends_job(job, outcome) or tuning.not_yet_linger_seconds <= tuning.record_linger_seconds:
            return tuning.record_linger_seconds
        step = next_interval(job, job.attempts + 1)
        until_claim = (job.next_run_at - self.clock.now()).total_seconds() + step
        until_claim -= tuning.claim_ahead
        return max(tuning.record_linger_seconds, min(tuning.not_yet_linger_seconds, until_claim))

    async def _record_checks(self, results: list[tuple[Job, CheckOutcome]]) -> datetime | None:
        """Record check outcomes; returns when the earliest job still waiting is due again."""
        now = self.clock.now()
        limit = self.settings.limits.max_result_chars
        transitions = []
        for done, (job, outcome) in enumerate(results, 1):
            if done % _TRANSITIONS_BETWEEN_TURNS == 0:
                # Let checks falling due meanwhile start: a large batch takes milliseconds.
                await anyio.lowlevel.checkpoint()
            description = None
            # What the job watches, for a default failure message: only a failure needs it.
            if outcome.status is not CheckStatus.MET and ends_job(job, outcome):
                checker = self.plugins.checkers.get(job.job_type)
                description = checker.describe(job.check_config) if checker else None
            transitions.append(
                (job, apply_event(job, CheckResult(outcome), now, description=description,
                                  result_limit=limit))
            )
        # Messages go straight to this worker's deliverer, leased to it, while it has room;
        # the rest wait in the outbox for a claim.
        applied, leased = await self.store.record_outcomes(
            self.worker_id, transitions, now,
            lease_limit=self._deliveries.room(), lease_seconds=self._delivery_lease_seconds(),
        )
        if leased and not self._deliveries.offer(leased):
            await self.store.release_deliveries(self.worker_id, leased)
        messages = sum(1 for job, t in transitions if t.message is not None and job.id in applied)
        if messages > len(leased):
            self._deliveries.wake()
        lost = len(results) - len(applied)
        if lost:
            logger.info("%d check results were dropped: cancelled or lease lost meanwhile", lost)
        waiting = [
            t.job.next_run_at
            for job, t in transitions
            if job.id in applied and t.job.status is JobStatus.ACTIVE
        ]
        return min(waiting, default=None)

    async def _release_jobs(self, jobs: list[Job]) -> None:
        if jobs:
            await self.store.release_jobs(self.worker_id, jobs)

    # -- deliveries ------------------------------------------------------------------------------

    def _delivery_lease_seconds(self) -> float:
        tuning = self.settings.tuning
        # The heartbeat renews what is being delivered; without one (an in-memory
        # database) the lease must outlast the slowest delivery by itself.
        if self._heartbeat_runs:
            return tuning.lease_seconds
        return max(tuning.lease_seconds, 2 * tuning.delivery_timeout_seconds)

    async def _claim_deliveries(self, limit: int, ahead_seconds: float) -> list[OutboxEntry]:
        return await self.store.claim_deliveries(
            self.worker_id, self.clock.now(), limit=limit,
            lease_seconds=self._delivery_lease_seconds(),
        )

    async def _deliver(self, entry: OutboxEntry) -> DeliveryUpdate:
        """Hand the message to its notifier (the pipeline cuts it off at its time limit)."""
        attempt = entry.attempts + 1
        try:
            notifier = self.plugins.notifier(entry.on_complete)
            context = DeliveryContext(runtime=self.runtime, result=entry.result, attempt=attempt)
            receipt = await notifier.deliver(entry.notification, context)
            if not isinstance(receipt, DeliveryReceipt):
                raise DeliveryFailed(f"notifier returned {type(receipt).__name__}, not a receipt")
        except DeliveryFailed as exc:
            return self._delivery_failed(entry, exc.reason, retryable=exc.retryable)
        except Exception as exc:
            logger.exception("notifier %r raised while delivering %s", entry.on_complete, entry.id)
            return self._delivery_failed(entry, f"{type(exc).__name__}: {exc}", retryable=True)
        return DeliveryUpdate(
            status=DeliveryStatus.SENT,
            attempts=attempt,
            next_attempt_at=entry.next_attempt_at,
            sent_at=self.clock.now(),
            last_error=entry.last_error,
            delivered_via=receipt.via,
            delivery_note=receipt.note,
        )

    def _delivery_timed_out(self, entry: OutboxEntry) -> DeliveryUpdate:
        """The outcome of a delivery cut off at its time limit: tried again later."""
        limit = self.settings.tuning.delivery_timeout_seconds
        error = f"delivery took longer than {limit:g} s"
        return self._delivery_failed(entry, error, retryable=True)

    def _delivery_failed(
        self, entry: OutboxEntry, error: str, *, retryable: bool
    ) -> DeliveryUpdate:
        """A failed attempt: retried after a backoff, or given up on (a dead letter)."""
        tuning = self.settings.tuning
        attempt = entry.attempts + 1
        now = self.clock.now()
        error = error[:2000]
        if not retryable or attempt >= tuning.delivery_max_attempts:
            logger.error(
                "giving up on message %s of job %s after %d attempts: %s",
                entry.id, entry.job_id, attempt, error,
            )
            return DeliveryUpdate(
                status=DeliveryStatus.DEAD, attempts=attempt, next_attempt_at=now, last_error=error
            )
        delay = min(
            tuning.delivery_backoff_max_seconds,
            tuning.delivery_backoff_seconds * 2 ** min(attempt - 1, 30),
        )
        logger.warning(
            "message %s of job %s not delivered (attempt %d), retrying in %.1f s: %s",
            entry.id, entry.job_id, attempt, delay, error,
        )
        return DeliveryUpdate(
            status=DeliveryStatus.PENDING,
            attempts=attempt,
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=error,
        )

    async def _record_deliveries(
        self, results: list[tuple[OutboxEntry, DeliveryUpdate]]
    ) -> datetime | None:
        """Record delivery attempts; returns when the earliest retry among them is due."""
        if results:
            await self.store.record_deliveries(self.worker_id, results)
        retries = [
            update.next_attempt_at
            for _, update in results
            if update.status is DeliveryStatus.PENDING
        ]
        return min(retries, default=None)

    async def _release_deliveries(self, entries: list[OutboxEntry]) -> None:
        if entries:
            await self.store.release_deliveries(self.worker_id, entries)
