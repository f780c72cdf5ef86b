"""Passages and their full-text index: what corpus questions retrieve.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

- `passages`: character ranges of each text (`docqa.core.passages.split_passages`),
  covering it end to end; deleted with their text.
- PostgreSQL: `passages.tsv`, the passage's tsvector (english configuration), with a GIN
  index. SQLite: the FTS5 table `passages_fts` (porter stemming over unicode61, rowid =
  passages.id, holding the passage's text), whose rows a trigger deletes with their passage.
- Every stored text is split and indexed here, 500 texts per statement batch.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from docqa.core.passages import split_passages

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_BATCH = 500


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "passages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text_id", sa.Integer(), nullable=False),
        sa.Column("char_start", sa.Integer(), nullable=False),
        sa.Column("char_end", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["text_id"], ["texts.id"], name="fk_passages_text_id_texts", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_passages"),
    )
    op.create_index("ix_passages_text_id", "passages", ["text_id"])
    if postgres:
        op.execute("ALTER TABLE passages ADD COLUMN tsv tsvector NOT NULL")
        op.execute("CREATE INDEX ix_passages_tsv ON passages USING gin (tsv)")
    else:
        op.execute("CREATE VIRTUAL TABLE passages_fts USING fts5(body, tokenize = 'porter unicode61 remove_diacritics 2')")
        op.execute("CREATE TRIGGER passages_fts_delete AFTER DELETE ON passages "
                   "BEGIN DELETE FROM passages_fts WHERE rowid = old.id; END")
    _index_stored_texts(postgres)


def _index_stored_texts(postgres: bool) -> None:
    from docqa.storage.passages import index_passages

    bind = op.get_bind()
    after = 0
    while True:
        rows = bind.execute(sa.text("SELECT id, text FROM texts WHERE id > :after ORDER BY id LIMIT :n"),
                            {"after": after, "n": _BATCH}).all()
        for text_id, text in rows:
            index_passages(bind, postgres, text_id, split_passages(text))
        if len(rows) < _BATCH:
            return
        after = rows[-1][0]


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        op.execute("DROP TRIGGER passages_fts_delete")
        op.execute("DROP TABLE passages_fts")
    op.drop_index("ix_passages_text_id", table_name="passages")
    op.drop_table("passages")
