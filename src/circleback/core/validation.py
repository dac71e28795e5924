"""Checking the values the Python API takes besides a tool's arguments: callers and ids.

The arguments themselves are checked by :mod:`circleback.core.rulebook`. Every
check raises :class:`~circleback.ValidationError` naming the offending field.
"""

from __future__ import annotations

import uuid
from typing import Any

from .errors import ValidationError
from .models import Caller
from .schema_errors import describe_kind

__all__ = [
    "CALLER_FIELDS",
    "parse_uuid",
    "require_string",
    "validate_caller",
]

#: The caller context: injected by the orchestrator, never accepted as arguments.
CALLER_FIELDS = frozenset(
    {"user_id", "platform", "platform_channel_id", "platform_thread_id", "conversation_id"}
)
_MAX_ID_CHARS = 255


def require_string(
    value: Any, field: str, *, max_chars: int, allow_empty: bool = False
) -> str:
    """``value`` as a string of at most ``max_chars`` characters, or a ValidationError."""
    if not isinstance(value, str):
        raise ValidationError(field, f"must be a string, not {describe_kind(value)}")
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


def parse_uuid(value: Any, field: str) -> uuid.UUID:
    """``value`` as a UUID (a UUID or its string form), or a ValidationError."""
    if isinstance(value, uuid.UUID):
        return value
    if not isinstance(value, str) or len(value) > 64:
        raise ValidationError(field, f"must be a UUID string, not {describe_kind(value)}")
    try:
        return uuid.UUID(value)
    except ValueError:
        raise ValidationError(field, "must be a UUID such as 3f2b8c9e-...") from None


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
