"""Jobs from the command line: add, list, show, cancel.

The operator sees every user's jobs (``--user`` narrows) and names a job by its
id or the first 8 or more hex digits of it; adding acts as a caller, as the
orchestrator would. The JSON is the tools' job view, with the caller's ids.
"""

from __future__ import annotations

import json
from typing import Any

import click

from ..core.models import Job, JobStatus
from ..core.redaction import redact, redact_url
from ..core.views import job_view
from .app import (
    caller_from,
    caller_options,
    cli,
    facade_engine,
    one_line,
    operate,
    print_table,
    run_async,
    settings_of,
)
from .failures import Exit, Failure

__all__ = ["jobs"]

_STATUSES = [status.value for status in JobStatus]


def shown(ctx: click.Context, job: Job) -> dict[str, Any]:
    """``job`` as JSON: the tools' view of it, with the caller's ids."""
    return job_view(job, settings_of(ctx).limits, with_caller=True)


def _job_types_help() -> str:
    """Each job type with its check_config fields and an example, from the rulebook."""
    from ..core.abc import ValidationContext
    from ..core.registry import PluginRegistry
    from ..core.settings import Settings
    from ..engine.plugins import make_plugin_manager
    from ..tools.manifest import check_config_example

    try:
        registry = PluginRegistry.from_manager(make_plugin_manager([], load_entry_points=True))
        context = ValidationContext(settings=Settings.from_env())
    except Exception as exc:  # help must show even when a plugin or a setting is broken
        return f"(job types unavailable: {exc})"
    lines = ["Job types (check_config fields; * required):", ""]
    for name, checker in sorted(registry.checkers.items()):
        schema = checker.config_schema(context)
        required = set(schema.get("required", []))
        fields = ", ".join(
            f"{key}{'*' if key in required else ''}: {_kind(spec)}"
            for key, spec in schema.get("properties", {}).items()
        )
        lines.append(f"{name}: {one_line(checker.description, 200)}")
        lines.append(f"  fields: {fields or '(none)'}")
        example = check_config_example(name)
        if example is not None:
            lines.append(f"  example: --config '{json.dumps(example)}'")
        lines.append("")
    return "\n".join(lines)


def _kind(spec: Any) -> str:
    if not isinstance(spec, dict):
        return "any"
    if "enum" in spec:
        return "|".join(json.dumps(value) for value in spec["enum"])
    kind = spec.get("type") or "any"
    return "|".join(kind) if isinstance(kind, list) else str(kind)


class _AddCommand(click.Command):
    """``add``, whose help lists the installed job types (loaded only for the help)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write_paragraph()
        for line in _job_types_help().splitlines():
            formatter.write_text(line) if line else formatter.write_paragraph()


def _job_row(job: Job) -> list[str]:
    when = job.next_run_at if job.status is JobStatus.ACTIVE else job.completed_at
    return [
        str(job.id),
        job.user_id,
        job.job_type,
        job.status.value,
        f"{job.attempts}/{job.max_attempts}",
        when.strftime("%Y-%m-%d %H:%M:%S") if when else "",
        str(job.workflow_id)[:8] if job.workflow_id else "",
        one_line(job.last_error or "", 40),
    ]


@cli.command(cls=_AddCommand)
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
    """Add a job of JOB_TYPE and print its id (or the whole job with --json)."""
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
    click.echo(json.dumps(shown(ctx, added), indent=2) if as_json else str(added.id))


@cli.command(name="list")
@click.option("--status", type=click.Choice(_STATUSES), default=None, help="only this status")
@click.option("--user", default=None, help="only this user_id's jobs  [default: every user's]")
@click.option("--workflow", default=None, help="only the jobs of this workflow_id")
@click.option("--type", "job_type", default=None, help="only jobs of this job_type")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True,
              help="most jobs to show")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def list_jobs(ctx: click.Context, status: str | None, user: str | None, workflow: str | None,
              job_type: str | None, limit: int, as_json: bool) -> None:
    """List jobs of every user, newest first (the options narrow it)."""
    found = operate(ctx, lambda ops: ops.list_jobs(
        user_id=user, status=JobStatus(status) if status else None, workflow_id=workflow,
        job_type=job_type, limit=limit))
    if as_json:
        click.echo(json.dumps([shown(ctx, job) for job in found], indent=2))
    else:
        print_table(["id", "user", "type", "status", "attempts", "next/done (UTC)", "workflow",
                     "last error"],
                    [_job_row(job) for job in found])


@cli.command()
@click.argument("job_id", required=False)
@click.option("--workflow", default=None, help="cancel every active job of this workflow_id")
@click.option("--user", default=None, help="only if the job is this user_id's")
@click.option("--json", "as_json", is_flag=True, help="print the jobs as JSON for scripts")
@click.pass_context
def cancel(ctx: click.Context, job_id: str | None, workflow: str | None, user: str | None,
           as_json: bool) -> None:
    """Cancel an active job (JOB_ID: its id or 8+ leading hex digits), or a workflow's.

    Cancelling a job that has already finished changes nothing and exits 1.
    """
    if (job_id is None) == (workflow is None):
        raise click.UsageError("give a JOB_ID or --workflow ID (one of them)")
    if workflow is not None:
        cancelled, finished = operate(ctx, lambda ops: ops.cancel_workflow(
            workflow, user_id=user))
        if as_json:
            click.echo(json.dumps([shown(ctx, job) for job in cancelled], indent=2))
        else:
            for job in cancelled:
                click.echo(f"{job.id} cancelled")
            click.echo(f"{len(cancelled)} cancelled, {len(finished)} already finished",
                       err=True)
        return
    assert job_id is not None
    job, was_active = operate(ctx, lambda ops: ops.cancel_job(job_id, user_id=user))
    if as_json:
        click.echo(json.dumps(shown(ctx, job), indent=2))
    if not was_active:
        raise Failure(f"job {job.id} had already finished ({job.status.value}); "
                      "nothing was cancelled", None, Exit.FAILED)
    if not as_json:
        click.echo(f"{job.id} cancelled")


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
@click.option("--user", default=None, help="only if the job is this user_id's")
@click.option("--json", "as_json", is_flag=True, help="print JSON for scripts")
@click.pass_context
def show_job(ctx: click.Context, job_id: str, user: str | None, as_json: bool) -> None:
    """Show one job in full (JOB_ID: its id or 8+ leading hex digits)."""
    job = operate(ctx, lambda ops: ops.get_job(job_id, user_id=user))
    if as_json:
        click.echo(json.dumps(shown(ctx, job), indent=2))
    else:
        _print_job(job)


jobs.add_command(list_jobs, name="list")
jobs.add_command(add, name="add")
jobs.add_command(cancel, name="cancel")
