"""Conditions on a field of JSON data: a dotted path and the values that satisfy it.

Both polling checkers wait for a field of what they read (a health body, a
tool's result) to take one of a few values: ``status`` in ``["ok"]``,
``items.0.state`` in ``["done", "skipped"]``. A path is a dot-separated list of
object keys and list indexes (``-1`` is the last item); keys that themselves
contain dots cannot be addressed.

Values are compared as JSON compares them: ``true`` is not ``1``, ``1`` equals
``1.0``, strings match exactly.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import FieldMissing, ValidationError

__all__ = [
    "FieldMissing",
    "describe_value",
    "lookup",
    "matches",
    "parse_path",
    "validate_path",
    "validate_values",
]

MAX_PATH_CHARS = 256
MAX_PATH_PARTS = 32
MAX_VALUES = 50
MAX_VALUE_CHARS = 256
_INDEX = re.compile(r"^-?[0-9]+$")


def parse_path(path: str) -> tuple[str, ...]:
    """Split a dotted path into its parts (no validation; see :func:`validate_path`)."""
    return tuple(path.split("."))


def validate_path(value: Any, field: str) -> str:
    """``value`` as a dotted path, or a :class:`ValidationError` naming ``field``."""
    if not isinstance(value, str):
        raise ValidationError(field, "must be a dotted path such as 'status' or 'items.0.state'")
    if not value or len(value) > MAX_PATH_CHARS:
        raise ValidationError(field, f"must be 1 to {MAX_PATH_CHARS} characters long")
    if any(ord(ch) < 0x20 for ch in value):
        raise ValidationError(field, "must not contain control characters")
    parts = parse_path(value)
    if len(parts) > MAX_PATH_PARTS:
        raise ValidationError(field, f"must have at most {MAX_PATH_PARTS} parts")
    if any(not part for part in parts):
        raise ValidationError(field, "must not have empty parts (as in 'a..b' or a leading dot)")
    return value


def _is_scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int | str)


def validate_values(value: Any, field: str) -> list[Any]:
    """``value`` as a non-empty list of JSON scalars (a single scalar becomes a list of one)."""
    values = value if isinstance(value, list) else [value]
    if isinstance(value, dict):
        raise ValidationError(field, "must be a list of strings, numbers, booleans or null")
    if not values:
        raise ValidationError(field, "must list at least one value")
    if len(values) > MAX_VALUES:
        raise ValidationError(field, f"must list at most {MAX_VALUES} values")
    for index, item in enumerate(values):
        where = f"{field}.{index}" if isinstance(value, list) else field
        if not _is_scalar(item):
            raise ValidationError(where, "must be a string, a number, a boolean or null")
        if isinstance(item, str) and len(item) > MAX_VALUE_CHARS:
            raise ValidationError(where, f"must be at most {MAX_VALUE_CHARS} characters")
    return list(values)


def lookup(data: Any, path: str) -> Any:
    """The value at ``path`` inside ``data``; :class:`FieldMissing` when there is none."""
    current = data
    walked: list[str] = []
    for part in parse_path(path):
        where = ".".join(walked) or "the top level"
        if isinstance(current, Mapping):
            if part not in current:
                raise FieldMissing(f"{where} has no key {part!r}")
            current = current[part]
        elif isinstance(current, Sequence) and not isinstance(current, str | bytes):
            if not _INDEX.match(part):
                raise FieldMissing(f"{where} is a list, and {part!r} is not an index")
            index = int(part)
            if not -len(current) <= index < len(current):
                raise FieldMissing(f"{where} has {len(current)} items, so no item {index}")
            current = current[index]
        else:
            raise FieldMissing(f"{where} is {_kind(current)}, not an object or a list")
        walked.append(part)
    return current


def _same(left: Any, right: Any) -> bool:
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if isinstance(left, int | float) and isinstance(right, int | float):
        return bool(left == right)
    return type(left) is type(right) and bool(left == right)


def matches(value: Any, candidates: Sequence[Any]) -> bool:
    """Whether ``value`` equals one of ``candidates`` under JSON comparison (see the module)."""
    return any(_same(value, candidate) for candidate in candidates)


def describe_value(value: Any, limit: int = 120) -> str:
    """``value`` as short JSON text for an error message."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=lambda obj: f"<{type(obj).__name__}>")
    except (TypeError, ValueError, RecursionError):
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return type(value).__name__
