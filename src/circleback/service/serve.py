"""``circleback serve``: the engine and the tool service in one process.

The HTTP server is Hypercorn, which runs on asyncio and on trio, inside the
same task tree as the engine. SIGINT or SIGTERM starts a graceful shutdown:
the server stops accepting connections and finishes the requests in flight,
then the engine stops claiming, lets checks in flight finish for its grace
period (``EngineTuning.shutdown_grace_seconds``, ``--shutdown-grace``), gives
back the leases of the rest, and the process exits with status 0. Further
signals during the shutdown are caught and logged; they do not cut it short.

It listens on one IPv4 or IPv6 address (``--host ::1``, ``[::1]`` and ``::``
alike). Without an API token the service refuses to listen anywhere but on a
loopback address, and says at start that it serves without authentication.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import signal
import socket
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
import sniffio
from hypercorn.config import Config

from ..core.errors import ConfigurationError
from ..core.settings import Settings
from ..engine.engine import Engine
from ..tools.execute import SchedulerTools
from .app import HealthProbe, create_app

__all__ = [
    "DEFAULT_HOST", "DEFAULT_PORT", "KEEP_ALIVE_TIMEOUT_SECONDS", "MAX_HEAD_BYTES",
    "READ_TIMEOUT_SECONDS", "check_bind_address", "is_loopback_host", "serve",
]

logger = logging.getLogger("circleback.serve")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
#: A connection with no request in flight, or whose request head has not all arrived,
#: is closed after this many seconds.
KEEP_ALIVE_TIMEOUT_SECONDS = 5
#: A client silent this long mid-request is disconnected; well above the longest the
#: service takes to answer (``/health``: two probes of 5 s). Hypercorn's default waits
#: for ever; a body trickled in is cut by the app (``BODY_TIMEOUT_SECONDS``).
READ_TIMEOUT_SECONDS = 30
#: Largest request head (request line and headers), in bytes.
MAX_HEAD_BYTES = 16 * 1024


def _literal(host: str) -> str:
    """``host`` without surrounding spaces and IPv6 brackets: ``[::1]`` is ``::1``."""
    host = host.strip()
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (an address or a name) means loopback addresses only.

    A name counts as loopback when every address it resolves to is a loopback
    address. The wildcard addresses (``0.0.0.0``, ``::``) and the empty host are not.
    """
    literal = _literal(host)
    if not literal:
        return False
    try:
        return ipaddress.ip_address(literal.split("%", 1)[0]).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(literal, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return False
    addresses = {ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos}
    return bool(addresses) and all(address.is_loopback for address in addresses)


def check_bind_address(host: str, api_token: str | None) -> None:
    """Refuse to serve beyond loopback without an API token (raises ConfigurationError)."""
    if api_token or is_loopback_host(host):
        return
    raise ConfigurationError(
        f"refusing to listen on {host!r} without an API token: anyone who can reach it could "
        "add and cancel jobs as any user. Set CIRCLEBACK_API_TOKEN, or listen on a loopback "
        "address such as 127.0.0.1 (the default)."
    )


def _bind(host: str, port: int) -> str:
    literal = _literal(host)
    if ":" in literal:
        return f"[{literal}]:{port}"
    return f"{literal}:{port}"


def _check_can_listen(host: str, port: int) -> None:
    """Fail early and clearly when the address cannot be bound (before the engine starts).

    The trial socket is made as Hypercorn makes its own: IPv6 for an address with a
    colon, IPv4 for anything else (names included).
    """
    literal = _literal(host)
    family = socket.AF_INET6 if ":" in literal else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((literal, port))
            sock.listen()
    except OSError as exc:
        hint = ""
        if exc.errno == errno.EAFNOSUPPORT or (exc.errno == errno.EADDRNOTAVAIL
                                               and literal == "::1"):
            hint = " (is IPv6 enabled on this machine? --host 127.0.0.1 listens on IPv4)"
        elif isinstance(exc, socket.gaierror) and exc.errno == getattr(
            socket, "EAI_ADDRFAMILY", None
        ):
            hint = " (a host name is listened on over IPv4; give an IPv6 address as such: ::1)"
        raise ConfigurationError(
            f"cannot listen on {_bind(host, port)}: {exc.strerror or exc}{hint}"
        ) from None


async def _run_http(app: object, config: Config, shutdown: Callable[[], Awaitable[None]]) -> None:
    if sniffio.current_async_library() == "trio":
        from hypercorn.trio import serve as serve_trio

        await serve_trio(app, config, shutdown_trigger=shutdown)  # type: ignore[arg-type]
    else:
        from hypercorn.asyncio import serve as serve_asyncio

        await serve_asyncio(app, config, shutdown_trigger=shutdown)  # type: ignore[arg-type]


async def _stop_on_signals(stop: anyio.Event, grace_seconds: float) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            if not stop.is_set():
                logger.info("received %s: finishing requests and checks in flight, then stopping",
                            name)
                stop.set()
            else:
                logger.warning(
                    "received %s again: already stopping; checks still in flight get at most "
                    "%g s before their jobs are given back", name, grace_seconds)


async def serve(
    settings: Settings,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    handle_signals: bool = True,
    stop: anyio.Event | None = None,
    graceful_timeout_seconds: float = 5.0,
) -> None:
    """Run the engine and the tool service until SIGINT/SIGTERM (or until ``stop`` is set).

    Raises :class:`~circleback.errors.ConfigurationError` before starting anything when
    the address needs a token that is not configured, or when it cannot be bound.
    """
    # Name resolution and a trial bind block: keep them off the event loop.
    await anyio.to_thread.run_sync(check_bind_address, host, settings.api_token)
    await anyio.to_thread.run_sync(_check_can_listen, host, port)
    stop = stop or anyio.Event()
    config = Config()
    config.bind = [_bind(host, port)]
    config.accesslog = None
    config.errorlog = logging.getLogger("circleback.http")
    config.graceful_timeout = graceful_timeout_seconds
    config.include_server_header = False
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT_SECONDS
    config.read_timeout = READ_TIMEOUT_SECONDS
    config.h11_max_incomplete_size = MAX_HEAD_BYTES
    if settings.api_token:
        logger.info("serving the scheduler tools on http://%s; every route but /health "
                    "requires the API token", config.bind[0])
    else:
        logger.warning(
            "CIRCLEBACK_API_TOKEN is not set: serving the scheduler tools on http://%s "
            "without authentication, on loopback only", config.bind[0])
    # The signal watcher outlives the engine, so that a signal during the engine's
    # graceful stop is caught too instead of killing the process half-way.
    async with anyio.create_task_group() as watchers:
        if handle_signals:
            watchers.start_soon(_stop_on_signals, stop, settings.tuning.shutdown_grace_seconds)
        async with Engine(settings) as engine:
            app = create_app(
                SchedulerTools.for_engine(engine),
                api_token=settings.api_token,
                health=HealthProbe(engine),
            )
            # Hypercorn runs in a task of its own: on asyncio it stops by raising
            # inside an asyncio.TaskGroup, which cancels the task it runs in.
            async with anyio.create_task_group() as http:
                http.start_soon(_run_http, app, config, stop.wait)
        watchers.cancel_scope.cancel()
    logger.info("stopped")
