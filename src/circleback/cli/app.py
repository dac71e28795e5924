"""The ``circleback`` command group and what its commands share: settings, running, tables.

Every command reads the ``CIRCLEBACK_*`` environment variables; flags override them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..core.models import Caller
from ..core.settings import Settings
from .failures import EXIT_CODES_HELP, Exit, Failure, closed_stdout, report, sqlite_path
from .logs import configure_logging

if TYPE_CHECKING:
    from ..engine.engine import Engine
    from ..engine.operations import Operations

__all__ = [
    "Failure",
    "caller_from",
    "caller_options",
    "cli",
    "facade_engine",
    "one_line",
    "operate",
    "print_table",
    "require_database",
    "run_async",
    "settings_of",
]

T = TypeVar("T")


def settings_of(ctx: click.Context) -> Settings:
    """The settings: the environment, with the group's flags over it; a bad one in one line."""
    obj: dict[str, Any] = ctx.ensure_object(dict)
    return Settings.from_env(database_url=obj.get("database_url"), redis_url=obj.get("redis_url"))


def run_async(ctx: click.Context, fn: Callable[[], Awaitable[T]]) -> T:
    """Run ``fn`` on the chosen backend (a failure is explained by the group)."""
    import anyio

    backend = ctx.ensure_object(dict).get("backend", "asyncio")
    return anyio.run(fn, backend=backend)


def caller_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options naming who a command acts for (as the orchestrator would)."""
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


def caller_from(user: str, platform: str, channel: str | None = None, thread: str | None = None,
                conversation: str | None = None) -> Caller:
    """The caller the options name."""
    return Caller(
        user_id=user,
        platform=platform,
        platform_channel_id=channel,
        platform_thread_id=thread,
        conversation_id=conversation,
    )


def require_database(ctx: click.Context) -> None:
    """Refuse to read a SQLite database that does not exist (opening it would create it)."""
    path = sqlite_path(_database_url(ctx.ensure_object(dict)))
    if path is not None and not path.exists():
        raise Failure(f"there is no database at {path} yet",
                      "'circleback db upgrade' makes it (so do 'add' and 'run'); "
                      "or set CIRCLEBACK_DATABASE_URL", Exit.ENVIRONMENT)


def operate(ctx: click.Context, act: Callable[[Operations], Awaitable[T]]) -> T:
    """Run ``act`` on the operator verbs of the configured database (which must exist)."""
    from ..engine.operations import open_operations

    require_database(ctx)
    url = settings_of(ctx).database_url

    async def main() -> T:
        async with open_operations(url) as operations:
            return await act(operations)

    return run_async(ctx, main)


def facade_engine(ctx: click.Context) -> Engine:
    """An engine without worker loops: the facade and the operator verbs only."""
    from ..core.clock import SystemClock
    from ..engine.engine import Engine

    return Engine(settings_of(ctx), worker=False, clock=SystemClock())


def one_line(text: str, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    """Rows under upper-cased headers, in columns as wide as their widest cell."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(headers)]
    click.echo("  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


class CommandGroup(click.Group):
    """The group that turns every expected failure into a few lines and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except Exception as exc:
            if closed_stdout(exc):
                raise click.exceptions.Exit(int(Exit.FAILED)) from None
            obj = ctx.find_object(dict) or {}
            failure = report(exc, debug=obj.get("debug", False),
                             database_url=_database_url(obj))
            raise failure from None


def _database_url(obj: dict[str, Any]) -> str:
    import os

    return str(obj.get("database_url") or os.environ.get("CIRCLEBACK_DATABASE_URL")
               or "sqlite:///circleback.db")


@click.group(cls=CommandGroup, epilog=EXIT_CODES_HELP)
@click.option("--database-url", envvar="CIRCLEBACK_DATABASE_URL", default=None,
              help="SQLAlchemy URL of the store [env CIRCLEBACK_DATABASE_URL; "
                   "default sqlite:///circleback.db]")
@click.option("--redis-url", envvar="CIRCLEBACK_REDIS_URL", default=None,
              help="Redis for notifications [env CIRCLEBACK_REDIS_URL; default: standard output]")
@click.option("--backend", type=click.Choice(["asyncio", "trio"]), default="asyncio",
              envvar="CIRCLEBACK_BACKEND", show_default=True, help="async backend to run on")
@click.option("--log-level", default="INFO", envvar="CIRCLEBACK_LOG_LEVEL", show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="level of circleback's own log lines (DEBUG adds tracebacks to errors)")
@click.option("--library-log-level", default="WARNING", envvar="CIRCLEBACK_LIBRARY_LOG_LEVEL",
              show_default=True,
              type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
              help="level of other libraries' log lines (httpx, SQLAlchemy, hypercorn, ...)")
@click.option("--log-format", default="text", envvar="CIRCLEBACK_LOG_FORMAT", show_default=True,
              type=click.Choice(["text", "json"]),
              help="json: one object a line with job_id, workflow_id, user_id")
@click.version_option(package_name="circleback")
@click.pass_context
def cli(ctx: click.Context, database_url: str | None, redis_url: str | None,
        backend: str, log_level: str, library_log_level: str, log_format: str) -> None:
    """circleback: watch long-running work and circle back when it is done."""
    ctx.ensure_object(dict).update(database_url=database_url, redis_url=redis_url,
                                   backend=backend, debug=log_level.upper() == "DEBUG")
    configure_logging(log_level, library_level=library_log_level,
                      json_lines=log_format == "json")
