"""``python -m bench.sqlite_memory``: does a polling worker's SQLite memory stay put?

Runs the W3 workload (``--n`` polls every ``--interval`` s, never met) in this
process for ``--duration`` s and prints, every ``--every`` s, the memory
SQLite holds (``sqlite3_memory_used()``, read through ctypes from the
library the ``sqlite3`` module is linked with) and the process's resident
anonymous memory. A worker that keeps something per check shows a column
that keeps climbing; one that does not levels off once its page caches are
warm. Bounded caches filling up (prepared statements, pages) look like growth
for a while: run long enough to see them full.
"""

from __future__ import annotations

import argparse
import ctypes
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import anyio


def _memory_used() -> Any:
    """``sqlite3_memory_used`` of the SQLite library the sqlite3 module uses."""
    import _sqlite3  # the extension module; its library is already loaded

    library = ctypes.CDLL(_sqlite3.__file__)
    try:
        function = library.sqlite3_memory_used
    except AttributeError as exc:  # SQLite linked in statically, its symbols hidden
        raise SystemExit(f"cannot read SQLite's memory in this build: {exc}") from exc
    function.restype = ctypes.c_int64
    function.argtypes = []
    return function


def _rss_anon_kib() -> int | None:
    """This process's resident anonymous memory (Linux), in KiB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqlite_memory", description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="polling jobs")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between checks")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds to watch")
    parser.add_argument("--every", type=float, default=10.0, help="seconds between readings")
    args = parser.parse_args(argv)

    from . import circleback_runs

    memory_used = _memory_used()
    started = time.monotonic()
    stop = threading.Event()
    readings: list[tuple[float, int, int | None]] = []

    def sample() -> None:
        while not stop.wait(args.every):
            readings.append((time.monotonic() - started, memory_used(), _rss_anon_kib()))
            at, sqlite_bytes, anon = readings[-1]
            anon_text = "" if anon is None else f"   RssAnon {anon / 1024:6.1f} MiB"
            print(f"{at:7.1f} s   SQLite {sqlite_bytes / 2**20:6.2f} MiB{anon_text}", flush=True)

    params: dict[str, Any] = {
        "n": args.n, "interval": args.interval, "duration": args.duration,
    }
    sampler = threading.Thread(target=sample, name="sqlite-memory", daemon=True)
    sampler.start()
    try:
        with tempfile.TemporaryDirectory(prefix="circleback-bench-") as tmp:
            figures = anyio.run(circleback_runs.run, "w3", params, Path(tmp))
    finally:
        stop.set()
        sampler.join()
    print(
        f"checks done {figures['checks_done']:,} of {figures['checks_expected']:,}; "
        f"readings {len(readings)} (setup included)"
    )


if __name__ == "__main__":
    main()
