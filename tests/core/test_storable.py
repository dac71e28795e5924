"""What a check reports is made storable on every backend; what needs no change stays as it is."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from circleback.core.storable import (
    REPLACEMENT_CHARACTER,
    _is_storable,
    _plainly_storable,
    is_storable_json,
    storable_json,
    storable_text,
)

#: Any text at all: NUL characters and surrogates (lone or in pairs) included.
any_text = st.text(st.characters(codec=None, categories=None), max_size=12) | st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\ud83d\ude00", "\ude00\ud83d", "\\u0000", "\\ud800"]
)
numbers = st.integers() | st.floats()  # NaN and infinities included
values = st.recursive(
    st.none() | st.booleans() | numbers | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
#: JSON data as a database stores it and gives it back.
clean_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
                max_size=5), inner, max_size=3),
    max_leaves=8,
)


def _storable_everywhere(value: Any) -> None:
    """What both databases need: strict JSON, encodable as UTF-8, no NUL anywhere."""
    text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    text.encode("utf-8")
    assert "\x00" not in text and "\\u0000" not in text.replace("\\\\", "")


@given(values)
def test_any_value_becomes_storable_and_stays_so(value: Any) -> None:
    stored = storable_json(value)
    _storable_everywhere(stored)
    assert is_storable_json(stored)
    assert storable_json(stored) == stored


@given(clean_values)
def test_a_storable_value_is_kept_as_it_is(value: Any) -> None:
    assert is_storable_json(value)
    assert storable_json(value) is value


@given(any_text)
def test_text_changes_only_where_no_database_can_keep_it(text: str) -> None:
    stored = storable_text(text)
    stored.encode("utf-8")
    assert "\x00" not in stored
    # Every character UTF-8 can carry is kept; the others become U+FFFD, one for one.
    joined = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert stored == joined.replace("\x00", REPLACEMENT_CHARACTER)
    assert len(stored) <= len(text)
    if "\x00" not in text and not any(0xD800 <= ord(char) <= 0xDFFF for char in text):
        assert stored is text


def test_what_becomes_of_each_kind() -> None:
    assert storable_text("a\x00b") == "a\ufffdb"
    assert storable_text("a\ud800b\udfff") == "a\ufffdb\ufffd"
    assert storable_text("\ud83d\ude00") == "\U0001f600"  # a pair is the character it encodes
    assert storable_json({"k\x00": [math.nan, math.inf, -math.inf, "\x00", 1.5]}) == {
        "k\ufffd": [None, None, None, "\ufffd", 1.5]
    }
    assert storable_json(("x", ["\ud800"])) == ["x", ["\ufffd"]]
    assert storable_json("\\u0000") == "\\u0000"  # a backslash and five letters: fine
    assert is_storable_json({"x": "\U0001f600"})
    assert not is_storable_json({"x": "\ud83d\ude00"})  # UTF-8 has no surrogates, paired or not
    assert not is_storable_json({"x": "\ud800"})
    assert not is_storable_json(["\x00"])
    assert not is_storable_json({"\x00": 1})
    assert not is_storable_json(math.nan)


scalars = st.none() | st.booleans() | numbers | any_text


@given(scalars)
def test_the_quick_answer_for_a_scalar_is_the_full_one(value: Any) -> None:
    # Scalars skip the encoding; the answer must be what the encoding gives.
    assert is_storable_json(value) == (_plainly_storable(value) or _is_storable(value))
