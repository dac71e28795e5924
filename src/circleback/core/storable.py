"""Values that every supported database keeps as they are, SQLite and PostgreSQL alike.

PostgreSQL's text and JSONB hold no NUL character, UTF-8 has no form for a
lone surrogate (what JSON such as ``"\\ud800"`` decodes to), and JSONB has no
NaN or infinity. SQLite keeps some of these, so without care a check result
that one backend stores would make the other fail to record the check at all.

What checks report comes from systems circleback does not control, so it is
made storable before it is recorded (:func:`storable_json`, :func:`storable_text`);
what a caller sends is refused instead (see :mod:`circleback.core.validation`).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["REPLACEMENT_CHARACTER", "is_storable_json", "storable_json", "storable_text"]

#: What a NUL character or a lone surrogate becomes: U+FFFD, as for undecodable bytes.
REPLACEMENT_CHARACTER = "\ufffd"


def storable_text(text: str) -> str:
    """``text`` with every NUL character and every lone surrogate replaced by U+FFFD.

    A surrogate pair given as two code points becomes the one character it encodes.
    """
    if "\x00" in text:
        text = text.replace("\x00", REPLACEMENT_CHARACTER)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # Through UTF-16: surrogate pairs become the characters they encode, lone ones U+FFFD.
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _is_storable_text(text: str) -> bool:
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _plainly_storable(value: Any) -> bool:
    """Whether ``value``'s ASCII JSON shows no NUL and no surrogate (paired or lone) at all."""
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return False
    # ASCII JSON: a NUL shows as \u0000, a surrogate as \udxxx.
    return "\\u0000" not in text and "\\ud" not in text


def is_storable_json(value: Any) -> bool:
    """Whether ``value`` holds no NUL character, no surrogate, no NaN and no infinity."""
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return True  # the usual result of a check: nothing to encode to know
    if kind is str:
        return _is_storable_text(value)
    if kind is float:
        return math.isfinite(value)
    if _plainly_storable(value):
        return True
    try:
        return _is_storable(value)
    except RecursionError:
        return False


def _is_storable(value: Any) -> bool:
    if isinstance(value, str):
        return _is_storable_text(value)
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(
            (not isinstance(key, str) or _is_storable_text(key)) and _is_storable(item)
            for key, item in value.items()
        )
    if isinstance(value, list | tuple):
        return all(_is_storable(item) for item in value)
    return True


def storable_json(value: Any) -> Any:
    """``value`` with storable strings (and keys) throughout, and NaN or infinity as null.

    A value that needs no change is returned as it is. Anything that is not
    JSON data at all is left alone (to fail where it is serialised, as before).
    """
    if is_storable_json(value):
        return value
    try:
        return _storable(value)
    except RecursionError:
        return value


def _storable(value: Any) -> Any:
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {
            (storable_text(key) if isinstance(key, str) else key): _storable(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_storable(item) for item in value]
    return value
