"""Property tests of the pure state machine ``circleback.core.state.apply_event``.

Hypothesis drives jobs through long random sequences of check results and
cancels, with time moving on between events, and checks the rules of
DESIGN.md ("The state machine") after every event and over whole sequences.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from circleback import CheckOutcome, Job, JobStatus
from circleback.core.models import CheckStatus, NotificationType
from circleback.core.state import (
    DEFAULT_INTERVAL_CAP,
    JITTER_FRACTION,
    Cancel,
    CheckResult,
    Event,
    apply_event,
    next_interval,
    replaced,
)

START = datetime(2030, 1, 1, tzinfo=UTC)

json_scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=20)
results = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=6,
)
outcomes = st.builds(
    CheckOutcome,
    status=st.sampled_from(CheckStatus),
    result=results,
    error=st.none() | st.text(max_size=30),
)
check_results = st.builds(CheckResult, outcome=outcomes)
# Checks are far more common than cancels, so that sequences reach their end states both ways.
events: st.SearchStrategy[Event] = st.one_of(
    check_results, check_results, check_results, st.just(Cancel())
)
#: Time that passes before an event, in seconds (zero: several events at the same moment).
steps = st.floats(min_value=0, max_value=10_000, allow_nan=False)


@st.composite
def jobs(draw: st.DrawFn, status: st.SearchStrategy[JobStatus] | None = None) -> Job:
    """Any job the store could hold; active and fresh unless ``status`` says otherwise."""
    max_attempts = draw(st.integers(min_value=1, max_value=12))
    interval = draw(st.floats(min_value=0.01, max_value=86_400))
    backoff = draw(st.just(1.0) | st.floats(min_value=1.0, max_value=10.0))
    cap = draw(st.none() | st.floats(min_value=interval, max_value=86_400))
    chosen = draw(status) if status is not None else JobStatus.ACTIVE
    attempts = draw(st.integers(min_value=0, max_value=max_attempts - 1))
    if chosen is not JobStatus.ACTIVE:
        attempts = draw(st.integers(min_value=0, max_value=max_attempts))
    created = START + timedelta(seconds=draw(st.integers(min_value=0, max_value=10**6)))
    return Job(
        id=draw(st.uuids()),
        user_id="u1",
        platform="slack",
        platform_channel_id=draw(st.none() | st.just("C1")),
        platform_thread_id=None,
        conversation_id=draw(st.none() | st.just("conv")),
        job_type=draw(st.sampled_from(["delay", "poll_url", "scripted"])),
        check_config={},
        on_complete=draw(st.sampled_from(["notify", "resume_conversation"])),
        workflow_id=draw(st.none() | st.uuids()),
        interval_seconds=interval,
        max_attempts=max_attempts,
        backoff=backoff,
        max_interval_seconds=cap,
        on_success_message=draw(st.sampled_from(["done: {result}", "ok", "{job_id} {x}"])),
        on_failure_message=draw(st.none() | st.just("gave up: {result}")),
        status=chosen,
        attempts=attempts,
        next_run_at=created,
        created_at=created,
        updated_at=created,
        completed_at=created if chosen.is_final else None,
    )


#: For properties of single events: fewer examples than the sequence tests need.
_QUICK = settings(max_examples=50)

finished_jobs = jobs(st.sampled_from([JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]))


@_QUICK
@given(job=finished_jobs, event=events, step=steps)
def test_a_finished_job_never_changes(job: Job, event: Event, step: float) -> None:
    transition = apply_event(job, event, job.updated_at + timedelta(seconds=step))
    assert transition.changed is False
    assert transition.message is None
    assert transition.job == job


@given(job=jobs(), sequence=st.lists(st.tuples(steps, events), min_size=1, max_size=60))
def test_any_event_sequence_obeys_the_rules(
    job: Job, sequence: list[tuple[float, Event]]
) -> None:
    now = job.created_at
    messages = []
    final_at: int | None = None
    for index, (step, event) in enumerate(sequence):
        now += timedelta(seconds=step)
        before = job
        transition = apply_event(job, event, now)
        job = transition.job
        # Attempts only grow, one per check, and never beyond max_attempts.
        assert 0 <= job.attempts <= job.max_attempts
        assert before.attempts <= job.attempts <= before.attempts + 1
        # Identity, owner and request never change.
        assert (job.id, job.user_id, job.max_attempts, job.check_config) == (
            before.id, before.user_id, before.max_attempts, before.check_config
        )
        if before.status.is_final:
            assert not transition.changed
            assert transition.message is None
            assert job == before
            continue
        assert transition.changed
        if transition.message is not None:
            messages.append(transition.message)
        if isinstance(event, Cancel):
            assert job.status is JobStatus.CANCELLED
            assert transition.message is None
            assert job.attempts == before.attempts
        elif event.outcome.status is CheckStatus.MET:
            assert job.status is JobStatus.COMPLETED
        elif event.outcome.status is CheckStatus.FAILED or job.attempts == job.max_attempts:
            assert job.status is JobStatus.FAILED
        else:
            assert job.status is JobStatus.ACTIVE
            assert job.next_run_at > now  # the next check lies in the future
            assert job.next_run_at > before.next_run_at
        if job.status.is_final:
            final_at = index
            assert job.completed_at == now
            assert job.lease_owner is None
            assert job.lease_expires_at is None
        else:
            assert job.completed_at is None
    # Over the whole sequence: one message for a job that completed or failed, none otherwise.
    if job.status in (JobStatus.COMPLETED, JobStatus.FAILED):
        assert len(messages) == 1
        [message] = messages
        assert message.status is job.status
        expected_type = (
            NotificationType.JOB_COMPLETED
            if job.status is JobStatus.COMPLETED
            else NotificationType.JOB_FAILED
        )
        assert message.type is expected_type
        assert final_at is not None
    else:
        assert messages == []


@_QUICK
@given(
    job=jobs(),
    before_cancel=st.lists(st.tuples(steps, events), max_size=10),
    after_cancel=st.lists(st.tuples(steps, events), min_size=1, max_size=20),
)
def test_nothing_after_a_cancel_changes_the_job(
    job: Job,
    before_cancel: list[tuple[float, Event]],
    after_cancel: list[tuple[float, Event]],
) -> None:
    now = job.created_at
    for step, event in before_cancel:
        now += timedelta(seconds=step)
        job = apply_event(job, event, now).job
    was_active = job.status is JobStatus.ACTIVE
    cancel = apply_event(job, Cancel(), now)
    assert cancel.message is None
    assert cancel.changed is was_active
    cancelled = cancel.job
    if was_active:
        assert cancelled.status is JobStatus.CANCELLED
    for step, event in after_cancel:
        now += timedelta(seconds=step)
        late = apply_event(cancelled, event, now)
        assert late.changed is False
        assert late.message is None
        assert late.job == cancelled


@_QUICK
@given(job=jobs(), outcome=outcomes, step=steps)
def test_a_cancelled_job_sends_nothing_for_a_late_result(
    job: Job, outcome: CheckOutcome, step: float
) -> None:
    cancelled = apply_event(job, Cancel(), job.created_at).job
    late = apply_event(cancelled, CheckResult(outcome), job.created_at + timedelta(seconds=step))
    assert cancelled.status is JobStatus.CANCELLED
    assert late.changed is False
    assert late.message is None
    assert late.job == cancelled


@_QUICK
@given(job=jobs(), count=st.integers(min_value=1, max_value=50), step=steps)
def test_unmet_checks_fail_the_job_exactly_at_max_attempts(
    job: Job, count: int, step: float
) -> None:
    now = job.created_at
    sent = 0
    for _ in range(count):
        now += timedelta(seconds=step)
        transition = apply_event(job, CheckResult(CheckOutcome.not_yet("nope")), now)
        sent += transition.message is not None
        job = transition.job
    assert job.attempts <= job.max_attempts
    if job.status is JobStatus.FAILED:
        assert job.attempts == job.max_attempts
        assert sent == 1
    else:
        assert job.status is JobStatus.ACTIVE
        assert job.attempts < job.max_attempts
        assert sent == 0


@_QUICK
@given(job=jobs(), attempts=st.integers(min_value=0, max_value=10**30))
def test_backed_off_interval_is_positive_and_bounded_by_the_cap(job: Job, attempts: int) -> None:
    interval = next_interval(job, attempts)
    assert math.isfinite(interval)
    assert interval > 0
    if job.backoff <= 1.0:
        assert interval == job.interval_seconds
        return
    cap = job.max_interval_seconds or max(job.interval_seconds, DEFAULT_INTERVAL_CAP)
    assert interval <= cap
    assert interval >= job.interval_seconds * (1 - JITTER_FRACTION)


@_QUICK
@given(
    job=jobs(),
    backoff=st.floats(min_value=1.0, max_value=10.0, exclude_min=True),
    attempts=st.integers(min_value=1, max_value=200),
)
def test_backed_off_interval_grows_until_the_cap(job: Job, backoff: float, attempts: int) -> None:
    job = attrs.evolve(job, backoff=backoff)
    cap = job.max_interval_seconds or max(job.interval_seconds, DEFAULT_INTERVAL_CAP)
    spread = (1 - JITTER_FRACTION) / (1 + JITTER_FRACTION)
    # Without jitter the interval would be min(cap, base * backoff ** (attempts - 1)).
    ideal = min(cap, job.interval_seconds * backoff ** (attempts - 1))
    interval = next_interval(job, attempts)
    assert ideal * (1 - JITTER_FRACTION) * (1 - 1e-9) <= interval
    assert interval <= min(cap, ideal * (1 + JITTER_FRACTION)) * (1 + 1e-9)
    later = next_interval(job, attempts + 1)
    assert later >= interval * spread * (1 - 1e-9)


@_QUICK
@given(
    base=st.floats(min_value=0.01, max_value=86_400),
    backoff=st.floats(min_value=1.0, max_value=10.0, exclude_min=True),
    attempts=st.integers(min_value=10**3, max_value=10**40),
)
def test_huge_attempt_counts_never_overflow(base: float, backoff: float, attempts: int) -> None:
    job = attrs.evolve(
        _plain_job(), interval_seconds=base, backoff=backoff, max_interval_seconds=None
    )
    interval = next_interval(job, attempts)
    assert 0 < interval <= max(base, DEFAULT_INTERVAL_CAP)


def _plain_job() -> Job:
    return Job(
        id=uuid.uuid4(), user_id="u", platform="p", platform_channel_id=None,
        platform_thread_id=None, conversation_id=None, job_type="delay", check_config={},
        on_complete="notify", workflow_id=None, interval_seconds=30.0, max_attempts=3,
        backoff=1.0, max_interval_seconds=None, on_success_message="ok", on_failure_message=None,
        status=JobStatus.ACTIVE, attempts=0, next_run_at=START, created_at=START,
        updated_at=START,
    )


def test_job_has_no_validators_or_converters_that_replaced_would_skip() -> None:
    """``replaced`` copies a job's slots instead of running ``__init__``; that is only
    the same as ``attrs.evolve`` while ``Job`` checks and converts nothing."""
    for field in attrs.fields(Job):
        assert field.validator is None, field.name
        assert field.converter is None, field.name
    assert not hasattr(Job, "__attrs_post_init__")


@given(jobs(), st.integers(min_value=0, max_value=50), st.none() | st.text(max_size=10), results)
def test_replaced_is_attrs_evolve(
    job: Job, attempts: int, error: str | None, result: object
) -> None:
    changes = {"attempts": attempts, "last_error": error, "last_result": result,
               "lease_owner": None, "updated_at": job.created_at + timedelta(seconds=1)}
    new = replaced(job, **changes)
    assert new == attrs.evolve(job, **changes)
    assert type(new) is Job and new is not job
    for name, value in changes.items():
        assert getattr(new, name) is value


@given(jobs())
def test_replaced_refuses_a_field_that_does_not_exist(job: Job) -> None:
    with pytest.raises(TypeError, match="no_such_field"):
        replaced(job, no_such_field=1)
