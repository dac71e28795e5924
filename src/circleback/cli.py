"""The ``circleback`` command: run the engine, and add, list and cancel jobs.

Every command reads the ``CIRCLEBACK_*`` environment variables; flags override them.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import attrs
import click

from .core.clock import SystemClock
from .core.engine import Engine
from .core.errors import CirclebackError
from .core.models import Caller, DeliveryStatus, Job, JobStatus, OutboxEntry
from .core.settings import Settings

__all__ = ["main"]

T = TypeVar("T")
_STATUSES = [status.value for status in JobStatus]


def _settings(ctx: click.Context) -> Settings:
    obj: dict[str, Any] = ctx.ensure_object(dict)
    return Settings.from_env(database_url=obj.get("database_url"), redis_url=obj.get("redis_url"))


def _run(ctx: click.Context, fn: Callable[[], Awaitable[T]]) -> T:
    backend = ctx.ensure_object(dict).get("backend", "asyncio")
    try:
        return anyio.run(fn, backend=backend)
    except CirclebackError as exc:
        raise click.ClickException(exc.message) from None


def _caller_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option("--user", default="cli", show_default=True, help="user_id of the caller"),
        click.option("--platform", default="cli", show_default=True, help="platform of the caller"),
        click.option("--channel", default=None, help="platform_channel_id for messages"),
        click.option("--thread", default=None, help="platform_thread_id for messages"),
        click.option("--conversation", default=None, help="conversation_id to resume"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _caller(user: str, platform: str, channel: str | None = None, thread: str | None = None,
            conversation: str | None = None) -> Caller:
    return Caller(
        user_id=user,
        platform=platform,
        platform_channel_id=channel,
        platform_thread_id=thread,
        conversation_id=conversation,
    )


def _facade_engine(ctx: click.Context) -> Engine:
    return Engine(_settings(ctx), worker=False, clock=SystemClock())


def _job_row(job: Job) -> list[str]:
    when = job.next_run_at if job.status is JobStatus.ACTIVE else job.completed_at
    return [
        str(job.id),
        job.job_type,
        job.status.value,
        f"{job.attempts}/{job.max_attempts}",
        when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
        str(job.workflow_id)[:8] if job.workflow_id else "",
        _one_line(job.last_error or "", 40),
    ]


def _one_line(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@click.group()
@click.option("--database-url", envvar="CIRCLEBACK_DATABASE_URL", default=None,
              help="SQLAlchemy URL of the store [env CIRCLEBACK_DATABASE_URL; "
                   "default sqlite:///circleback.db]")
@click.option("--redis-url", envvar="CIRCLEBACK_REDIS_URL", default=None,
              help="Redis for notifications [env CIRCLEBACK_REDIS_URL; default: standard output]")
@click.option("--backend", type=click.Choice(["asyncio", "trio"]), default="asyncio",
              envvar="CIRCLEBACK_BACKEND", show_default=True, help="async backend to run on")
@click.option("--log-level", default="INFO", envvar="CIRCLEBACK_LOG_LEVEL", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False))
@click.version_option(package_name="circleback")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, redis_url: str | None,
        backend: str, log_level: str) -> None:
    """circleback: watch long-running work and circle back when it is done."""
    ctx.ensure_object(dict).update(database_url=database_url, redis_url=redis_url, backend=backend)
    logging.basicConfig(
        level=log_level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # Alembic narrates every schema check at INFO; only its warnings concern operators.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))


@cli.command()
@click.option("--until-idle", is_flag=True,
              help="exit once no job is active and every message has gone out")
@click.pass_context
def run(ctx: click.Context, until_idle: bool) -> None:
    """Run the engine (a worker): check due jobs and deliver their messages until stopped."""
    settings = _settings(ctx)
    log = logging.getLogger("circleback")

    async def main() -> None:
        async with Engine(settings) as engine, anyio.create_task_group() as group:
            log.info("worker %s running on %s", engine.worker_id,
                     engine.store.runner.sync_engine.url.render_as_string(hide_password=True))

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("received %s, stopping", signal.Signals(signum).name)
                        group.cancel_scope.cancel()
                        return

            group.start_soon(stop_on_signal)
            if until_idle:
                await engine.wait_until_idle()
                group.cancel_scope.cancel()
        log.info("stopped")

    _run(ctx, main)


@cli.command()
@click.argument("job_type")
@click.option("--config", "config", required=True, help="check_config as a JSON object")
@click.option("--message", required=True, help="on_success_message; {result} is replaced")
@click.option("--failure-message", default=None, help="on_failure_message")
@click.option("--on-complete", default="notify", show_default=True,
              help="completion mode: notify or resume_conversation")
@click.option("--workflow", default=None, help="workflow_id (a UUID) grouping related jobs")
@click.option("--interval", type=float, default=30.0, show_default=True,
              help="interval_seconds between checks")
@click.option("--max-attempts", type=int, default=120, show_default=True,
              help="checks before the job fails")
@click.option("--json", "as_json", is_flag=True, help="print the new job as JSON for scripts")
@_caller_options
@click.pass_context
def add(ctx: click.Context, /, job_type: str, config: str, message: str,
        failure_message: str | None, on_complete: str, workflow: str | None, interval: float,
        max_attempts: int, as_json: bool, **caller: Any) -> None:
    """Add a job and print its id (or the whole job with --json)."""
    try:
        check_config = json.loads(config)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint="--config") from None
    spec = {
        "job_type": job_type,
        "check_config": check_config,
        "on_success_message": message,
        "on_failure_message": failure_message,
        "on_complete": on_complete,
        "workflow_id": workflow,
        "interval_seconds": interval,
        "max_attempts": max_attempts,
    }

    async def main() -> Job:
        async with _facade_engine(ctx) as engine:
            return await engine.scheduler.add_job(_caller(**caller), spec)

    added = _run(ctx, main)
    click.echo(json.dumps(added.to_dict(), indent=2) if as_json else str(added.id))


@cli.command(name="list")
@click.option("--status", type=click.Choice(_STATUSES), default=None, help="only this status")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.option("--user", default="cli", show_default=True, help="user_id whose jobs to list")
@click.option("--platform", default="cli", show_default=True, help="platform of the caller")
@click.pass_context
def list_jobs(ctx: click.Context, status: str | None, as_json: bool, user: str,
              platform: str) -> None:
    """List a user's jobs, newest first."""

    async def main() -> list[Job]:
        async with _facade_engine(ctx) as engine:
            return await engine.scheduler.list_jobs(_caller(user, platform), status=status)

    found = _run(ctx, main)
    if as_json:
        click.echo(json.dumps([job.to_dict() for job in found], indent=2))
    else:
        _print_table(["id", "type", "status", "attempts", "next/done (UTC)", "workflow",
                      "last error"],
                     [_job_row(job) for job in found])


@cli.command()
@click.argument("job_id")
@click.option("--user", default="cli", show_default=True, help="user_id owning the job")
@click.option("--platform", default="cli", show_default=True, help="platform of the caller")
@click.option("--json", "as_json", is_flag=True, help="print the job as JSON for scripts")
@click.pass_context
def cancel(ctx: click.Context, job_id: str, user: str, platform: str, as_json: bool) -> None:
    """Cancel an active job."""

    async def main() -> Job:
        async with _facade_engine(ctx) as engine:
            return await engine.scheduler.cancel_job(_caller(user, platform), job_id)

    job = _run(ctx, main)
    click.echo(json.dumps(job.to_dict(), indent=2) if as_json else f"{job.id} {job.status.value}")


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

    async def main() -> list[OutboxEntry]:
        async with _facade_engine(ctx) as engine:
            wanted = DeliveryStatus(status) if status else None
            return await engine.store.list_outbox(status=wanted, limit=limit)

    found = _run(ctx, main)
    if as_json:
        click.echo(json.dumps([_outbox_dict(entry) for entry in found], indent=2))
        return
    _print_table(
        ["notification", "job", "mode", "status", "tries", "via", "last error / note"],
        [_outbox_row(entry) for entry in found],
    )


def _print_job(job: Job) -> None:
    """One job as a two-column table a person can read."""

    def when(value: Any) -> str:
        return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "-"

    active = job.status is JobStatus.ACTIVE
    fields = [
        ("id", str(job.id)),
        ("type", job.job_type),
        ("status", job.status.value),
        ("attempts", f"{job.attempts} of {job.max_attempts}"),
        ("interval", f"{job.interval_seconds:g} s"),
        ("next check", when(job.next_run_at) if active else "-"),
        ("last checked", when(job.last_checked_at)),
        ("created", when(job.created_at)),
        ("finished", when(job.completed_at)),
        ("workflow", str(job.workflow_id) if job.workflow_id else "-"),
        ("on complete", job.on_complete),
        ("check config", json.dumps(job.check_config, ensure_ascii=False)),
        ("success message", job.on_success_message),
        ("failure message", job.on_failure_message or "(default)"),
        ("last result", "-" if job.last_result is None
         else _one_line(json.dumps(job.last_result, ensure_ascii=False), 200)),
        ("last error", _one_line(job.last_error, 200) if job.last_error else "-"),
        ("caller", f"{job.user_id} on {job.platform}"),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        first, *more = value.splitlines() or [""]
        click.echo(f"{name.ljust(width)}  {first}")
        for line in more:  # a message's further lines stay in the value column
            click.echo(f"{'':{width}}  {line}")


@cli.group()
def jobs() -> None:
    """Look at and act on jobs: show, list, add, cancel."""


@jobs.command(name="show")
@click.argument("job_id")
@click.option("--user", default="cli", show_default=True, help="user_id owning the job")
@click.option("--platform", default="cli", show_default=True, help="platform of the caller")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def show_job(ctx: click.Context, job_id: str, user: str, platform: str, as_json: bool) -> None:
    """Show one job in full."""

    async def main() -> Job:
        async with _facade_engine(ctx) as engine:
            return await engine.scheduler.get_job(_caller(user, platform), job_id)

    job = _run(ctx, main)
    if as_json:
        click.echo(json.dumps(job.to_dict(), indent=2))
    else:
        _print_job(job)


jobs.add_command(list_jobs, name="list")
jobs.add_command(add, name="add")
jobs.add_command(cancel, name="cancel")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="address to listen on; beyond loopback only with CIRCLEBACK_API_TOKEN set")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True,
              help="TCP port to listen on")
@click.option("--shutdown-grace", type=click.FloatRange(min=0, min_open=True), default=None,
              help="seconds a stopping service waits for checks in flight before giving "
                   "their jobs back  [default: 10]")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, shutdown_grace: float | None) -> None:
    """Run the engine and the tool service (GET /manifest, POST /execute, GET /health).

    Stops gracefully on SIGINT or SIGTERM. The bearer token comes from
    CIRCLEBACK_API_TOKEN; without it the service listens on loopback only.
    """
    from .tools.serve import serve as serve_tools

    settings = _settings(ctx)
    if shutdown_grace is not None:
        tuning = attrs.evolve(settings.tuning, shutdown_grace_seconds=shutdown_grace)
        settings = attrs.evolve(settings, tuning=tuning)
    _run(ctx, lambda: serve_tools(settings, host=host, port=port))


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
    from .core.store import Store

    settings = _settings(ctx)

    async def main() -> tuple[str | None, str]:
        store = Store(settings.database_url)
        try:
            return await store.upgrade()
        finally:
            await store.aclose()

    before, after = _run(ctx, main)
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
    from .core.store import Store, WorkerInfo

    settings = _settings(ctx)

    async def main() -> list[WorkerInfo]:
        store = Store(settings.database_url)
        try:
            await store.open()
            return await store.list_workers()
        finally:
            await store.aclose()

    found = _run(ctx, main)
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
    _print_table(
        ["worker", "host", "pid", "started (UTC)", "last heartbeat (UTC)", "age", "jobs",
         "messages", "state"],
        [
            [worker.worker_id, worker.hostname, str(worker.pid), when(worker.started_at),
             when(worker.heartbeat_at), _age(age), str(worker.jobs_held),
             str(worker.deliveries_held), state(worker, age)]
            for worker, age in zip(found, ages, strict=True)
        ],
    )


def main() -> None:
    """Entry point of the ``circleback`` console script."""
    cli(prog_name="circleback")
