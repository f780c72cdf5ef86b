"""Corpus questions read retrieved passages as a job reads its windows: the same answers,
scores, margins and offsets, ranked across documents by margin."""

from __future__ import annotations

import random

import pytest

import docqa
from docqa.core.params import AnswerParams
from docqa.storage.repository import Repository
from docqa.worker.corpus import ask_corpus
from docqa.worker.engine import QAItem

QUESTION = "Where does the river flow?"
FILLER = ("the tower of iron stood near Paris in 1889 while engineers from Zürich and café owners watched ; "
          "bridges canals and railways carried coal grain wine and people north to the sea").split()


def same_answers(got, want) -> bool:
    """Equal answers: texts, offsets, windows and tokens exactly; scores and logits to float32
    rounding (a window's logits move in the last bits with the batch it is padded into)."""
    assert len(got) == len(want)
    for a, b in zip(got, want):
        x, y = a.model_dump(), b.model_dump()
        floats = {k for k, v in y.items() if isinstance(v, float)}
        assert {k: x[k] for k in x if k not in floats} == {k: y[k] for k in y if k not in floats}
        assert {k: x[k] for k in floats} == pytest.approx({k: y[k] for k in floats}, rel=1e-5, abs=1e-5)
    return True


def river_text(seed: int, words: int) -> str:
    """Prose with 'river' every few words: every passage of it matches the question."""
    rng = random.Random(seed)
    out = []
    for i in range(words):
        out.append("river" if i % 9 == 0 else rng.choice(FILLER))
    return " ".join(out)


def test_when_every_window_is_retrieved_each_document_gets_exactly_its_jobs_answers(engine, store_url):
    repo = Repository.open(store_url)
    params = AnswerParams(top_k=3)
    texts = {f"d{i}": river_text(i, n) for i, n in enumerate((12, 150, 900, 2500))}  # 1 to ~10 windows
    for ext, text in texts.items():
        repo.add_document(text, external_id=ext)
    result = ask_corpus(engine, repo, QUESTION, params=params, windows=512, top=100)
    assert not result.errors and result.texts == len(texts)
    for ext, text in texts.items():
        job = engine.run([QAItem(text, QUESTION, params)])[0]
        got = sorted((a.answer for a in result.answers if a.external_id == ext), key=lambda a: a.rank)
        assert same_answers(got, job.answers), ext  # text, score, offsets, window index, logits: all of it
        assert all(text[a.char_start:a.char_end] == a.text for a in got)
    assert result.windows == sum(engine.run([QAItem(t, QUESTION, params)])[0].n_windows for t in texts.values())
    margins = [a.answer.margin for a in result.answers]
    assert margins == sorted(margins, reverse=True)


def test_a_few_retrieved_passages_read_only_the_windows_over_them(engine, store_url):
    repo = Repository.open(store_url)
    words = FILLER * 60  # no 'river' anywhere ...
    text = " ".join(words[:1200] + ["the", "river", "Seine", "flows", "west"] + words[1200:])  # ... but here
    repo.add_document(text, external_id="long")
    params = AnswerParams()
    result = ask_corpus(engine, repo, QUESTION, params=params, windows=4, top=5)
    full = engine.run([QAItem(text, QUESTION, params)])[0].n_windows
    assert result.passages == 1 and 1 <= result.windows <= 3 < full
    (entry,) = result.answers
    a = entry.answer
    assert text[a.char_start:a.char_end] == a.text
    river = text.index("river Seine")
    assert a.window_char_start <= river < a.window_char_end  # a window over the retrieved passage


def test_documents_sharing_a_text_each_get_the_answer_and_filters_hold(engine, store_url):
    repo = Repository.open(store_url)
    shared = river_text(1, 60)
    repo.add_document(shared, external_id="a", metadata={"lang": "en"})
    repo.add_document(shared, external_id="b", metadata={"lang": "de"})
    repo.add_document(river_text(2, 60), external_id="c", metadata={"lang": "en"})
    result = ask_corpus(engine, repo, QUESTION, params=AnswerParams(), windows=32, top=10)
    by_ext = {e.external_id: e for e in result.answers}
    assert set(by_ext) == {"a", "b", "c"}
    assert by_ext["a"].answer == by_ext["b"].answer and by_ext["a"].text_id == by_ext["b"].text_id
    en = ask_corpus(engine, repo, QUESTION, params=AnswerParams(), where={"lang": "en"})
    assert {e.external_id for e in en.answers} == {"a", "c"}
    assert ask_corpus(engine, repo, QUESTION, params=AnswerParams(), top=1).answers == result.answers[:1]
    assert ask_corpus(engine, repo, "zeppelin?", params=AnswerParams()).answers == []


def test_the_client_answers_a_corpus_question_as_its_stored_jobs_answered(tmp_path, tiny_model):
    client = docqa.Client(f"sqlite:///{tmp_path / 'store.db'}", model=tiny_model, device="cpu")
    docs = [{"id": f"d{i}", "text": river_text(10 + i, 40 + 200 * i), "metadata": {"n": i}} for i in range(4)]
    client.submit(docs, [QUESTION])
    stored = {r.document_external_id: r for r in client.answers(question=QUESTION)}
    result = client.ask_corpus(QUESTION, windows=200, top=10)
    assert {e.external_id for e in result.answers} == set(stored) == {d["id"] for d in docs}
    for e in result.answers:
        r = stored[e.external_id]
        assert (e.answer.text, e.answer.char_start, e.answer.char_end, e.answer.window_index) == (
            r.text, r.char_start, r.char_end, r.window_index)
        assert (e.answer.score, e.answer.margin) == pytest.approx((r.score, r.margin), rel=1e-5, abs=1e-5)
    assert [e.external_id for e in client.ask_corpus(QUESTION, where={"n": 2}).answers] == ["d2"]
    for bad, message in [(dict(windows=0), "windows must be"), (dict(top=0), "top must"),
                         (dict(where={'a"b': "x"}), "metadata key"), (dict(no_such_param=1), "answer parameters")]:
        with pytest.raises(docqa.client.SubmitError, match=message):
            client.ask_corpus(QUESTION, **bad)
    with pytest.raises(docqa.client.SubmitError):
        client.ask_corpus("   ")
