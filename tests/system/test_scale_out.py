"""Several real worker processes on one database: no job lost, none finished twice.

Workers alternate between asyncio and trio, so both backends share the same
database in every test.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from ..scale_helpers import Worker, add_tally_jobs, duplicates, sync_engine, wait_until_done

pytestmark = pytest.mark.slow
BACKENDS = ("asyncio", "trio")


def _start(tmp_path: Path, url: str, count: int, *extra: str) -> list[Worker]:
    workers = [
        Worker(tmp_path, url, f"w{index}", BACKENDS[index % 2], *extra) for index in range(count)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.wait_ready()
    return workers


def _stop(workers: list[Worker]) -> None:
    for worker in workers:
        worker.stop()


@pytest.fixture
def db(postgres_url: str) -> Iterator[sa.Engine]:
    """A synchronous engine on the test's schema, for setting up and reading back."""
    engine = sync_engine(postgres_url)
    yield engine
    engine.dispose()


def _job_rows(engine: sa.Engine) -> list[sa.Row[tuple[str, str, int]]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text("SELECT id, status, attempts FROM circleback_jobs")))


def _outbox_per_job(engine: sa.Engine) -> Counter[str]:
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT job_id, status FROM circleback_outbox"))
        return Counter(str(row.job_id) for row in rows if row.status == "sent")


def _norm(job_id: str) -> str:
    return job_id.replace("-", "")


def test_four_workers_check_each_attempt_once(
    postgres_url: str, tmp_path: Path, db: sa.Engine
) -> None:
    met_after = [1 + index % 3 for index in range(5000)]
    ids = add_tally_jobs(postgres_url, met_after, interval=0.2)
    # Leases far longer than any stall of this loaded 2-core machine: no takeovers here.
    workers = _start(tmp_path, postgres_url, 4, "--lease", "20")
    engine = db
    try:
        wait_until_done(engine)
    finally:
        _stop(workers)
    checks = [check for worker in workers for check in worker.checks()]
    assert duplicates((_norm(job), attempt) for job, attempt, _ in checks) == {}
    assert len(checks) == sum(met_after)
    assert len({worker for _, _, worker in checks}) == 4  # the work was shared
    rows = _job_rows(engine)
    expected = dict(zip(map(_norm, ids), met_after, strict=True))
    assert len(rows) == 5000
    for row in rows:
        assert row.status == "completed"
        assert row.attempts == expected[_norm(str(row.id))]
    per_job = _outbox_per_job(engine)
    assert len(per_job) == 5000 and set(per_job.values()) == {1}
    notified = Counter(n["job_id"] for worker in workers for n in worker.notifications())
    assert len(notified) == 5000 and set(notified.values()) == {1}


def test_sigkilled_workers_lose_no_job_and_finish_none_twice(
    postgres_url: str, tmp_path: Path, db: sa.Engine
) -> None:
    rng = random.Random(20261126)
    met_after = [rng.randint(1, 4) for _ in range(1000)]
    add_tally_jobs(postgres_url, met_after, interval=0.1)
    workers = _start(tmp_path, postgres_url, 3, "--lease", "3")
    engine = db
    kills = 0
    try:
        while kills < 20:
            time.sleep(rng.uniform(0.05, 0.4))
            victim = rng.choice(workers)
            victim.kill()
            kills += 1
            victim.start()  # not waited for: the next kill may catch it starting up
        for worker in workers:
            worker.wait_ready()
        wait_until_done(engine)
    finally:
        _stop(workers)
    rows = _job_rows(engine)
    assert len(rows) == 1000
    assert {row.status for row in rows} == {"completed"}  # 0 lost
    per_job = _outbox_per_job(engine)
    assert len(per_job) == 1000 and set(per_job.values()) == {1}  # 0 finished twice
    by_job: dict[str, set[str]] = {}
    from_live_runs: Counter[str] = Counter()
    for worker in workers:
        final_run = worker.stdout_path.read_text().count("READY")
        for run, notification in worker.notifications_by_run():
            by_job.setdefault(notification["job_id"], set()).add(notification["notification_id"])
            if run == final_run:  # a run that was never killed
                from_live_runs[notification["job_id"]] += 1
    assert len(by_job) == 1000  # every completion delivered at least once
    assert all(len(ids) == 1 for ids in by_job.values())  # always with the same id
    # Every duplicate is explained by a kill: runs that were never killed delivered
    # each message at most once between them (when the work ends before the last
    # kill, they deliver none).
    assert all(count == 1 for count in from_live_runs.values()), from_live_runs.most_common(3)


def test_paused_worker_cannot_overwrite_the_worker_that_took_over(
    postgres_url: str, tmp_path: Path, db: sa.Engine
) -> None:
    """SIGSTOP a worker mid-check past its lease, let another take over, SIGCONT it: fenced."""
    hold = tmp_path / "hold"
    engine = db
    paused = Worker(tmp_path, postgres_url, "paused", "asyncio", "--lease", "1.0",
                    "--hold", str(hold))
    taker = Worker(tmp_path, postgres_url, "taker", "trio", "--lease", "1.0",
                   "--answer", "not_yet")
    stale_attempts = 0
    try:
        paused.start()
        paused.wait_ready()
        for _ in range(5):
            hold.touch()
            ids = {_norm(job) for job in add_tally_jobs(postgres_url, [1] * 10, interval=60)}
            deadline = time.monotonic() + 90
            while {_norm(job) for job, _, _ in paused.checks()} & ids != ids:
                assert time.monotonic() < deadline, "the paused worker never claimed the jobs"
                time.sleep(0.02)
            paused.signal(signal.SIGSTOP)
            time.sleep(1.5)  # the paused worker's leases expire
            taker.start()
            taker.wait_ready()
            deadline = time.monotonic() + 90
            while {_norm(job) for job, _, _ in taker.checks()} & ids != ids:
                assert time.monotonic() < deadline, "the taker never took the jobs over"
                time.sleep(0.02)
            taker.stop()
            hold.unlink()
            paused.signal(signal.SIGCONT)  # its checks now answer "met" for stale leases
            stale_attempts += len(ids)
            time.sleep(1.0)
            with engine.connect() as conn:
                rows = conn.execute(sa.text(
                    "SELECT id, status, attempts, last_error FROM circleback_jobs"
                )).all()
            ours = [row for row in rows if _norm(str(row.id)) in ids]
            assert len(ours) == 10
            for row in ours:
                # only the taker's "not yet" is recorded; the paused worker's "met" was refused
                assert row.status == "active", row
                assert row.attempts == 1, row
                assert row.last_error.startswith("check 1 by taker"), row
            with engine.begin() as conn:
                conn.execute(sa.text("UPDATE circleback_jobs SET status = 'cancelled'"))
    finally:
        paused.stop()
        taker.stop()
    assert stale_attempts == 50
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM circleback_outbox")).scalar_one() == 0
