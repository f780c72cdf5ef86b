"""Reliability: the store's identity, deliveries, submissions, the worker registry, leadership.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

- `store_info`: key/value facts about the store; `store_id` (a random UUID written once,
  here) travels in every broker message so a worker refuses another store's jobs.
- `jobs.last_sent_at`: when a message for the job last went to the broker; the
  reconciler re-sends queued jobs that have waited too long without one.
- `submissions` and `submission_jobs`: what one `run`/`submit` asked for, followed by
  `docqa results --submission`.
- `workers`: one row per worker process (identity, host, model, queue, last seen).
- `leaders`: who holds a fleet-wide role (the reconciler) and until when.

Self-contained on purpose (no import of docqa.storage.models).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    info = op.create_table(
        "store_info",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_store_info"),
    )
    op.bulk_insert(info, [{"key": "store_id", "value": uuid.uuid4().hex}])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("last_sent_at", sa.DateTime(timezone=True), nullable=True))
    # Jobs queued before this revision count as sent when they were created.
    op.execute(sa.text("UPDATE jobs SET last_sent_at = created_at"))
    op.create_table(
        "submissions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("command", sa.String(32), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("revision", sa.Text(), nullable=False),
        sa.Column("documents", sa.Integer(), server_default="0", nullable=False),
        sa.Column("new_documents", sa.Integer(), server_default="0", nullable=False),
        sa.Column("jobs", sa.Integer(), server_default="0", nullable=False),
        sa.Column("new_jobs", sa.Integer(), server_default="0", nullable=False),
        sa.Column("input_errors", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_submissions"),
    )
    op.create_table(
        "submission_jobs",
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("submission_id", "job_id", name="pk_submission_jobs"),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"], name="fk_submission_jobs_submission_id_submissions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_submission_jobs_job_id_jobs", ondelete="CASCADE"),
    )
    op.create_index("ix_submission_jobs_job_id", "submission_jobs", ["job_id"])
    op.create_table(
        "workers",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_workers"),
    )
    op.create_table(
        "leaders",
        sa.Column("role", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("role", name="pk_leaders"),
    )
    op.bulk_insert(
        sa.table("leaders", sa.column("role"), sa.column("holder"), sa.column("until")),
        [{"role": "reconciler", "holder": "", "until": datetime(2000, 1, 1, tzinfo=timezone.utc)}],
    )


def downgrade() -> None:
    op.drop_table("leaders")
    op.drop_table("workers")
    op.drop_index("ix_submission_jobs_job_id", table_name="submission_jobs")
    op.drop_table("submission_jobs")
    op.drop_table("submissions")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("last_sent_at")
    op.drop_table("store_info")
