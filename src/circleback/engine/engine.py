"""The engine: checks due jobs, records outcomes, delivers messages.

``Engine`` is an async context manager. Inside ``async with Engine(...)`` its
worker loops run as tasks of the caller's task tree (on asyncio or trio), and
``engine.scheduler`` is the facade through which jobs are added and cancelled.
Leaving the block stops claiming, lets checks in flight finish for a grace
period, gives back the leases of the rest, and closes everything, shielded.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import anyio
import sqlalchemy as sa

from ..core.abc import Checker, Notifier, Runtime
from ..core.clock import Clock, SystemClock
from ..core.models import CheckOutcome, DeliveryUpdate, Job, OutboxEntry
from ..core.registry import PluginRegistry
from ..core.settings import Settings
from ..store.database import is_memory_sqlite
from ..store.store import Store
from ..store.wakeups import PostgresWakeups
from .checks import Checks
from .deliveries import Deliveries
from .heartbeat import Heartbeat
from .operations import Operations
from .pacing import Pacing
from .pipeline import PipelineConfig, WorkPipeline
from .plugins import make_plugin_manager
from .scheduler import Scheduler

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["Engine"]

logger = logging.getLogger("circleback.engine")

#: Workers silent for this long are dropped from the workers table.
_FORGET_WORKERS_AFTER = timedelta(days=1)


def _default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


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
        pacing: Pacing | None = None,
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
        #: The PostgreSQL wake-up listener, while one runs.
        self.wakeups: PostgresWakeups | None = None
        tuning = self.settings.tuning
        # Fixed pacing of the loops; tests pass a quicker one (it is not a setting).
        pacing = pacing or Pacing()
        self._heartbeat_period = pacing.heartbeat_period(tuning)
        self._heartbeat_runs = worker and not is_memory_sqlite(self.store.url)
        # The heartbeat renews what is being delivered; without one (an in-memory
        # database) the lease must outlast the slowest delivery by itself.
        delivery_lease = tuning.lease_seconds
        if not self._heartbeat_runs:
            delivery_lease = max(delivery_lease, 2 * tuning.delivery_timeout_seconds)
        self._deliveries = WorkPipeline[OutboxEntry, DeliveryUpdate](
            "deliveries",
            Deliveries(
                store=self.store, worker_id=self.worker_id, clock=self.clock, pacing=pacing,
                runtime=lambda: self.runtime, lease_seconds=delivery_lease,
                timeout_seconds=tuning.delivery_timeout_seconds, logger=logger,
            ),
            PipelineConfig(
                capacity=pacing.max_concurrent_deliveries,
                batch_size=pacing.batch_size,
                max_sleep_seconds=pacing.max_sleep_seconds,
                timeout_seconds=tuning.delivery_timeout_seconds,
            ),
            self.clock,
            logger,
        )
        self._checks = Checks(
            store=self.store, worker_id=self.worker_id, clock=self.clock,
            settings=self.settings, pacing=pacing, runtime=lambda: self.runtime,
            deliveries=self._deliveries, delivery_lease_seconds=delivery_lease, logger=logger,
        )
        self._jobs = WorkPipeline[Job, CheckOutcome](
            "checks",
            self._checks,
            PipelineConfig(
                capacity=tuning.max_concurrent_checks,
                batch_size=pacing.batch_size,
                max_sleep_seconds=pacing.max_sleep_seconds,
                lookahead_seconds=pacing.claim_ahead(tuning),
                timer_slack_seconds=pacing.timer_slack_seconds,
                dense_slack_seconds=pacing.dense_timer_slack_seconds,
                timeout_seconds=tuning.check_timeout_seconds,
            ),
            self.clock,
            logger,
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
                # Runs last on the way out, once everything else has stopped.
                stack.callback(logger.info, "worker %s stopped", self.worker_id,
                               extra={"worker_id": self.worker_id})
                await self._start_plugins(stack)
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
                await group.start(functools.partial(self._jobs.run, grace_seconds=grace))
                await group.start(functools.partial(self._deliveries.run, grace_seconds=grace))
                group.start_soon(self._in_scope, reaper, self._reap_forever)
                stack.callback(self._deliveries.stop)
                stack.callback(self._jobs.stop)
                logger.info("worker %s started on %s", self.worker_id,
                            self.store.url.render_as_string(hide_password=True),
                            extra={"worker_id": self.worker_id})
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

    def _make_heartbeat(self) -> Heartbeat:
        def ids(items: list[Job] | list[OutboxEntry]) -> list[uuid.UUID]:
            return [item.id for item in items]

        return Heartbeat(
            url=self.store.url,
            worker_id=self.worker_id,
            clock=self.clock,
            period=self._heartbeat_period,
            lease_seconds=self.settings.tuning.lease_seconds,
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

    def _forget_cancelled(self, cancelled: list[Job]) -> None:
        """Drop cancelled jobs claimed ahead and waiting to fall due: their checks never run."""
        ids = {job.id for job in cancelled}
        self._jobs.discard_waiting(lambda job: job.id in ids)
