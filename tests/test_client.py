"""docqa.Client in embedded mode: the same code path as `docqa run`, from Python."""

from __future__ import annotations

from pathlib import Path

import pytest

import docqa
from docqa.client import SubmitError

TEXT = "The Seine flows through Paris. The tower was designed by Gustave Eiffel in 1889."


@pytest.fixture
def client(tmp_path, tiny_model):
    return docqa.Client(f"sqlite:///{tmp_path / 'store.db'}", model=tiny_model, device="cpu")


def test_submit_str_path_and_mapping_then_read_answers(client, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Bridges and canals carried coal north to the sea.", encoding="utf-8")
    docs = [TEXT, Path(folder), {"id": "m1", "text": "Zürich café owners watched.", "metadata": {"lang": "en"},
                                 "questions": ["Who watched?"]}]
    sub = client.submit(docs, ["Who designed the tower?"], top_k=2)
    assert client.embedded
    assert sub.summary.documents == 3 and sub.summary.new_jobs == 4 and sub.summary.errors == ()
    assert sub.progress() == docqa.client.Progress(queued=0, running=0, done=4, failed=0)
    assert sub.wait(timeout=1).finished
    records = list(sub.answers())
    assert {r.job_id for r in records} and len({r.job_id for r in records}) == 4
    assert {r.rank for r in records} <= {0, 1}
    texts = {TEXT, "Bridges and canals carried coal north to the sea.", "Zürich café owners watched."}
    for r in records:
        assert any(t[r.char_start : r.char_end] == r.text for t in texts)
    assert {r.document_external_id for r in records} >= {"m1"}


def test_submitting_again_costs_nothing_and_bad_documents_are_reported(client):
    first = client.submit([TEXT], "Where?")
    again = client.submit([TEXT, {"text": 42}, ""], "Where?")
    assert again.summary.new_jobs == 0 and again.summary.existing_jobs == 1
    assert len(again.summary.errors) == 2 and "has no \"text\" string" in again.summary.errors[0]
    assert [r.answer_id for r in again.answers()] == [r.answer_id for r in first.answers()]
    assert client.submission(first.id).progress().done == 1
    with pytest.raises(LookupError):
        client.submission(999)


def test_bad_parameters_are_refused_before_anything_is_stored(client):
    with pytest.raises(SubmitError, match="top_k"):
        client.submit([TEXT], "Where?", top_k=0)
    with pytest.raises(SubmitError, match="over the limit"):
        client.submit([TEXT], "x" * 5000)


def test_a_sqlite_store_with_a_broker_is_refused(tmp_path, tiny_model):
    c = docqa.Client(f"sqlite:///{tmp_path / 's.db'}", "redis://127.0.0.1:6379/15", model=tiny_model)
    assert not c.embedded
    with pytest.raises(SubmitError, match="SQLite store with a broker"):
        c.submit([TEXT], "Where?")


def test_answers_filter_by_document_reference_question_and_rank_and_rank_documents(client, tmp_path):
    docs = [{"id": "paris", "text": TEXT, "metadata": {"city": "Paris"}},
            {"id": "rhine", "text": "The Rhine flows to the North Sea past Cologne."},
            {"id": "coal", "text": "Barges carried coal and grain north along the canals."}]
    client.submit(docs, ["Where does it flow?", "Who designed it?"], top_k=2)
    paris = list(client.answers(document="paris"))
    assert paris and {r.document_external_id for r in paris} == {"paris"}
    assert paris[0].document_metadata == {"city": "Paris"} and paris[0].params["top_k"] == 2
    flow = list(client.answers(question="Where does it flow?", rank=0))
    assert len(flow) == 3 and {r.question for r in flow} == {"Where does it flow?"} and {r.rank for r in flow} == {0}
    best = client.best_documents("Where does it flow?", top=2)
    assert len(best) == 2 and best[0].margin >= best[1].margin
    margins = sorted((r.margin for r in flow), reverse=True)
    assert [r.margin for r in best] == margins[:2]
    assert list(client.answers(document="no-such-doc")) == []


def test_document_problems_names_the_unusable_documents_and_stores_nothing(tmp_path, tiny_model):
    url = f"sqlite:///{tmp_path / 'never.db'}"
    client = docqa.Client(url, model=tiny_model)
    problems = client.document_problems(["fine", "nul \x00 here", {"id": "m", "text": "t", "metadata": {"k": "\x00"}},
                                         42])
    assert [p.split(":")[0] for p in problems] == ["document 1", "document m", "document 3"], problems
    assert client.document_problems(["fine", {"id": "x", "text": "also fine"}]) == []
    assert not (tmp_path / "never.db").exists()  # read, not stored
