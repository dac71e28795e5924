"""The benchmark harness still runs: every workload with a tiny N, on both systems.

These are smoke tests of ``bench/`` (so it cannot rot), not benchmarks: they
assert what every run must produce — all timers fired and delivered, polls
polled, the peer configured as documented — never how fast. APScheduler runs
only where it is installed (the ``bench`` extra, part of ``test``); under CI a
missing APScheduler fails instead of skipping.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from bench import circleback_runs
from bench.workloads import WORKLOADS

from circleback import EngineTuning

from .. import services

ROOT = Path(__file__).resolve().parents[2]
#: Workload and variant: W5 runs its smallest idle count here.
CASES = ["w1", "w2", "w3", "w4", "w5"]


def _smoke_params(workload: str) -> dict[str, Any]:
    params = dict(WORKLOADS[workload].smoke, timeout=60.0)
    return WORKLOADS[workload].variants(params)[0]


def _require_apscheduler() -> Any:
    try:
        from bench import apscheduler_runs
    except ImportError as exc:
        services.unavailable(f"apscheduler is not installed (pip install -e '.[bench]'): {exc}")
    return apscheduler_runs


def _check_figures(workload: str, params: dict[str, Any], figures: dict[str, Any]) -> None:
    count = int(params["n"])
    if workload in ("w1", "w5"):
        assert figures["done"] == count
        assert figures["drain_s"] > 0
        assert figures["jobs_per_s"] > 0
        assert figures["late_max_ms"] >= figures["late_p99_ms"] >= figures["late_p50_ms"]
        assert figures["stored_jobs"] == count + int(params.get("idle", 0))
    if workload == "w5":
        assert figures["idle_store_s"] > 0
    if workload == "w2":
        assert figures["done"] == count
        assert figures["late_max_ms"] >= figures["late_p99_ms"] >= figures["late_p50_ms"]
    if workload == "w3":
        assert figures["checks_expected"] >= count
        assert figures["checks_done"] > 0
    if workload == "w4":
        assert figures["requests_expected"] >= count
        assert figures["requests_done"] > 0
    assert figures["cpu_s"] > 0
    assert figures["peak_rss_mb"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("workload", CASES)
async def test_workload_runs_on_circleback(workload: str, tmp_path: Path) -> None:
    params = _smoke_params(workload)
    figures = await circleback_runs.run(workload, params, tmp_path)
    _check_figures(workload, params, figures)
    if workload in ("w1", "w5"):
        assert figures["delivered"] == params["n"]


@pytest.mark.slow
@pytest.mark.parametrize("workload", CASES)
async def test_workload_runs_on_apscheduler(
    workload: str, tmp_path: Path, anyio_backend: str
) -> None:
    apscheduler_runs = _require_apscheduler()
    # aiosqlite, under APScheduler's SQLAlchemy store, needs asyncio; under trio the
    # same workload runs on APScheduler's memory store.
    store = "sqlite" if anyio_backend == "asyncio" else "memory"
    params = _smoke_params(workload)
    figures = await apscheduler_runs.run(workload, params, tmp_path, store)
    _check_figures(workload, params, figures)
    # The peer runs with its per-task limit lifted and as many jobs at once as circleback.
    limits = figures["meta"]["max_running_jobs"]
    assert limits and all(limit is None for limit in limits.values())
    assert figures["meta"]["max_concurrent_jobs"] == EngineTuning().max_concurrent_checks


@pytest.mark.slow
def test_command_line_runs_both_systems_and_writes_json(tmp_path: Path) -> None:
    systems = "circleback,apscheduler"
    try:
        import apscheduler  # noqa: F401
    except ImportError:
        services.unavailable("apscheduler is not installed; the CLI test needs both systems")
        systems = "circleback"
    out = tmp_path / "results.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "w1", "--smoke", "--rounds", "1", "--systems", systems,
         "--aps-stores", "memory", "--json", str(out), "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(out.read_text())
    runs = results["runs"]
    assert {(run["system"], run["store"]) for run in runs} >= {("circleback", "sqlite")}
    assert all(run["ok"] for run in runs)
    assert results["meta"]["cores"] and results["meta"]["python"]
    variant = runs[0]["variant"]
    summary = results["summary"][variant]
    low, median, high = summary["circleback sqlite"]["figures"]["jobs_per_s"]
    assert low <= median <= high
    assert "circleback sqlite (min / median / max)" in completed.stdout
    if systems != "circleback":
        assert "ratio ÷ apscheduler memory" in completed.stdout


def _run_tool(module: str, *args: str) -> list[str]:
    """Run ``python -m bench.MODULE ARGS``; the lines it printed, once it ended well."""
    completed = subprocess.run(
        [sys.executable, "-m", f"bench.{module}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout.splitlines()


@pytest.mark.slow
def test_http_cost_measures_each_client() -> None:
    lines = _run_tool("http_cost", "--requests", "20", "--width", "2")
    assert [line.split(":")[0].strip() for line in lines] == ["httpx", "guarded", "engine check"]
    assert all(float(line.split(":")[1].split()[0]) > 0 for line in lines)


def test_sqlite_memory_reads_sqlites_memory_while_polls_run() -> None:
    lines = _run_tool(
        "sqlite_memory", "--n", "20", "--interval", "1", "--duration", "2", "--every", "0.5"
    )
    readings = [line for line in lines if "SQLite" in line]
    assert readings, lines
    assert all(float(line.split("SQLite")[1].split()[0]) > 0 for line in readings)
    assert lines[-1].startswith("checks done ")


def test_the_sqlite_floor_replays_the_bursts_own_statements_to_the_same_end() -> None:
    # The tool stops, and fails, when a replay leaves the database other than the run did.
    lines = _run_tool("sqlite_floor", "--n", "60", "--replays", "1")
    assert "it left {'jobs completed': 60, 'messages sent': 60}" in lines[0]
    replays = [line for line in lines if line.startswith("replay through bare sqlite3")]
    assert len(replays) == 2
    kinds = {line.strip().split("  ")[0] for line in lines if line.startswith("  ")}
    assert {"UPDATE circleback_jobs", "INSERT circleback_outbox", "COMMIT"} <= kinds


def test_the_outbox_backlog_tool_delivers_every_message_it_piled_up() -> None:
    lines = _run_tool("outbox_backlog", "--n", "30", "--rounds", "2")
    rounds = [line for line in lines if line.startswith("round ")]
    assert len(rounds) == 2
    assert all("30 messages delivered via the benchmark's sink in" in line for line in rounds)
    assert lines[-1].startswith("min / median / max: ")


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_outbox_backlog_tool_delivers_through_notify_to_a_real_redis(
    redis_url: str, backend: str
) -> None:
    lines = _run_tool("outbox_backlog", "--n", "30", "--rounds", "1", "--redis-url", redis_url,
                      "--backend", backend)
    assert lines[0].startswith("round 1: 30 messages delivered via notify (notifications:backlog-")
    assert lines[-1].startswith("min / median / max: ")


def test_the_peer_gets_circlebacks_own_limits() -> None:
    from bench import peer_limits

    from circleback import HttpTuning

    http = HttpTuning()
    assert EngineTuning().max_concurrent_checks == peer_limits.MAX_CONCURRENT_JOBS
    assert (
        http.connect_timeout_seconds, http.read_timeout_seconds,
        http.max_connections, http.max_keepalive_connections,
    ) == (
        peer_limits.CONNECT_TIMEOUT_SECONDS, peer_limits.READ_TIMEOUT_SECONDS,
        peer_limits.MAX_CONNECTIONS, peer_limits.MAX_KEEPALIVE_CONNECTIONS,
    )


def test_an_apscheduler_run_loads_nothing_it_does_not_use() -> None:
    """Peak RSS is compared: a peer's process must not carry circleback's modules,
    nor SQLAlchemy when its store is in memory."""
    _require_apscheduler()
    probe = (
        "import sys, json\n"
        "from bench import apscheduler_runs\n"
        "before = {'circleback': 'circleback' in sys.modules,"
        " 'sqlalchemy': 'sqlalchemy' in sys.modules}\n"
        "apscheduler_runs._Run({}, __import__('pathlib').Path('.'), 'memory').data_store()\n"
        "print(json.dumps(before | {'after_memory_store': 'sqlalchemy' in sys.modules}))\n"
    )
    answer = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert json.loads(answer.stdout) == {
        "circleback": False, "sqlalchemy": False, "after_memory_store": False,
    }


async def test_idle_jobs_are_stored_in_chunks_all_of_them(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from bench.common import IDLE_STORE_CHUNK
    from bench.plugin import BenchPlugin

    from circleback import Engine, Settings

    count = 2 * IDLE_STORE_CHUNK + 7  # two whole chunks and a part
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'idle.db'}")
    async with Engine(settings, plugins=[BenchPlugin()], worker=False,
                      load_entry_points=False) as engine:
        await circleback_runs.store_idle_jobs(
            engine, count, datetime.now(UTC) + timedelta(days=1)
        )
        active, _ = await engine.store.count_unfinished()
    assert active == count


def _state(pid: int) -> str:
    """The process's state letter (``Z`` for a zombie), or ``gone``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


def test_the_http_server_ends_when_whoever_started_it_is_killed(tmp_path: Path) -> None:
    # A run killed with SIGKILL (a CI timeout, a killed terminal) cleans nothing up: its
    # HTTP server must not outlive it.
    port_file = tmp_path / "port"
    starter = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys, time\n"
         "server = subprocess.Popen([sys.executable, '-m', 'bench.http_server', sys.argv[1]])\n"
         "print(server.pid, flush=True)\n"
         "time.sleep(120)\n",
         str(port_file)],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert starter.stdout is not None
        server = int(starter.stdout.readline())
        deadline = time.monotonic() + 30
        while not port_file.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert port_file.exists(), "the server did not start"
        assert _state(server) not in ("gone", "Z")
        starter.kill()
        starter.wait()
        deadline = time.monotonic() + 10
        while _state(server) not in ("gone", "Z") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(server) in ("gone", "Z"), "the HTTP server outlived its starter"
    finally:
        starter.kill()
        starter.wait()
        if starter.stdout is not None:
            starter.stdout.close()
        with contextlib.suppress(ProcessLookupError, ValueError, NameError):
            os.kill(server, signal.SIGKILL)
