"""Times on SQLite: circleback's converters read and write exactly SQLAlchemy's text.

Databases written before the faster converters (or by any SQLAlchemy program)
must read back the same, and the text written must sort and compare like
SQLAlchemy's, since claims compare times in SQL.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from circleback.store.schema import SQLiteDateTimeText, UTCDateTime

DIALECT = sqlite.dialect()
SQLALCHEMY_TEXT = sqlite.DATETIME().bind_processor(DIALECT)
SQLALCHEMY_READ = sqlite.DATETIME().result_processor(DIALECT, None)
OURS_TEXT = SQLiteDateTimeText().bind_processor(DIALECT)
OURS_READ = SQLiteDateTimeText().result_processor(DIALECT, None)

naive_times = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31))


@given(naive_times)
def test_the_text_written_is_sqlalchemys(moment: datetime) -> None:
    assert OURS_TEXT(moment) == SQLALCHEMY_TEXT(moment)


@given(naive_times)
def test_text_written_by_sqlalchemy_reads_back_the_same(moment: datetime) -> None:
    text = SQLALCHEMY_TEXT(moment)
    assert OURS_READ(text) == SQLALCHEMY_READ(text) == moment


@given(naive_times, naive_times)
def test_the_text_sorts_in_time_order(first: datetime, second: datetime) -> None:
    assert (OURS_TEXT(first) < OURS_TEXT(second)) == (first < second)


def test_none_stays_none() -> None:
    assert OURS_TEXT(None) is None
    assert OURS_READ(None) is None


# -- UTCDateTime on SQLite: aware times in, the same naive UTC text, aware UTC times out --------

UTC_TEXT = UTCDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
UTC_READ = UTCDateTime().dialect_impl(DIALECT).result_processor(DIALECT, None)

aware_times = st.datetimes(
    min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.timezones()
)


@given(aware_times)
def test_an_aware_time_is_written_as_sqlalchemys_text_of_its_utc_time(moment: datetime) -> None:
    in_utc = moment.astimezone(UTC)
    assert UTC_TEXT(moment) == SQLALCHEMY_TEXT(in_utc.replace(tzinfo=None))
    assert UTC_READ(UTC_TEXT(moment)) == in_utc
    assert UTC_READ(UTC_TEXT(moment)).tzinfo is UTC  # type: ignore[union-attr]


@given(naive_times)
def test_stored_text_reads_back_as_that_time_in_utc(moment: datetime) -> None:
    assert UTC_READ(SQLALCHEMY_TEXT(moment)) == moment.replace(tzinfo=UTC)


def test_a_time_without_a_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        UTC_TEXT(datetime(2030, 1, 1))


def test_text_with_an_offset_of_its_own_reads_as_that_moment() -> None:
    assert UTC_READ("2030-01-01 02:00:00.000000+02:00") == datetime(2030, 1, 1, tzinfo=UTC)


def test_none_stays_none_through_utc_datetime() -> None:
    assert UTC_TEXT(None) is None
    assert UTC_READ(None) is None


@given(st.lists(aware_times, min_size=1, max_size=6))
def test_each_time_gets_its_own_text_whatever_came_before(moments: list[datetime]) -> None:
    # The converter remembers the last time it converted; a batch repeats its "now".
    for moment in [*moments, *reversed(moments), moments[0], moments[0]]:
        assert UTC_TEXT(moment) == SQLALCHEMY_TEXT(moment.astimezone(UTC).replace(tzinfo=None))
