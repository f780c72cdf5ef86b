"""Work sized by windows: a job's window count, window-range parts of long jobs, priorities,
and each worker's torch threads.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

- `jobs.n_windows`: the job's windows (from its plan; NULL where it has none).
- `jobs.parent_id`, `jobs.window_start`, `jobs.window_end`: a *part* is a job row that runs
  the windows [window_start, window_end) of its parent (a job with too many windows for
  one worker's run). Parts are claimed, leased, fenced and requeued as jobs are; they
  are never linked to documents or submissions, and are deleted with their parent.
- `jobs.priority`: higher runs first (0 bulk, 1 a caller waiting for the answer).
- `job_part_results`: a finished part's per-window candidates, until its parent is merged.
- `workers.threads`, `workers.cores`: torch threads of each worker process and the cores
  it may use, so `docqa status` can tell when the workers of a host oversubscribe it.

Self-contained on purpose (no import of docqa.storage.models).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("n_windows", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("window_start", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("window_end", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("priority", sa.Integer(), nullable=False, server_default="0"))
        batch.create_foreign_key("fk_jobs_parent_id_jobs", "jobs", ["parent_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_jobs_parent_id", ["parent_id"])
    op.create_index("ix_jobs_urgent", "jobs", ["priority", "id"], sqlite_where=sa.text("status = 'queued' AND priority > 0"),
                    postgresql_where=sa.text("status = 'queued' AND priority > 0"))
    # Window counts of the jobs that have a plan: the JSON array's length.
    op.execute(
        "UPDATE jobs SET n_windows = (SELECT json_array_length(p.windows"
        + ("::json" if op.get_bind().dialect.name == "postgresql" else "")
        + ") FROM job_plans p WHERE p.job_id = jobs.id)"
    )
    op.create_table(
        "job_part_results",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_part_results_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_part_results"),
    )
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("threads", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("cores", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_column("cores")
        batch.drop_column("threads")
    op.drop_table("job_part_results")
    op.execute("DELETE FROM jobs WHERE parent_id IS NOT NULL")
    op.drop_index("ix_jobs_urgent", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_index("ix_jobs_parent_id")
        batch.drop_constraint("fk_jobs_parent_id_jobs", type_="foreignkey")
        batch.drop_column("priority")
        batch.drop_column("window_end")
        batch.drop_column("window_start")
        batch.drop_column("parent_id")
        batch.drop_column("n_windows")
