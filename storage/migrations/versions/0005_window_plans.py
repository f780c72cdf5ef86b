"""Tokens and window plans made by the producer, so workers only compute.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

- `document_tokens`: a document's tokenization under one tokenizer (keyed by the sha256
  of the tokenizer's definition), compact bytes (docqa.core.windows.encode_tokens).
- `job_plans`: a job's windows fixed at submit: the tokenizer, the question's token
  count, and each window's token and character range (JSON [[ts, te, cs, ce], ...]).

- `answers.sort_margin`: the answer's margin, or -1e308 where it has none (the null answer,
  answers stored before 0003), NOT NULL so that (sort_margin, id) and (score, id) indexes
  page answers "best first" by keyset in either order without sorting the whole table.

Jobs without a plan (older stores, a producer that could not load the tokenizer) are
windowed by the worker, as before.

Self-contained on purpose (no import of docqa.storage.models).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "document_tokens",
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("tokenizer", sa.String(length=64), nullable=False),
        sa.Column("n_tokens", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name="fk_document_tokens_document_id_documents", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("document_id", "tokenizer", name="pk_document_tokens"),
    )
    op.create_table(
        "job_plans",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("tokenizer", sa.String(length=64), nullable=False),
        sa.Column("question_tokens", sa.Integer(), nullable=False),
        sa.Column("windows", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_job_plans_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("job_id", name="pk_job_plans"),
    )


    with op.batch_alter_table("answers") as batch:
        batch.add_column(sa.Column("sort_margin", sa.Double(), nullable=False, server_default="-1e308"))
    op.execute(
        "UPDATE answers SET sort_margin = start_logit + end_logit - null_start_logit - null_end_logit "
        "WHERE start_logit IS NOT NULL AND end_logit IS NOT NULL AND null_start_logit IS NOT NULL "
        "AND null_end_logit IS NOT NULL"
    )
    op.create_index("ix_answers_sort_margin", "answers", ["sort_margin", "id"])
    op.create_index("ix_answers_score", "answers", ["score", "id"])


def downgrade() -> None:
    op.drop_index("ix_answers_score", table_name="answers")
    op.drop_index("ix_answers_sort_margin", table_name="answers")
    with op.batch_alter_table("answers") as batch:
        batch.drop_column("sort_margin")
    op.drop_table("job_plans")
    op.drop_table("document_tokens")
