"""Worker processes against a database that misbehaves, and SQLite shared by processes."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ..scale_helpers import Worker, add_tally_jobs, duplicates, sync_engine, wait_until_done

pytestmark = pytest.mark.slow


def _wait_for_status(engine: sa.Engine, job_id: str, status: str, timeout: float) -> float:
    """Seconds until the job reached ``status``; raises after ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with engine.connect() as conn:
            found = conn.execute(
                sa.text("SELECT status FROM circleback_jobs WHERE id = :id"),
                {"id": uuid.UUID(job_id)},
            ).scalar()
        if found == status:
            return time.monotonic() - started
        time.sleep(0.02)
    raise TimeoutError(f"job {job_id} did not become {status} within {timeout} s")


@pytest.fixture
def db(postgres_url: str) -> Iterator[sa.Engine]:
    engine = sync_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_job_added_by_another_process_wakes_a_sleeping_worker(
    postgres_url: str, tmp_path: Path, db: sa.Engine, backend: str
) -> None:
    # The worker would sleep a minute between looks: only a wake-up makes it see the job.
    worker = Worker(tmp_path, postgres_url, "sleeper", backend, "--max-sleep", "60")
    worker.start()
    try:
        worker.wait_ready()
        time.sleep(0.5)  # let it settle into its long sleep
        [job_id] = add_tally_jobs(postgres_url, [1])
        _wait_for_status(db, job_id, "completed", timeout=30)
    finally:
        worker.stop()


def test_workers_reconnect_after_their_database_backends_are_terminated(
    postgres_url: str, tmp_path: Path, db: sa.Engine
) -> None:
    app = f"cbtest_{uuid.uuid4().hex[:8]}"
    url = sa.make_url(postgres_url).update_query_dict({"application_name": app})
    worker_url = url.render_as_string(hide_password=False)
    workers = [
        Worker(tmp_path, worker_url, f"w{index}", backend, "--max-sleep", "60", "--lease", "5")
        for index, backend in enumerate(("asyncio", "trio"))
    ]
    add_tally_jobs(postgres_url, [1 + index % 4 for index in range(400)], interval=0.2)
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.wait_ready()
        for _ in range(2):
            time.sleep(0.7)
            with db.begin() as conn:
                terminated = conn.execute(
                    sa.text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE application_name = :app"
                    ),
                    {"app": app},
                ).scalar_one()
            assert terminated > 0
        wait_until_done(db)
        # LISTEN is back: a new job wakes a worker that would otherwise sleep a minute.
        time.sleep(2.0)
        [job_id] = add_tally_jobs(postgres_url, [1])
        _wait_for_status(db, job_id, "completed", timeout=30)
    finally:
        for worker in workers:
            worker.stop()
    with db.connect() as conn:
        statuses = Counter(conn.execute(sa.text("SELECT status FROM circleback_jobs")).scalars())
        sent = conn.execute(sa.text(
            "SELECT count(DISTINCT job_id) FROM circleback_outbox WHERE status = 'sent'"
        )).scalar_one()
    assert statuses == {"completed": 401}
    assert sent == 401
    notified = {n["job_id"] for worker in workers for n in worker.notifications()}
    assert len(notified) == 401
    assert any("reconnecting" in worker.stderr_path.read_text() for worker in workers)


def test_sqlite_file_shared_by_three_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    met_after = [1 + index % 3 for index in range(600)]
    add_tally_jobs(url, met_after, interval=0.1)
    workers = [
        Worker(tmp_path, url, f"w{index}", ("asyncio", "trio")[index % 2], "--lease", "20")
        for index in range(3)
    ]
    for worker in workers:
        worker.start()
    engine = sync_engine(url)
    try:
        for worker in workers:
            worker.wait_ready()
        wait_until_done(engine)
    finally:
        for worker in workers:
            worker.stop()
    checks = [check for worker in workers for check in worker.checks()]
    assert duplicates((job, attempt) for job, attempt, _ in checks) == {}  # 0 double claims
    assert len(checks) == sum(met_after)
    with engine.connect() as conn:
        statuses = Counter(conn.execute(sa.text("SELECT status FROM circleback_jobs")).scalars())
        per_job = Counter(conn.execute(sa.text("SELECT job_id FROM circleback_outbox")).scalars())
    engine.dispose()
    assert statuses == {"completed": 600}
    assert len(per_job) == 600 and set(per_job.values()) == {1}
    for worker in workers:
        assert "database is locked" not in worker.stderr_path.read_text()
        assert "Traceback" not in worker.stderr_path.read_text()
