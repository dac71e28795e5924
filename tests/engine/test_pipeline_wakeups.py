"""A worker waiting on a slow message does not poll the store in a loop meanwhile.

A message in flight is still pending in the store, so "when is the next message
due?" answers "already". Taking that at its word made the deliverer claim and
ask again back to back for as long as the delivery took. The store used here
is the real store (SQLite, then PostgreSQL); it only counts the claims it is
asked for.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import anyio

import circleback
from circleback import (
    Caller,
    DeliveryContext,
    DeliveryReceipt,
    EngineTuning,
    Notification,
    Notifier,
    Settings,
)
from circleback.core.models import OutboxEntry
from circleback.store.store import Store


class CountingStore(Store):
    """The store, counting delivery claims."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.delivery_claims = 0

    async def claim_deliveries(
        self, worker_id: str, now: datetime, *, limit: int, lease_seconds: float
    ) -> list[OutboxEntry]:
        self.delivery_claims += 1
        return await super().claim_deliveries(
            worker_id, now, limit=limit, lease_seconds=lease_seconds
        )


class SlowNotifier(Notifier):
    """Takes its time over each message, then says it went out."""

    name = "slow"

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.delivered: list[Notification] = []

    async def deliver(
        self, notification: Notification, context: DeliveryContext
    ) -> DeliveryReceipt:
        self.started.set()
        await anyio.sleep(0.6)
        self.delivered.append(notification)
        return DeliveryReceipt(via=self.name)


class SlowPlugin:
    def __init__(self) -> None:
        self.notifier = SlowNotifier()

    @circleback.hookimpl
    def circleback_register_notifiers(self, register: Callable[[Notifier], None]) -> None:
        register(self.notifier)


async def test_a_slow_delivery_in_flight_is_not_polled_for(
    make_settings: Callable[..., Settings], store_url: str, caller: Caller
) -> None:
    # The longest sleep is a second (the engine's own pacing): without the fix the
    # deliverer asked the store again and again (about a hundred times here) while the
    # message was out.
    settings = make_settings(tuning=EngineTuning(lease_seconds=40.0, check_timeout_seconds=5.0))
    store = CountingStore(store_url)
    plugin = SlowPlugin()
    spec: dict[str, Any] = {"job_type": "delay", "check_config": {"delay_seconds": 0.05},
                            "on_success_message": "done", "on_complete": "slow"}
    try:
        with anyio.fail_after(30):
            async with circleback.Engine(
                settings, store=store, plugins=[plugin], load_entry_points=False
            ) as engine:
                await engine.scheduler.add_job(caller, spec)
                await plugin.notifier.started.wait()
                claims_before = store.delivery_claims
                while not plugin.notifier.delivered:
                    await anyio.sleep(0.05)
                claims_during = store.delivery_claims - claims_before
    finally:
        await store.aclose()
    assert len(plugin.notifier.delivered) == 1
    assert claims_during <= 3, f"{claims_during} delivery claims while one message was out"
