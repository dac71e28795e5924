"""Real Redis and PostgreSQL servers for the tests.

The suite uses the servers already answering on 127.0.0.1 (Redis on 6379,
PostgreSQL on 5432 with the database ``test``). Where none answers it starts
its own from the installed binaries in a temporary directory. Where it cannot,
the tests that need one are skipped with the reason — except under CI
(``CI=true``), where that is an error.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` (an IPv4 or IPv6 address) that nothing listens on right now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def require_ipv6_loopback() -> None:
    """Skip the test when this machine cannot bind ::1 (fail it under CI)."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
    except OSError as exc:
        unavailable(f"this machine has no IPv6 loopback: binding ::1 failed ({exc})")


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def unavailable(reason: str) -> None:
    """Skip the test for a missing service, or fail it under CI, where nothing may be skipped."""
    if IN_CI:
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_answers(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing answered on port {port} within {timeout} s")


class RedisServer:
    """A redis-server process this test suite started and controls (stop, start)."""

    def __init__(self, port: int | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise FileNotFoundError("redis-server is not installed")
        self.binary = binary
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    """Start a private redis-server on a free port; stop it afterwards."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    return None


@contextmanager
def postgres_cluster() -> Iterator[str]:
    """Start a private PostgreSQL cluster in a temporary directory; yields its admin URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise FileNotFoundError("initdb and pg_ctl are not installed")
    user_args: list[str] = []
    run_as: dict[str, object] = {}
    if os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise FileNotFoundError("running as root and no 'postgres' account exists") from None
        run_as = {"user": account.pw_uid, "group": account.pw_gid}
    directory = tempfile.mkdtemp(prefix="circleback-pg-")
    if run_as:
        os.chown(directory, int(run_as["user"]), int(run_as["group"]))  # type: ignore[call-overload]
    data = os.path.join(directory, "data")
    port = free_port()
    subprocess.run([initdb, "-D", data, "-A", "trust", "-U", "postgres", *user_args],
                   check=True, capture_output=True, **run_as)  # type: ignore[call-overload]
    subprocess.run(
        [pg_ctl, "-D", data, "-l", os.path.join(directory, "log"), "-w", "-o",
         f"-p {port} -k {directory} -c listen_addresses=127.0.0.1", "start"],
        check=True, capture_output=True, **run_as,  # type: ignore[call-overload]
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([pg_ctl, "-D", data, "-m", "fast", "stop"], capture_output=True,
                       **run_as)  # type: ignore[call-overload]
        shutil.rmtree(directory, ignore_errors=True)


def shared_postgres_url() -> str:
    """The PostgreSQL the suite shares (CIRCLEBACK_TEST_POSTGRES_URL or 127.0.0.1:5432/test).

    For tests that cannot take fixtures (hypothesis state machines); skipped or,
    under CI, failed when nothing answers.
    """
    configured = os.environ.get("CIRCLEBACK_TEST_POSTGRES_URL")
    if configured:
        return configured
    if not port_answers(5432):
        unavailable("no PostgreSQL answers on 127.0.0.1:5432")
    return "postgresql://postgres@127.0.0.1:5432/test"


def _admin_engine(url: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))


def postgres_schema(admin_url: str | None = None) -> tuple[str, str]:
    """Create a fresh schema; returns (its name, a URL whose search_path is that schema)."""
    import uuid

    import sqlalchemy as sa

    base = admin_url or shared_postgres_url()
    schema = f"cb_test_{uuid.uuid4().hex[:12]}"
    engine = _admin_engine(base)
    with engine.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    engine.dispose()
    url = sa.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return schema, url.render_as_string(hide_password=False)


def drop_postgres_schema(schema: str, admin_url: str | None = None) -> None:
    """Drop a schema made by :func:`postgres_schema`, with everything in it."""
    engine = _admin_engine(admin_url or shared_postgres_url())
    with engine.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    engine.dispose()
