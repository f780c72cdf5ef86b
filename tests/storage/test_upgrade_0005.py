"""Upgrading a store the 0005 release filled: answers, jobs and texts are kept, and results
are reported per document, including the documents 0005 had collapsed into one text row.

The store is tests/fixtures/store-0005.db, made by the release's own `docqa run`
(tests/fixtures/make_store_0005.py says how and what it holds). On SQLite the test
upgrades a copy of the file; on PostgreSQL it migrates an empty database to 0005, copies
every row of the file into it, then upgrades that.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy import Engine, select, text

from docqa.core.params import AnswerParams
from docqa.storage.db import alembic_config, current_revision, head_revision, make_engine, upgrade
from docqa.storage.models import Document
from docqa.storage.repository import Repository

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "store-0005.db"
# The inputs make_store_0005.py gave the release (absolute paths, as the store records them).
DOCS = "/tmp/docqa-0005-inputs/docs"
A_TXT, B_TXT, C_TXT = f"{DOCS}/a.txt", f"{DOCS}/b.txt", f"{DOCS}/c.txt"
TRUST_1_SOURCE = f"{DOCS}/trust.jsonl:1"
QUESTIONS = {"Who holds the copyright?", "What is licensed?"}
ANSWER_COLUMNS = "id, job_id, rank, text, score, char_start, char_end"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services)])
def store_0005(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of a store at revision 0005 holding the fixture's rows."""
    copy = tmp_path / "store-0005.db"
    shutil.copyfile(FIXTURE, copy)
    if request.param == "sqlite":
        return f"sqlite:///{copy}"
    url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0005")
        _copy_rows(copy, engine)
    finally:
        engine.dispose()
    return url


def _copy_rows(sqlite_file: Path, engine: Engine) -> None:
    """Every row of every table of `sqlite_file` into the (0005) PostgreSQL database, in
    foreign-key order, replacing what its migrations wrote (store_info, leaders); then each
    serial id's sequence moved past the copied ids."""
    meta = sa.MetaData()
    meta.reflect(bind=engine)
    tables = [t for t in meta.sorted_tables if t.name != "alembic_version"]
    with contextlib.closing(sqlite3.connect(sqlite_file)) as source, engine.begin() as conn:
        names = {r[0] for r in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert names - {"alembic_version", "sqlite_sequence"} == {t.name for t in tables}
        for table in reversed(tables):
            conn.execute(table.delete())
        for table in tables:
            columns = list(table.columns)
            for column in columns:
                if isinstance(column.type, sa.JSON):  # SQL NULL stays NULL, not JSON null
                    column.type = sa.JSON(none_as_null=True)
            query = f"SELECT {', '.join(c.name for c in columns)} FROM {table.name} ORDER BY rowid"
            rows = [
                {c.name: _value(c.type, v) for c, v in zip(columns, row)} for row in source.execute(query)
            ]
            if rows:
                conn.execute(table.insert(), rows)
        for table in tables:
            if "id" in table.columns and [c.name for c in table.primary_key] == ["id"]:
                sequence = conn.execute(text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table.name}).scalar()
                if sequence is not None:
                    conn.execute(
                        text(f"SELECT setval(:s, (SELECT max(id) FROM {table.name})) "
                             f"WHERE EXISTS (SELECT 1 FROM {table.name})"),
                        {"s": sequence},
                    )


def _value(column_type, value):
    """A SQLite value as PostgreSQL's column wants it (SQLite keeps booleans as 0/1, JSON and
    timestamps as text; timestamps are UTC)."""
    if value is None:
        return None
    if isinstance(column_type, sa.Boolean):
        return bool(value)
    if isinstance(column_type, sa.JSON):
        return json.loads(value)
    if isinstance(column_type, sa.DateTime):
        stamp = datetime.fromisoformat(value)
        return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp
    return value


@pytest.fixture
def upgraded(store_0005: str) -> Iterator[tuple[Engine, dict]]:
    """(engine of the upgraded store, what the 0005 store held before the upgrade)."""
    engine = make_engine(store_0005)
    try:
        assert current_revision(engine) == "0005"
        with engine.connect() as conn:
            before = {
                "answers": _rows(conn, f"SELECT {ANSWER_COLUMNS} FROM answers ORDER BY id"),
                "jobs": _rows(conn, "SELECT id, status FROM jobs ORDER BY id"),
                "texts": conn.execute(text("SELECT count(*) FROM documents")).scalar_one(),
            }
        upgrade(engine)
        assert current_revision(engine) == head_revision()
        yield engine, before
    finally:
        engine.dispose()


def _rows(conn, query: str) -> list[tuple]:
    return [tuple(r) for r in conn.execute(text(query))]


def test_answers_jobs_and_texts_are_kept(upgraded) -> None:
    engine, before = upgraded
    assert before["answers"] and before["texts"] == 6  # the fixture's six distinct texts
    with engine.connect() as conn:
        assert _rows(conn, f"SELECT {ANSWER_COLUMNS} FROM answers ORDER BY id") == before["answers"]
        assert _rows(conn, "SELECT id, status FROM jobs ORDER BY id") == before["jobs"]
        assert conn.execute(text("SELECT count(*) FROM texts")).scalar_one() == before["texts"]
        # Each job belongs to the text its 0005 document row was (ids kept).
        assert conn.execute(text("SELECT count(*) FROM jobs j LEFT JOIN texts t ON t.id = j.text_id "
                                 "WHERE t.id IS NULL")).scalar_one() == 0


def test_results_are_per_document(upgraded) -> None:
    engine, _before = upgraded
    repo = Repository.from_engine(engine)
    every = list(repo.iter_results(all_versions=True))
    by_document: dict[int, list] = {}
    for r in every:
        by_document.setdefault(r.document_id, []).append(r)

    # b.txt shared a.txt's first text (one 0005 row, whose source was a.txt): its results
    # are under its own path now, one per question.
    [b_doc] = _path_documents(repo, B_TXT)
    assert {r.document_source for r in by_document[b_doc]} == {B_TXT}
    assert {r.question for r in by_document[b_doc]} == QUESTIONS
    assert [r.document_version for r in by_document[b_doc]] == [1, 1]
    # a.txt: version 1 (the shared text, superseded) and version 2; latest results show 2 only.
    a_docs = _path_documents(repo, A_TXT)
    assert sorted(r.document_version for d in a_docs for r in by_document[d]) == [1, 1, 2, 2]
    assert {r.document_source for d in a_docs for r in by_document[d]} == {A_TXT}
    latest_a = list(repo.iter_results(document_ids=a_docs))
    assert {r.question for r in latest_a} == QUESTIONS
    assert {(r.document_version, r.superseded) for r in latest_a} == {(2, False)}
    a1, a2 = sorted(a_docs, key=lambda d: by_document[d][0].document_version)
    assert repo.document(a1).text_id == repo.document(b_doc).text_id != repo.document(a2).text_id
    [c_doc] = _path_documents(repo, C_TXT)
    assert {r.document_source for r in by_document[c_doc]} == {C_TXT}

    # trust-1 and trust-2 shared one text (one 0005 row: trust-1's line, metadata {"n": 1}):
    # each is a document of its own with its own id. Collapsed rows cannot be split after the
    # fact: an id's source and metadata are what its text was first stored with, so trust-2
    # shows trust-1's line and {"n": 1}, not the {"n": 2} it was submitted with.
    trust = {}
    for ext in ("trust-1", "trust-2", "trust-3"):
        [doc] = repo.resolve_external_id(ext)
        trust[ext] = doc
        assert {r.document_external_id for r in by_document[doc]} == {ext}
        assert {r.question for r in by_document[doc]} == QUESTIONS
    assert len(set(trust.values())) == 3
    assert {r.document_metadata["n"] for r in by_document[trust["trust-1"]]} == {1}
    assert {r.document_metadata["n"] for r in by_document[trust["trust-2"]]} == {1}  # first stored with
    assert {r.document_source for r in by_document[trust["trust-2"]]} == {TRUST_1_SOURCE}  # first stored with
    assert {r.document_metadata["n"] for r in by_document[trust["trust-3"]]} == {3}
    assert {r.answer_id for r in by_document[trust["trust-1"]]} == {r.answer_id for r in by_document[trust["trust-2"]]}

    # The text piped on stdin: a document without id or path, under source "stdin".
    [stdin_doc] = _source_documents(repo, "stdin")
    assert {(r.document_source, r.document_external_id, r.document_version) for r in by_document[stdin_doc]} == {
        ("stdin", None, None)
    }
    assert {r.question for r in by_document[stdin_doc]} == QUESTIONS

    # Every document has its two answers; every answer of 0005 is reported.
    assert set(by_document) == {b_doc, *a_docs, c_doc, *trust.values(), stdin_doc}
    assert all(len(records) == 2 for records in by_document.values())
    with engine.connect() as conn:
        answer_ids = set(conn.execute(text("SELECT id FROM answers")).scalars())
    assert {r.answer_id for r in every} == answer_ids
    # Submissions: the first gave a.txt version 1, b, c and the three ids; the last, stdin.
    assert sorted(repo.documents_of_submission(1)) == sorted([a1, b_doc, c_doc, *trust.values()])
    assert repo.documents_of_submission(3) == [stdin_doc]


def test_offsets_select_the_answer_in_each_documents_text(upgraded) -> None:
    engine, _before = upgraded
    repo = Repository.from_engine(engine)
    records = list(repo.iter_results(all_versions=True))
    assert len(records) == 16  # eight documents (a.txt twice, b, c, three ids, stdin), two questions each
    for r in records:
        assert repo.document(r.document_id).text[r.char_start:r.char_end] == r.text, r


def test_the_upgraded_store_takes_new_versions_and_deletions(upgraded) -> None:
    engine, _before = upgraded
    repo = Repository.from_engine(engine)
    a_answers_before = _answers_of(repo, A_TXT)
    v3 = repo.add_document("Copyright 2026 a third owner.", source=A_TXT, version_key=f"path:{A_TXT}")
    assert (v3.created, v3.version, v3.changed, v3.text_created) == (True, 3, True, True)
    assert len(_path_documents(repo, A_TXT)) == 3 and repo.document(v3.id).latest
    # Ids of the new rows do not collide with the copied ones (sequences moved on).
    [(_job, created)] = repo.add_jobs(v3.id, ["Who holds the copyright?"], model="m", revision=None,
                                        params=AnswerParams())
    assert created is True

    # b.txt goes; the work it shared with a.txt version 1 stays, and a.txt's answers with it.
    [b_doc] = _path_documents(repo, B_TXT)
    deleted = repo.delete_documents([b_doc])
    assert (deleted.documents, deleted.jobs, deleted.answers, deleted.texts) == (1, 0, 0, 0)
    assert _path_documents(repo, B_TXT) == []
    assert _answers_of(repo, A_TXT) == a_answers_before
    assert all(r.document_source != B_TXT for r in repo.iter_results(all_versions=True))


def _path_documents(repo: Repository, path: str) -> list[int]:
    """Every version of the file the release read at `path` (its key as stored, so where /tmp
    is a symlink, e.g. macOS, the lookup does not resolve it to another path)."""
    with repo._read() as session:
        return sorted(session.execute(select(Document.id).where(Document.key == f"path:{path}")).scalars())


def _source_documents(repo: Repository, source: str) -> list[int]:
    with repo._read() as session:
        return sorted(session.execute(select(Document.id).where(Document.source == source)).scalars())


def _answers_of(repo: Repository, path: str) -> list[tuple[int, int]]:
    """(document id, answer id) of every record of every version of the file at `path`."""
    return sorted((r.document_id, r.answer_id)
                  for r in repo.iter_results(all_versions=True, document_ids=_path_documents(repo, path)))
