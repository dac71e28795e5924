"""Turning a JSON Schema verdict into one :class:`ValidationError` that names the field.

jsonschema reports what failed as a keyword and a path; an LLM correcting its
call needs the dotted path of the bad value and a reason in words. The
reason is the failing schema's ``errorMessage`` (see :mod:`circleback.core.schema`)
when it has one, else a sentence made from the keyword. Where several forms
are allowed (``oneOf``), the form whose type matches the value explains the
failure, so ``[200, "ok"]`` is refused at ``expected_status.1``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

from jsonschema import ValidationError as SchemaError

from .errors import ValidationError
from .schema import ERROR_MESSAGE

__all__ = ["describe_kind", "field_name", "to_validation_error"]

_MAX_FIELD_CHARS = 80
_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "object": "an object",
    "array": "a list",
    "null": "null",
}
#: Keywords that step into a value, ending a ``propertyNames`` scope.
_DESCENDING = frozenset({"properties", "items", "additionalProperties", "prefixItems"})


def describe_kind(value: Any) -> str:
    """What ``value`` is, in words: "an integer", "a list", "null"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__


def field_name(key: object) -> str:
    """A key as it may appear in an error: printable, and cut when absurdly long."""
    text = str(key)
    shown = text if text.isprintable() else repr(text)[1:-1]
    if len(shown) > _MAX_FIELD_CHARS:
        shown = shown[:_MAX_FIELD_CHARS] + "…"
    return shown


def _join(parts: Iterable[object]) -> str:
    return ".".join(field_name(part) for part in parts)


def _or_list(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _any(value: object) -> Any:
    """A keyword's value: JSON data, whatever the stubs say."""
    return value


def _narrow(error: SchemaError) -> SchemaError:
    """For ``oneOf``/``anyOf``, the deepest error of the one form whose type fits."""
    while error.validator in ("oneOf", "anyOf") and error.context:
        by_branch: dict[int, list[SchemaError]] = {}
        for sub in error.context:
            by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
        fitting = [
            subs for subs in by_branch.values()
            if not any(sub.validator == "type" and len(sub.relative_path) == 0 for sub in subs)
        ]
        if len(fitting) != 1:
            break
        error = fitting[0][0]
    return error


def _custom_message(error: SchemaError) -> str | None:
    schema = error.schema
    if not isinstance(schema, Mapping):
        return None
    custom = schema.get(ERROR_MESSAGE)
    if isinstance(custom, str):
        return custom
    if isinstance(custom, Mapping):
        chosen = custom.get(str(error.validator))
        return chosen if isinstance(chosen, str) else None
    return None


def _names_a_key(error: SchemaError) -> bool:
    """Whether ``error`` judged a key (under ``propertyNames``) rather than a value."""
    path = list(error.absolute_schema_path)
    if "propertyNames" not in path:
        return False
    last = len(path) - 1 - path[::-1].index("propertyNames")
    return not any(step in _DESCENDING for step in path[last + 1:])


def _generic(error: SchemaError) -> str:
    keyword, expected, value = error.validator, _any(error.validator_value), _any(error.instance)
    if keyword == "type" and isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if keyword == "type":
        kinds = [expected] if isinstance(expected, str) else list(expected)
        wanted = _or_list([_TYPE_NAMES.get(kind, kind) for kind in kinds])
        return f"must be {wanted}, not {describe_kind(value)}"
    if keyword == "enum":
        allowed = [str(item) for item in expected if item is not None]
        if not allowed:
            return "has no allowed value here"
        shown = f"{value!r}" if isinstance(value, str | int | float) else describe_kind(value)
        return f"must be one of {', '.join(allowed)}, not {shown}"
    if keyword == "const":
        return f"must be {expected!r}"
    if keyword == "minimum":
        return f"must be at least {expected:g}, not {value}"
    if keyword == "maximum":
        return f"must be at most {expected:g}, not {value}"
    if keyword == "exclusiveMinimum":
        if expected == 0:
            return f"must be a positive number, not {value}"
        return f"must be greater than {expected:g}, not {value}"
    if keyword == "exclusiveMaximum":
        return f"must be less than {expected:g}, not {value}"
    if keyword == "minLength":
        return "must not be empty" if expected == 1 else f"must be at least {expected} characters"
    if keyword == "maxLength":
        return f"must be at most {expected} characters, not {len(value)}"
    if keyword == "pattern":
        return f"must match the pattern {expected}"
    if keyword == "minItems":
        return "must list at least one value" if expected == 1 else (
            f"must list at least {expected} values")
    if keyword == "maxItems":
        return f"must list at most {expected} values"
    if keyword == "uniqueItems":
        return "must not list a value twice"
    if keyword == "maxProperties":
        return f"must have at most {expected} entries"
    if keyword == "minProperties":
        return f"must have at least {expected} entries"
    if keyword in ("oneOf", "anyOf"):
        return "does not have any of the allowed forms (see the schema)"
    return "is not allowed here"


def to_validation_error(error: SchemaError, *, unknown_key: str = "is not a known key") -> (
        ValidationError):
    """``error`` as a :class:`ValidationError` whose ``field`` is the bad value's dotted path.

    ``unknown_key`` is the reason given for a key outside an object's properties.
    """
    error = _narrow(error)
    path: list[object] = list(error.absolute_path)
    keyword, expected, value = error.validator, _any(error.validator_value), _any(error.instance)
    reason = _custom_message(error)
    if keyword == "required" and isinstance(value, Mapping):
        path.append(next(key for key in expected if key not in value))
        reason = reason or "is required"
    elif keyword == "dependentRequired" and isinstance(value, Mapping):
        for key, needs in expected.items():
            missing = [need for need in needs if key in value and need not in value]
            if missing:
                path.append(missing[0])
                reason = reason or f"is required with {key}"
                break
    elif keyword == "additionalProperties" and isinstance(value, Mapping):
        known = error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else {}
        path.append(sorted((key for key in value if key not in known), key=str)[0])
        reason = reason or unknown_key
    elif keyword == "not" and isinstance(expected, Mapping) and set(expected) == {"required"}:
        path.append(expected["required"][0])
    elif _names_a_key(error):
        path.append(value)
    return ValidationError(_join(path), reason or _generic(error))
