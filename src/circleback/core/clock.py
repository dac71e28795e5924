"""Injectable clocks: the engine reads time only through one of these.

``SystemClock`` is the real thing. ``ManualClock`` only moves when told, so
tests can step through hours of scheduling without sleeping.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable

import anyio

__all__ = ["Clock", "ManualClock", "SystemClock", "utc"]


def utc(value: datetime) -> datetime:
    """Return ``value`` as an aware UTC datetime; naive values are taken as UTC."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@runtime_checkable
class Clock(Protocol):
    """Where the engine gets the current time and how it waits for a moment."""

    def now(self) -> datetime:
        """The current time as an aware UTC datetime."""
        ...

    async def sleep_until(self, deadline: datetime) -> None:
        """Return once ``now() >= deadline`` (at once if it already is)."""
        ...


class SystemClock:
    """The wall clock."""

    def now(self) -> datetime:
        """The current UTC time."""
        return datetime.now(UTC)

    async def sleep_until(self, deadline: datetime) -> None:
        """Sleep for real until ``deadline``."""
        delay = (deadline - self.now()).total_seconds()
        if delay > 0:
            await anyio.sleep(delay)


class ManualClock:
    """A clock that stands still until :meth:`advance` or :meth:`set` moves it.

    Sleepers wake as soon as the clock is moved past their deadline.
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = utc(start) if start else datetime(2030, 1, 1, tzinfo=UTC)
        self._moved: anyio.Event | None = None

    def now(self) -> datetime:
        """Where the clock stands."""
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward by ``seconds`` and wake whoever is now due."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("a clock only moves forward")
        return self.set(self._now + timedelta(seconds=seconds))

    def set(self, moment: datetime) -> datetime:
        """Move the clock to ``moment`` (never backwards) and wake whoever is now due."""
        moment = utc(moment)
        if moment < self._now:
            raise ValueError("a clock only moves forward")
        self._now = moment
        moved, self._moved = self._moved, None
        if moved is not None:
            moved.set()
        return moment

    async def sleep_until(self, deadline: datetime) -> None:
        """Wait until the clock has been moved to ``deadline`` or past it."""
        while self._now < deadline:
            if self._moved is None:
                self._moved = anyio.Event()
            await self._moved.wait()
