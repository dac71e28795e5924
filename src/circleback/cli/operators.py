"""Operating a database: its schema, its workers, its outbox."""

from __future__ import annotations

import json
from typing import Any

import click

from ..core.clock import SystemClock
from ..core.models import DeliveryStatus, OutboxEntry, WorkerInfo
from .app import cli, facade_engine, print_table, require_database, run_async, settings_of

__all__ = ["db", "outbox_list", "workers_list"]


def _outbox_dict(entry: OutboxEntry) -> dict[str, Any]:
    return {
        "notification_id": str(entry.id),
        "job_id": str(entry.job_id),
        "on_complete": entry.on_complete,
        "status": entry.status.value,
        "attempts": entry.attempts,
        "created_at": entry.created_at.isoformat(),
        "next_attempt_at": entry.next_attempt_at.isoformat(),
        "sent_at": entry.sent_at.isoformat() if entry.sent_at else None,
        "last_error": entry.last_error,
        "delivered_via": entry.delivered_via,
        "delivery_note": entry.delivery_note,
        "notification": entry.notification.to_dict(),
    }


def _outbox_row(entry: OutboxEntry) -> list[str]:
    sent = entry.status is DeliveryStatus.SENT
    detail = (entry.delivery_note if sent else entry.last_error) or ""
    return [str(entry.id), str(entry.job_id), entry.on_complete, entry.status.value,
            str(entry.attempts), entry.delivered_via or "", detail[:60]]


@cli.command(name="outbox")
@click.option("--status", type=click.Choice([status.value for status in DeliveryStatus]),
              default=None, help="only this delivery status; 'dead' lists the dead letters")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="most entries to show")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def outbox_list(ctx: click.Context, status: str | None, limit: int, as_json: bool) -> None:
    """List outgoing messages of finished jobs, newest first, with how their delivery went."""
    require_database(ctx)

    async def main() -> list[OutboxEntry]:
        async with facade_engine(ctx) as engine:
            wanted = DeliveryStatus(status) if status else None
            return await engine.operations.list_outbox(status=wanted, limit=limit)

    found = run_async(ctx, main)
    if as_json:
        click.echo(json.dumps([_outbox_dict(entry) for entry in found], indent=2))
        return
    print_table(
        ["notification", "job", "mode", "status", "tries", "via", "last error / note"],
        [_outbox_row(entry) for entry in found],
    )


@cli.group()
def db() -> None:
    """The database schema: bring it to this circleback's version."""


@db.command(name="upgrade")
@click.pass_context
def db_upgrade(ctx: click.Context) -> None:
    """Migrate the configured database to this circleback's schema (safe to repeat).

    Workers refuse to start on an older schema; stop them, run this once, start
    them again with the new circleback.
    """
    from ..engine.operations import upgrade_database

    settings = settings_of(ctx)
    before, after = run_async(ctx, lambda: upgrade_database(settings.database_url))
    click.echo(f"schema: {before or 'empty'} -> {after}")


def _age(seconds: float) -> str:
    """A duration as a person reads it: 4s, 3m05s, 2h10m, 3d04h."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


@cli.command(name="workers")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def workers_list(ctx: click.Context, as_json: bool) -> None:
    """Show the workers of this database: heartbeats, and the jobs and messages each holds.

    STATE is 'stopped' for a worker that shut down cleanly, 'silent' when its last
    heartbeat is older than a lease (it died or stalls; other workers take its
    jobs over as its leases expire), and 'alive' otherwise.
    """
    from ..engine.operations import open_operations

    require_database(ctx)
    settings = settings_of(ctx)

    async def main() -> list[WorkerInfo]:
        async with open_operations(settings.database_url) as operations:
            return await operations.list_workers()

    found = run_async(ctx, main)
    now = SystemClock().now()
    lease = settings.tuning.lease_seconds

    def state(worker: WorkerInfo, age: float) -> str:
        if worker.stopped_at is not None:
            return "stopped"
        return "silent" if age > lease else "alive"

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"

    ages = [(now - worker.heartbeat_at).total_seconds() for worker in found]
    if as_json:
        click.echo(json.dumps([
            {
                "worker_id": worker.worker_id,
                "hostname": worker.hostname,
                "pid": worker.pid,
                "started_at": worker.started_at.isoformat(),
                "heartbeat_at": worker.heartbeat_at.isoformat(),
                "heartbeat_age_seconds": round(age, 3),
                "stopped_at": worker.stopped_at.isoformat() if worker.stopped_at else None,
                "stopped": worker.stopped_at is not None,
                "state": state(worker, age),
                "jobs_held": worker.jobs_held,
                "messages_held": worker.deliveries_held,
            }
            for worker, age in zip(found, ages, strict=True)
        ], indent=2))
        return
    print_table(
        ["worker", "host", "pid", "started (UTC)", "last heartbeat (UTC)", "age", "jobs",
         "messages", "state"],
        [
            [worker.worker_id, worker.hostname, str(worker.pid), when(worker.started_at),
             when(worker.heartbeat_at), _age(age), str(worker.jobs_held),
             str(worker.deliveries_held), state(worker, age)]
            for worker, age in zip(found, ages, strict=True)
        ],
    )
