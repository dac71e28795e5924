"""How long one message render takes, worst case included.

Renders hostile and large templates with large, nested and opaque results, the
way the state machine does when a job finishes, and prints the mean, p99 and
maximum time per render, as CPU time of the rendering thread (steady on a busy
machine) and as wall-clock time. The design's target is under 10 ms per render.

    python -m bench.render_templates [--rounds N]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

from circleback.core.rendering import render_message

TEMPLATES = [
    "done: {result}",
    "{result.__class__} {result.__init__.__globals__} {0} {result[0]} {result!r}",
    "{result:>999999999} { }{ {{result}} {job_id} {workflow_id}",
    "{result}" * 500,  # the largest template the default limits accept (4,000 characters)
    "x{" * 2000,
]


class Opaque:
    def __repr__(self) -> str:
        return "secret"


def results(rng: random.Random) -> list[Any]:
    nested: Any = "leaf"
    for depth in range(200):
        nested = {f"k{depth}": [nested, depth]}
    return [
        None,
        "short",
        "y" * 1_000_000,
        "\x00\x1b" * 50_000 + "tail",
        list(range(100_000)),
        nested,
        {"obj": Opaque(), "items": [Opaque()] * 1000},
        [rng.random() for _ in range(10_000)],
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    rng = random.Random(7)
    samples = results(rng)
    cpu: list[float] = []
    wall: list[float] = []
    worst = ("", "", 0.0)
    for _ in range(args.rounds):
        for template in TEMPLATES:
            for result in samples:
                for untrusted in (False, True):
                    start_cpu, start_wall = time.thread_time(), time.perf_counter()
                    render_message(template, result=result, job_id="j", workflow_id=None,
                                   untrusted=untrusted)
                    took = time.thread_time() - start_cpu
                    wall.append(time.perf_counter() - start_wall)
                    cpu.append(took)
                    if took > worst[2]:
                        worst = (template[:30], type(result).__name__, took)
    print(f"renders: {len(cpu)}")
    for name, timings in (("cpu", cpu), ("wall", wall)):
        timings.sort()
        p99 = timings[int(len(timings) * 0.99) - 1]
        print(f"{name:>4}: mean {statistics.mean(timings) * 1000:.3f} ms  "
              f"p99 {p99 * 1000:.3f} ms  max {timings[-1] * 1000:.3f} ms")
    print(f"slowest (cpu): template {worst[0]!r}… with a {worst[1]} result")


if __name__ == "__main__":
    main()
