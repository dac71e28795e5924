"""The store's statements are the same SQL whatever the number of rows they touch.

Drivers keep prepared statements by their SQL text: Python's sqlite3 module
the last 128 of each connection, asyncpg the last 100. A statement that spells
out a list of ids (``id IN (?, ?, …)``) is new text for every length of the
list, so each batch of a new size is parsed and planned again, and the cache
fills with statements of up to thousands of placeholders: a SQLite worker's
memory grew by about 100 bytes per check until the caches were full (W3:
SQLite's own memory 0.4 → 12 MiB over 180 s). The lists of ids go to the
database as one value instead (a JSON array on SQLite, an array on PostgreSQL).

Each test runs every verb of the store that takes a list of ids with batches
of different sizes and compares the SQL text the driver received.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from circleback import CheckOutcome, Job, JobStatus
from circleback.core.models import DeliveryStatus, DeliveryUpdate
from circleback.core.state import CheckResult, apply_event
from circleback.store.database import create_sync_engine
from circleback.store.store import Store
from circleback.store.workers import renew_leases

pytestmark = pytest.mark.anyio

WORKER = "worker-1"
LEASE = 30.0


def _jobs(count: int, due: datetime) -> list[Job]:
    return [
        Job(
            id=uuid.uuid4(), user_id="u1", platform="p", platform_channel_id=None,
            platform_thread_id=None, conversation_id=None, job_type="delay",
            check_config={"delay_seconds": 1}, on_complete="notify", workflow_id=None,
            interval_seconds=30.0, max_attempts=3, backoff=1.0, max_interval_seconds=None,
            on_success_message="done {job_id}", on_failure_message=None,
            status=JobStatus.ACTIVE, attempts=0, next_run_at=due, created_at=due,
            updated_at=due,
        )
        for _ in range(count)
    ]


@contextmanager
def _statements(engine: sa.Engine) -> Iterator[set[str]]:
    seen: set[str] = set()

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.add(statement)

    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)


async def _every_verb_with_lists(store: Store, heartbeat: sa.Engine, count: int) -> None:
    """Claim, release, renew, record, deliver and reap ``count`` rows at a time."""
    now = datetime.now(UTC)
    await store.insert_jobs(_jobs(count, now - timedelta(seconds=1)), max_active_per_user=10_000)
    claimed = await store.claim_due_jobs(WORKER, now, limit=count, lease_seconds=LEASE)
    assert len(claimed) == count
    assert await store.release_jobs(WORKER, claimed) == count
    claimed = await store.claim_due_jobs(WORKER, now, limit=count, lease_seconds=LEASE)
    with heartbeat.begin() as conn:
        taken = renew_leases(conn, WORKER, [job.id for job in claimed], [], now, LEASE)
    assert taken == set()
    met = [(job, apply_event(job, CheckResult(CheckOutcome.met()), now)) for job in claimed]
    applied, leased = await store.record_outcomes(
        WORKER, met, now, lease_limit=count, lease_seconds=LEASE
    )
    assert len(applied) == len(leased) == count
    with heartbeat.begin() as conn:
        renew_leases(conn, WORKER, [], [entry.id for entry in leased], now, LEASE)
    assert await store.release_deliveries(WORKER, leased) == count
    entries = await store.claim_deliveries(WORKER, now, limit=count, lease_seconds=LEASE)
    assert len(entries) == count
    sent = DeliveryUpdate(
        status=DeliveryStatus.SENT, attempts=1, next_attempt_at=now, sent_at=now,
        delivered_via="notify",
    )
    assert await store.record_deliveries(WORKER, [(entry, sent) for entry in entries]) == count
    # Leases that have run out: taken back by the reaper, all in one statement.
    await store.insert_jobs(_jobs(count, now - timedelta(seconds=1)), max_active_per_user=10_000)
    stalled = await store.claim_due_jobs(WORKER, now, limit=count, lease_seconds=-1.0)
    assert len(stalled) == count
    assert await store.reap_expired_leases(now) == count


async def test_lists_of_ids_do_not_change_the_sql(store_url: str) -> None:
    store = Store(store_url)
    await store.open()
    heartbeat = create_sync_engine(store_url, pool_size=1, max_overflow=0)
    try:
        texts: dict[int, set[str]] = {}
        for count in (2, 3, 11):
            with _statements(store.runner.sync_engine) as seen, _statements(heartbeat) as beat:
                await _every_verb_with_lists(store, heartbeat, count)
            texts[count] = seen | beat
    finally:
        heartbeat.dispose()
        await store.aclose()
    assert texts[2], "no statement was seen"
    assert texts[3] - texts[2] == set()
    assert texts[11] - texts[2] == set()
