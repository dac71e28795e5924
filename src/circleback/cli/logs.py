"""How the commands log: circleback's own lines at the chosen level, other libraries' quieter.

At INFO a worker says what happened: each finished job, each dead message,
each lease taken over, its start and stop; at DEBUG also each check. Other
libraries (httpx, SQLAlchemy, hypercorn, ...) log at WARNING unless
``--library-log-level`` asks for more. ``--log-format json`` writes one JSON
object a line, carrying ``job_id``, ``workflow_id`` and ``user_id`` where the
line is about a job.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["JsonFormatter", "configure_logging"]

#: The fields a log record may carry about a job (``extra=`` of the logging call).
JOB_FIELDS = ("job_id", "workflow_id", "user_id", "notification_id", "worker_id")


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, and the job's ids."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for field in JOB_FIELDS:
            value = getattr(record, field, None)
            if value is not None:
                line[field] = str(value)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(level: str, *, library_level: str = "WARNING",
                      json_lines: bool = False) -> None:
    """Log to standard error: circleback at ``level``, every other library at ``library_level``."""
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(library_level.upper())
    logging.getLogger("circleback").setLevel(level.upper())
    # Alembic narrates every schema check at INFO; only its warnings concern operators.
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLogger().level))
