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
import re
from collections.abc import Mapping, Sequence
from typing import Any

from .errors import FieldMissing
from .schema import ERROR_MESSAGE

__all__ = [
    "FieldMissing",
    "as_values",
    "describe_value",
    "lookup",
    "matches",
    "parse_path",
    "path_schema",
    "values_schema",
]

MAX_PATH_CHARS = 256
MAX_PATH_PARTS = 32
MAX_VALUES = 50
MAX_VALUE_CHARS = 256
_INDEX = re.compile(r"^-?[0-9]+$")


def parse_path(path: str) -> tuple[str, ...]:
    """Split a dotted path into its parts (no validation; see :func:`path_schema`)."""
    return tuple(path.split("."))


def path_schema(description: str) -> dict[str, Any]:
    """The JSON Schema of a dotted path: 1 to 32 parts, none empty, no control characters."""
    part = "[^.\\u0000-\\u001f]+"
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": MAX_PATH_CHARS,
        "pattern": f"^{part}(?:\\.{part}){{0,{MAX_PATH_PARTS - 1}}}$",
        ERROR_MESSAGE: {
            "pattern": f"must be a dotted path such as 'status' or 'items.0.state': at most "
            f"{MAX_PATH_PARTS} parts, no empty parts, no control characters",
        },
        "description": description,
    }


def values_schema(description: str) -> dict[str, Any]:
    """The JSON Schema of the values a field is compared with: a scalar or a list of them."""
    scalar = {"type": ["string", "number", "boolean", "null"], "maxLength": MAX_VALUE_CHARS}
    return {
        "oneOf": [scalar, {"type": "array", "items": scalar, "minItems": 1,
                           "maxItems": MAX_VALUES}],
        ERROR_MESSAGE: {
            "oneOf": f"must be a string, a number, a boolean or null, or a list of 1 to "
            f"{MAX_VALUES} of them",
        },
        "description": description,
    }


def as_values(value: Any) -> list[Any]:
    """The values a schema of :func:`values_schema` accepted, as a list."""
    return list(value) if isinstance(value, list) else [value]


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
            if not _INDEX.fullmatch(part):
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
