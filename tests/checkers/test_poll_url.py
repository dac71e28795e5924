"""``poll_url`` against real HTTP servers on 127.0.0.1, under asyncio and trio.

The test settings allow 127.0.0.1 explicitly (``allow_networks``): without
that, the checker refuses loopback like any other non-public address (see
test_ssrf.py).
"""

from __future__ import annotations

import functools
import gzip
import json
import re
import ssl
import threading
import tracemalloc
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import trustme
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

import circleback
from circleback import Caller, EngineTuning, HttpTuning, Job, JobStatus, Settings, ValidationError
from circleback.checkers.poll_url import PollUrlChecker
from circleback.core.abc import ValidationContext
from circleback.core.registry import PluginRegistry
from circleback.core.rulebook import Rulebook
from circleback.core.state import JITTER_FRACTION
from circleback.engine.plugins import make_plugin_manager
from circleback.errors import ConfigurationError
from circleback.net.httpclient import make_http_client
from circleback.testing import ManualClock, TestingPlugin

from ..http_servers import HttpServer, Reply, Request, blocks, json_reply, sequence
from ..pacing import QUICK, Pacing
from ..services import free_port

LOOPBACK = ("127.0.0.1/32",)


@pytest.fixture
def local_settings(make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    """Test settings that may reach 127.0.0.1."""

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("allow_networks", LOOPBACK)
        return make_settings(**overrides)

    return make


@asynccontextmanager
async def stepping(
    settings: Settings, clock: ManualClock | None = None
) -> AsyncIterator[tuple[circleback.Engine, TestingPlugin]]:
    """An engine without worker loops (the test steps it) whose plugins are started."""
    plugin = TestingPlugin()
    async with circleback.Engine(
        settings, plugins=[plugin], load_entry_points=False, pacing=QUICK, worker=False,
        clock=clock or ManualClock(),
    ) as engine, await engine.start_plugins():
        yield engine, plugin


def poll(url: str, **config: Any) -> dict[str, Any]:
    """A poll_url job spec that reports to the recording notifier."""
    extra = {key: config.pop(key) for key in ("interval_seconds", "max_attempts", "backoff",
                                              "max_interval_seconds") if key in config}
    return {
        "job_type": "poll_url",
        "check_config": {"url": url, **config},
        "on_success_message": "up: {result}",
        "on_complete": "record",
        "interval_seconds": 1,
        **extra,
    }


async def check_once(engine: circleback.Engine, caller: Caller, job: Job) -> Job:
    """Run the due check of ``job`` and return it as stored afterwards."""
    assert await engine.run_due_jobs() == 1
    return await engine.scheduler.get_job(caller, job.id)


async def wait_for(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    with anyio.fail_after(seconds):
        while not condition():
            await anyio.sleep(0.01)


# -- the condition ------------------------------------------------------------------------


async def test_503_three_times_then_200_completes_on_the_fourth_check(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    app = sequence(*[json_reply({"status": "deploying"}, 503)] * 3, json_reply({"status": "up"}))
    clock = ManualClock()
    with HttpServer(app) as server:
        async with stepping(local_settings(), clock) as (engine, plugin):
            job = await engine.scheduler.add_job(caller, poll(f"{server.url}/health"))
            for attempt in (1, 2, 3):
                current = await check_once(engine, caller, job)
                assert current.status is JobStatus.ACTIVE
                assert current.attempts == attempt
                assert current.last_error == f"HTTP 503 from {server.url}/health, waiting for 200"
                assert current.last_result["status"] == 503
                assert current.last_result["body"] == {"status": "deploying"}
                clock.advance(1)
            done = await check_once(engine, caller, job)
            assert await engine.deliver_due() == 1
    assert done.status is JobStatus.COMPLETED
    assert done.attempts == 4
    assert server.paths() == ["/health"] * 4
    [note] = plugin.notifier.delivered
    assert note.message.startswith('up: {"url":"' + server.url + '/health","status":200,')
    assert '"body":{"status":"up"}' in note.message
    assert isinstance(done.last_result["elapsed_ms"], int)


async def test_json_health_body_flips_from_starting_to_ok(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    app = sequence(json_reply({"status": "starting"}), json_reply({"status": "starting"}),
                   json_reply({"status": "ok", "version": "1.2"}))
    with HttpServer(app) as server:
        plugin = TestingPlugin()
        async with circleback.Engine(
            local_settings(), plugins=[plugin], load_entry_points=False, pacing=QUICK
        ) as engine:
            job = await engine.scheduler.add_job(
                caller,
                poll(f"{server.url}/healthz", response_field="status", response_values=["ok"],
                     interval_seconds=0.02),
            )
            with anyio.fail_after(20):
                await engine.wait_until_idle(poll_seconds=0.02)
            final = await engine.scheduler.get_job(caller, job.id)
    assert final.status is JobStatus.COMPLETED
    assert final.attempts == 3
    assert len(server.requests) == 3
    [note] = plugin.notifier.delivered
    assert '"body":{"status":"ok","version":"1.2"}' in note.message


async def test_text_and_numbers_no_database_keeps_are_recorded_replaced(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    """A body may hold a NUL, a lone surrogate or NaN; the check is recorded all the same.

    PostgreSQL keeps none of them, and UTF-8 has no lone surrogate, so what is
    stored has U+FFFD for such characters and null for such numbers, on every store.
    """
    waiting = b'{"state": "wait\\ud800", "log": "a\\u0000b", "ratio": NaN, "k\\u0000": 1}'
    done = b'{"state": "done", "log": "\\u0000", "ratio": Infinity}'
    app = sequence(Reply(body=waiting, headers={"Content-Type": "application/json"}),
                   Reply(body=done, headers={"Content-Type": "application/json"}))
    clock = ManualClock()
    with HttpServer(app) as server:
        async with stepping(local_settings(), clock) as (engine, plugin):
            job = await engine.scheduler.add_job(
                caller, poll(server.url, response_field="state", response_values=["done"])
            )
            first = await check_once(engine, caller, job)
            clock.advance(1)
            final = await check_once(engine, caller, job)
            assert await engine.deliver_due() == 1
            [entry] = await engine.store.list_outbox()
    assert first.status is JobStatus.ACTIVE
    assert first.last_result["body"] == {"state": "wait\ufffd", "log": "a\ufffdb", "ratio": None,
                                         "k\ufffd": 1}
    assert first.last_error == 'state is "wait\ufffd", waiting for one of ["done"]'
    assert final.status is JobStatus.COMPLETED
    assert final.last_result["body"] == {"state": "done", "log": "\ufffd", "ratio": None}
    assert entry.result == final.last_result
    [note] = plugin.notifier.delivered
    assert '"body":{"state":"done",' in note.message


async def test_body_field_conditions_report_what_they_saw(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    app = sequence(
        json_reply({"checks": []}),
        Reply(body=b"<html>starting</html>", headers={"Content-Type": "text/html"}),
        json_reply({"checks": [{"state": "pending"}]}),
        json_reply({"checks": [{"state": True}]}),
        json_reply({"checks": [{"state": "done"}]}),
    )
    clock = ManualClock()
    with HttpServer(app) as server:
        async with stepping(local_settings(), clock) as (engine, _):
            job = await engine.scheduler.add_job(
                caller, poll(server.url, response_field="checks.0.state",
                             response_values=["done", "skipped"]),
            )
            errors = []
            for _ in range(4):
                current = await check_once(engine, caller, job)
                errors.append(current.last_error)
                clock.advance(1)
            final = await check_once(engine, caller, job)
    assert errors == [
        "response_field checks.0.state is missing: checks has 0 items, so no item 0",
        "the body is not JSON, so response_field checks.0.state cannot be read",
        'checks.0.state is "pending", waiting for one of ["done", "skipped"]',
        'checks.0.state is true, waiting for one of ["done", "skipped"]',
    ]
    assert final.status is JobStatus.COMPLETED


async def test_method_headers_and_json_body_are_sent(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    with HttpServer(sequence(json_reply({"queued": True}, 202))) as server:
        async with stepping(local_settings()) as (engine, _):
            job = await engine.scheduler.add_job(caller, poll(
                f"{server.url}/builds?id=7", method="post", expected_status=[201, 202],
                headers={"Authorization": "Bearer abc", "X-Trace": "t1"},
                json={"ref": "main", "n": [1, 2]},
            ))
            assert job.check_config["method"] == "POST"
            final = await check_once(engine, caller, job)
    assert final.status is JobStatus.COMPLETED
    [request] = server.requests
    assert request.method == "POST"
    assert request.path == "/builds"
    assert request.query == {"id": "7"}
    assert request.headers["authorization"] == "Bearer abc"
    assert request.headers["x-trace"] == "t1"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["accept-encoding"] == "identity"
    assert request.json() == {"ref": "main", "n": [1, 2]}


async def test_head_request_and_text_body_excerpt(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    page = ("status: fine\n" * 500).encode()
    with HttpServer(sequence(Reply(body=page, headers={"Content-Type": "text/plain"}))) as server:
        async with stepping(local_settings()) as (engine, _):
            head = await engine.scheduler.add_job(caller, poll(server.url, method="HEAD"))
            get = await engine.scheduler.add_job(caller, poll(server.url))
            assert await engine.run_due_jobs() == 2
            head_done = await engine.scheduler.get_job(caller, head.id)
            get_done = await engine.scheduler.get_job(caller, get.id)
    assert sorted(request.method for request in server.requests) == ["GET", "HEAD"]
    assert head_done.status is JobStatus.COMPLETED
    assert head_done.last_result["body"] == ""
    body = get_done.last_result["body"]
    assert body.startswith("status: fine\nstatus: fine\n")
    assert body.endswith("…")
    assert len(body) == 1001


# -- not yet: timeouts and refused connections ------------------------------------------


async def test_refused_connection_is_not_yet_with_the_reason(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    url = f"http://127.0.0.1:{free_port()}/health"
    async with stepping(local_settings()) as (engine, _):
        job = await engine.scheduler.add_job(caller, poll(url))
        current = await check_once(engine, caller, job)
    assert current.status is JobStatus.ACTIVE
    assert current.attempts == 1
    assert current.last_error is not None
    assert current.last_error.startswith(f"request to {url} failed:")


async def test_read_timeout_is_not_yet(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    settings = local_settings(http=HttpTuning(read_timeout_seconds=0.3))
    with HttpServer(sequence(Reply(hang=True))) as server:
        async with stepping(settings) as (engine, _):
            job = await engine.scheduler.add_job(caller, poll(f"{server.url}/slow"))
            current = await check_once(engine, caller, job)
    assert current.status is JobStatus.ACTIVE
    assert current.last_error == f"timed out waiting for an answer from {server.url}/slow"


async def test_total_timeout_cuts_a_body_that_trickles(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    release = threading.Event()

    def trickle() -> Any:
        while not release.wait(0.05):
            yield b"."

    settings = local_settings(http=HttpTuning(total_timeout_seconds=0.5))
    with HttpServer(sequence(Reply(stream=trickle))) as server:
        async with stepping(settings) as (engine, _):
            job = await engine.scheduler.add_job(caller, poll(server.url))
            current = await check_once(engine, caller, job)
        release.set()
    assert current.status is JobStatus.ACTIVE
    assert current.last_error == f"no complete answer from {server.url} within 0.5 s"


async def test_a_hanging_server_is_cut_off_while_other_jobs_keep_being_checked(
    make_settings: Callable[..., Settings], caller: Caller
) -> None:
    tuning = EngineTuning(check_timeout_seconds=3.0, lease_seconds=10.0,
                          shutdown_grace_seconds=0.2)
    settings = make_settings(allow_networks=LOOPBACK, tuning=tuning)
    with HttpServer(sequence(Reply(hang=True))) as hanging, \
            HttpServer(sequence(json_reply({"state": "busy"}))) as fast:
        async with circleback.Engine(
            settings, plugins=[TestingPlugin()], load_entry_points=False,
            pacing=Pacing(max_sleep_seconds=0.05),
        ) as engine:
            stuck = await engine.scheduler.add_job(
                caller, poll(f"{hanging.url}/stuck", interval_seconds=0.02, max_attempts=100)
            )
            await wait_for(lambda: len(hanging.requests) == 1)
            # The hanging check is in flight; the fast job keeps being checked meanwhile.
            busy = await engine.scheduler.add_job(
                caller, poll(f"{fast.url}/busy", expected_status=204, interval_seconds=0.02,
                             max_attempts=10_000)
            )
            await wait_for(lambda: len(fast.requests) >= 5)
            still_stuck = await engine.scheduler.get_job(caller, stuck.id)
            assert still_stuck.attempts == 0  # its first check has not returned yet
            busy_now = await engine.scheduler.get_job(caller, busy.id)
            assert busy_now.attempts >= 4

            async def stuck_attempts() -> int:
                return (await engine.scheduler.get_job(caller, stuck.id)).attempts

            with anyio.fail_after(20):
                while await stuck_attempts() < 1:
                    await anyio.sleep(0.02)
            cut = await engine.scheduler.get_job(caller, stuck.id)
    assert cut.status is JobStatus.ACTIVE
    assert cut.last_error == "the check took longer than 3 s"
    assert len(fast.requests) > 5


# -- connections -------------------------------------------------------------------------


async def test_connections_are_pooled_between_checks(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    clock = ManualClock()
    with HttpServer(sequence(Reply(status=500))) as server:
        async with stepping(local_settings(), clock) as (engine, _):
            job = await engine.scheduler.add_job(caller, poll(server.url))
            for _ in range(3):
                await check_once(engine, caller, job)
                clock.advance(1)
    assert len(server.requests) == 3
    assert server.connections == 1


async def test_cookies_set_by_one_server_never_reach_a_request(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    app = sequence(Reply(status=500, headers={"Set-Cookie": "session=secret; Path=/"}))
    clock = ManualClock()
    with HttpServer(app) as server:
        async with stepping(local_settings(), clock) as (engine, _):
            first = await engine.scheduler.add_job(caller, poll(server.url))
            await check_once(engine, caller, first)
            clock.advance(1)
            await engine.scheduler.add_job(caller, poll(server.url))
            assert await engine.run_due_jobs() == 2
    assert len(server.requests) == 3
    assert all("cookie" not in request.headers for request in server.requests)


async def test_redirects_are_followed_at_most_five_times(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    def app(request: Request) -> Reply:
        left = int(request.path.rsplit("/", 1)[-1])
        if left == 0:
            return json_reply({"arrived": True})
        return Reply(status=302 if left % 2 else 307,
                     headers={"Location": f"/hop/{left - 1}"})

    with HttpServer(app) as server:
        async with stepping(local_settings()) as (engine, _):
            five = await engine.scheduler.add_job(caller, poll(f"{server.url}/hop/5"))
            six = await engine.scheduler.add_job(caller, poll(f"{server.url}/hop/6"))
            assert await engine.run_due_jobs() == 2
            five_done = await engine.scheduler.get_job(caller, five.id)
            six_done = await engine.scheduler.get_job(caller, six.id)
    assert five_done.status is JobStatus.COMPLETED
    assert five_done.last_result["redirects"] == 5
    assert five_done.last_result["url"] == f"{server.url}/hop/0"
    assert five_done.last_result["body"] == {"arrived": True}
    assert six_done.status is JobStatus.ACTIVE
    assert six_done.last_error == f"more than 5 redirects, the last to {server.url}/hop/0"
    assert "/hop/0" in server.paths()  # reached once, by the five-hop job
    assert server.paths().count("/hop/0") == 1


async def test_redirects_change_the_method_and_drop_credentials_as_browsers_do(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    with HttpServer(sequence(json_reply({"arrived": True}))) as other, \
            HttpServer(lambda request: Reply(status=303, headers={"Location": f"{other.url}/x"})
                       if request.path == "/see-other" else
                       Reply(status=307, headers={"Location": "/kept"})
                       if request.path == "/temporary" else json_reply({"kept": True})) as origin:
        secret = {"headers": {"Authorization": "Bearer secret"}, "method": "POST",
                  "json": {"deploy": 7}}
        async with stepping(local_settings()) as (engine, _):
            moved = await engine.scheduler.add_job(caller, poll(f"{origin.url}/see-other",
                                                                **secret))
            kept = await engine.scheduler.add_job(caller, poll(f"{origin.url}/temporary",
                                                               **secret))
            assert await engine.run_due_jobs() == 2
            moved = await engine.scheduler.get_job(caller, moved.id)
            kept = await engine.scheduler.get_job(caller, kept.id)
    assert moved.status is kept.status is JobStatus.COMPLETED
    # 303 to another origin: a GET without the body, its type, or the credentials.
    [followed] = other.requests
    assert (followed.method, followed.path, followed.body) == ("GET", "/x", b"")
    assert "authorization" not in followed.headers
    assert "content-type" not in followed.headers
    # 307 on the same origin: the same method, body and credentials.
    [again] = [request for request in origin.requests if request.path == "/kept"]
    assert (again.method, again.json()) == ("POST", {"deploy": 7})
    assert again.headers["authorization"] == "Bearer secret"
    assert again.headers["content-type"] == "application/json"


async def test_an_expected_redirect_status_is_not_followed(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    app = sequence(Reply(status=301, headers={"Location": "http://169.254.169.254/"}))
    with HttpServer(app) as server:
        async with stepping(local_settings()) as (engine, _):
            job = await engine.scheduler.add_job(caller, poll(server.url, expected_status=301))
            final = await check_once(engine, caller, job)
    assert final.status is JobStatus.COMPLETED
    assert final.last_result["status"] == 301


async def test_an_expected_redirect_status_completes_whatever_its_location_says(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    app = sequence(Reply(status=302, headers={"Location": "http://example.com:port/"}))
    with HttpServer(app) as server:
        async with stepping(local_settings()) as (engine, _):
            expected = await engine.scheduler.add_job(caller, poll(server.url,
                                                                   expected_status=302))
            followed = await engine.scheduler.add_job(caller, poll(server.url))
            assert await engine.run_due_jobs() == 2
            expected = await engine.scheduler.get_job(caller, expected.id)
            followed = await engine.scheduler.get_job(caller, followed.id)
    assert expected.status is JobStatus.COMPLETED
    assert expected.last_result["status"] == 302
    assert followed.status is JobStatus.ACTIVE
    assert followed.last_error is not None
    assert "Location is not a valid URL" in followed.last_error


async def test_https_verifies_the_certificate_of_the_name_while_dialling_the_checked_address(
    local_settings: Callable[..., Settings], caller: Caller, tmp_path: Path
) -> None:
    authority = trustme.CA()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(server_tls)
    seen_names: list[str | None] = []
    server_tls.sni_callback = lambda sock, name, context: seen_names.append(name)
    ca_file = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    trusting = local_settings(http=HttpTuning(ca_file=str(ca_file)))
    with HttpServer(sequence(json_reply({"secure": True})), tls=server_tls) as server:
        by_name = f"https://localhost:{server.port}/"
        by_address = f"https://127.0.0.1:{server.port}/"
        async with stepping(trusting) as (engine, _):
            good = await engine.scheduler.add_job(caller, poll(by_name))
            wrong_name = await engine.scheduler.add_job(caller, poll(by_address))
            assert await engine.run_due_jobs() == 2
            good = await engine.scheduler.get_job(caller, good.id)
            wrong_name = await engine.scheduler.get_job(caller, wrong_name.id)
        async with stepping(local_settings()) as (engine, _):
            untrusted = await engine.scheduler.add_job(caller, poll(by_name))
            untrusted = await check_once(engine, caller, untrusted)
    # The name was checked (it resolves to the allowed 127.0.0.1), the checked address
    # was dialled, and TLS still verified the certificate against the name, sent as SNI.
    assert good.status is JobStatus.COMPLETED
    assert good.last_result["body"] == {"secure": True}
    assert "localhost" in seen_names
    assert len(server.requests) == 1
    for refused in (wrong_name, untrusted):
        assert refused.status is JobStatus.ACTIVE
        assert refused.last_error is not None
        assert "CERTIFICATE_VERIFY_FAILED" in refused.last_error


def test_a_missing_ca_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="HTTP CA file"):
        make_http_client(HttpTuning(ca_file=str(tmp_path / "absent.pem")))


def test_http_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({
        "CIRCLEBACK_HTTP_TIMEOUT": "7.5",
        "CIRCLEBACK_HTTP_MAX_RESPONSE_BYTES": "65536",
        "CIRCLEBACK_HTTP_CA_FILE": "/etc/ssl/internal.pem",
    })
    assert settings.http == HttpTuning(
        total_timeout_seconds=7.5, max_response_bytes=65536, ca_file="/etc/ssl/internal.pem"
    )
    with pytest.raises(ConfigurationError, match="CIRCLEBACK_HTTP_MAX_RESPONSE_BYTES"):
        Settings.from_env({"CIRCLEBACK_HTTP_MAX_RESPONSE_BYTES": "lots"})
    assert Settings.from_env({}).http == HttpTuning()


# -- bodies are cut at the cap ---------------------------------------------------------------

HUNDRED_MB = 100 * 1024 * 1024
CAP = 256 * 1024


@functools.cache
def _gzip_bomb() -> bytes:
    """About 100 kB of gzip that inflate to 100 MB of zeros (built without holding 100 MB)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = bytes(1024 * 1024)
    return b"".join([*(packer.compress(zeros) for _ in range(100)), packer.flush()])


@pytest.mark.parametrize("kind", ["content-length", "chunked-endless", "gzip-bomb"])
async def test_huge_bodies_are_cut_at_the_cap_and_memory_stays_flat(
    local_settings: Callable[..., Settings], caller: Caller, kind: str
) -> None:
    if kind == "content-length":
        reply = Reply(stream=blocks(HUNDRED_MB), length=HUNDRED_MB)
    elif kind == "chunked-endless":
        reply = Reply(stream=blocks(None))
    else:
        bomb = _gzip_bomb()  # about 100 kB that inflate to 100 MB
        reply = Reply(body=bomb, headers={"Content-Encoding": "gzip"})
    settings = local_settings(http=HttpTuning(max_response_bytes=CAP))
    with HttpServer(sequence(reply)) as server:
        async with stepping(settings) as (engine, _):
            job = await engine.scheduler.add_job(caller, poll(f"{server.url}/big"))
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                current = await check_once(engine, caller, job)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
    assert current.status is JobStatus.COMPLETED
    assert current.last_result["truncated"] is True
    assert len(current.last_result["body"]) == 1001  # a text excerpt, not the body
    assert "\x00" not in current.last_result["body"]  # (the bomb's zeros: no store keeps NUL)
    # 100 MB (or an endless stream) was offered; the check held at most a few MB.
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak} bytes"
    if kind != "gzip-bomb":
        assert CAP <= server.bytes_sent < HUNDRED_MB // 2


async def test_a_json_body_cut_at_the_cap_cannot_satisfy_a_field(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    big = {"status": "ok", "padding": "x" * 5000}
    settings = local_settings(http=HttpTuning(max_response_bytes=1000))
    with HttpServer(sequence(json_reply(big))) as server:
        async with stepping(settings) as (engine, _):
            job = await engine.scheduler.add_job(
                caller, poll(server.url, response_field="status", response_values="ok")
            )
            current = await check_once(engine, caller, job)
    assert current.status is JobStatus.ACTIVE
    assert current.last_error == (
        "the body was cut at 1000 bytes, so response_field status cannot be read"
    )


@pytest.mark.parametrize("coding", ["gzip", "gzip, gzip"])
async def test_gzip_bodies_are_decoded(
    local_settings: Callable[..., Settings], caller: Caller, coding: str
) -> None:
    packed = json.dumps({"status": "ok"}).encode()
    for _ in coding.split(","):
        packed = gzip.compress(packed)
    reply = Reply(body=packed, headers={"Content-Encoding": coding,
                                        "Content-Type": "application/json"})
    with HttpServer(sequence(reply)) as server:
        async with stepping(local_settings()) as (engine, _):
            job = await engine.scheduler.add_job(
                caller, poll(server.url, response_field="status", response_values=["ok"])
            )
            final = await check_once(engine, caller, job)
    assert final.status is JobStatus.COMPLETED
    assert final.last_result["body"] == {"status": "ok"}


# -- backoff -----------------------------------------------------------------------------------


async def test_backoff_grows_the_interval_with_jitter_up_to_the_cap(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    clock = ManualClock()
    nominal = [1, 2, 4, 8, 10, 10, 10, 10]
    gaps: list[list[float]] = []
    with HttpServer(sequence(Reply(status=503))) as server:
        async with stepping(local_settings(), clock) as (engine, _):
            for _ in range(2):  # two jobs with the same settings, one after the other
                job = await engine.scheduler.add_job(
                    caller, poll(server.url, interval_seconds=1, backoff=2,
                                 max_interval_seconds=10, max_attempts=50)
                )
                job_gaps = []
                for _ in nominal:
                    clock.set(job.next_run_at)
                    assert await engine.run_due_jobs() == 1
                    checked = await engine.scheduler.get_job(caller, job.id)
                    job_gaps.append((checked.next_run_at - job.next_run_at).total_seconds())
                    job = checked
                gaps.append(job_gaps)
                await engine.scheduler.cancel_job(caller, job.id)
    assert len(server.requests) == 2 * len(nominal)
    for job_gaps in gaps:
        for gap, base in zip(job_gaps, nominal, strict=True):
            low, high = base * (1 - JITTER_FRACTION), min(10, base * (1 + JITTER_FRACTION))
            assert low - 1e-6 <= gap <= high + 1e-6, (gap, base)
        assert job_gaps[:4] == sorted(job_gaps[:4])  # grows ...
        assert max(job_gaps) <= 10  # ... never past the cap ...
        assert any(abs(gap - base) > 1e-3 for gap, base in zip(job_gaps, nominal, strict=True))
    assert gaps[0] != gaps[1]  # ... with each job's own jitter, so jobs drift apart


async def test_without_backoff_the_interval_stays_fixed(
    local_settings: Callable[..., Settings], caller: Caller
) -> None:
    clock = ManualClock()
    with HttpServer(sequence(Reply(status=503))) as server:
        async with stepping(local_settings(), clock) as (engine, _):
            job = await engine.scheduler.add_job(caller, poll(server.url, interval_seconds=3))
            for _ in range(4):
                clock.set(job.next_run_at)
                assert await engine.run_due_jobs() == 1
                checked = await engine.scheduler.get_job(caller, job.id)
                assert (checked.next_run_at - job.next_run_at).total_seconds() == 3
                job = checked


# -- validation --------------------------------------------------------------------------------


BAD_CONFIGS: list[tuple[dict[str, Any], str, str]] = [
    ({}, "check_config.url", "is required"),
    ({"url": 42}, "check_config.url", "must be a string"),
    ({"url": "ftp://example.com/"}, "check_config.url", "must use http or https"),
    ({"url": "file:///etc/passwd"}, "check_config.url", "must use http or https"),
    ({"url": "example.com/health"}, "check_config.url", "must use http or https"),
    ({"url": "http:///nohost"}, "check_config.url", "must name a host"),
    ({"url": "http://exa mple.com/"}, "check_config.url", "must not contain spaces"),
    ({"url": "http://127.0.0.1/"}, "check_config.url",
     "may not be requested: 127.0.0.1 is a loopback address"),
    ({"url": "http://example.com", "method": "TRACE"}, "check_config.method", "must be one of"),
    ({"url": "http://example.com", "expected_status": 42}, "check_config.expected_status",
     "must be at least 100"),
    ({"url": "http://example.com", "expected_status": [200, "ok"]},
     "check_config.expected_status.1", "must be an integer"),
    ({"url": "http://example.com", "expected_status": []}, "check_config.expected_status",
     "at least one"),
    ({"url": "http://example.com", "headers": {"Host": "internal"}}, "check_config.headers.Host",
     "is set by circleback"),
    ({"url": "http://example.com", "headers": {"X-A": "1\r\nX-B: 2"}}, "check_config.headers.X-A",
     "line breaks"),
    ({"url": "http://example.com", "headers": ["X-A"]}, "check_config.headers",
     "must be an object"),
    ({"url": "http://example.com", "json": {"a": 1}}, "check_config.json",
     "GET request has no body"),
    ({"url": "http://example.com", "response_field": "status"}, "check_config.response_values",
     "is required"),
    ({"url": "http://example.com", "response_values": ["ok"]}, "check_config.response_field",
     "is required"),
    ({"url": "http://example.com", "response_field": "a..b", "response_values": "ok"},
     "check_config.response_field", "empty parts"),
    ({"url": "http://example.com", "response_field": "s", "response_values": [{"x": 1}]},
     "check_config.response_values.0", "must be a string, a number"),
    ({"url": "http://example.com", "timeout": 5}, "check_config.timeout", "not a known setting"),
]


@pytest.mark.parametrize(("config", "field", "reason"), BAD_CONFIGS)
async def test_bad_config_names_the_field_and_writes_nothing(
    local_settings: Callable[..., Settings],
    caller: Caller,
    config: dict[str, Any],
    field: str,
    reason: str,
) -> None:
    settings = local_settings(allow_networks=())
    async with circleback.Engine(
        settings, load_entry_points=False, pacing=QUICK, worker=False
    ) as engine:
        spec = {"job_type": "poll_url", "check_config": config, "on_success_message": "ok"}
        with pytest.raises(ValidationError) as caught:
            await engine.scheduler.add_job(caller, spec)
        assert await engine.scheduler.list_jobs(caller) == []
    assert caught.value.field == field
    assert reason in caught.value.reason


def test_valid_config_is_normalised(settings: Settings) -> None:
    registry = PluginRegistry.from_manager(make_plugin_manager(load_entry_points=False))
    spec = Rulebook(registry, settings).job_spec(
        {"job_type": "poll_url", "on_success_message": "ok",
         "check_config": {"url": "https://Example.com/h", "method": "patch",
                          "expected_status": [204, 204, 200], "json": None,
                          "response_field": "a.0", "response_values": 1}})
    assert spec.check_config == {
        "url": "https://example.com/h", "method": "PATCH", "expected_status": [204, 200],
        "json": None, "response_field": "a.0", "response_values": [1],
    }


def test_config_schema_lists_exactly_the_accepted_settings() -> None:
    schema = PollUrlChecker().config_schema(ValidationContext(settings=Settings()))
    assert schema["required"] == ["url"]
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {
        "url", "method", "expected_status", "headers", "json", "response_field",
        "response_values",
    }
    method = schema["properties"]["method"]
    assert method["examples"] == ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    # The schema takes what validation takes (which stores it upper-cased): any ASCII case.
    for spelling in ["GET", "get", "Head", "pOsT", "put", "PATCH", "delete"]:
        assert re.fullmatch(method["pattern"], spelling), spelling
    for other in ["", "GETS", "OPTIONS", "CONNECT", "po\u017ft", " GET"]:
        assert not re.fullmatch(method["pattern"], other), other
    json.dumps(schema)  # plain JSON, ready for a tool manifest
    described = PollUrlChecker().describe(
        {"url": "https://x.example/h", "method": "GET", "expected_status": [200, 204]}
    )
    assert described == "GET https://x.example/h (waiting for HTTP 200 or 204)"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=6,
)
_poll_url_keys = st.sampled_from(
    ["url", "method", "expected_status", "headers", "json", "response_field",
     "response_values", "other"]
)
_urls = st.sampled_from(
    ["http://example.com/", "https://a.example/h?x=1", "http://10.0.0.1/", "http://[::1]/",
     "http://2130706433/", "gopher://x/", "http://", "not a url", "http://0x7f.1/"]
) | st.text(max_size=30)


_REGISTRY = PluginRegistry.from_manager(make_plugin_manager(load_entry_points=False))
_RULES = Rulebook(_REGISTRY, Settings())


@hypothesis_settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(config=st.dictionaries(_poll_url_keys, _json | _urls, max_size=6))
def test_any_config_is_either_valid_or_refused_with_its_field(config: dict[str, Any]) -> None:
    spec = {"job_type": "poll_url", "check_config": config, "on_success_message": "ok"}
    try:
        valid = _RULES.job_spec(spec)
    except ValidationError as exc:
        assert exc.field.startswith("check_config")
        assert exc.reason
        return
    assert valid.check_config["url"].startswith(("http://", "https://"))
    assert valid.check_config["method"] in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    assert all(100 <= code <= 599 for code in valid.check_config["expected_status"])

