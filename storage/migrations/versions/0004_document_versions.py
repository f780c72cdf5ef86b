"""Document versions: the same external id or file path with new content is a new version.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01

- `document_versions` maps a version key ("id:<external id>" or "path:<absolute path>")
  and a version number (1, 2, ...) to the document (text) it had. Exactly one row per key
  is `latest` (a partial unique index says so to the database).
- `document_keys` holds each key's last version number, so numbers are never reused
  while any version of the key is stored (and its row is what concurrent producers of
  one key lock in turn).
- `documents.version` is the version number the document was last recorded as, and
  `documents.superseded_at` is set while none of its version rows is latest: results
  hide such documents unless all versions are asked for.
- `submissions.changed_documents` counts documents whose key got new content;
  `submissions.label` names what made the submission (a schedule's source).

Existing stores: documents with an external id get versions in the order they were
stored (the newest is latest; older ones become superseded). File paths stored before
this revision were kept as given (maybe relative), so they start versioning with their
next submission.

Self-contained on purpose (no import of docqa.storage.models).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "document_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("latest", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name="fk_document_versions_document_id_documents", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_document_versions"),
        sa.UniqueConstraint("key", "version", name="uq_document_versions_key"),
    )
    op.create_index("ix_document_versions_document_id", "document_versions", ["document_id"])
    op.create_table(
        "document_keys",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("last_version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_document_keys"),
    )
    op.create_index(
        "uq_document_versions_latest_key",
        "document_versions",
        ["key"],
        unique=True,
        sqlite_where=sa.text("latest"),
        postgresql_where=sa.text("latest"),
    )
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("changed_documents", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("label", sa.Text(), nullable=True))
    _backfill_external_ids()


def _backfill_external_ids() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text("SELECT id, external_id FROM documents WHERE external_id IS NOT NULL ORDER BY external_id, id")
    ).all()
    by_key: dict[str, list[int]] = {}
    for doc_id, external_id in rows:
        by_key.setdefault(f"id:{external_id}", []).append(doc_id)
    for key, docs in by_key.items():
        bind.execute(
            sa.text("INSERT INTO document_keys (key, last_version) VALUES (:key, :n)"), {"key": key, "n": len(docs)}
        )
        for n, doc_id in enumerate(docs, start=1):
            latest = n == len(docs)
            # created_at copied in SQL: each dialect keeps its own timestamp format.
            bind.execute(
                sa.text(
                    "INSERT INTO document_versions (key, version, document_id, latest, created_at) "
                    "SELECT :key, :version, id, :latest, created_at FROM documents WHERE id = :doc"
                ),
                {"key": key, "version": n, "latest": latest, "doc": doc_id},
            )
            bind.execute(sa.text("UPDATE documents SET version = :v WHERE id = :d"), {"v": n, "d": doc_id})
    superseded = bind.execute(
        sa.text(
            "SELECT DISTINCT document_id FROM document_versions v WHERE NOT EXISTS "
            "(SELECT 1 FROM document_versions w WHERE w.document_id = v.document_id AND w.latest)"
        )
    ).scalars().all()
    for doc_id in superseded:
        bind.execute(sa.text("UPDATE documents SET superseded_at = created_at WHERE id = :d"), {"d": doc_id})


def downgrade() -> None:
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("label")
        batch.drop_column("changed_documents")
    with op.batch_alter_table("documents") as batch:
        batch.drop_column("superseded_at")
        batch.drop_column("version")
    op.drop_table("document_keys")
    op.drop_index("uq_document_versions_latest_key", table_name="document_versions")
    op.drop_index("ix_document_versions_document_id", table_name="document_versions")
    op.drop_table("document_versions")
