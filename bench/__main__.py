"""``python -m bench``: run the workloads on circleback and APScheduler 4, side by side.

Examples::

    python -m bench                          # every workload, 3 rounds, default sizes
    python -m bench w1 w5 --rounds 5         # some workloads
    python -m bench w1 -p w1.n=50000         # change a parameter
    python -m bench --smoke                  # tiny sizes: does the harness work?
    python -m bench --json results.json      # also write every run and the summary

Each run is a fresh ``python -m bench.child`` process. Within a round the
systems take turns (circleback, then APScheduler on each of its stores), so
drift in the machine's load hits both alike.
"""

from __future__ import annotations

import argparse
import ast
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report
from .common import OVERRAN
from .workloads import WORKLOADS, Case

ROOT = Path(__file__).resolve().parent.parent


def _apscheduler_importable() -> bool:
    try:
        import apscheduler  # noqa: F401
    except ImportError:
        return False
    return True


def _parse_param(text: str) -> tuple[str, str, Any]:
    try:
        key, raw = text.split("=", 1)
        workload, name = key.split(".", 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected WORKLOAD.NAME=VALUE") from None
    if workload not in WORKLOADS:
        raise argparse.ArgumentTypeError(f"{text!r}: no workload {workload!r}")
    if "," in raw:
        value: Any = [_literal(part) for part in raw.split(",")]
    else:
        value = _literal(raw)
    return workload, name, value


def _literal(raw: str) -> Any:
    """A number (or other Python literal) where the text is one, else the text itself."""
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workloads", nargs="*", metavar="WORKLOAD",
                        help=f"workloads to run: {', '.join(WORKLOADS)} (default: all)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per system (default 3)")
    parser.add_argument("-p", "--param", action="append", type=_parse_param, default=[],
                        metavar="W.NAME=VALUE",
                        help="override a parameter, e.g. w1.n=20000 or w5.idle=10000,1000000")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, to test the harness")
    parser.add_argument("--systems", default="circleback,apscheduler",
                        help="comma-separated: circleback, apscheduler")
    parser.add_argument("--aps-stores", default=None,
                        help="limit APScheduler to these stores (sqlite, memory)")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds a run may wait for its jobs (default 900, smoke 60)")
    parser.add_argument("--json", type=Path, default=None, help="write all results here")
    parser.add_argument("--quiet", action="store_true", help="no per-run progress lines")
    args = parser.parse_args(argv)
    unknown = [name for name in args.workloads if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload {unknown[0]!r}; choose from {', '.join(WORKLOADS)}")
    return args


def _cases(args: argparse.Namespace) -> list[tuple[str, dict[str, Any], list[Case]]]:
    """(workload, variant params, the cases of one round) in run order."""
    systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    if "apscheduler" in systems and not _apscheduler_importable():
        print("apscheduler is not installed (pip install -e '.[bench]'); "
              "running circleback only", file=sys.stderr)
        systems.remove("apscheduler")
    stores_wanted = args.aps_stores.split(",") if args.aps_stores else None
    chosen = args.workloads or list(WORKLOADS)
    plan = []
    for name in chosen:
        workload = WORKLOADS[name]
        params = dict(workload.smoke if args.smoke else workload.defaults)
        for target, key, value in args.param:
            if target == name:
                params[key] = value
        params["timeout"] = args.timeout or (60.0 if args.smoke else 900.0)
        for variant in workload.variants(params):
            cases = []
            if "circleback" in systems:
                cases.append(Case(name, "circleback", "sqlite", variant))
            if "apscheduler" in systems:
                for store in workload.aps_stores:
                    if stores_wanted is None or store in stores_wanted:
                        cases.append(Case(name, "apscheduler", store, variant))
            plan.append((name, variant, cases))
    return plan


def run_case(case: Case, round_no: int) -> dict[str, Any]:
    """Run one case in a fresh process; returns the run's record.

    Jobs are added before their due time, which is chosen from a measured rate
    of adding; when adding overran it anyway (the machine got busier), the run
    is repeated from scratch with twice the lead, up to twice.
    """
    params = dict(case.params)
    retries = 0
    while True:
        record = _run_once(case, params, round_no)
        if record["ok"] or OVERRAN not in record["error"] or retries == 2:
            record["retries"] = retries
            return record
        retries += 1
        params["lead_factor"] = float(params.get("lead_factor", 1.0)) * 2


def _run_once(case: Case, params: dict[str, Any], round_no: int) -> dict[str, Any]:
    spec = {"system": case.system, "workload": case.workload, "store": case.store,
            "params": params}
    with tempfile.TemporaryDirectory(prefix="circleback-bench-out-") as tmp:
        out = Path(tmp) / "result.json"
        started = time.perf_counter()
        completed = subprocess.run(
            [sys.executable, "-m", "bench.child", json.dumps(spec), str(out)],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            timeout=float(case.params.get("timeout", 900.0)) * 3 + 600,
            check=False,
        )
        wall = time.perf_counter() - started
        if out.exists():
            answer = json.loads(out.read_text())
        else:
            answer = {"ok": False, "error": f"exit status {completed.returncode}"}
    if not answer["ok"]:
        answer["error"] = f"{answer['error']}\n{completed.stderr[-2000:]}"
    return {
        "workload": case.workload,
        "variant": report.variant_key(case.workload, case.params),
        "params": case.params,
        "system": case.system,
        "store": case.store,
        "round": round_no,
        "wall_s": wall,
        **answer,
    }


def _progress(record: dict[str, Any], rounds: int) -> str:
    head = (f"[{record['variant']} round {record['round']}/{rounds}] "
            f"{record['system']} {record['store']}: ")
    if not record["ok"]:
        return head + "FAILED\n" + record["error"]
    figures = WORKLOADS[record["workload"]].figures
    shown = ", ".join(
        f"{name}={record['figures'][name]:.4g}" for name in figures
        if isinstance(record["figures"].get(name), int | float)
    )
    return head + shown + f" ({record['wall_s']:.0f} s)"


def machine() -> dict[str, Any]:
    """What the figures were taken on."""
    load = os.getloadavg()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_average_at_start": [round(value, 2) for value in load],
    }


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    plan = _cases(args)
    meta = machine() | {"command": "python -m bench " + shlex.join(argv or sys.argv[1:])}
    runs: list[dict[str, Any]] = []
    for _, _, cases in plan:
        for round_no in range(1, args.rounds + 1):
            for case in cases:
                record = run_case(case, round_no)
                runs.append(record)
                if not args.quiet:
                    print(_progress(record, args.rounds), file=sys.stderr, flush=True)
    meta["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    summary = report.summarise(runs)
    checks = report.targets(summary)
    print(f"## Run of {meta['date']}\n")
    print(f"Machine: {meta['cores']} cores, Python {meta['python']}, {meta['platform']}; "
          f"load average {meta['load_average_at_start']} at start, "
          f"{meta['load_average_at_end']} at end.\n")
    print(f"Command: `{meta['command']}` ({args.rounds} rounds)\n")
    print(report.render(summary))
    if checks:
        print("### Targets\n")
        print(report.render_targets(checks))
    if args.json:
        args.json.write_text(json.dumps(
            {"meta": meta, "runs": runs, "summary": summary,
             "targets": [{"target": t, "measured": m, "met": ok} for t, m, ok in checks]},
            indent=2,
        ))
    return 0 if all(run["ok"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
