"""The delivery loop's work: claim due messages, hand them to notifiers, record the attempts.

A failed attempt is retried after a doubling backoff; a message that cannot
be delivered (a permanent failure, or too many attempts) is marked dead.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from ..core.abc import DeliveryContext, DeliveryFailed, DeliveryReceipt, Runtime
from ..core.clock import Clock
from ..core.models import DeliveryStatus, DeliveryUpdate, OutboxEntry
from ..store.store import Store
from .pacing import Pacing

__all__ = ["Deliveries"]


class Deliveries:
    """Messages in the outbox as the delivery pipeline's work (a :class:`~.pipeline.WorkSource`)."""

    def __init__(
        self,
        *,
        store: Store,
        worker_id: str,
        clock: Clock,
        pacing: Pacing,
        runtime: Callable[[], Runtime],
        lease_seconds: float,
        timeout_seconds: float,
        logger: logging.Logger,
    ) -> None:
        self._store = store
        self._worker_id = worker_id
        self._clock = clock
        self._runtime = runtime
        self._lease = lease_seconds
        self._timeout = timeout_seconds
        self._log = logger
        self._linger = pacing.record_linger_seconds
        self._max_attempts = pacing.delivery_max_attempts
        self._backoff = pacing.delivery_backoff_seconds
        self._backoff_max = pacing.delivery_backoff_max_seconds

    async def claim(self, limit: int, ahead_seconds: float) -> list[OutboxEntry]:
        return await self._store.claim_deliveries(
            self._worker_id, self._clock.now(), limit=limit, lease_seconds=self._lease
        )

    def due_at(self, entry: OutboxEntry) -> None:
        return None  # claimed when due

    async def run_one(self, entry: OutboxEntry) -> DeliveryUpdate:
        """Hand the message to its notifier (the pipeline cuts it off at its time limit)."""
        attempt = entry.attempts + 1
        try:
            runtime = self._runtime()
            notifier = runtime.plugins.notifier(entry.on_complete)
            context = DeliveryContext(runtime=runtime, result=entry.result, attempt=attempt)
            receipt = await notifier.deliver(entry.notification, context)
            if not isinstance(receipt, DeliveryReceipt):
                raise DeliveryFailed(f"notifier returned {type(receipt).__name__}, not a receipt")
        except DeliveryFailed as exc:
            return self._failed(entry, exc.reason, retryable=exc.retryable)
        except Exception as exc:
            self._log.exception(
                "notifier %r raised while delivering %s", entry.on_complete, entry.id
            )
            return self._failed(entry, f"{type(exc).__name__}: {exc}", retryable=True)
        return DeliveryUpdate(
            status=DeliveryStatus.SENT,
            attempts=attempt,
            next_attempt_at=entry.next_attempt_at,
            sent_at=self._clock.now(),
            last_error=entry.last_error,
            delivered_via=receipt.via,
            delivery_note=receipt.note,
        )

    def timed_out(self, entry: OutboxEntry) -> DeliveryUpdate:
        """The outcome of a delivery cut off at its time limit: tried again later."""
        error = f"delivery took longer than {self._timeout:g} s"
        return self._failed(entry, error, retryable=True)

    def _failed(self, entry: OutboxEntry, error: str, *, retryable: bool) -> DeliveryUpdate:
        """A failed attempt: retried after a backoff, or given up on (a dead letter)."""
        attempt = entry.attempts + 1
        now = self._clock.now()
        error = error[:2000]
        if not retryable or attempt >= self._max_attempts:
            self._log.error(
                "giving up on message %s of job %s after %d attempts: %s",
                entry.id, entry.job_id, attempt, error,
                extra={"notification_id": str(entry.id), "job_id": str(entry.job_id),
                       "workflow_id": _text(entry.notification.workflow_id),
                       "user_id": entry.notification.user_id},
            )
            return DeliveryUpdate(
                status=DeliveryStatus.DEAD, attempts=attempt, next_attempt_at=now, last_error=error
            )
        delay = min(self._backoff_max, self._backoff * 2 ** min(attempt - 1, 30))
        self._log.warning(
            "message %s of job %s not delivered (attempt %d), retrying in %.1f s: %s",
            entry.id, entry.job_id, attempt, delay, error,
        )
        return DeliveryUpdate(
            status=DeliveryStatus.PENDING,
            attempts=attempt,
            next_attempt_at=now + timedelta(seconds=delay),
            last_error=error,
        )

    def linger_for(self, entry: OutboxEntry, update: DeliveryUpdate) -> float:
        return self._linger

    async def record(self, results: list[tuple[OutboxEntry, DeliveryUpdate]]) -> datetime | None:
        """Record delivery attempts; returns when the earliest retry among them is due."""
        if results:
            await self._store.record_deliveries(self._worker_id, results)
        retries = [
            update.next_attempt_at
            for _, update in results
            if update.status is DeliveryStatus.PENDING
        ]
        return min(retries, default=None)

    async def release(self, entries: list[OutboxEntry]) -> None:
        if entries:
            await self._store.release_deliveries(self._worker_id, entries)

    async def next_due(self) -> datetime | None:
        return await self._store.next_delivery_time()


def _text(value: object) -> str | None:
    return None if value is None else str(value)
