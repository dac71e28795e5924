"""The ASGI app in-process (httpx.ASGITransport): token, routes, statuses, bodies, health."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import attrs
import httpx
import pytest

import circleback
from circleback import Caller, Settings
from circleback.service.app import HealthProbe, create_app
from circleback.tools import SchedulerTools

from .. import services
from ..pacing import QUICK
from ..store_rows import RowWatch
from ..tools_support import context_of

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@attrs.define
class Service:
    client: httpx.AsyncClient
    tools: SchedulerTools
    rows: RowWatch


@pytest.fixture
async def service(settings: Settings) -> AsyncIterator[Service]:
    async with circleback.Engine(
        settings, worker=False, load_entry_points=False, pacing=QUICK
    ) as engine:
        tools = SchedulerTools.for_engine(engine)
        app = create_app(tools, api_token=TOKEN, health=HealthProbe(engine),
                         max_body_bytes=64_000)
        rows = RowWatch(settings.database_url)
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://circleback.test") as client:
                yield Service(client, tools, rows)
        finally:
            rows.close()


def _call(tool: str, arguments: Any, caller: Caller, **context: Any) -> dict[str, Any]:
    return {"tool": tool, "arguments": arguments, "context": {**context_of(caller), **context}}


def _delay(**extra: Any) -> dict[str, Any]:
    return {"job_type": "delay", "check_config": {"delay_seconds": 60},
            "on_success_message": "done", **extra}


async def test_every_route_but_health_wants_the_token(service: Service, caller: Caller) -> None:
    before = service.rows.snapshot()
    wrong = [{}, {"Authorization": "Bearer"}, {"Authorization": "Bearer wrong"},
             {"Authorization": f"bearer  {TOKEN}x"}, {"Authorization": f"Basic {TOKEN}"},
             {"Authorization": TOKEN}]
    for headers in wrong:
        for method, path, body in (("GET", "/manifest", None),
                                   ("POST", "/execute", _call("scheduler.add_job", _delay(),
                                                              caller))):
            response = await service.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (headers, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            # The body went unread, so the connection must not carry another request.
            assert response.headers["connection"] == "close"
            assert response.json()["error"]["code"] == "unauthorized"
    assert service.rows.snapshot() == before
    health = await service.client.get("/health")
    assert health.status_code == 200
    assert health.json()["ok"] is True
    manifest = await service.client.get("/manifest", headers=AUTH)
    assert manifest.status_code == 200
    assert manifest.json() == service.tools.manifest


async def test_execute_answers_with_the_documented_statuses(
    service: Service, caller: Caller
) -> None:
    client = service.client

    async def post(body: Any) -> httpx.Response:
        return await client.post("/execute", json=body, headers=AUTH)

    added = await post(_call("scheduler.add_job", _delay(), caller))
    assert added.status_code == 200
    job_id = added.json()["result"]["job"]["id"]
    listed = await post(_call("scheduler.list_jobs", {}, caller))
    assert [job["id"] for job in listed.json()["result"]["jobs"]] == [job_id]

    stranger = attrs.evolve(caller, user_id=f"{caller.user_id}-stranger")
    cases = [
        (_call("scheduler.cancel_job", {"job_id": job_id}, stranger), 404, "not_found"),
        (_call("scheduler.cancel_job", {"job_id": job_id}, caller, permission="user"), 403,
         "forbidden"),
        (_call("scheduler.add_job", _delay(interval_seconds=-5), caller), 422, "invalid"),
        (_call("scheduler.add_job", _delay(user_id="victim"), caller), 422, "invalid"),
        (_call("scheduler.reboot", {}, caller), 404, "unknown_tool"),
        ({**_call("scheduler.list_jobs", {}, caller), "sudo": True}, 422, "invalid"),
        ({"tool": "scheduler.list_jobs", "arguments": {}}, 422, "invalid"),
    ]
    before = service.rows.snapshot()
    for body, status, code in cases:
        response = await post(body)
        assert response.status_code == status, (body, response.text)
        error = response.json()["error"]
        assert error["code"] == code
        assert set(error) == {"code", "message", "field"}
    assert service.rows.snapshot() == before

    cancelled = await post(_call("scheduler.cancel_job", {"job_id": job_id}, caller))
    assert cancelled.status_code == 200
    assert cancelled.json()["result"]["job"]["status"] == "cancelled"


async def test_bad_request_bodies_get_json_errors_and_write_nothing(service: Service) -> None:
    client = service.client
    before = service.rows.snapshot()
    bodies: list[tuple[bytes, int, str]] = [
        (b"", 400, "bad_request"),
        (b"{not json", 400, "bad_request"),
        (b'{"tool": "scheduler.list_jobs", "arguments": {"limit": NaN}}', 400, "bad_request"),
        (b'{"tool": "scheduler.list_jobs", "arguments": {"limit": Infinity}}', 400,
         "bad_request"),
        (b"[1, 2]", 400, "bad_request"),
        (b'"scheduler.list_jobs"', 400, "bad_request"),
        (b"\xff\xfe", 400, "bad_request"),
        (b"[" * 50_000 + b"]" * 50_000, 413, "too_large"),
        (b"[" * 30_000 + b"]" * 30_000, 400, "bad_request"),
        (b'{"tool": "' + b"x" * 70_000 + b'"}', 413, "too_large"),
    ]
    for body, status, code in bodies:
        response = await client.post("/execute", content=body, headers=AUTH)
        assert response.status_code == status, (body[:40], response.text)
        if status == 413:
            assert response.headers["connection"] == "close"
        assert response.json()["ok"] is False
        assert response.json()["error"]["code"] == code
    for method, path, status, code in (("GET", "/execute", 405, "method_not_allowed"),
                                       ("POST", "/manifest", 405, "method_not_allowed"),
                                       ("GET", "/nothing-here", 404, "not_found")):
        response = await client.request(method, path, headers=AUTH)
        assert response.status_code == status
        assert response.json()["error"]["code"] == code
    assert service.rows.snapshot() == before


async def test_health_reports_the_database_and_redis(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    dead_redis = f"redis://127.0.0.1:{services.free_port()}/0"
    reports = {}
    for label, url in (("up", redis_url), ("down", dead_redis), ("none", None)):
        settings = make_settings(redis_url=url)
        async with circleback.Engine(
            settings, worker=False, load_entry_points=False, pacing=QUICK
        ) as engine:
            app = create_app(SchedulerTools.for_engine(engine), api_token=None,
                             health=HealthProbe(engine, timeout_seconds=5))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://circleback.test") as client:
                response = await client.get("/health")
        reports[label] = (response.status_code, response.json())
    status, report = reports["up"]
    assert status == 200 and report["ok"] is True
    assert report["engine"]["ok"] and report["database"] == {"ok": True}
    assert report["redis"] == {"ok": True}
    status, report = reports["down"]
    assert status == 503 and report["ok"] is False
    assert report["database"] == {"ok": True}
    assert report["redis"]["ok"] is False and report["redis"]["error"]
    status, report = reports["none"]
    assert status == 200 and report["redis"] == {"ok": True, "configured": False}


async def test_without_a_token_the_app_needs_none(settings: Settings, caller: Caller) -> None:
    async with circleback.Engine(
        settings, worker=False, load_entry_points=False, pacing=QUICK
    ) as engine:
        app = create_app(SchedulerTools.for_engine(engine), api_token=None,
                         health=HealthProbe(engine))
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://circleback.test") as client:
            response = await client.post("/execute",
                                         json=_call("scheduler.list_jobs", None, caller))
            manifest = await client.get("/manifest")
    assert response.status_code == 200 and response.json()["result"]["count"] == 0
    assert manifest.status_code == 200 and manifest.json()["name"] == "scheduler"


async def test_the_bearer_scheme_is_matched_in_any_case(service: Service) -> None:
    # RFC 9110 §11.1: the scheme is case-insensitive; one or more spaces follow it.
    for given in (f"bearer {TOKEN}", f"BEARER {TOKEN}", f"Bearer   {TOKEN}", f"bEaReR {TOKEN}"):
        response = await service.client.get("/manifest", headers={"Authorization": given})
        assert response.status_code == 200, given
    for wrong in (f"Bearer{TOKEN}", f"Bearer {TOKEN.upper()}", f"Basic {TOKEN}"):
        response = await service.client.get("/manifest", headers={"Authorization": wrong})
        assert response.status_code == 401, wrong
