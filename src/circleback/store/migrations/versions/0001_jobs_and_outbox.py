"""Jobs and the outbox: the first released schema.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from circleback.store.schema import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(JSONB(), "postgresql")
_ID = sa.String(255)


def upgrade() -> None:
    op.create_table(
        "circleback_jobs",
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
    )
    op.create_index("ix_circleback_jobs_due", "circleback_jobs", ["status", "next_run_at"])
    op.create_index("ix_circleback_jobs_user", "circleback_jobs", ["user_id", "status"])
    op.create_index("ix_circleback_jobs_workflow", "circleback_jobs", ["workflow_id"])
    op.create_index("ix_circleback_jobs_lease", "circleback_jobs", ["lease_expires_at"])
    op.create_table(
        "circleback_outbox",
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
    )
    op.create_index("ix_circleback_outbox_due", "circleback_outbox", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("circleback_outbox")
    op.drop_table("circleback_jobs")
