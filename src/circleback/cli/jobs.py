"""Jobs from the command line: add, list, show, cancel."""

from __future__ import annotations

import json
from typing import Any

import click

from ..core.models import Job, JobStatus
from ..core.redaction import redact, redact_url
from .app import (
    caller_from,
    caller_options,
    cli,
    facade_engine,
    one_line,
    print_table,
    require_database,
    run_async,
)

__all__ = ["jobs"]

_STATUSES = [status.value for status in JobStatus]


def _job_row(job: Job) -> list[str]:
    when = job.next_run_at if job.status is JobStatus.ACTIVE else job.completed_at
    return [
        str(job.id),
        job.job_type,
        job.status.value,
        f"{job.attempts}/{job.max_attempts}",
        when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
        str(job.workflow_id)[:8] if job.workflow_id else "",
        one_line(job.last_error or "", 40),
    ]


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
@caller_options
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
        async with facade_engine(ctx) as engine:
            return await engine.scheduler.add_job(caller_from(**caller), spec)

    added = run_async(ctx, main)
    click.echo(json.dumps(shown(added), indent=2) if as_json else str(added.id))


@cli.command(name="list")
@click.option("--status", type=click.Choice(_STATUSES), default=None, help="only this status")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.option("--user", default="cli", show_default=True, help="user_id whose jobs to list")
@click.option("--platform", default="cli", show_default=True, help="platform of the caller")
@click.pass_context
def list_jobs(ctx: click.Context, status: str | None, as_json: bool, user: str,
              platform: str) -> None:
    """List a user's jobs, newest first."""
    require_database(ctx)

    async def main() -> list[Job]:
        async with facade_engine(ctx) as engine:
            return await engine.scheduler.list_jobs(caller_from(user, platform), status=status)

    found = run_async(ctx, main)
    if as_json:
        click.echo(json.dumps([shown(job) for job in found], indent=2))
    else:
        print_table(["id", "type", "status", "attempts", "next/done (UTC)", "workflow",
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
    require_database(ctx)

    async def main() -> Job:
        async with facade_engine(ctx) as engine:
            return await engine.scheduler.cancel_job(caller_from(user, platform), job_id)

    job = run_async(ctx, main)
    click.echo(json.dumps(shown(job), indent=2) if as_json else f"{job.id} {job.status.value}")


def shown(job: Job) -> dict[str, Any]:
    """``job`` as JSON for a person or a script: every field, secrets redacted."""
    data = job.to_dict()
    data["check_config"] = redact(job.check_config)
    data["last_result"] = redact(job.last_result)
    data["last_error"] = redact_url(job.last_error) if job.last_error else job.last_error
    return data


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
        ("check config", json.dumps(redact(job.check_config), ensure_ascii=False)),
        ("success message", job.on_success_message),
        ("failure message", job.on_failure_message or "(default)"),
        ("last result", "-" if job.last_result is None
         else one_line(json.dumps(redact(job.last_result), ensure_ascii=False), 200)),
        ("last error", one_line(redact_url(job.last_error), 200) if job.last_error else "-"),
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
    require_database(ctx)

    async def main() -> Job:
        async with facade_engine(ctx) as engine:
            return await engine.scheduler.get_job(caller_from(user, platform), job_id)

    job = run_async(ctx, main)
    if as_json:
        click.echo(json.dumps(shown(job), indent=2))
    else:
        _print_job(job)


jobs.add_command(list_jobs, name="list")
jobs.add_command(add, name="add")
jobs.add_command(cancel, name="cancel")
