"""Summaries of runs: min / median / max per figure, ratios of medians, the targets."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from .workloads import WORKLOADS

__all__ = ["render", "summarise", "targets", "variant_key"]

BASELINE = "circleback sqlite"


def variant_key(workload: str, params: dict[str, Any]) -> str:
    """A short name for one variant of a workload, from its parameters."""
    shown = ", ".join(
        f"{name}={value}"
        for name, value in params.items()
        if name not in ("timeout", "lead_factor", "seed", "calibrate")
    )
    return f"{workload} ({shown})"


def summarise(runs: Iterable[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{variant: {"system store": {"figures": {name: [min, median, max]}, "runs", "failed"}}}."""
    grouped: dict[str, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        grouped[run["variant"]][f"{run['system']} {run['store']}"].append(run)
    summary: dict[str, dict[str, dict[str, Any]]] = {}
    for variant, by_label in grouped.items():
        summary[variant] = {}
        for label, label_runs in by_label.items():
            good = [run["figures"] for run in label_runs if run["ok"]]
            names = sorted({name for figures in good for name, value in figures.items()
                            if isinstance(value, int | float)})
            figures = {}
            for name in names:
                values = [float(f[name]) for f in good if isinstance(f.get(name), int | float)]
                figures[name] = [min(values), statistics.median(values), max(values)]
            summary[variant][label] = {
                "figures": figures,
                "runs": len(label_runs),
                "failed": len(label_runs) - len(good),
                "meta": next((f["meta"] for f in good if "meta" in f), None),
            }
    return summary


def _num(value: float) -> str:
    if math.isnan(value):
        return "—"
    if math.isinf(value):
        return "∞"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _ratio(ours: float, theirs: float) -> str:
    if theirs == 0 or math.isnan(ours) or math.isnan(theirs):
        return "—"
    return f"{ours / theirs:.3g}x"


def render(summary: dict[str, dict[str, dict[str, Any]]]) -> str:
    """Markdown tables: one per variant, a row per figure, a column group per system."""
    out: list[str] = []
    for variant, by_label in summary.items():
        workload = WORKLOADS[variant.split(" ", 1)[0]]
        labels = sorted(by_label, key=lambda label: (label != BASELINE, label))
        others = [label for label in labels if label != BASELINE]
        out.append(f"### {variant} — {workload.title}\n")
        header = ["figure", *[f"{label} (min / median / max)" for label in labels]]
        header += [f"ratio ÷ {label}" for label in others if BASELINE in by_label]
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for name in workload.figures:
            cells = [name]
            for label in labels:
                triple = by_label[label]["figures"].get(name)
                cells.append(" / ".join(_num(v) for v in triple) if triple else "—")
            base = by_label.get(BASELINE, {}).get("figures", {}).get(name)
            for label in others:
                if BASELINE not in by_label:
                    continue
                theirs = by_label[label]["figures"].get(name)
                cells.append(_ratio(base[1], theirs[1]) if base and theirs else "—")
            out.append("| " + " | ".join(cells) + " |")
        notes = []
        for label in labels:
            info = by_label[label]
            note = f"{label}: {info['runs'] - info['failed']}/{info['runs']} runs ok"
            if info.get("meta"):
                note += f"; {info['meta']}"
            notes.append(note)
        out.append("\n" + "; ".join(notes) + "\n")
    return "\n".join(out)


def _median(summary: dict[str, dict[str, dict[str, Any]]], variant: str, label: str,
            name: str) -> float | None:
    triple = summary.get(variant, {}).get(label, {}).get("figures", {}).get(name)
    return float(triple[1]) if triple else None


def targets(summary: dict[str, dict[str, dict[str, Any]]]) -> list[tuple[str, str, bool | None]]:
    """Each target of the issue that this run can judge: (target, measured, met)."""
    checks: list[tuple[str, str, bool | None]] = []

    def ratio_at_least(variant: str, name: str, other: str, floor: float, text: str) -> None:
        ours, theirs = (_median(summary, variant, BASELINE, name),
                        _median(summary, variant, other, name))
        if ours is None or theirs is None or theirs == 0:
            return
        checks.append((text, f"{ours / theirs:.3g}x", ours / theirs >= floor))

    def at_most(variant: str, name: str, ceiling: float, text: str) -> None:
        ours = _median(summary, variant, BASELINE, name)
        if ours is not None:
            checks.append((text, _num(ours), ours <= ceiling))

    def at_least(variant: str, name: str, floor: float, text: str) -> None:
        ours = _median(summary, variant, BASELINE, name)
        if ours is not None:
            checks.append((text, _num(ours), ours >= floor))

    def cpu_share(variant: str, other: str, share: float, text: str) -> None:
        ours, theirs = (_median(summary, variant, BASELINE, "cpu_s"),
                        _median(summary, variant, other, "cpu_s"))
        if ours is not None and theirs:
            checks.append((text, f"{ours:.3g} s vs {theirs:.3g} s", ours <= share * theirs))

    for variant in summary:
        name = variant.split(" ", 1)[0]
        if name == "w1":
            ratio_at_least(variant, "jobs_per_s", "apscheduler sqlite", 100,
                           "W1 jobs/s ≥ 100x APScheduler on SQLite")
            ratio_at_least(variant, "jobs_per_s", "apscheduler memory", 3,
                           "W1 jobs/s ≥ 3x APScheduler in memory")
            at_least(variant, "jobs_per_s", 20_000, "W1 ≥ 20,000 jobs/s end to end")
        elif name == "w2":
            at_most(variant, "late_p99_ms", 10, "W2 p99 lateness ≤ 10 ms")
        elif name == "w3":
            at_least(variant, "done_pct", 99, "W3 ≥ 99 % of expected checks")
            at_most(variant, "late_p99_ms", 100, "W3 p99 lateness ≤ 100 ms")
            cpu_share(variant, "apscheduler sqlite", 0.2,
                      "W3 CPU ≤ 1/5 of APScheduler on SQLite")
        elif name == "w4":
            at_least(variant, "done_pct", 99, "W4 ≥ 99 % of expected requests")
            at_most(variant, "late_p99_ms", 20, "W4 p99 lateness ≤ 20 ms")
            cpu_share(variant, "apscheduler memory", 0.5,
                      "W4 CPU ≤ 1/2 of APScheduler in memory")
        for label in summary[variant]:
            if label == BASELINE:
                continue
            ours = _median(summary, variant, BASELINE, "peak_rss_mb")
            theirs = _median(summary, variant, label, "peak_rss_mb")
            if ours is not None and theirs is not None:
                checks.append((f"{variant}: peak RSS ≤ {label}",
                               f"{ours:.0f} MiB vs {theirs:.0f} MiB", ours <= theirs))
    w5 = [variant for variant in summary if variant.startswith("w5 ")]
    drains = [(v, _median(summary, v, BASELINE, "drain_s")) for v in w5]
    measured = [(v, d) for v, d in drains if d is not None]
    if len(measured) >= 2:
        (_, small_drain), (_, large_drain) = measured[0], measured[-1]
        assert small_drain is not None and large_drain is not None
        checks.append((
            "W5 drain with the most idle jobs ≤ 1.2x drain with the fewest",
            f"{large_drain / small_drain:.3g}x ({_num(large_drain)} s vs {_num(small_drain)} s)",
            large_drain <= 1.2 * small_drain,
        ))
    return checks


def render_targets(checks: list[tuple[str, str, bool | None]]) -> str:
    lines = ["| target | measured (circleback median) | met |", "|---|---|---|"]
    for text, measured, met in checks:
        lines.append(f"| {text} | {measured} | {'yes' if met else 'NO'} |")
    return "\n".join(lines)
