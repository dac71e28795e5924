"""The job state machine: a pure function of (job, event, now).

No I/O and no randomness happen here, so property tests can drive it through
any sequence of events. The engine applies a :class:`Transition` with a
conditional write (only if the job is still active and still leased by this
worker), so a cancel or a lost lease always wins over a late check result.
What a check reported is kept in a form every store can hold (see
:mod:`circleback.core.storable`).
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timedelta
from typing import Any

import attrs

from .models import CheckOutcome, CheckStatus, Job, JobStatus, NotificationType
from .rendering import DEFAULT_RESULT_LIMIT, render_message, render_result, wrap_untrusted
from .storable import storable_json, storable_text

__all__ = [
    "Cancel",
    "CheckResult",
    "Event",
    "OutgoingMessage",
    "Transition",
    "apply_event",
    "ends_job",
    "next_interval",
]

#: Spread of the random-looking jitter applied to backed-off intervals (±10 %).
JITTER_FRACTION = 0.1
#: The longest interval when a job sets no ``max_interval_seconds`` of its own.
DEFAULT_INTERVAL_CAP = 86_400.0


@attrs.frozen
class CheckResult:
    """Event: a check of the job finished with ``outcome``."""

    outcome: CheckOutcome


@attrs.frozen
class Cancel:
    """Event: the job's user cancelled it."""


Event = CheckResult | Cancel


@attrs.frozen(kw_only=True)
class OutgoingMessage:
    """The one message a job sends when it finishes."""

    type: NotificationType
    status: JobStatus
    text: str
    result: Any


@attrs.frozen(kw_only=True)
class Transition:
    """The job after an event, and the message to queue with it (if any)."""

    job: Job
    changed: bool
    message: OutgoingMessage | None = None


def _jitter(job: Job, attempts: int) -> float:
    """A deterministic factor in [1 - JITTER_FRACTION, 1 + JITTER_FRACTION] per (job, attempt)."""
    digest = hashlib.blake2b(f"{job.id}:{attempts}".encode(), digest_size=8).digest()
    unit = int.from_bytes(digest, "big") / float(1 << 64)
    return 1.0 + JITTER_FRACTION * (2.0 * unit - 1.0)


def next_interval(job: Job, attempts: int) -> float:
    """Seconds until the next check after ``attempts`` unmet checks.

    With ``backoff > 1`` the interval grows geometrically up to the job's cap,
    with a jitter of ±10 % so that many jobs started together drift apart.
    """
    base = job.interval_seconds
    if job.backoff <= 1.0:
        return base
    cap = job.max_interval_seconds or max(base, DEFAULT_INTERVAL_CAP)
    exponent = attempts - 1
    # Compare exponents rather than computing backoff ** exponent, which overflows.
    if exponent <= 0:
        grown = base
    elif exponent >= math.log(cap / base) / math.log(job.backoff):
        grown = cap
    else:
        grown = base * job.backoff**exponent
    return min(cap, grown * _jitter(job, attempts))


def default_failure_message(
    job: Job,
    description: str,
    attempts: int,
    error: str | None,
    *,
    untrusted: bool = False,
    result_limit: int = DEFAULT_RESULT_LIMIT,
) -> str:
    """The failure message of a job that gave none: what was watched, how often, what was seen.

    Built directly, not through placeholders: the last error comes from the checked
    system, so it is cleaned and cut like a result (and, with ``untrusted``, marked
    as data for an LLM), and brace text inside it is never substituted.
    """
    seen = render_result(error, limit=result_limit) if error else "the condition was not met"
    if error and untrusted:
        seen = wrap_untrusted(seen)
    what = render_result(description, limit=200)
    return (
        f"Stopped watching {what} (job {job.id}) after {attempts} "
        f"check{'s' if attempts != 1 else ''}: {seen}"
    )


_JOB_FIELDS = tuple(field.name for field in attrs.fields(Job))
_new = object.__new__
_set = object.__setattr__


def replaced(job: Job, **changes: Any) -> Job:
    """``job`` with ``changes``: ``attrs.evolve`` at a fraction of the cost.

    Copies the slots and sets the changes instead of running ``__init__``
    again — a transition makes one per checked job. Valid because ``Job`` has
    no validators or converters to run (``tests/test_state_machine.py`` keeps
    that true).
    """
    new = _new(Job)
    for name in _JOB_FIELDS:
        _set(new, name, changes.pop(name) if name in changes else getattr(job, name))
    if changes:
        raise TypeError(f"Job has no field(s) {', '.join(sorted(changes))}")
    return new


def _storable_error(outcome: CheckOutcome) -> str | None:
    return None if outcome.error is None else storable_text(outcome.error)


def _finish(
    job: Job,
    now: datetime,
    *,
    status: JobStatus,
    attempts: int,
    outcome: CheckOutcome,
    description: str,
    result_limit: int,
) -> Transition:
    untrusted = job.on_complete == "resume_conversation"
    template: str | None
    if status is JobStatus.COMPLETED:
        template = job.on_success_message
        kind = NotificationType.JOB_COMPLETED
    else:
        template = job.on_failure_message or None
        kind = NotificationType.JOB_FAILED
    if template is None:
        text = default_failure_message(
            job, description, attempts, outcome.error, untrusted=untrusted,
            result_limit=result_limit,
        )
    else:
        text = render_message(
            template,
            result=outcome.result,
            job_id=str(job.id),
            workflow_id=str(job.workflow_id) if job.workflow_id else None,
            untrusted=untrusted,
            result_limit=result_limit,
        )
    result = storable_json(outcome.result)
    finished = replaced(
        job,
        status=status,
        attempts=attempts,
        completed_at=now,
        updated_at=now,
        last_checked_at=now,
        last_result=result,
        last_error=_storable_error(outcome),
        lease_owner=None,
        lease_expires_at=None,
    )
    message = OutgoingMessage(type=kind, status=status, text=text, result=result)
    return Transition(job=finished, changed=True, message=message)


def ends_job(job: Job, outcome: CheckOutcome) -> bool:
    """Whether a check of active ``job`` with ``outcome`` finishes it (see :func:`apply_event`)."""
    return (
        outcome.status is not CheckStatus.NOT_YET
        or min(job.attempts + 1, job.max_attempts) >= job.max_attempts
    )


def apply_event(
    job: Job,
    event: Event,
    now: datetime,
    *,
    description: str | None = None,
    result_limit: int = DEFAULT_RESULT_LIMIT,
) -> Transition:
    """What ``event`` does to ``job`` at ``now``.

    - a finished job never changes and sends nothing;
    - a cancel ends an active job as ``cancelled`` and sends nothing;
    - a met check completes it with the success message;
    - a definite failure, or an unmet check that used the last attempt, fails it
      with the failure message (a default one when the job has none);
    - any other check keeps it active and moves ``next_run_at`` on by the interval.

    ``description`` says what the job watches, for the default failure message.
    """
    if job.status.is_final:
        return Transition(job=job, changed=False)
    if isinstance(event, Cancel):
        cancelled = replaced(
            job,
            status=JobStatus.CANCELLED,
            completed_at=now,
            updated_at=now,
            lease_owner=None,
            lease_expires_at=None,
        )
        return Transition(job=cancelled, changed=True)

    outcome = event.outcome
    attempts = min(job.attempts + 1, job.max_attempts)
    what = description or job.job_type
    if outcome.status is CheckStatus.MET:
        return _finish(
            job, now, status=JobStatus.COMPLETED, attempts=attempts, outcome=outcome,
            description=what, result_limit=result_limit,
        )
    if ends_job(job, outcome):
        return _finish(
            job, now, status=JobStatus.FAILED, attempts=attempts, outcome=outcome,
            description=what, result_limit=result_limit,
        )
    step = timedelta(seconds=next_interval(job, attempts))
    next_run_at = job.next_run_at + step
    if next_run_at <= now:
        next_run_at = now + step
    waiting = replaced(
        job,
        attempts=attempts,
        next_run_at=next_run_at,
        updated_at=now,
        last_checked_at=now,
        last_result=storable_json(outcome.result),
        last_error=_storable_error(outcome),
        lease_owner=None,
        lease_expires_at=None,
    )
    return Transition(job=waiting, changed=True)
