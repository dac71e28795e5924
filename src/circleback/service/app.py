"""The tool service as an ASGI app: ``GET /manifest``, ``POST /execute``, ``GET /health``.

Built on Starlette, which runs on anyio and so under asyncio and trio alike.
Every answer is JSON. Errors use the tools' error object with a 4xx status::

    {"ok": false, "error": {"code": "invalid", "message": "...", "field": "job_type"}}

When an API token is configured, every route but ``/health`` requires
``Authorization: Bearer <token>`` and answers 401 without it.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..tools.execute import SchedulerTools

if TYPE_CHECKING:
    from ..engine.engine import Engine

__all__ = [
    "BODY_TIMEOUT_SECONDS", "MAX_BODY_BYTES", "STATUS_BY_CODE", "HealthProbe", "create_app",
    "status_for",
]

logger = logging.getLogger("circleback.service")

#: The HTTP status of each error code; anything else is a 500.
STATUS_BY_CODE: dict[str, int] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "unknown_tool": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "too_large": 413,
    "invalid": 422,
    # The rules a JSON Schema cannot state (see circleback.core.rulebook).
    "oversized": 422,
    "unstorable_text": 422,
    "conflict": 422,
    "address_refused": 422,
    "limit_exceeded": 429,
    "store": 503,
}
#: Largest ``/execute`` request body, in bytes.
MAX_BODY_BYTES = 1_048_576
#: Longest ``/execute`` waits for its whole body, in seconds. A tool call is a few
#: kilobytes; a client trickling one in holds a connection and a task meanwhile.
BODY_TIMEOUT_SECONDS = 10.0
_ENVELOPE_KEYS = ("tool", "arguments", "context")

Health = Callable[[], Awaitable[dict[str, Any]]]


def status_for(answer: Mapping[str, Any]) -> int:
    """The HTTP status for an ``execute`` answer."""
    if answer.get("ok"):
        return 200
    return STATUS_BY_CODE.get(answer["error"]["code"], 500)


def _error(code: str, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse(
        {"ok": False, "error": {"code": code, "message": message, "field": field}},
        status_code=STATUS_BY_CODE.get(code, 500),
    )


def _unread_body(response: Response) -> Response:
    """Close the connection after ``response``: the request body was left unread, so the
    connection cannot carry another request (the client must not reuse it)."""
    response.headers["Connection"] = "close"
    return response


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class HealthProbe:
    """Answers whether the engine, the database and (when configured) Redis are up."""

    def __init__(self, engine: Engine, *, timeout_seconds: float = 5.0) -> None:
        self._engine = engine
        self._timeout = timeout_seconds

    async def __call__(self) -> dict[str, Any]:
        engine = self._engine
        report: dict[str, Any] = {
            "engine": {"ok": True, "worker_id": engine.worker_id},
            "database": await self._probe(self._database),
        }
        redis_url = engine.settings.redis_url
        report["redis"] = (
            await self._probe(lambda: self._redis(redis_url))
            if redis_url
            else {"ok": True, "configured": False}
        )
        report["ok"] = all(part["ok"] for part in report.values())
        return report

    async def _probe(self, check: Callable[[], Awaitable[None]]) -> dict[str, Any]:
        try:
            with anyio.fail_after(self._timeout):
                await check()
        except TimeoutError:
            return {"ok": False, "error": f"no answer within {self._timeout:g} s"}
        except Exception as exc:
            logger.warning("health check failed", exc_info=True)
            return {"ok": False, "error": type(exc).__name__}
        return {"ok": True}

    async def _database(self) -> None:
        await self._engine.operations.ping()

    async def _redis(self, url: str) -> None:
        import redis

        def ping() -> None:
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()

        # The synchronous client in a worker thread works under asyncio and trio alike.
        await anyio.to_thread.run_sync(ping, abandon_on_cancel=True)


def create_app(
    tools: SchedulerTools,
    *,
    api_token: str | None,
    health: Health,
    max_body_bytes: int = MAX_BODY_BYTES,
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS,
) -> Starlette:
    """The ASGI app serving ``tools``; ``health`` answers ``/health``.

    ``/execute`` answers 413 to a body over ``max_body_bytes`` and 408 to one that has
    not all arrived within ``body_timeout_seconds``, and closes the connection after.
    """
    expected = api_token.encode() if api_token else None

    def unauthorized(request: Request) -> Response | None:
        if expected is None:
            return None
        # The scheme is case-insensitive and may be followed by several spaces (RFC 9110 §11).
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        given = credentials.lstrip(" ").encode("utf-8", "replace")
        if scheme.lower() == "bearer" and hmac.compare_digest(given, expected):
            return None
        response = _error("unauthorized", "a valid 'Authorization: Bearer <token>' is required")
        response.headers["WWW-Authenticate"] = 'Bearer realm="circleback"'
        return _unread_body(response)

    async def manifest(request: Request) -> Response:
        return unauthorized(request) or JSONResponse(tools.manifest)

    async def execute(request: Request) -> Response:
        refused = unauthorized(request)
        if refused is not None:
            return refused
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            return _unread_body(
                _error("too_large", f"the request body exceeds {max_body_bytes} bytes")
            )
        body = bytearray()
        with anyio.move_on_after(body_timeout_seconds) as reading:
            async with aclosing(request.stream()) as chunks:
                async for chunk in chunks:
                    body += chunk
                    if len(body) > max_body_bytes:
                        return _unread_body(_error(
                            "too_large", f"the request body exceeds {max_body_bytes} bytes"))
        if reading.cancelled_caught:
            return _unread_body(_error(
                "request_timeout",
                f"the request body did not arrive within {body_timeout_seconds:g} s"))
        try:
            call = json.loads(bytes(body), parse_constant=_refuse_constant)
        except (ValueError, RecursionError):
            return _error("bad_request", "the request body is not valid JSON", "body")
        if not isinstance(call, dict):
            return _error(
                "bad_request",
                'the request body must be an object {"tool", "arguments", "context"}',
                "body",
            )
        for key in call:
            if key not in _ENVELOPE_KEYS:
                shown = key if len(key) <= 80 else key[:80] + "…"
                return _error(
                    "invalid",
                    f"{shown!r} is not a field of a tool call; it takes "
                    f"{', '.join(_ENVELOPE_KEYS)}",
                    shown,
                )
        answer = await tools.execute(call.get("tool"), call.get("arguments"), call.get("context"))
        return JSONResponse(answer, status_code=status_for(answer))

    async def health_route(request: Request) -> Response:
        report = await health()
        return JSONResponse(report, status_code=200 if report["ok"] else 503)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        response = _error(code, f"{request.method} {request.url.path}: {exc.detail}")
        response.status_code = exc.status_code
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    return Starlette(
        routes=[
            Route("/manifest", manifest, methods=["GET"]),
            Route("/execute", execute, methods=["POST"]),
            Route("/health", health_route, methods=["GET"]),
        ],
        exception_handlers={HTTPException: http_error},
    )
