"""A recording writes every field whose stored form changes, and may skip the others.

``_changes`` decides which fields of a job a recording writes. Skipping a
field whose stored value would differ loses data, so for any two values —
JSON documents where ``True``, ``1`` and ``1.0`` are stored differently,
lists and tuples, nested containers — a field is left out only when both
values are stored alike.
"""

from __future__ import annotations

import json
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from circleback.store.sql import changes, group_key

scalars = st.none() | st.booleans() | st.integers(-3, 3) | st.sampled_from([0.0, 1.0, -1.0]) | (
    st.text(max_size=3)
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=6,
)


@attrs.frozen
class _Row:
    value: Any


def _stored(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


@given(old=documents, new=documents)
def test_a_field_is_skipped_only_when_stored_alike(old: Any, new: Any) -> None:
    changed = changes(_Row(old), _Row(new), ["value"])
    if "value" not in changed:
        assert _stored(old) == _stored(new)
    else:
        assert changed["value"] is new


@given(value=documents)
def test_an_unchanged_value_is_not_written(value: Any) -> None:
    assert changes(_Row(value), _Row(value), ["value"]) == {}


rows = st.dictionaries(st.sampled_from(["attempts", "last_result", "next_run_at"]), documents,
                       min_size=1, max_size=3)
#: Values that compare equal (or nearly) yet are stored differently.
look_alikes = [[1, True, 1.0], [0, False, 0.0, -0.0], [[1], (1,), [True]], [None, [], {}]]


def _twin(value: Any) -> st.SearchStrategy[Any]:
    """The value itself, one that looks alike, or any other."""
    alike = [group for group in look_alikes
             if any(type(value) is type(item) and value == item for item in group)]
    options = [st.just(value), documents]
    if alike:
        options.append(st.sampled_from(alike[0]))
    return st.one_of(options)


@given(first=rows, data=st.data())
def test_rows_group_together_only_when_stored_alike(
    first: dict[str, Any], data: st.DataObject
) -> None:
    # Rows with equal keys are written by one UPDATE with the first row's values.
    second = {name: data.draw(_twin(value)) for name, value in first.items()}
    if group_key(first) == group_key(second):
        assert _stored(first) == _stored(second)


@given(row=rows)
def test_a_row_groups_with_itself(row: dict[str, Any]) -> None:
    assert group_key(row) == group_key(dict(row))
