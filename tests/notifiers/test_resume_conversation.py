"""``resume_conversation`` against a real ``/continue`` server on 127.0.0.1, with Redis fallback."""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme

import circleback
from circleback import Caller, EngineTuning, HttpTuning, Settings
from circleback.core.models import DeliveryStatus, OutboxEntry
from circleback.notifiers.notify import channel_for

from .. import services
from ..continue_server import HANG, Behaviour, ContinueServer
from ..http_servers import HttpServer, json_reply
from ..pacing import QUICK, Pacing
from ..subscriber import Subscriber

pytestmark = pytest.mark.redis

UNTRUSTED_OPEN = '<untrusted-data source="checked system">'


def resume_job(message: str = "deployed: {result}") -> dict[str, Any]:
    return {"job_type": "delay", "check_config": {"delay_seconds": 0.01},
            "on_success_message": message, "on_complete": "resume_conversation"}


def quick_resume(make_settings: Callable[..., Settings], **overrides: Any) -> Settings:
    """Three quick tries of ``/continue``.

    A try's timeout stays generous: on a loaded machine a try that ran out of
    time would be one the server never answered, and a test counting the
    server's scripted answers would see them shifted. Tests of a core that
    never answers set a short one themselves.
    """
    values: dict[str, Any] = {"resume_attempts": 3, "resume_timeout_seconds": 5.0,
                              "resume_backoff_seconds": 0.02}
    values.update(overrides)
    return make_settings(**values)


async def run_one_job(settings: Settings, caller: Caller, spec: dict[str, Any],
                      pacing: Pacing = QUICK) -> OutboxEntry:
    """Add one job, let the engine finish and deliver it, and return its outbox row."""
    async with circleback.Engine(settings, load_entry_points=False, pacing=pacing) as engine:
        await engine.scheduler.add_job(caller, spec)
        with anyio.fail_after(20):
            await engine.wait_until_idle(poll_seconds=0.02)
        [entry] = await engine.store.list_outbox()
    return entry


async def run_against_core(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str,
    script: list[Behaviour], *, default: Behaviour = 200, pacing: Pacing = QUICK,
    **overrides: Any,
) -> tuple[OutboxEntry, list[Any], list[dict[str, Any]]]:
    """One resume job against a core answering ``script`` then ``default``.

    Returns its outbox row, the requests the core saw and the fallback
    notifications a subscriber got.
    """
    with ContinueServer(script, default=default) as core, \
            Subscriber(redis_url, channel_for(caller.platform)) as bot:
        settings = quick_resume(make_settings, redis_url=redis_url, core_url=core.url,
                                **overrides)
        entry = await run_one_job(settings, caller, resume_job(), pacing)
        return entry, core.requests, bot.messages


async def test_resume_posts_once_with_the_documented_body_and_idempotency_key(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str
) -> None:
    with ContinueServer() as core, Subscriber(redis_url, channel_for(caller.platform)) as bot:
        settings = quick_resume(make_settings, redis_url=redis_url, core_url=core.url + "/",
                                core_token="core-secret")
        entry = await run_one_job(settings, caller, resume_job())
        requests = core.requests
        fallbacks = bot.messages
    assert entry.status is DeliveryStatus.SENT
    assert entry.attempts == 1
    assert entry.delivered_via == "resume_conversation"
    assert entry.delivery_note is None
    [request] = requests
    assert request.method == "POST"
    assert request.path == "/continue"
    assert request.headers["idempotency-key"] == str(entry.id)
    assert request.headers["authorization"] == "Bearer core-secret"
    assert request.headers["content-type"] == "application/json"
    assert request.body == entry.notification.to_dict()
    body = request.body
    assert body["notification_id"] == str(entry.id)
    assert body["type"] == "scheduler.job_completed"
    assert body["user_id"] == caller.user_id
    assert body["conversation_id"] == caller.conversation_id
    assert body["platform_channel_id"] == "C1"
    assert body["platform_thread_id"] == "T1"
    assert body["message"] == (
        f'deployed: {UNTRUSTED_OPEN}{{"delay_seconds":0.01}}</untrusted-data>'
    )
    assert fallbacks == []  # the fallback would have gone out before the row was marked sent


@pytest.mark.parametrize("script", [[500, 500], [429, 503]], ids=["500-500-200", "429-503-200"])
async def test_resume_retries_server_errors_then_succeeds_without_fallback(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str, script: list[int]
) -> None:
    entry, requests, fallbacks = await run_against_core(make_settings, caller, redis_url, script)
    assert entry.status is DeliveryStatus.SENT
    assert entry.attempts == 1  # the retries happened inside one delivery
    assert entry.delivered_via == "resume_conversation", entry.delivery_note
    assert len(requests) == 3
    assert {r.headers["idempotency-key"] for r in requests} == {str(entry.id)}
    assert all(r.body == entry.notification.to_dict() for r in requests)
    assert "authorization" not in requests[0].headers  # no token configured
    assert fallbacks == []


@pytest.mark.parametrize(
    ("behaviour", "expected_requests", "why"),
    [
        (500, 3, "fell back: /continue answered 500 (3 tries)"),
        (HANG, 3, "fell back: /continue did not answer within 0.3 s (3 tries)"),
        (401, 1, "fell back: /continue answered 401"),
        (404, 1, "fell back: /continue answered 404"),
        (None, 0, "fell back: /continue could not be reached: ConnectError (3 tries)"),
    ],
    ids=["always-500", "never-answers", "401", "404", "connection-refused"],
)
async def test_failed_resume_falls_back_to_notify_with_the_same_id(
    make_settings: Callable[..., Settings],
    caller: Caller,
    redis_url: str,
    behaviour: Behaviour | None,
    expected_requests: int,
    why: str,
) -> None:
    with ContinueServer(default=behaviour or 200) as core, \
            Subscriber(redis_url, channel_for(caller.platform)) as bot:
        core_url = core.url if behaviour is not None else f"http://127.0.0.1:{services.free_port()}"
        short = {"resume_timeout_seconds": 0.3} if behaviour == HANG else {}
        settings = quick_resume(make_settings, redis_url=redis_url, core_url=core_url, **short)
        entry = await run_one_job(settings, caller, resume_job())
        requests = core.requests
        [fallback] = bot.messages
    assert len(requests) == expected_requests
    assert {r.headers["idempotency-key"] for r in requests} <= {str(entry.id)}
    assert fallback == entry.notification.to_dict()
    assert fallback["notification_id"] == str(entry.id)
    assert entry.status is DeliveryStatus.SENT
    assert entry.delivered_via == "notify"
    assert entry.delivery_note == f"{why}; notify: 1 subscriber"


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ([503, 503, 401], "/continue answered 503 (2 tries), then /continue answered 401"),
        ([503, 500, 401], "/continue answered 503 (1 try), then /continue answered 500 (1 try), "
                          "then /continue answered 401"),
        ([429, 500, 500], "/continue answered 429 (1 try), then /continue answered 500 (2 tries)"),
    ],
    ids=["503-503-401", "503-500-401", "429-500-500"],
)
async def test_a_fallback_note_names_every_try_that_failed(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str,
    script: list[int], why: str,
) -> None:
    entry, requests, [fallback] = await run_against_core(make_settings, caller, redis_url, script)
    assert len(requests) == 3
    assert fallback["notification_id"] == str(entry.id)
    assert entry.delivered_via == "notify"
    assert entry.delivery_note == f"fell back: {why}; notify: 1 subscriber"


async def test_tries_stop_when_the_share_of_the_delivery_timeout_runs_out(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str
) -> None:
    # Tries of /continue may use half the engine's delivery timeout (1 s here), so the
    # notify fallback keeps the other half: the third try is never made.
    tuning = EngineTuning(delivery_timeout_seconds=2.0)
    pacing = Pacing(max_sleep_seconds=0.05, delivery_backoff_seconds=0.05)
    entry, requests, [fallback] = await run_against_core(
        make_settings, caller, redis_url, [], default=HANG, resume_timeout_seconds=0.6,
        tuning=tuning, pacing=pacing)
    assert fallback["notification_id"] == str(entry.id)
    assert entry.delivered_via == "notify"
    note = entry.delivery_note or ""
    assert re.fullmatch(
        r"fell back: /continue did not answer within 0\.6 s \(1 try\)"
        r"(, then /continue did not answer within [0-9.]+ s \(1 try\))?"
        r" \(out of time for more tries\); notify: 1 subscriber",
        note,
    ), note
    assert len(requests) == note.count("did not answer") < 3


async def test_without_a_core_url_resume_falls_back_at_once(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str
) -> None:
    with Subscriber(redis_url, channel_for(caller.platform)) as bot:
        entry = await run_one_job(
            quick_resume(make_settings, redis_url=redis_url), caller, resume_job())
        [fallback] = bot.messages
    assert fallback["notification_id"] == str(entry.id)
    assert entry.delivered_via == "notify"
    assert entry.delivery_note == "fell back: no core URL is configured; notify: 1 subscriber"


async def test_when_resume_and_its_fallback_both_fail_the_outbox_keeps_retrying(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str
) -> None:
    with ContinueServer(default=401) as core:
        settings = quick_resume(make_settings, redis_url=redis_url, core_url=core.url)
        async with circleback.Engine(
            settings, load_entry_points=False, pacing=QUICK
        ) as engine:
            await engine.scheduler.add_job(caller, resume_job())
            with anyio.fail_after(15):
                while True:
                    [entry] = await engine.store.list_outbox() or [None]
                    if entry is not None and entry.attempts >= 2:
                        break
                    await anyio.sleep(0.02)
            assert entry.status is DeliveryStatus.PENDING
            assert entry.last_error == (
                "resume failed (/continue answered 401) and so did the notify fallback: "
                f"no subscriber listened on notifications:{caller.platform}"
            )
            with Subscriber(redis_url, channel_for(caller.platform)) as bot:
                [fallback] = await bot.wait_for(1)
                with anyio.fail_after(15):
                    await engine.wait_until_idle(poll_seconds=0.02)
                [entry] = await engine.store.list_outbox()
        assert len(core.requests) == entry.attempts  # one try of /continue per delivery
    assert fallback["notification_id"] == str(entry.id)
    assert entry.status is DeliveryStatus.SENT
    assert entry.delivered_via == "notify"


async def test_resume_trusts_the_operators_ca_file_like_every_other_client(
    make_settings: Callable[..., Settings], caller: Caller, redis_url: str, tmp_path: Path
) -> None:
    # One client setup for every configured destination: /continue over https with
    # a private CA is reached through the CA file, as poll_url and poll_module are.
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_tls)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with HttpServer(lambda request: json_reply({"ok": True}), tls=server_tls) as core:
        settings = quick_resume(make_settings, redis_url=redis_url,
                                core_url=f"https://localhost:{core.port}",
                                http=HttpTuning(ca_file=str(ca_file)))
        entry = await run_one_job(settings, caller, resume_job())
        requests = list(core.requests)
    assert entry.status is DeliveryStatus.SENT
    assert entry.delivered_via == "resume_conversation"
    assert [request.path for request in requests] == ["/continue"]
