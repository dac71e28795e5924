"""Helpers for the tool tests: admin contexts, a synchronous tool harness."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import anyio.from_thread
import attrs

import circleback
from circleback import Caller, Settings
from circleback.tools import SchedulerTools

from .store_rows import RowWatch


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
        rows = RowWatch(settings.database_url)
        try:
            yield ToolHarness(portal, engine, SchedulerTools.for_engine(engine), rows)
        finally:
            rows.close()
