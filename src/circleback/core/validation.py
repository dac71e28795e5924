"""Checking what callers ask for before anything is written.

Every check raises :class:`~circleback.ValidationError` naming the offending
field, so an LLM that sent a bad call can correct exactly that argument.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import Mapping
from typing import Any

from .abc import ValidationContext
from .errors import ValidationError
from .models import Caller, JobSpec
from .registry import PluginRegistry
from .settings import Settings
from .storable import is_storable_json

__all__ = [
    "CALLER_FIELDS",
    "SPEC_FIELDS",
    "parse_uuid",
    "require_number",
    "require_string",
    "validate_caller",
    "validate_job_spec",
]

#: The arguments a job spec may contain.
SPEC_FIELDS = frozenset(
    {
        "job_type",
        "check_config",
        "on_success_message",
        "on_failure_message",
        "on_complete",
        "workflow_id",
        "interval_seconds",
        "max_attempts",
        "backoff",
        "max_interval_seconds",
    }
)
#: The caller context: injected by the orchestrator, never accepted as arguments.
CALLER_FIELDS = frozenset(
    {"user_id", "platform", "platform_channel_id", "platform_thread_id", "conversation_id"}
)
_MAX_ID_CHARS = 255
_MAX_BACKOFF = 10.0


def require_string(
    value: Any, field: str, *, max_chars: int, allow_empty: bool = False
) -> str:
    """``value`` as a string of at most ``max_chars`` characters, or a ValidationError."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {_kind(value)}")
    if not allow_empty and not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > max_chars:
        raise ValidationError(field, f"must be at most {max_chars} characters, not {len(value)}")
    if "\x00" in value:
        raise ValidationError(field, "must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        # JSON such as "\ud800" decodes to a lone surrogate, which no database can store.
        raise ValidationError(field, "must be valid Unicode text, not a lone surrogate") from None
    return value


def require_number(
    value: Any,
    field: str,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    positive: bool = False,
    integer: bool = False,
) -> float:
    """``value`` as a finite number within bounds, or a ValidationError.

    Booleans are refused (``True`` is not ``1`` here). With ``integer``, floats
    with a fractional part are refused.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        wanted = "an integer" if integer else "a number"
        raise ValidationError(field, f"must be {wanted}, not {_kind(value)}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(field, "must be a finite number")
    if integer and isinstance(value, float) and not value.is_integer():
        raise ValidationError(field, "must be a whole number")
    if positive and not value > 0:
        raise ValidationError(field, f"must be a positive number, not {value}")
    if minimum is not None and value < minimum:
        raise ValidationError(field, f"must be at least {minimum:g}, not {value}")
    if maximum is not None and value > maximum:
        raise ValidationError(field, f"must be at most {maximum:g}, not {value}")
    return value


def parse_uuid(value: Any, field: str) -> uuid.UUID:
    """``value`` as a UUID (a UUID or its string form), or a ValidationError."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError(field, f"must be a UUID string, not {_kind(value)}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError(field, "must be a UUID such as 3f2b8c9e-...") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def validate_caller(caller: Caller) -> Caller:
    """Refuse caller contexts with missing or absurd ids."""
    if not isinstance(caller, Caller):
        raise ValidationError("context", "must be a circleback.Caller")
    for field in ("user_id", "platform"):
        require_string(getattr(caller, field), f"context.{field}", max_chars=_MAX_ID_CHARS)
    for field in ("platform_channel_id", "platform_thread_id", "conversation_id"):
        value = getattr(caller, field)
        if value is not None:
            require_string(
                value, f"context.{field}", max_chars=_MAX_ID_CHARS, allow_empty=True
            )
    return caller


def validate_job_spec(
    data: Mapping[str, Any] | JobSpec, *, plugins: PluginRegistry, settings: Settings
) -> JobSpec:
    """Check a job request field by field and return it as a :class:`JobSpec`.

    Raises :class:`~circleback.ValidationError` for the first bad field; the
    error's ``field`` is its dotted path (``check_config.delay_seconds``).
    """
    if isinstance(data, JobSpec):
        data = _spec_as_mapping(data)
    if not isinstance(data, Mapping):
        raise ValidationError("arguments", f"must be an object, not {_kind(data)}")
    limits = settings.limits
    for key in data:
        if not isinstance(key, str):
            raise ValidationError("arguments", "keys must be strings")
        if key in CALLER_FIELDS:
            raise ValidationError(
                key, "is set from the caller's context and cannot be given as an argument"
            )
        if key not in SPEC_FIELDS:
            raise ValidationError(key, "is not a known argument")

    if "job_type" not in data:
        raise ValidationError("job_type", "is required")
    job_type = require_string(data["job_type"], "job_type", max_chars=64)
    if job_type not in plugins.checkers:
        known = ", ".join(sorted(plugins.checkers))
        raise ValidationError("job_type", f"must be one of {known}, not {job_type!r}")
    checker = plugins.checker(job_type)

    if "check_config" not in data:
        raise ValidationError("check_config", "is required")
    raw_config = data["check_config"]
    if not isinstance(raw_config, Mapping):
        raise ValidationError("check_config", f"must be an object, not {_kind(raw_config)}")
    try:
        size = len(json.dumps(raw_config, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        raise ValidationError("check_config", "must be plain JSON data") from None
    if size > limits.max_check_config_bytes:
        raise ValidationError(
            "check_config", f"must be at most {limits.max_check_config_bytes} bytes as JSON"
        )
    try:
        check_config = checker.validate_config(raw_config, ValidationContext(settings=settings))
    except ValidationError as exc:
        field = f"check_config.{exc.field}" if exc.field else "check_config"
        raise ValidationError(field, exc.reason) from None
    try:
        json.dumps(check_config, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        # NaN and infinity have no JSON form: PostgreSQL's JSONB refuses them.
        raise ValidationError("check_config", "must be plain JSON data") from None
    if not is_storable_json(check_config):
        # Nor can it hold a NUL, and UTF-8 cannot carry a surrogate.
        raise ValidationError(
            "check_config", "must not contain NUL characters or surrogates in its text"
        )

    if "on_success_message" not in data:
        raise ValidationError("on_success_message", "is required")
    on_success = require_string(
        data["on_success_message"], "on_success_message", max_chars=limits.max_message_chars
    )
    on_failure = data.get("on_failure_message")
    if on_failure is not None:
        on_failure = require_string(
            on_failure, "on_failure_message", max_chars=limits.max_message_chars
        )

    on_complete = data.get("on_complete", "notify")
    if on_complete is None:
        on_complete = "notify"
    on_complete = require_string(on_complete, "on_complete", max_chars=64)
    if on_complete not in plugins.notifiers:
        known = ", ".join(sorted(plugins.notifiers))
        raise ValidationError("on_complete", f"must be one of {known}, not {on_complete!r}")

    workflow_id = data.get("workflow_id")
    if workflow_id is not None:
        workflow_id = parse_uuid(workflow_id, "workflow_id")

    interval = data.get("interval_seconds", 30)
    interval = float(
        require_number(
            interval,
            "interval_seconds",
            positive=True,
            minimum=limits.min_interval_seconds,
            maximum=limits.max_interval_seconds,
        )
    )
    max_attempts = int(
        require_number(
            data.get("max_attempts", 120),
            "max_attempts",
            integer=True,
            minimum=1,
            maximum=limits.max_attempts,
        )
    )
    backoff = float(
        require_number(data.get("backoff", 1.0), "backoff", minimum=1.0, maximum=_MAX_BACKOFF)
    )
    max_interval = data.get("max_interval_seconds")
    if max_interval is not None:
        max_interval = float(
            require_number(
                max_interval,
                "max_interval_seconds",
                minimum=interval,
                maximum=limits.max_interval_seconds,
            )
        )
    return JobSpec(
        job_type=job_type,
        check_config=check_config,
        on_success_message=on_success,
        on_failure_message=on_failure,
        on_complete=on_complete,
        workflow_id=workflow_id,
        interval_seconds=interval,
        max_attempts=max_attempts,
        backoff=backoff,
        max_interval_seconds=max_interval,
    )


def _spec_as_mapping(spec: JobSpec) -> dict[str, Any]:
    return {
        "job_type": spec.job_type,
        "check_config": spec.check_config,
        "on_success_message": spec.on_success_message,
        "on_failure_message": spec.on_failure_message,
        "on_complete": spec.on_complete,
        "workflow_id": spec.workflow_id,
        "interval_seconds": spec.interval_seconds,
        "max_attempts": spec.max_attempts,
        "backoff": spec.backoff,
        "max_interval_seconds": spec.max_interval_seconds,
    }
