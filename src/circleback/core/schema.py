"""Pieces for declaring input rules as JSON Schema (draft 2020-12).

Every rule on what a caller may send is a JSON Schema: the same object is
published to the LLM in the tool manifest and checked at add time by
:mod:`circleback.core.rulebook`, so the two cannot disagree. These helpers
spell the shapes that recur (text, optional values, UUIDs, a
value or a list of them) so each rule is written once.

A schema may carry ``errorMessage``, the keyword the ajv-errors convention
uses: when the schema holding it fails, that text is the error's reason. It is
an annotation, so other validators ignore it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

__all__ = [
    "ERROR_MESSAGE",
    "JSON_SCHEMA_DIALECT",
    "SCALAR",
    "UUID_PATTERN",
    "any_case",
    "needs",
    "object_of",
    "one_or_many",
    "optional",
    "python_pattern",
    "text",
    "uuid_string",
]

#: The dialect of every schema circleback publishes.
JSON_SCHEMA_DIALECT: Final = "https://json-schema.org/draft/2020-12/schema"
#: The annotation whose text replaces the generic reason when its schema fails.
ERROR_MESSAGE: Final = "errorMessage"
#: A UUID in its canonical 8-4-4-4-12 hexadecimal form, the only form the tools take.
UUID_PATTERN: Final = (
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
#: A JSON value that is neither an object nor a list.
SCALAR: Final = {"type": ["string", "number", "boolean", "null"]}

# Text with at least one character that is not white space, and no NUL (which
# PostgreSQL cannot store).
_SOME_TEXT = "^[^\\u0000]*[^\\s\\u0000][^\\u0000]*$"


def text(max_chars: int, description: str) -> dict[str, Any]:
    """A string of 1 to ``max_chars`` characters that is not blank and holds no NUL."""
    return {
        "type": "string",
        "minLength": 1,
        "maxLength": max_chars,
        "pattern": _SOME_TEXT,
        ERROR_MESSAGE: {"pattern": "must not be blank nor contain NUL characters"},
        "description": description,
    }


def optional(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` that also takes ``null``, which means: not given."""
    result = dict(schema)
    kind = result.get("type")
    if isinstance(kind, str):
        result["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        result["type"] = [*kind, "null"]
    if "enum" in result:
        result["enum"] = [*result["enum"], None]
    if "const" in result:
        result["enum"] = [result.pop("const"), None]
    return result


def uuid_string(description: str) -> dict[str, Any]:
    """A UUID in canonical form."""
    return {
        "type": "string",
        "format": "uuid",
        "pattern": UUID_PATTERN,
        ERROR_MESSAGE: {"pattern": "must be a UUID in the form "
                        "0b9e4a52-7d3c-4f1a-8e26-5c4b3a2d1e0f"},
        "description": description,
    }


def any_case(words: Iterable[str]) -> str:
    """A pattern matching exactly ``words`` in any ASCII case ("get", "Post")."""
    spelled = ("".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)
               for word in words)
    return f"^(?:{'|'.join(spelled)})$"


def one_or_many(item: dict[str, Any], max_items: int, description: str, *,
                unique: bool = False) -> dict[str, Any]:
    """``item``, or a list of 1 to ``max_items`` of them."""
    many: dict[str, Any] = {"type": "array", "items": item, "minItems": 1,
                            "maxItems": max_items}
    if unique:
        many["uniqueItems"] = True
    return {"description": description, "oneOf": [item, many]}


def object_of(
    properties: dict[str, Any], required: Iterable[str] = (), **extra: Any
) -> dict[str, Any]:
    """An object with exactly these ``properties`` (others are refused).

    ``additionalProperties`` and ``required`` come first so that an unknown or
    missing key is the error reported before a bad value.
    """
    schema: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "required": list(required),
        "properties": properties,
    }
    schema.update(extra)
    return schema


def needs(key: str, *others: str) -> dict[str, Any]:
    """A rule for ``allOf``: when ``key`` is given, ``others`` must be given too.

    Spelt as ``if``/``then`` rather than ``dependentRequired`` because schema
    tools (generators of test input among them) honour the older keywords more
    widely; the error names the missing field and ``key``.
    """
    return {"if": {"required": [key]},
            "then": {"required": list(others), ERROR_MESSAGE: f"is required with {key}"}}


def python_pattern(pattern: str) -> str:
    """A JSON Schema ``pattern`` (ECMA-262) as a Python regular expression that means the same.

    The one difference that matters for our patterns: ECMA's ``$`` matches only
    at the end of the text, Python's also before a final newline (so
    ``"X-Name\\n"`` would pass ``^[A-Za-z-]+$``). Each ``$`` outside a character
    class becomes ``\\Z``.
    """
    out: list[str] = []
    in_class = escaped = False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char == "$":
            out.append("\\Z")
            continue
        out.append(char)
    return "".join(out)
