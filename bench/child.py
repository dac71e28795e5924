"""One run of one workload on one system, in a process of its own.

``python -m bench.child SPEC_JSON OUT_FILE`` runs the case described by
``SPEC_JSON`` (``system``, ``workload``, ``store``, ``params``) in a fresh
temporary directory and writes ``{"ok": true, "figures": {...}}`` (or
``{"ok": false, "error": "..."}``) to ``OUT_FILE``. A fresh process per run
keeps peak RSS and CPU time the run's own.
"""

from __future__ import annotations

import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import anyio


async def _run(spec: dict[str, Any], workdir: Path) -> dict[str, Any]:
    system, workload, params = spec["system"], spec["workload"], spec["params"]
    if system == "circleback":
        from . import circleback_runs

        return await circleback_runs.run(workload, params, workdir)
    if system == "apscheduler":
        from . import apscheduler_runs

        return await apscheduler_runs.run(workload, params, workdir, spec["store"])
    raise ValueError(f"unknown system {system!r}")


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    out = Path(argv[1])
    backend = spec.get("backend", "asyncio")
    try:
        with tempfile.TemporaryDirectory(prefix="circleback-bench-") as tmp:
            figures = anyio.run(_run, spec, Path(tmp), backend=backend)
        answer: dict[str, Any] = {"ok": True, "figures": figures}
    except BaseException as exc:  # report, whatever it was
        text = "".join(traceback.format_exception(exc))
        if len(text) > 8000:
            text = text[:4000] + "\n…\n" + text[-4000:]
        answer = {"ok": False, "error": text}
    out.write_text(json.dumps(answer))
    return 0 if answer["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
