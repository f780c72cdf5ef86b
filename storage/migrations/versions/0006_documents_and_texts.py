"""Documents and texts: every submitted item is a document of its own; its text is stored once.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02

Up to 0005 a `documents` row was a distinct text: documents that shared a text collapsed
into one row, which kept the first one's source, id and metadata. From 0006:

- `texts` (the 0005 `documents` table renamed, same ids): id, sha256, text, length.
  Jobs (`jobs.text_id`) and tokens (`text_tokens`, was `document_tokens`) belong to texts.
- `documents`: one row per submitted item and version: its key ("id:<id>", "path:<file>"
  or "anon:<digest of source and text>"), version, latest flag, source, external id,
  metadata, text. It replaces `document_versions`.
- `document_jobs`: which document asked which job's question; answers are reported once
  per link. `submission_documents`: the documents each submission gave.
- `submissions.texts` / `new_texts`: distinct texts per submission, and new ones.
- `jobs.lost_in_batch`: the job's first loss (its worker died) came while it ran with
  others, so that attempt is no evidence that the job itself kills workers.

What an upgraded store shows for rows 0005 had collapsed (they cannot be split after the
fact): each version of an id or path becomes a document with that id or path; an id's
source and every id's metadata are those its text was first stored with. A text stored
without an id or path becomes one document under the source it was first stored with.
Every document of a text is linked to all of that text's jobs, and a submission lists
every document (created before it ended) whose text it asked about.

Self-contained on purpose (no import of docqa.storage.models). SQLite tables are rebuilt
by Alembic's batch mode, which `docqa.storage.db` runs with foreign keys switched off
(and checked before commit), as SQLite's own procedure for altering tables says.
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

CHUNK = 500


def _postgres() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def anonymous_key(source: str, text_sha256: str) -> str:
    """The key of a document with no id and no path (as docqa.storage.identity makes it)."""
    return "anon:" + hashlib.sha256(f"{source}\n{text_sha256}".encode("utf-8")).hexdigest()


def upgrade() -> None:
    # 1. The 0005 documents table becomes `texts` (ids kept; per-document columns dropped in 5).
    op.rename_table("documents", "texts")
    if _postgres():
        op.execute("ALTER TABLE texts RENAME CONSTRAINT pk_documents TO pk_texts")
        op.execute("ALTER TABLE texts RENAME CONSTRAINT uq_documents_sha256 TO uq_texts_sha256")
        op.execute("ALTER SEQUENCE documents_id_seq RENAME TO texts_id_seq")
    _create_documents()
    _create_links()
    # 2. Documents from the versions 0004 recorded, then one per text stored without a key.
    _copy_versions()
    _copy_unversioned()
    # 3. Links: every document of a text asked that text's jobs; submissions gave the
    #    documents of the texts they asked about (those that existed when they ended).
    op.execute(
        "INSERT INTO document_jobs (document_id, job_id) "
        "SELECT d.id, j.id FROM documents d JOIN jobs j ON j.document_id = d.text_id ORDER BY d.id, j.id"
    )
    op.execute(
        "INSERT INTO submission_documents (submission_id, document_id) "
        "SELECT DISTINCT sj.submission_id, d.id FROM submission_jobs sj "
        "JOIN jobs j ON j.id = sj.job_id JOIN documents d ON d.text_id = j.document_id "
        "JOIN submissions s ON s.id = sj.submission_id "
        "WHERE s.finished_at IS NULL OR d.created_at <= s.finished_at"
    )
    op.drop_index("uq_document_versions_latest_key", table_name="document_versions")
    op.drop_index("ix_document_versions_document_id", table_name="document_versions")
    op.drop_table("document_versions")
    # 4. Jobs and tokens point at texts.
    _retarget_jobs_and_tokens()
    # 5. Texts keep the text alone.
    with op.batch_alter_table("texts") as batch:
        for column in ("source", "external_id", "metadata", "version", "superseded_at"):
            batch.drop_column(column)
        if not _postgres():  # the rebuilt table takes the new names
            batch.drop_constraint("uq_documents_sha256", type_="unique")
            batch.create_unique_constraint("uq_texts_sha256", ["sha256"])
    with op.batch_alter_table("submissions") as batch:
        batch.add_column(sa.Column("texts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("new_texts", sa.Integer(), nullable=False, server_default="0"))
    # 6. A job's first loss in a batch is no evidence that it kills workers.
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("lost_in_batch", sa.Boolean(), nullable=False, server_default=sa.text("false")))


def _create_documents() -> None:
    op.create_table(
        "documents",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("text_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("latest", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=True),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("metadata", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["text_id"], ["texts.id"], name="fk_documents_text_id_texts"),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.UniqueConstraint("key", "version", name="uq_documents_key"),
    )
    op.create_index("ix_documents_text_id", "documents", ["text_id"])
    op.create_index("ix_documents_source", "documents", ["source"])
    op.create_index(
        "uq_documents_latest_key", "documents", ["key"], unique=True,
        sqlite_where=sa.text("latest"), postgresql_where=sa.text("latest"),
    )


def _create_links() -> None:
    op.create_table(
        "document_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name="fk_document_jobs_document_id_documents", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_document_jobs_job_id_jobs", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name="pk_document_jobs"),
        sa.UniqueConstraint("document_id", "job_id", name="uq_document_jobs_document_id"),
    )
    op.create_index("ix_document_jobs_job_id", "document_jobs", ["job_id"])
    op.create_table(
        "submission_documents",
        sa.Column("submission_id", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["submission_id"], ["submissions.id"], name="fk_submission_documents_submission_id_submissions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["document_id"], ["documents.id"], name="fk_submission_documents_document_id_documents", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("submission_id", "document_id", name="pk_submission_documents"),
    )
    op.create_index("ix_submission_documents_document_id", "submission_documents", ["document_id"])


def _copy_versions() -> None:
    # A path version's source is its path, an id version's id is its id; an id version's
    # source and every version's metadata are what its text was first stored with.
    op.execute(
        "INSERT INTO documents (text_id, key, version, latest, source, external_id, metadata, created_at, "
        "superseded_at) "
        "SELECT v.document_id, v.key, v.version, v.latest, "
        "CASE WHEN v.key LIKE 'path:%' THEN substr(v.key, 6) ELSE COALESCE(t.source, 'document ' || t.id) END, "
        "CASE WHEN v.key LIKE 'id:%' THEN substr(v.key, 4) END, t.metadata, v.created_at, "
        "CASE WHEN v.latest THEN NULL ELSE (SELECT min(w.created_at) FROM document_versions w "
        "WHERE w.key = v.key AND w.version > v.version) END "
        "FROM document_versions v JOIN texts t ON t.id = v.document_id ORDER BY v.id"
    )


def _copy_unversioned() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT t.id, COALESCE(t.source, 'document ' || t.id), t.sha256 FROM texts t "
        "WHERE NOT EXISTS (SELECT 1 FROM document_versions v WHERE v.document_id = t.id) ORDER BY t.id"
    )).all()
    insert = sa.text(
        "INSERT INTO documents (text_id, key, version, latest, source, external_id, metadata, created_at) "
        "SELECT t.id, :key, NULL, :latest, :source, t.external_id, t.metadata, t.created_at FROM texts t "
        "WHERE t.id = :text_id"
    )
    for start in range(0, len(rows), CHUNK):
        bind.execute(insert, [
            {"key": anonymous_key(source, digest), "latest": True, "source": source, "text_id": text_id}
            for text_id, source, digest in rows[start:start + CHUNK]
        ])


def _retarget_jobs_and_tokens() -> None:
    op.rename_table("document_tokens", "text_tokens")
    if _postgres():
        op.execute("ALTER TABLE jobs RENAME COLUMN document_id TO text_id")
        op.execute("ALTER TABLE jobs RENAME CONSTRAINT fk_jobs_document_id_documents TO fk_jobs_text_id_texts")
        op.execute("ALTER TABLE text_tokens RENAME COLUMN document_id TO text_id")
        op.execute("ALTER TABLE text_tokens RENAME CONSTRAINT pk_document_tokens TO pk_text_tokens")
        op.execute("ALTER TABLE text_tokens RENAME CONSTRAINT fk_document_tokens_document_id_documents "
                   "TO fk_text_tokens_text_id_texts")
        return
    _rename_column("jobs", "document_id", "text_id", "fk_jobs_document_id_documents", "fk_jobs_text_id_texts",
                   "texts", unique=("uq_jobs_identity", ["question_sha256", "model", "revision", "params_digest"]))
    _rename_column("text_tokens", "document_id", "text_id", "fk_document_tokens_document_id_documents",
                   "fk_text_tokens_text_id_texts", "texts")


def _rename_column(table: str, old: str, new: str, old_fk: str, new_fk: str, parent: str, unique=None) -> None:
    """SQLite: rebuild `table` with column `old` renamed `new`, its foreign key renamed and
    pointing at `parent`, and the unique constraint (name, other columns) that leads with it."""
    with op.batch_alter_table(table, recreate="always") as batch:
        batch.drop_constraint(old_fk, type_="foreignkey")
        if unique is not None:
            batch.drop_constraint(unique[0], type_="unique")
        batch.alter_column(old, new_column_name=new, existing_type=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table(table, recreate="always") as batch:
        batch.create_foreign_key(new_fk, parent, [new], ["id"], ondelete="CASCADE")
        if unique is not None:
            batch.create_unique_constraint(unique[0], [new, *unique[1]])


def downgrade() -> None:
    """Back to 0005: documents that share a text collapse into one row again (the first one's
    source, id and metadata); versions of ids and paths are kept, unnamed documents' keys go."""
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("lost_in_batch")
    with op.batch_alter_table("submissions") as batch:
        batch.drop_column("new_texts")
        batch.drop_column("texts")
    op.rename_table("documents", "documents_0006")
    op.create_table(
        "document_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document_id", sa.Integer(), nullable=False),
        sa.Column("latest", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["document_id"], ["texts.id"], name="fk_document_versions_document_id_documents", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_document_versions"),
        sa.UniqueConstraint("key", "version", name="uq_document_versions_key"),
    )
    op.execute(
        "INSERT INTO document_versions (key, version, document_id, latest, created_at) "
        "SELECT key, version, text_id, latest, created_at FROM documents_0006 "
        "WHERE key NOT LIKE 'anon:%' ORDER BY id"
    )
    with op.batch_alter_table("texts") as batch:
        batch.add_column(sa.Column("source", sa.Text(), nullable=True))
        batch.add_column(sa.Column("external_id", sa.Text(), nullable=True))
        batch.add_column(sa.Column("metadata", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("version", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
    first = "(SELECT {column} FROM documents_0006 d WHERE d.text_id = texts.id ORDER BY d.id LIMIT 1)"
    op.execute(
        f"UPDATE texts SET source = {first.format(column='source')}, "
        f"external_id = {first.format(column='external_id')}, metadata = {first.format(column='metadata')}, "
        "version = (SELECT max(v.version) FROM document_versions v WHERE v.document_id = texts.id), "
        "superseded_at = CASE WHEN EXISTS (SELECT 1 FROM document_versions v WHERE v.document_id = texts.id) "
        "AND NOT EXISTS (SELECT 1 FROM document_versions v WHERE v.document_id = texts.id AND v.latest) "
        "THEN created_at END"
    )
    op.drop_table("submission_documents")
    op.drop_table("document_jobs")
    op.drop_table("documents_0006")
    op.rename_table("texts", "documents")
    op.rename_table("text_tokens", "document_tokens")
    if _postgres():
        op.execute("ALTER TABLE documents RENAME CONSTRAINT pk_texts TO pk_documents")
        op.execute("ALTER TABLE documents RENAME CONSTRAINT uq_texts_sha256 TO uq_documents_sha256")
        op.execute("ALTER SEQUENCE texts_id_seq RENAME TO documents_id_seq")
        op.execute("ALTER TABLE jobs RENAME COLUMN text_id TO document_id")
        op.execute("ALTER TABLE jobs RENAME CONSTRAINT fk_jobs_text_id_texts TO fk_jobs_document_id_documents")
        op.execute("ALTER TABLE document_tokens RENAME COLUMN text_id TO document_id")
        op.execute("ALTER TABLE document_tokens RENAME CONSTRAINT pk_text_tokens TO pk_document_tokens")
        op.execute("ALTER TABLE document_tokens RENAME CONSTRAINT fk_text_tokens_text_id_texts "
                   "TO fk_document_tokens_document_id_documents")
    else:
        with op.batch_alter_table("documents", recreate="always") as batch:
            batch.drop_constraint("uq_texts_sha256", type_="unique")
            batch.create_unique_constraint("uq_documents_sha256", ["sha256"])
        _rename_column("jobs", "text_id", "document_id", "fk_jobs_text_id_texts", "fk_jobs_document_id_documents",
                       "documents", unique=("uq_jobs_identity", ["question_sha256", "model", "revision",
                                                                 "params_digest"]))
        _rename_column("document_tokens", "text_id", "document_id", "fk_text_tokens_text_id_texts",
                       "fk_document_tokens_document_id_documents", "documents")
    op.create_index("ix_document_versions_document_id", "document_versions", ["document_id"])
    op.create_index(
        "uq_document_versions_latest_key", "document_versions", ["key"], unique=True,
        sqlite_where=sa.text("latest"), postgresql_where=sa.text("latest"),
    )
