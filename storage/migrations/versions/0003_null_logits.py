"""Answers keep their window's null (CLS) logits, for a score comparable across windows.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30

`margin = start_logit + end_logit - null_start_logit - null_end_logit` is computed from
these on read. Answers stored before this revision have NULLs (no margin).

Self-contained on purpose (no import of docqa.storage.models).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.add_column(sa.Column("null_start_logit", sa.Double(), nullable=True))
        batch.add_column(sa.Column("null_end_logit", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("answers") as batch:
        batch.drop_column("null_end_logit")
        batch.drop_column("null_start_logit")
