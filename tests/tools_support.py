"""Helpers for the tool tests: admin contexts, a synchronous tool harness, row counts."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio.from_thread
import attrs

import circleback
from circleback import Caller, Settings
from circleback.tools import SchedulerTools


def context_of(caller: Caller, permission: Any = "admin") -> dict[str, Any]:
    """The orchestrator's context for ``caller`` (with ``permission``, admin by default)."""
    return {
        "user_id": caller.user_id,
        "platform": caller.platform,
        "platform_channel_id": caller.platform_channel_id,
        "platform_thread_id": caller.platform_thread_id,
        "conversation_id": caller.conversation_id,
        "permission": permission,
    }


def sqlite_path(database_url: str) -> Path:
    """The file behind a ``sqlite:///...`` URL."""
    assert database_url.startswith("sqlite:///")
    return Path(database_url.removeprefix("sqlite:///"))


class RowWatch:
    """Reads a SQLite store from its own connection: row counts and whether anything changed.

    ``PRAGMA data_version`` changes whenever another connection commits a change
    to the file, so an unchanged version proves that nothing at all was written.
    """

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None)

    def close(self) -> None:
        self._conn.close()

    def counts(self) -> tuple[int, int]:
        jobs = self._conn.execute("SELECT count(*) FROM circleback_jobs").fetchone()[0]
        outbox = self._conn.execute("SELECT count(*) FROM circleback_outbox").fetchone()[0]
        return int(jobs), int(outbox)

    def version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def snapshot(self) -> tuple[int, int, int]:
        """(jobs, outbox rows, data_version): equal snapshots mean nothing was written."""
        return (*self.counts(), self.version())


@attrs.define
class ToolHarness:
    """A running engine and its tools, driven synchronously through a blocking portal."""

    portal: anyio.from_thread.BlockingPortal
    engine: circleback.Engine
    tools: SchedulerTools
    rows: RowWatch

    def execute(self, tool: Any, arguments: Any, context: Any) -> dict[str, Any]:
        return self.portal.call(self.tools.execute, tool, arguments, context)


@contextlib.contextmanager
def tool_harness(
    backend: str, settings: Settings, **engine_options: Any
) -> Iterator[ToolHarness]:
    """Start an engine without worker loops on ``settings`` under ``backend``; yield a harness."""
    engine_options.setdefault("worker", False)
    engine_options.setdefault("load_entry_points", False)
    with (
        anyio.from_thread.start_blocking_portal(backend) as portal,
        portal.wrap_async_context_manager(
            circleback.Engine(settings, **engine_options)
        ) as engine,
    ):
        rows = RowWatch(sqlite_path(settings.database_url))
        try:
            yield ToolHarness(portal, engine, SchedulerTools.for_engine(engine), rows)
        finally:
            rows.close()
