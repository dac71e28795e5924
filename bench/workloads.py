"""The workloads: their parameters, the stores each system runs them on, their figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["WORKLOADS", "Case", "Workload"]

_BURST_FIGURES = (
    "drain_s", "jobs_per_s", "late_p50_ms", "late_p99_ms", "late_max_ms", "cpu_s", "peak_rss_mb",
)


@dataclass(frozen=True)
class Workload:
    """One workload: default and smoke-test parameters, APScheduler stores, figures shown."""

    name: str
    title: str
    defaults: dict[str, Any]
    smoke: dict[str, Any]
    aps_stores: tuple[str, ...]
    figures: tuple[str, ...]
    #: A parameter whose value is a list: one variant per element (W5's idle counts).
    vary: str | None = None

    def variants(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        if self.vary is None:
            return [dict(params)]
        values = params[self.vary]
        if not isinstance(values, list):
            values = [values]
        return [dict(params, **{self.vary: value}) for value in values]


@dataclass(frozen=True)
class Case:
    """One system on one store running one variant of one workload."""

    workload: str
    system: str
    store: str
    params: dict[str, Any] = field(hash=False)

    @property
    def label(self) -> str:
        return f"{self.system} {self.store}"


WORKLOADS: dict[str, Workload] = {
    workload.name: workload
    for workload in (
        Workload(
            name="w1",
            title="burst: n one-shot timers due at one instant",
            defaults={"n": 10_000},
            smoke={"n": 20, "calibrate": 0},
            aps_stores=("sqlite", "memory"),
            figures=(*_BURST_FIGURES, "done"),
        ),
        Workload(
            name="w2",
            title="spread: n one-shot timers due at random over `spread` seconds",
            defaults={"n": 2_000, "spread": 20.0},
            smoke={"n": 20, "spread": 0.3, "calibrate": 0},
            aps_stores=("sqlite", "memory"),
            figures=("late_p50_ms", "late_p99_ms", "late_max_ms", "cpu_s", "peak_rss_mb", "done"),
        ),
        Workload(
            name="w3",
            title="idle pollers: n polls every `interval` s, never met, for `duration` s",
            defaults={"n": 5_000, "interval": 5.0, "duration": 60.0},
            smoke={"n": 10, "interval": 1.0, "duration": 1.0, "calibrate": 0},
            aps_stores=("sqlite",),
            figures=(
                "checks_done", "checks_expected", "done_pct", "late_p50_ms", "late_p99_ms",
                "cpu_s", "peak_rss_mb",
            ),
        ),
        Workload(
            name="w4",
            title="HTTP pollers: n poll_url jobs every `interval` s against a local server",
            defaults={"n": 500, "interval": 2.0, "duration": 30.0},
            smoke={"n": 5, "interval": 1.0, "duration": 1.0, "calibrate": 0},
            aps_stores=("sqlite", "memory"),
            figures=(
                "requests_done", "requests_expected", "done_pct", "late_p50_ms", "late_p99_ms",
                "cpu_s", "peak_rss_mb",
            ),
        ),
        Workload(
            name="w5",
            title="scale: the W1 burst with `idle` other jobs stored, due in a day",
            defaults={"n": 10_000, "idle": [10_000, 1_000_000]},
            smoke={"n": 20, "idle": [50, 200], "calibrate": 0},
            aps_stores=("sqlite",),
            figures=("idle_store_s", *_BURST_FIGURES, "done"),
            vary="idle",
        ),
    )
}
