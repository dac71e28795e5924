"""Operating a database: its schema, its workers, its outbox."""

from __future__ import annotations

import json
from typing import Any

import click

from ..core.clock import SystemClock
from ..core.models import DeliveryStatus, OutboxEntry, WorkerInfo
from ..core.settings import EngineTuning
from .app import (
    cli,
    facade_engine,
    operate,
    print_table,
    require_database,
    run_async,
    settings_of,
)
from .failures import Exit, Failure

__all__ = ["db", "outbox_list", "outbox_purge", "outbox_requeue", "workers_list", "workers_prune"]


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


@cli.group(name="outbox", invoke_without_command=True)
@click.option("--status", type=click.Choice([status.value for status in DeliveryStatus]),
              default=None, help="only this delivery status; 'dead' lists the dead letters")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="most entries to show")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def outbox_list(ctx: click.Context, status: str | None, limit: int, as_json: bool) -> None:
    """List outgoing messages of finished jobs, newest first, with how their delivery went.

    'outbox requeue' sends dead messages again; 'outbox purge' deletes old sent ones.
    """
    if ctx.invoked_subcommand is not None:
        return
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


@cli.group(name="workers", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def workers_list(ctx: click.Context, as_json: bool) -> None:
    """Show the workers of this database: heartbeats, and the jobs and messages each holds.

    STATE is 'stopped' for a worker that shut down cleanly, 'silent' when it has
    missed three heartbeats (it died or stalls; other workers take its jobs over
    as its leases expire), and 'alive' otherwise. 'workers prune' forgets the
    stopped and the long silent.
    """
    if ctx.invoked_subcommand is not None:
        return
    from ..engine.operations import open_operations

    require_database(ctx)
    settings = settings_of(ctx)

    async def main() -> list[WorkerInfo]:
        async with open_operations(settings.database_url) as operations:
            return await operations.list_workers()

    found = run_async(ctx, main)
    now = SystemClock().now()
    deadline = _heartbeat_deadline(settings.tuning)

    def state(worker: WorkerInfo, age: float) -> str:
        if worker.stopped_at is not None:
            return "stopped"
        return "silent" if age > deadline else "alive"

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
                "last_seen_at": worker.heartbeat_at.isoformat(),
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
             str(worker.deliveries_held),
             f"silent, last seen {_age(age)} ago" if state(worker, age) == "silent"
             else state(worker, age)]
            for worker, age in zip(found, ages, strict=True)
        ],
    )


def _heartbeat_deadline(tuning: EngineTuning) -> float:
    """Seconds without a heartbeat after which a worker counts as silent: three missed beats."""
    from ..engine.pacing import Pacing

    return 3 * Pacing().heartbeat_period(tuning)


def _duration(text: str) -> float:
    """``7d``, ``12h``, ``30m``, ``90s`` (or plain seconds) in seconds; a ValueError otherwise."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    text = text.strip().lower()
    factor = units.get(text[-1:])
    number = float(text[:-1] if factor else text)
    if number < 0 or number != number:
        raise ValueError(text)
    return number * (factor or 1)


def _duration_option(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        return _duration(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a duration such as 7d, 12h, 30m or 90s",
                                 ctx, param) from None


@outbox_list.command(name="requeue")
@click.argument("notification_ids", nargs=-1)
@click.option("--dead", "all_dead", is_flag=True, help="requeue every dead message")
@click.pass_context
def outbox_requeue(ctx: click.Context, notification_ids: tuple[str, ...], all_dead: bool) -> None:
    """Send dead messages again: those named (their notification ids), or --dead for all.

    Each starts over with fresh attempts; a message that is not dead is left as it is.
    """
    if bool(notification_ids) == all_dead:
        raise click.UsageError("name the messages to requeue, or give --dead (one of them)")
    done = operate(ctx, lambda ops: ops.requeue_outbox(list(notification_ids),
                                                       all_dead=all_dead))
    for entry_id in done:
        click.echo(f"{entry_id} requeued")
    missed = {str(entry_id) for entry_id in done}
    left = [ref for ref in notification_ids if ref not in missed]
    if left:
        raise Failure(f"not dead or not found, left as they were: {', '.join(left)}", None,
                      Exit.NOT_FOUND)
    if all_dead and not done:
        click.echo("no dead messages", err=True)


@outbox_list.command(name="purge")
@click.option("--sent", "sent", is_flag=True, required=True,
              help="delete sent messages (the only kind purged)")
@click.option("--older-than", callback=_duration_option, required=True,
              help="only those sent longer ago than this: 7d, 12h, 30m, 90s")
@click.pass_context
def outbox_purge(ctx: click.Context, sent: bool, older_than: float) -> None:
    """Delete messages that went out longer ago than --older-than (pending and dead stay)."""
    count = operate(ctx, lambda ops: ops.purge_sent(older_than))
    click.echo(f"{count} sent messages deleted")


@workers_list.command(name="prune")
@click.option("--silent-for", callback=_duration_option, default="1d", show_default=True,
              help="also forget workers silent for longer than this")
@click.pass_context
def workers_prune(ctx: click.Context, silent_for: float) -> None:
    """Forget stopped workers, and those silent for longer than --silent-for."""
    count = operate(ctx, lambda ops: ops.prune_workers(silent_for))
    click.echo(f"{count} workers forgotten")
