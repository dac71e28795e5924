"""A job's outside view: the one JSON shape the tools, the service and the CLI give.

The field names are the tools' (``next_check_at``, not the store's
``next_run_at``); secrets are redacted and what the checked system said is
marked as untrusted, wherever the view is shown.
"""

from __future__ import annotations

from typing import Any

from .models import Job, JobStatus
from .redaction import redact
from .rendering import render_result, wrap_untrusted
from .settings import Limits

__all__ = ["job_view"]


def job_view(job: Job, limits: Limits, *, with_caller: bool = False) -> dict[str, Any]:
    """A job as its user (and their LLM) should see it.

    ``last_result`` and ``last_error`` come from the checked system: they are
    rendered as text, cut to ``limits.max_result_chars`` and marked as
    untrusted data. Secrets in ``check_config`` (and any URL's password) are
    shown as ``[redacted]``. The caller ids are left out: the caller knows them;
    ``with_caller`` adds them, for the operator's CLI, which sees every user's jobs.
    """

    def untrusted(value: Any) -> str | None:
        if value is None:
            return None
        return wrap_untrusted(render_result(redact(value), limit=limits.max_result_chars))

    active = job.status is JobStatus.ACTIVE
    view = {
        "id": str(job.id),
        "job_type": job.job_type,
        "status": job.status.value,
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "interval_seconds": job.interval_seconds,
        "next_check_at": job.next_run_at.isoformat() if active else None,
        "last_checked_at": job.last_checked_at.isoformat() if job.last_checked_at else None,
        "last_result": untrusted(job.last_result),
        "last_error": untrusted(job.last_error),
        "workflow_id": str(job.workflow_id) if job.workflow_id else None,
        "on_complete": job.on_complete,
        "check_config": redact(job.check_config),
        "on_success_message": job.on_success_message,
        "on_failure_message": job.on_failure_message,
        "created_at": job.created_at.isoformat(),
        "completed_at": job.completed_at.isoformat() if job.completed_at else None,
    }
    if with_caller:
        view.update(
            user_id=job.user_id,
            platform=job.platform,
            platform_channel_id=job.platform_channel_id,
            platform_thread_id=job.platform_thread_id,
            conversation_id=job.conversation_id,
        )
    return view
