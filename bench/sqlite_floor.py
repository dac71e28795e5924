"""``python -m bench.sqlite_floor``: what SQLite alone spends on a W1 burst.

Runs a W1 burst (``--n`` one-shot timers due at one instant) on circleback as
``python -m bench w1`` does, records every statement its worker sends to
SQLite during the drain (text, parameters as the driver got them,
transaction boundaries), then replays that exact stream through the bare
``sqlite3`` module on a copy of the database taken just before the jobs fell
due. The replay's time is the floor under a burst with this schema and these
statements: what the drain would take if every line of Python around them,
circleback's and SQLAlchemy's, cost nothing.

The replay runs once on the schema as it is and once with the jobs table's
secondary indexes dropped (every index but the one claims read), to show what
keeping them costs. Statements are grouped by their first words and table for
a breakdown. Each replay must leave the database as the run left it (every
job completed, every message sent), or the tool stops: a replay that
diverged would time different work.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sqlite3
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import event

from .circleback_runs import _Run, _timer_spec
from .common import RECORDER

__all__ = ["Op", "end_state", "main", "record_burst", "replay"]

#: A recorded step: (statement, parameters, executemany) or ("COMMIT", None, False).
Op = tuple[str, Any, bool]

#: Indexes a burst's claims do not read; the second replay drops them.
SECONDARY_INDEXES = (
    "ix_circleback_jobs_user",
    "ix_circleback_jobs_workflow",
    "ix_circleback_jobs_lease",
)


def end_state(conn: sqlite3.Connection) -> dict[str, int]:
    """How many jobs and messages are in each status, e.g. ``{"jobs completed": 10}``."""
    state: dict[str, int] = {}
    for name, table in (("jobs", "circleback_jobs"), ("messages", "circleback_outbox")):
        for status, count in conn.execute(f"SELECT status, count(*) FROM {table} GROUP BY status"):
            state[f"{name} {status}"] = count
    return state


async def record_burst(count: int, workdir: Path) -> tuple[list[Op], Path, float]:
    """Drain ``count`` timers on circleback; the statements sent, the snapshot, the drain time.

    The run's database is left in ``workdir`` as ``circleback.db``.
    """
    run = _Run({"n": count}, workdir)
    lead = await run.lead_time(count)
    snapshot = workdir / "snapshot.db"
    ops: list[Op] = []
    recording = False
    due = 0.0

    def timers() -> list[dict[str, Any]]:
        nonlocal due
        due = time.time() + lead
        return [_timer_spec(due) for _ in range(count)]

    def on_execute(_conn: Any, _cursor: Any, statement: str, parameters: Any,
                   _context: Any, executemany: bool) -> None:
        if recording:
            ops.append((statement, parameters, executemany))

    def on_commit(_conn: Any) -> None:
        if recording:
            ops.append(("COMMIT", None, False))

    async with run.running() as engine:
        sync_engine = engine.store.runner.sync_engine
        event.listen(sync_engine, "before_cursor_execute", on_execute)
        event.listen(sync_engine, "commit", on_commit)
        await run.add_all(timers)
        _copy(workdir / "circleback.db", snapshot)
        # From the snapshot on: claims reach ahead of the due time. The idle
        # worker's few passes until then are kept too; they are cheap.
        recording = True
        done = run.plugin.sink.expect(count)
        await done.wait()
        drain = run.plugin.sink.last_at - due
        # The last deliveries are recorded after the sink has them: wait for their rows,
        # which only the database can tell (no event says so).
        finished = {"jobs completed": count, "messages sent": count}
        with contextlib.closing(sqlite3.connect(workdir / "circleback.db")) as watch:
            while end_state(watch) != finished:  # noqa: ASYNC110
                await anyio.sleep(0.01)
        recording = False
    if len(RECORDER.ran_at) != count:
        raise RuntimeError(f"{len(RECORDER.ran_at)} of {count} timers ran")
    return ops, snapshot, drain


def _kind(statement: str) -> str:
    """``UPDATE circleback_jobs`` and the like: a statement's verb and table, claims apart."""
    words = statement.split()
    verb = words[0].upper() if words else "?"
    match = re.search(r"\b(?:FROM|INTO|UPDATE)\s+(\w+)", statement, re.IGNORECASE)
    table = match.group(1) if match else ""
    claim = " … RETURNING (claim)" if verb == "UPDATE" and "RETURNING" in statement else ""
    return f"{verb} {table}{claim}".strip()


def replay(
    ops: Sequence[Op], database: Path, *, drop: Sequence[str] = ()
) -> tuple[float, dict[str, float], dict[str, int]]:
    """Run ``ops`` on ``database`` through bare sqlite3.

    Returns the total seconds, the seconds per kind of statement, and the
    :func:`end_state` it left.
    """
    conn = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for index in drop:
        conn.execute(f"DROP INDEX IF EXISTS {index}")
    by_kind: dict[str, float] = defaultdict(float)
    clock = time.perf_counter
    started = clock()
    for statement, parameters, many in ops:
        before = clock()
        if statement == "COMMIT":
            conn.commit()
            kind = "COMMIT"
        else:
            if many:
                cursor = conn.executemany(statement, parameters)
            else:
                cursor = conn.execute(statement, parameters or ())
            cursor.fetchall()
            kind = _kind(statement)
        by_kind[kind] += clock() - before
    total = clock() - started
    state = end_state(conn)
    conn.close()
    return total, dict(by_kind), state


def _copy(source: Path, target: Path) -> Path:
    """A consistent copy of the SQLite database ``source`` at ``target``, read while in use."""
    with contextlib.closing(sqlite3.connect(source)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return target


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_floor", description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="timers in the burst")
    parser.add_argument("--replays", type=int, default=5, help="replays of each variant")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cb-floor-") as scratch:
        workdir = Path(scratch)
        ops, snapshot, drain = anyio.run(record_burst, args.n, workdir)
        with contextlib.closing(sqlite3.connect(workdir / "circleback.db")) as conn:
            expected = end_state(conn)
        statements = sum(1 for op in ops if op[0] != "COMMIT")
        rows = sum(len(op[1]) if op[2] else 1 for op in ops if op[0] != "COMMIT")
        commits = sum(1 for op in ops if op[0] == "COMMIT")
        print(f"burst of {args.n:,} timers: drained in {drain:.3f} s on circleback "
              f"({args.n / drain:,.0f} jobs/s); {statements:,} statements "
              f"({rows:,} parameter rows) in {commits:,} transactions; it left {expected}")
        for label, drop in (("schema as is", ()), ("secondary indexes dropped", SECONDARY_INDEXES)):
            totals: list[float] = []
            kinds: list[dict[str, float]] = []
            for attempt in range(args.replays):
                copy = _copy(snapshot, workdir / f"replay-{len(drop)}-{attempt}.db")
                total, by_kind, state = replay(ops, copy, drop=drop)
                if state != expected:
                    raise SystemExit(f"the replay left {state}, the run {expected}")
                totals.append(total)
                kinds.append(by_kind)
                copy.unlink()
            median = statistics.median(totals)
            print(f"\nreplay through bare sqlite3, {label}: "
                  f"{min(totals):.3f} / {median:.3f} / {max(totals):.3f} s (min / median / max); "
                  f"{median / args.n * 1e6:.1f} µs a job, {args.n / median:,.0f} jobs/s")
            names = sorted({name for by_kind in kinds for name in by_kind},
                           key=lambda name: -statistics.median(k.get(name, 0.0) for k in kinds))
            for name in names:
                seconds = statistics.median(by_kind.get(name, 0.0) for by_kind in kinds)
                print(f"  {name:<44} {seconds * 1e3:8.1f} ms  "
                      f"{seconds / args.n * 1e6:6.1f} µs a job")


if __name__ == "__main__":
    main()
