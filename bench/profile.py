"""``python -m bench.profile WORKLOAD``: where circleback's time goes in one run.

Runs one circleback run of the workload in a child process, attaches py-spy
(``pip install py-spy``) when the measured window opens — the child notes the
moment in ``$BENCH_MARK_FILE`` — and samples until the run ends. Prints the
functions with the most samples, by own time and including callees, over
every thread (the event loop, aiosqlite's thread, the heartbeat). Setup (adding
the jobs) is not sampled.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .__main__ import ROOT, _parse_param
from .workloads import WORKLOADS

_LINE_NUMBER = re.compile(r":\d+\)")


def summarise(raw: Path, top: int) -> str:
    """The top functions of py-spy's collapsed stacks, by own and by inclusive samples."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [_LINE_NUMBER.sub(")", frame) for frame in stack.split(";") if frame]
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "including callees:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("workload", choices=list(WORKLOADS))
    parser.add_argument("-p", "--param", action="append", type=_parse_param, default=[],
                        metavar="W.NAME=VALUE")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=30, help="functions to list")
    parser.add_argument("--raw", type=Path, default=None, help="keep py-spy's collapsed stacks")
    parser.add_argument("--gil", action="store_true",
                        help="sample only the thread holding the GIL: where the CPU goes")
    args = parser.parse_args(argv)
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    workload = WORKLOADS[args.workload]
    params = dict(workload.defaults, timeout=900.0)
    for target, key, value in args.param:
        if target == args.workload:
            params[key] = value
    params = workload.variants(params)[0]
    spec = {"system": "circleback", "workload": args.workload, "store": "sqlite",
            "params": params}
    with tempfile.TemporaryDirectory(prefix="circleback-bench-profile-") as tmp:
        marks, out = Path(tmp) / "marks", Path(tmp) / "result.json"
        raw = args.raw or Path(tmp) / "stacks.txt"
        child = subprocess.Popen(
            [sys.executable, "-m", "bench.child", json.dumps(spec), str(out)],
            cwd=ROOT, env=dict(os.environ, BENCH_MARK_FILE=str(marks)),
            stdout=subprocess.DEVNULL,
        )
        while child.poll() is None and not (marks.exists() and marks.read_text()):
            time.sleep(0.02)
        spy = subprocess.Popen(
            [py_spy, "record", "--format", "raw", "--rate", str(args.rate), "--nonblocking",
             "--pid", str(child.pid), "--output", str(raw), *(["--gil"] if args.gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        child.wait()
        _, spy_errors = spy.communicate(timeout=60)
        answer = json.loads(out.read_text()) if out.exists() else {"ok": False, "error": "?"}
        if not answer["ok"]:
            print(answer["error"], file=sys.stderr)
            return 1
        figures = {name: round(value, 3) for name, value in answer["figures"].items()
                   if isinstance(value, int | float)}
        print(f"{args.workload} {params}: {figures}\n")
        if not raw.exists():
            print(f"py-spy wrote nothing: {spy_errors}", file=sys.stderr)
            return 1
        print(summarise(raw, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
