"""The engine's fixed pacing: batch sizes, sleeps, lingers, slacks, delivery retries.

These are not settings. Each value is fixed for the reason given beside it
(the figures behind them are in ``bench/RESULTS.md``, "Knobs and heuristics");
an operator tunes the five fields of :class:`~circleback.EngineTuning`
instead. Tests hand an engine a pacing of their own to run faster.
"""

from __future__ import annotations

import attrs

from ..core.errors import ConfigurationError
from ..core.settings import EngineTuning

__all__ = ["Pacing"]


@attrs.frozen(kw_only=True)
class Pacing:
    """How often the engine looks, how much it takes at once, how long results wait."""

    #: Most items one claim takes and one transaction records: one statement serves many.
    batch_size: int = 500
    #: Longest sleep between looks at the store: jobs added without a wake-up are seen soon.
    max_sleep_seconds: float = 1.0
    #: Seconds between heartbeats; None: a third of the lease, at most 5 s.
    heartbeat_seconds: float | None = None
    #: Jobs due within this long are claimed early and started in memory when due.
    claim_ahead_seconds: float = 1.0
    #: How long the recorder waits after a result for more, to write them in one transaction.
    record_linger_seconds: float = 0.05
    #: How long a "not yet" may wait to be recorded (never past its job's next claim).
    not_yet_linger_seconds: float = 1.0
    #: Checks due within this long of each other start on one wake-up.
    timer_slack_seconds: float = 0.002
    #: The slack of a dense stream: sixteen checks due within it start together.
    dense_timer_slack_seconds: float = 0.02
    #: Most messages handed to completion modes at once.
    max_concurrent_deliveries: int = 200
    #: Attempts at delivering one message before it is marked dead.
    delivery_max_attempts: int = 20
    #: First pause before retrying a failed delivery; it doubles up to the maximum.
    delivery_backoff_seconds: float = 1.0
    delivery_backoff_max_seconds: float = 300.0

    def heartbeat_period(self, tuning: EngineTuning) -> float:
        """Seconds between two heartbeats: often enough that a live worker keeps its leases."""
        if self.heartbeat_seconds is None:
            return min(5.0, tuning.lease_seconds / 3)
        if self.heartbeat_seconds * 2 >= tuning.lease_seconds:
            raise ConfigurationError(
                "the heartbeat must come more often than every half lease, or a live "
                "worker's leases could expire between two heartbeats"
            )
        return self.heartbeat_seconds

    def claim_ahead(self, tuning: EngineTuning) -> float:
        """Seconds a claim reaches ahead, within what the lease allows.

        A job claimed ahead waits, then is checked, on one lease: at most half
        of what the lease leaves beyond the check timeout goes to waiting.
        """
        spare = tuning.lease_seconds - tuning.check_timeout_seconds
        return min(self.claim_ahead_seconds, spare / 2)
