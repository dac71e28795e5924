"""Times on SQLite: circleback's converters read and write exactly SQLAlchemy's text.

Databases written before the faster converters (or by any SQLAlchemy program)
must read back the same, and the text written must sort and compare like
SQLAlchemy's, since claims compare times in SQL.
"""

from __future__ import annotations

from datetime import datetime

from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from circleback.core.schema import SQLiteDateTimeText

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
