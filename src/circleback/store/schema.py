"""The tables circleback keeps: jobs, and the outbox of messages finished jobs send."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Dialect

__all__ = ["UTCDateTime", "jobs", "metadata", "outbox", "workers"]


class SQLiteDateTimeText(sqlite.DATETIME):
    """SQLite's ``DATETIME`` column, in SQLAlchemy's text form, converted by C code.

    The text is the one SQLAlchemy writes (``YYYY-MM-DD HH:MM:SS.ffffff``), so
    stored rows read the same either way; ``isoformat`` and ``fromisoformat``
    do the work that SQLAlchemy's SQLite processors do with string formatting
    and a regular expression, for every time of every row a worker claims.
    """

    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Any:
        def process(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat(" ", "microseconds")

        return process

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        def process(value: str | None) -> datetime | None:
            return None if value is None else datetime.fromisoformat(value)

        return process


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    SQLite has no time zones: there the value is stored as naive UTC, whose
    ISO text sorts in time order, so range conditions and indexes still work.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(SQLiteDateTimeText())  # type: ignore[no-untyped-call]
        return dialect.type_descriptor(self.impl_instance)

    def bind_processor(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return _utc_text
        return super().bind_processor(dialect)

    def result_processor(self, dialect: Dialect, coltype: object) -> Any:
        if dialect.name == "sqlite":
            return _utc_from_text
        return super().result_processor(dialect, coltype)

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("circleback stores aware datetimes only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)  # type: ignore[no-any-return]
        return value.astimezone(UTC)  # type: ignore[no-any-return]


def _utc_text(value: datetime | None) -> str | None:
    """:class:`UTCDateTime` to SQLite in one step: the naive UTC text SQLAlchemy would write.

    Every claim and recording converts several times per job; SQLAlchemy's
    chain (``process_bind_param``, then the column type's processor) costs
    about half again as much.
    """
    global _last_utc_text
    if value is None:
        return None
    # A batch writes the same moment (its ``now``) into several columns of every row.
    last, text = _last_utc_text
    if value is last:
        return text
    original = value
    if value.tzinfo is not UTC:
        if value.tzinfo is None:
            raise ValueError("circleback stores aware datetimes only")
        value = value.astimezone(UTC)
    text = value.isoformat(" ", "microseconds")[:-6]  # without its "+00:00"
    _last_utc_text = (original, text)  # one tuple: threads read a matching pair
    return text


#: The last datetime :func:`_utc_text` converted (kept alive here, so never another's id).
_last_utc_text: tuple[datetime | None, str | None] = (None, None)


def _utc_from_text(value: str | None) -> datetime | None:
    """SQLite's naive UTC text to an aware datetime in one parse."""
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value + "+00:00")
    except ValueError:  # text that carries an offset of its own
        return datetime.fromisoformat(value).astimezone(UTC)


class JSONDocument(sa.TypeDecorator[Any]):
    """JSON: ``JSONB`` on PostgreSQL, SQLAlchemy's ``JSON`` elsewhere.

    The PostgreSQL dialect (with every driver module it imports, about 2 MiB)
    is loaded only by a store on PostgreSQL, not by the embedded default.
    """

    impl = sa.JSON
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import JSONB

            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(sa.JSON())


_JSON = JSONDocument()
_ID = sa.String(255)

metadata = sa.MetaData()

jobs = sa.Table(
    "circleback_jobs",
    metadata,
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("user_id", _ID, nullable=False),
    sa.Column("platform", _ID, nullable=False),
    sa.Column("platform_channel_id", _ID),
    sa.Column("platform_thread_id", _ID),
    sa.Column("conversation_id", _ID),
    sa.Column("job_type", sa.String(64), nullable=False),
    sa.Column("check_config", _JSON, nullable=False),
    sa.Column("on_complete", sa.String(64), nullable=False),
    sa.Column("workflow_id", sa.Uuid()),
    sa.Column("interval_seconds", sa.Float(), nullable=False),
    sa.Column("max_attempts", sa.Integer(), nullable=False),
    sa.Column("backoff", sa.Float(), nullable=False, server_default="1.0"),
    sa.Column("max_interval_seconds", sa.Float()),
    sa.Column("on_success_message", sa.Text(), nullable=False),
    sa.Column("on_failure_message", sa.Text()),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_run_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("completed_at", UTCDateTime()),
    sa.Column("last_result", _JSON),
    sa.Column("last_error", sa.Text()),
    sa.Column("last_checked_at", UTCDateTime()),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("lease_token", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Index("ix_circleback_jobs_due", "status", "next_run_at"),
    sa.Index("ix_circleback_jobs_user", "user_id", "status"),
    sa.Index("ix_circleback_jobs_workflow", "workflow_id"),
    sa.Index("ix_circleback_jobs_lease", "lease_expires_at"),
)

outbox = sa.Table(
    "circleback_outbox",
    metadata,
    # The notification id: one per finished job, the consumers' deduplication key.
    sa.Column("id", sa.Uuid(), primary_key=True),
    sa.Column("job_id", sa.Uuid(), nullable=False, unique=True),
    sa.Column("on_complete", sa.String(64), nullable=False),
    sa.Column("payload", _JSON, nullable=False),
    sa.Column("result", _JSON),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("sent_at", UTCDateTime()),
    sa.Column("last_error", sa.Text()),
    sa.Column("delivered_via", sa.String(64)),
    sa.Column("delivery_note", sa.Text()),
    sa.Column("lease_owner", sa.String(128)),
    sa.Column("lease_expires_at", UTCDateTime()),
    sa.Column("lease_token", sa.BigInteger(), nullable=False, server_default="0"),
    sa.Index("ix_circleback_outbox_due", "status", "next_attempt_at"),
)

workers = sa.Table(
    "circleback_workers",
    metadata,
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("hostname", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer(), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("heartbeat_at", UTCDateTime(), nullable=False),
    sa.Column("stopped_at", UTCDateTime()),
    sa.Column("jobs_held", sa.Integer(), nullable=False, server_default="0"),
    sa.Column("deliveries_held", sa.Integer(), nullable=False, server_default="0"),
)
