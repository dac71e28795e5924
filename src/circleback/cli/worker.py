"""Running circleback: a worker (``run``) and the tool service (``serve``)."""

from __future__ import annotations

import logging
import signal
import sys
from typing import TYPE_CHECKING

import attrs
import click

from .app import cli, run_async, settings_of
from .failures import Exit, Failure, closed_stdout

if TYPE_CHECKING:
    from ..engine.engine import Engine

__all__ = ["run", "serve"]


#: Seconds between the progress lines of ``run --until-idle``.
_PROGRESS_EVERY = 5.0
#: Seconds between looks at whether standard output was closed.
_STDOUT_POLL = 0.5


def _stdout_closed() -> bool:
    """Whether the reader of standard output went away (a pipe whose other end closed)."""
    import select

    try:
        fd = sys.stdout.fileno()
    except (AttributeError, ValueError, OSError):
        return False
    poller = select.poll()
    poller.register(fd, 0)  # errors and hang-ups are always reported
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


@cli.command()
@click.option("--until-idle", is_flag=True,
              help="exit once no job is active and every message has gone out, saying on "
                   "standard error every few seconds what it waits for")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="with --until-idle: give up after this many seconds (exit 1)")
@click.pass_context
def run(ctx: click.Context, until_idle: bool, timeout: float | None) -> None:
    """Run the engine (a worker): check due jobs and deliver their messages until stopped.

    Stops on SIGINT or SIGTERM, and when standard output is closed (``| head``).
    """
    import anyio

    from ..engine.engine import Engine

    if timeout is not None and not until_idle:
        raise click.UsageError("--timeout bounds --until-idle; give both")
    settings = settings_of(ctx)
    log = logging.getLogger("circleback")
    outcome = {"timed_out": False, "stdout_closed": False}

    async def main() -> None:
        async with Engine(settings) as engine, anyio.create_task_group() as group:

            async def stop_on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        log.info("received %s, stopping", signal.Signals(signum).name)
                        group.cancel_scope.cancel()
                        return

            async def stop_on_closed_stdout() -> None:
                # An OS condition with no event to wait on: looked at twice a second.
                while not _stdout_closed():  # noqa: ASYNC110
                    await anyio.sleep(_STDOUT_POLL)
                log.info("standard output was closed, stopping")
                outcome["stdout_closed"] = True
                group.cancel_scope.cancel()

            group.start_soon(stop_on_signal)
            group.start_soon(stop_on_closed_stdout)
            if until_idle:
                with anyio.move_on_after(timeout if timeout is not None else float("inf")):
                    await _wait_until_idle(engine)
                    group.cancel_scope.cancel()
                    return
                outcome["timed_out"] = True
                group.cancel_scope.cancel()

    run_async(ctx, main)
    if outcome["stdout_closed"]:
        closed_stdout(BrokenPipeError())
    elif outcome["timed_out"]:
        raise Failure(f"not idle after {timeout:g} s; the jobs and messages stay for the "
                      "next worker", None, Exit.FAILED)


async def _wait_until_idle(engine: Engine) -> None:
    """Return once idle; meanwhile say on standard error what is left, every few seconds."""
    import anyio

    last = -_PROGRESS_EVERY
    while True:
        active, pending, due = await engine.operations.backlog()
        if not active and not pending:
            return
        now = anyio.current_time()
        if now - last >= _PROGRESS_EVERY:
            last = now
            when = due.strftime("%H:%M:%S UTC") if due else "-"
            click.echo(f"waiting: {active} active jobs, {pending} messages to send, "
                       f"next check due {when}", err=True)
        await anyio.sleep(0.2)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="IPv4 or IPv6 address to listen on (::1 and :: too); beyond loopback "
                   "only with CIRCLEBACK_API_TOKEN set")
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
    from ..service.serve import serve as serve_tools

    settings = settings_of(ctx)
    if shutdown_grace is not None:
        tuning = attrs.evolve(settings.tuning, shutdown_grace_seconds=shutdown_grace)
        settings = attrs.evolve(settings, tuning=tuning)
    run_async(ctx, lambda: serve_tools(settings, host=host, port=port))
