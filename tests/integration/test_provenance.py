"""Provenance per document: documents that share a text keep their own id, path, metadata,
versions and answers, while the text is stored, tokenized and answered once.

Every test here goes through a public surface (docqa.Client, the producer, the command
line, the HTTP API) on a real store, SQLite and PostgreSQL, and the real tiny model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from support import TINY_MODEL, Server, docqa, open_repo

import docqa as docqa_api

SHARED = "Copyright 2024 The Example Authors. Licensed under the Apache License, Version 2.0."
OTHER = "The Seine flows through Paris. The tower was designed by Gustave Eiffel in 1889."
EDITED = "Copyright 2025 Someone Else. All rights reserved, and the river flows north."
Q = "Who holds the copyright?"


@pytest.fixture
def client(store_url):
    return docqa_api.Client(store_url, embedded=True, model=TINY_MODEL, device="cpu")


def _rows(records) -> list[tuple]:
    """(external id or source, version, superseded, answer text) per record, sorted."""
    return sorted(
        (r.document_external_id or r.document_source, r.document_version, r.superseded, r.text) for r in records
    )


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def _forwards(client) -> int:
    """Jobs the store holds: each is one forward pass over its text's windows."""
    return sum(client._repo.counts().values())


def test_two_paths_with_one_text_are_two_documents(client, tmp_path, monkeypatch):
    from docqa.worker.engine import Engine

    forwarded: list[str] = []  # the texts the model was run on
    run = Engine.run
    monkeypatch.setattr(Engine, "run", lambda self, items, *a, **k: forwarded.extend(i.text for i in items) or run(
        self, items, *a, **k))
    a, b = _write(tmp_path, "a.txt", SHARED), _write(tmp_path, "b.txt", SHARED)
    c = _write(tmp_path, "c.txt", OTHER)
    sub = client.submit([a, b, c], Q)
    assert sub.summary.documents == 3 and sub.summary.new_jobs == 2  # two texts: two jobs
    assert (sub.summary.texts, sub.summary.new_texts, sub.summary.questions) == (2, 2, 3)
    assert sorted(forwarded) == sorted([SHARED, OTHER])  # the duplicate document cost no forward pass
    records = list(client.answers())
    assert sorted(r.document_source for r in records) == [str(a), str(b), str(c)]
    # Answers of one text are equal, each under its own document.
    ra, rb = (next(iter(client.answers(document=str(p)))) for p in (a, b))
    assert (ra.document_source, rb.document_source) == (str(a), str(b))
    assert ra.document_id != rb.document_id and (ra.text, ra.char_start) == (rb.text, rb.char_start)
    assert ra.sha256 == rb.sha256 and ra.job_id == rb.job_id
    assert sorted(r.document_source for r in sub.answers()) == [str(a), str(b), str(c)]


def test_two_ids_with_one_text_keep_their_ids_and_metadata(client):
    docs = [{"id": "trust-67", "text": SHARED, "metadata": {"n": 67}},
            {"id": "trust-79", "text": SHARED, "metadata": {"n": 79}},
            {"id": "trust-80", "text": OTHER, "metadata": {"n": 80}}]
    client.submit(docs, Q)
    [r79] = client.answers(document="trust-79")
    assert (r79.document_external_id, r79.document_metadata) == ("trust-79", {"n": 79})
    [r67] = client.answers(document="trust-67")
    assert (r67.document_external_id, r67.document_metadata) == ("trust-67", {"n": 67})
    assert [r.document_external_id for r in client.answers(where={"n": "79"})] == ["trust-79"]
    # Ranked across documents: two documents with one text are two entries.
    top = client.best_documents(Q, top=10)
    assert sorted(r.document_external_id for r in top) == ["trust-67", "trust-79", "trust-80"]


def test_the_same_text_in_two_submissions_belongs_to_each(client):
    first = client.submit([{"id": "A", "text": SHARED}], Q)
    second = client.submit([{"id": "B", "text": SHARED}], Q)
    assert second.summary.new_jobs == 0  # nothing computed again
    assert [r.document_external_id for r in first.answers()] == ["A"]
    assert [r.document_external_id for r in second.answers()] == ["B"]
    assert client._repo.documents_of_submission(second.id) != client._repo.documents_of_submission(first.id)


def test_editing_one_of_two_sharing_files_and_back(client, tmp_path):
    a, b = _write(tmp_path, "a.txt", SHARED), _write(tmp_path, "b.txt", SHARED)
    client.submit([a, b], Q)
    a.write_text(EDITED, encoding="utf-8")
    edited = client.submit([a, b], Q)
    assert edited.summary.changed_documents == 1 and edited.summary.new_jobs == 1
    latest_a = list(client.answers(document=str(a)))
    assert [(r.document_source, r.document_version, r.superseded) for r in latest_a] == [(str(a), 2, False)]
    assert EDITED[latest_a[0].char_start:latest_a[0].char_end] == latest_a[0].text
    # b never changed: one answer, its own path, version 1.
    assert [(r.document_source, r.document_version, r.superseded) for r in client.answers(document=str(b))] == [
        (str(b), 1, False)]
    every_a = client.answers(document=str(a), all_versions=True)
    assert sorted((r.document_version, r.superseded) for r in every_a) == [(1, True), (2, False)]
    # Back to the first text: version 3, answered from the stored job (no forward pass).
    jobs_before = _forwards(client)
    a.write_text(SHARED, encoding="utf-8")
    back = client.submit([a], Q)
    assert back.summary.new_jobs == 0 and _forwards(client) == jobs_before
    assert [(r.document_source, r.document_version) for r in client.answers(document=str(a))] == [(str(a), 3)]
    assert sorted(r.document_source for r in client.answers()) == [str(a), str(b)]


def test_deleting_one_of_two_sharing_documents_keeps_the_other(client):
    client.submit([{"id": "A", "text": SHARED}, {"id": "B", "text": SHARED}], Q)
    deleted = client.delete(document="A")
    assert deleted.documents == 1 and deleted.answers == 0  # B still needs the text's answers
    assert list(client.answers(document="A")) == []
    assert [r.document_external_id for r in client.answers(document="B")] == ["B"]
    assert client._repo.counts()["done"] == 1
    gone = client.delete(document="B")
    assert gone.documents == 1 and gone.jobs == 1 and gone.answers == 1  # the last one takes the text
    assert sum(client._repo.counts().values()) == 0


def _submit_shared(url: str, n_docs: int, worker: int, start) -> None:
    """A producer process: documents p<worker>-<i> whose texts come from a small pool."""
    from docqa.core.params import AnswerParams
    from docqa.producer.documents import SourceDocument
    from docqa.producer.submit import submit

    repo = open_repo(url)
    pool = [f"Shared licence text number {k}. It names its authors." for k in range(5)]
    docs = [SourceDocument(source=f"p{worker}-{i}", external_id=f"p{worker}-{i}", text=pool[(i + worker) % 5],
                           metadata={"producer": worker})
            for i in range(n_docs)]
    start.wait(30)
    submit(docs, [Q, "Who are the authors?"], repo=repo, model="m", revision=None, params=AnswerParams())


def test_concurrent_producers_of_shared_texts(store_url):
    from tests.storage.released_together import exit_codes

    assert exit_codes(_submit_shared, (store_url, 12), timeout=120, numbered=True) == [0, 0, 0, 0]
    repo = open_repo(store_url)
    try:
        assert repo.counts()["queued"] == 5 * 2  # five texts, two questions: jobs once per text
        for w in range(4):
            for i in range(12):
                [doc] = repo.resolve_documents(f"p{w}-{i}")
                record = repo.document(doc)
                assert (record.external_id, record.meta) == (f"p{w}-{i}", {"producer": w})
        assert len(repo.documents_of_submission(1)) + len(repo.documents_of_submission(2)) + len(
            repo.documents_of_submission(3)) + len(repo.documents_of_submission(4)) == 48
    finally:
        repo.engine.dispose()


# -- the three surfaces show the same rows ------------------------------------------------------

def _env(tmp_path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", DOCQA_DATABASE_URL=f"sqlite:///{tmp_path / 'docqa.db'}",
               DOCQA_MODEL=TINY_MODEL, DOCQA_DEVICE="cpu")
    return env


def _key(row: dict) -> tuple:
    return (row["document_id"], row["document_source"], row["document_external_id"], row["document_version"],
            row["job_id"], row["text"], row["char_start"], row["char_end"])


def test_cli_http_and_client_show_the_same_rows_and_delete_by_path(tmp_path):
    env = _env(tmp_path)
    docs = tmp_path / "docs"
    a, b, c = _write(docs, "a.txt", SHARED), _write(docs, "b.txt", SHARED), _write(docs, "c.txt", OTHER)
    jsonl = docs / "batch.jsonl"
    jsonl.write_text(json.dumps({"id": "j1", "text": SHARED}) + "\n" + json.dumps({"id": "j2", "text": OTHER}) + "\n",
                     encoding="utf-8")
    run = docqa(["run", str(docs), "-q", Q], env)
    assert run.returncode == 0, run.stderr
    assert "5 documents" in run.stdout and "2 distinct texts" in run.stdout and "already known" not in run.stdout
    cli_rows = [json.loads(line) for line in docqa(["results"], env).stdout.splitlines()]
    assert sorted(r["document_source"] for r in cli_rows if r["document_external_id"] is None) == [
        str(a), str(b), str(c)]
    assert sorted(r["document_external_id"] for r in cli_rows if r["document_external_id"]) == ["j1", "j2"]
    client = docqa_api.Client(env["DOCQA_DATABASE_URL"], model=TINY_MODEL, device="cpu")
    client_rows = [r.as_dict() for r in client.answers()]
    assert sorted(map(_key, cli_rows)) == sorted(map(_key, client_rows))
    [only_b] = [json.loads(x) for x in docqa(["results", "--document", str(b)], env).stdout.splitlines()]
    assert only_b["document_source"] == str(b)

    server = Server(env, tmp_path / "serve.log")
    base = server.base
    try:
        http_rows = httpx.get(base + "/v1/answers", params={"limit": 100}).json()["answers"]
        assert sorted(map(_key, http_rows)) == sorted(map(_key, cli_rows))
        by_path = httpx.get(base + "/v1/answers", params={"document": str(a)}).json()["answers"]
        assert [r["document_source"] for r in by_path] == [str(a)]
        # Delete by path: the ?path= form (a path holds slashes, which a route segment cannot).
        r = httpx.delete(base + "/v1/documents", params={"path": str(a)})
        assert r.status_code == 200, r.text
        assert r.json()["documents"] == 1
        missing = httpx.delete(base + "/v1/documents", params={"path": str(tmp_path / "nowhere.txt")})
        assert missing.status_code == 404 and "nowhere.txt" in missing.json()["detail"]
        assert httpx.delete(base + "/v1/documents", params={"id": "j1"}).json()["documents"] == 1
        # Names docqa made up for unnamed texts ("document 0" of each request) are not keys:
        # they would name unrelated documents of other submissions.
        for text in ("First unnamed text about rivers.", "Second unnamed text about towers."):
            # The first one loads the model in the server: the client waits as long as the server may.
            posted = httpx.post(base + "/v1/submissions?wait=60", json={"documents": [text], "questions": [Q]},
                                timeout=90)
            assert posted.status_code == 200 and posted.json()["finished"], posted.text
        unnamed = httpx.get(base + "/v1/answers", params={"question": Q, "limit": 100}).json()["answers"]
        assert sorted(r["document_source"] for r in unnamed if r["document_source"] == "document 0") == [
            "document 0", "document 0"]
        assert httpx.delete(base + "/v1/documents/document%200").status_code == 404
        one = next(r for r in unnamed if r["document_source"] == "document 0")
        assert httpx.delete(f"{base}/v1/documents/{one['document_id']}").json()["documents"] == 1
        left = httpx.get(base + "/v1/answers", params={"question": Q, "limit": 100}).json()["answers"]
        assert [r["document_source"] for r in left].count("document 0") == 1
        docqa(["delete", "--document", str(next(r for r in left if r["document_source"] == "document 0")
                                             ["document_id"])], env)
    finally:
        server.stop()
    after = [json.loads(line) for line in docqa(["results"], env).stdout.splitlines()]
    assert sorted(r["document_source"] for r in after if r["document_external_id"] is None) == [str(b), str(c)]
    assert [r["document_external_id"] for r in after if r["document_external_id"]] == ["j2"]
    # b kept the shared text's answers although a and j1 (same text) are gone.
    [b_row] = [r for r in after if r["document_source"] == str(b)]
    assert SHARED[b_row["char_start"]:b_row["char_end"]] == b_row["text"]
