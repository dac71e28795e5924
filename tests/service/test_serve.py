"""``circleback serve`` as a real process on a free port, spoken to over HTTP with httpx.

Each test starts the command on a store of its own (a SQLite file, then a
PostgreSQL schema) and the test Redis, on the same async backend as the test
itself (so Hypercorn and the engine are exercised on asyncio and on trio), and
stops it with a real signal.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from circleback import Caller, Settings
from circleback.errors import ConfigurationError
from circleback.service.app import BODY_TIMEOUT_SECONDS
from circleback.service.serve import (
    KEEP_ALIVE_TIMEOUT_SECONDS,
    check_bind_address,
    is_loopback_host,
    serve,
)
from circleback.tools import TOOL_NAMES

from .. import services
from ..http_servers import HttpServer, Reply, Request, json_reply
from ..store_rows import job_states
from ..subscriber import Subscriber
from ..tools_support import context_of

pytestmark = [pytest.mark.slow, pytest.mark.redis]


class Served:
    """A running ``circleback serve`` process and an httpx client pointed at it."""

    def __init__(self, process: anyio.abc.Process, client: httpx.AsyncClient, log: Path) -> None:
        self.process = process
        self.client = client
        self.log = log

    async def execute(self, tool: str, arguments: Any, caller: Caller,
                      headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.post(
            "/execute",
            json={"tool": tool, "arguments": arguments, "context": context_of(caller)},
            headers=headers,
        )

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        """Send ``signum`` and wait for the process to exit; returns its exit code."""
        self.process.send_signal(signum)
        return await self.wait()

    async def wait(self) -> int:
        with anyio.fail_after(60):
            return await self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _environment(database_url: str, **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("CIRCLEBACK_")}
    env.update(CIRCLEBACK_DATABASE_URL=database_url, CIRCLEBACK_LOG_LEVEL="INFO",
               PYTHONUNBUFFERED="1", **extra)
    return env


def _reach(host: str) -> str:
    """The address a client on this machine uses to reach a server listening on ``host``."""
    literal = host.strip("[]")
    return {"::": "::1", "0.0.0.0": "127.0.0.1"}.get(literal, literal)


@asynccontextmanager
async def serve_process(
    backend: str, tmp_path: Path, database_url: str, *options: str,
    host: str = "127.0.0.1", **env: str
) -> AsyncIterator[Served]:
    """Start ``circleback serve`` on a free port; wait until /health answers; stop it after."""
    address = _reach(host)
    port = services.free_port(address)
    log = tmp_path / f"serve-{port}.log"
    command = [sys.executable, "-m", "circleback", "--backend", backend, "serve",
               "--host", host, "--port", str(port), *options]
    with log.open("wb") as sink:
        process = await anyio.open_process(command, env=_environment(database_url, **env),
                                           stdout=sink, stderr=subprocess.STDOUT)
    url_host = f"[{address}]" if ":" in address else address
    async with process, httpx.AsyncClient(base_url=f"http://{url_host}:{port}",
                                         timeout=10) as client:
        served = Served(process, client, log)
        try:
            with anyio.fail_after(60):
                while True:
                    if process.returncode is not None:
                        pytest.fail(f"circleback serve exited early:\n{served.output()}")
                    try:
                        if (await client.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    await anyio.sleep(0.1)
            yield served
        finally:
            if process.returncode is None:
                process.kill()
                with anyio.CancelScope(shield=True):
                    await process.wait()


async def test_add_a_poll_job_watch_it_complete_and_its_notification_arrive_on_redis(
    anyio_backend: str, tmp_path: Path, store_url: str, redis_url: str, caller: Caller
) -> None:
    release_slow = threading.Event()

    def app(request: Request) -> Reply:
        if request.path == "/slow":
            release_slow.wait(timeout=30)
            return json_reply({"state": "finished"})
        with statuses_lock:
            status = statuses.pop(0) if statuses else 200
        return json_reply({"state": "ready" if status == 200 else "deploying"}, status)

    statuses = [503, 503]
    statuses_lock = threading.Lock()
    with HttpServer(app) as deployment:
        async with serve_process(anyio_backend, tmp_path, store_url,
                                 CIRCLEBACK_REDIS_URL=redis_url,
                                 CIRCLEBACK_ALLOW_NETWORKS="127.0.0.1/32") as served:
            health = (await served.client.get("/health")).json()
            assert health["ok"] and health["redis"] == {"ok": True}
            manifest = (await served.client.get("/manifest")).json()
            assert [tool["name"] for tool in manifest["tools"]] == list(TOOL_NAMES)

            workflow = str(uuid.uuid4())
            with Subscriber(redis_url, f"notifications:{caller.platform}") as bot:
                added = await served.execute(
                    "scheduler.add_job",
                    {"job_type": "poll_url",
                     "check_config": {"url": f"{deployment.url}/health", "method": "GET",
                                      "expected_status": 200},
                     "on_success_message": "The deployment is up: {result}",
                     "workflow_id": workflow, "interval_seconds": 1, "max_attempts": 10},
                    caller)
                assert added.status_code == 200, added.text
                job_id = added.json()["result"]["job"]["id"]
                [notification] = await bot.wait_for(1, within=60)
            assert notification["type"] == "scheduler.job_completed"
            assert notification["job_id"] == job_id
            assert notification["workflow_id"] == workflow
            assert notification["status"] == "completed"
            assert notification["message"].startswith("The deployment is up: {")
            assert '"status":200' in notification["message"]
            for field in ("user_id", "platform", "platform_channel_id", "platform_thread_id",
                          "conversation_id"):
                assert notification[field] == getattr(caller, field)
            assert deployment.paths() == ["/health"] * 3

            listed = await served.execute("scheduler.list_jobs", {"status_filter": "completed"},
                                          caller)
            [done] = listed.json()["result"]["jobs"]
            assert (done["id"], done["status"], done["attempts"]) == (job_id, "completed", 3)
            assert done["last_result"].startswith("<untrusted-data")

            # Two long jobs: cancel one by id and the other through its workflow.
            later = str(uuid.uuid4())
            ids = []
            for workflow_id in (None, later):
                answer = await served.execute(
                    "scheduler.add_job",
                    {"job_type": "delay", "check_config": {"delay_seconds": 3_600},
                     "on_success_message": "much later", "workflow_id": workflow_id}, caller)
                ids.append(answer.json()["result"]["job"]["id"])
            active = await served.execute("scheduler.list_jobs", {"status_filter": "active"},
                                          caller)
            assert {job["id"] for job in active.json()["result"]["jobs"]} == set(ids)
            cancelled = await served.execute("scheduler.cancel_job", {"job_id": ids[0]}, caller)
            assert cancelled.json()["result"]["job"]["status"] == "cancelled"
            by_workflow = await served.execute("scheduler.cancel_workflow",
                                               {"workflow_id": later}, caller)
            assert [job["id"] for job in by_workflow.json()["result"]["cancelled"]] == [ids[1]]
            active = await served.execute("scheduler.list_jobs", {"status_filter": "active"},
                                          caller)
            assert active.json()["result"]["count"] == 0

            stranger = Caller(user_id=f"{caller.user_id}-x", platform=caller.platform)
            refused = await served.execute("scheduler.cancel_job", {"job_id": job_id}, stranger)
            assert refused.status_code == 404

            # A check in flight when SIGTERM arrives is finished and recorded before the exit.
            slow = await served.execute(
                "scheduler.add_job",
                {"job_type": "poll_url",
                 "check_config": {"url": f"{deployment.url}/slow", "expected_status": 200},
                 "on_success_message": "slow one done"}, caller)
            slow_id = slow.json()["result"]["job"]["id"]
            with anyio.fail_after(30):
                while "/slow" not in deployment.paths():
                    await anyio.sleep(0.05)
            served.process.send_signal(signal.SIGTERM)
            await anyio.sleep(0.5)
            assert served.process.returncode is None  # still waiting for the check
            release_slow.set()
            assert await served.wait() == 0
    output = served.output()
    assert "received SIGTERM" in output
    assert "without authentication, on loopback only" in output
    assert output.rstrip().endswith("stopped")
    final = job_states(store_url)
    assert final[slow_id] == ("completed", 1, None)


async def test_with_a_token_requests_without_it_get_401(
    anyio_backend: str, tmp_path: Path, store_url: str, caller: Caller
) -> None:
    token = uuid.uuid4().hex
    never = threading.Event()

    def hanging(request: Request) -> Reply:
        never.wait(timeout=60)
        return json_reply({})

    with HttpServer(hanging) as stuck:
        async with serve_process(anyio_backend, tmp_path, store_url,
                                 "--shutdown-grace", "0.5", CIRCLEBACK_API_TOKEN=token,
                                 CIRCLEBACK_ALLOW_NETWORKS="127.0.0.1/32") as served:
            client = served.client
            assert (await client.get("/health")).status_code == 200
            for headers in ({}, {"Authorization": "Bearer nope"}):
                response = await client.get("/manifest", headers=headers)
                assert response.status_code == 401
                assert response.json()["error"]["code"] == "unauthorized"
                refused = await served.execute("scheduler.list_jobs", {}, caller, headers=headers)
                assert refused.status_code == 401
            good = {"Authorization": f"Bearer {token}"}
            assert (await client.get("/manifest", headers=good)).json()["name"] == "scheduler"
            added = await served.execute(
                "scheduler.add_job",
                {"job_type": "poll_url", "check_config": {"url": f"{stuck.url}/never"},
                 "on_success_message": "never"}, caller, headers=good)
            assert added.status_code == 200, added.text
            job_id = added.json()["result"]["job"]["id"]

            # A check that outlasts the shutdown grace is given back (its lease released),
            # and a second signal meanwhile is caught, not fatal.
            with anyio.fail_after(30):
                while not stuck.paths():
                    await anyio.sleep(0.05)
            served.process.send_signal(signal.SIGINT)
            await anyio.sleep(0.1)
            assert await served.stop(signal.SIGINT) == 0
            never.set()
    output = served.output()
    assert "requires the API token" in output
    assert "received SIGINT again: already stopping" in output
    assert token not in output
    final = job_states(store_url)
    assert final[job_id] == ("active", 0, None)


@pytest.mark.parametrize("host", ["::1", "[::1]", "::"])
async def test_listens_on_ipv6(
    anyio_backend: str, tmp_path: Path, sqlite_url: str, caller: Caller, host: str
) -> None:
    services.require_ipv6_loopback()
    token = uuid.uuid4().hex
    # "::" is every address, so it needs the token; the loopback forms serve without one.
    env = {"CIRCLEBACK_API_TOKEN": token} if host == "::" else {}
    headers = {"Authorization": f"Bearer {token}"}
    async with serve_process(anyio_backend, tmp_path, sqlite_url, host=host, **env) as served:
        assert str(served.client.base_url).startswith("http://[::1]:")
        health = await served.client.get("/health")
        assert health.status_code == 200 and health.json()["ok"], health.text
        added = await served.execute(
            "scheduler.add_job",
            {"job_type": "delay", "check_config": {"delay_seconds": 3_600},
             "on_success_message": "later"}, caller, headers=headers)
        assert added.status_code == 200, added.text
        listed = await served.execute("scheduler.list_jobs", {}, caller, headers=headers)
        assert [job["id"] for job in listed.json()["result"]["jobs"]] == [
            added.json()["result"]["job"]["id"]]
        assert await served.stop() == 0
    shown = "[::1]" if host == "::1" else host if host.startswith("[") else f"[{host}]"
    assert f"http://{shown}:" in served.output()


async def _trickle(stream: anyio.abc.ByteStream, data: bytes) -> None:
    """Send ``data`` one byte a second, until the other side hangs up."""
    try:
        for byte in data:
            await stream.send(bytes([byte]))
            await anyio.sleep(1)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass


async def _slow_client(port: int, head: bytes, trickled: bytes) -> tuple[float, bytes]:
    """Send ``head`` at once and ``trickled`` one byte a second; return how long the
    server took to hang up, counted from the head, and what it answered."""
    answer = b""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(head)
        started = anyio.current_time()
        async with anyio.create_task_group() as group:
            group.start_soon(_trickle, stream, trickled)
            try:
                while True:
                    answer += await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
            group.cancel_scope.cancel()
        return anyio.current_time() - started, answer


async def test_a_slow_upload_is_cut_off_while_the_service_keeps_serving(
    anyio_backend: str, tmp_path: Path, sqlite_url: str, caller: Caller
) -> None:
    margin = 5.0
    token = uuid.uuid4().hex
    good = {"Authorization": f"Bearer {token}"}
    cut: dict[str, tuple[float, bytes]] = {}
    async with serve_process(anyio_backend, tmp_path, sqlite_url,
                             CIRCLEBACK_API_TOKEN=token) as served:
        port = served.client.base_url.port
        assert port is not None
        request_line = b"POST /execute HTTP/1.1\r\n"
        head = (request_line + f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n".encode())

        async def slow(name: str, head: bytes, trickled: bytes) -> None:
            cut[name] = await _slow_client(port, head, trickled)

        async with anyio.create_task_group() as group:
            # One client trickles its body after a whole head, the other its head.
            group.start_soon(slow, "body", head, b'{"tool": "' + b"x" * 99_990)
            group.start_soon(slow, "head", request_line, b"X-Slow: " + b"x" * 10_000)
            added = await served.execute(
                "scheduler.add_job",
                {"job_type": "delay", "check_config": {"delay_seconds": 1},
                 "on_success_message": "done"}, caller, headers=good)
            assert added.status_code == 200, added.text
            with anyio.fail_after(BODY_TIMEOUT_SECONDS + margin):
                while len(cut) < 2:
                    with anyio.fail_after(5):
                        listed = await served.execute("scheduler.list_jobs", {}, caller,
                                                      headers=good)
                    assert listed.status_code == 200, listed.text
                    await anyio.sleep(0.5)
        [job] = listed.json()["result"]["jobs"]
        assert job["status"] == "completed"  # the engine ran on meanwhile
        assert await served.stop() == 0
    body_seconds, body_answer = cut["body"]
    assert BODY_TIMEOUT_SECONDS - 1 <= body_seconds <= BODY_TIMEOUT_SECONDS + margin
    assert body_answer == b"" or body_answer.startswith(b"HTTP/1.1 408 "), body_answer
    if body_answer:
        assert b'"code":"request_timeout"' in body_answer
    head_seconds, head_answer = cut["head"]
    assert head_seconds <= KEEP_ALIVE_TIMEOUT_SECONDS + margin
    assert head_answer == b"", head_answer
    assert "Traceback" not in served.output()


async def test_serve_in_process_stops_when_told_and_refuses_a_busy_port(
    settings: Settings, caller: Caller
) -> None:
    port = services.free_port()
    stop = anyio.Event()
    async with anyio.create_task_group() as group, httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=10
    ) as client:
        group.start_soon(functools.partial(serve, settings, port=port, handle_signals=False,
                                           stop=stop))
        with anyio.fail_after(30):
            while True:
                try:
                    if (await client.get("/health")).status_code == 200:
                        break
                except httpx.TransportError:
                    await anyio.sleep(0.05)
        with pytest.raises(ConfigurationError, match=f"cannot listen on 127.0.0.1:{port}"):
            await serve(settings, port=port, handle_signals=False)
        listed = await client.post("/execute", json={
            "tool": "scheduler.list_jobs", "arguments": {}, "context": context_of(caller)})
        assert listed.json() == {"ok": True, "result": {"jobs": [], "count": 0, "limit": 200}}
        stop.set()
    assert not services.port_answers(port)


def test_without_a_token_it_refuses_a_non_loopback_address(sqlite_url: str) -> None:
    port = services.free_port()
    result = subprocess.run(
        [sys.executable, "-m", "circleback", "serve", "--host", "0.0.0.0", "--port", str(port)],
        env=_environment(sqlite_url), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "refusing to listen on '0.0.0.0' without an API token" in result.stderr
    assert "CIRCLEBACK_API_TOKEN" in result.stderr
    assert not services.port_answers(port)
    assert not Path(sqlite_url.removeprefix("sqlite:///")).exists()  # nothing was started


def test_which_hosts_count_as_loopback() -> None:
    for host in ("127.0.0.1", "127.0.0.53", "::1", "[::1]", "localhost"):
        assert is_loopback_host(host), host
        check_bind_address(host, None)
    for host in ("0.0.0.0", "::", "[::]", "", " ", "10.0.0.1", "192.168.1.10", "8.8.8.8",
                 "fe80::1", "no-such-host.invalid"):
        assert not is_loopback_host(host), host
        with pytest.raises(ConfigurationError, match="without an API token"):
            check_bind_address(host, None)
        check_bind_address(host, "a-token")  # with a token, any address is the operator's call
