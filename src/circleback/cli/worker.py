"""Running circleback: a worker (``run``) and the tool service (``serve``)."""

from __future__ import annotations

import logging
import signal

import attrs
import click

from .app import cli, run_async, settings_of

__all__ = ["run", "serve"]


@cli.command()
@click.option("--until-idle", is_flag=True,
              help="exit once no job is active and every message has gone out")
@click.pass_context
def run(ctx: click.Context, until_idle: bool) -> None:
    """Run the engine (a worker): check due jobs and deliver their messages until stopped."""
    import anyio

    from ..engine.engine import Engine

    settings = settings_of(ctx)
    log = logging.getLogger("circleback")

    async def main() -> None:
        async with Engine(settings) as engine, anyio.create_task_group() as group:

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

    run_async(ctx, main)


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
