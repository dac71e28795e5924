"""Engine pacing for the suite: quicker than the engine's own, so tests wait less.

The engine fixes its pacing (``circleback.engine.pacing``); tests hand an
engine one of these through its private ``pacing`` keyword.
"""

from __future__ import annotations

from typing import Any

import attrs

from circleback.engine.pacing import Pacing

__all__ = ["QUICK", "Pacing", "quick"]

#: The store looked at every 50 ms, and a failed delivery tried again within moments.
QUICK = Pacing(
    max_sleep_seconds=0.05, delivery_backoff_seconds=0.05, delivery_backoff_max_seconds=0.5
)


def quick(**changes: Any) -> Pacing:
    """:data:`QUICK` with ``changes``."""
    return attrs.evolve(QUICK, **changes)
