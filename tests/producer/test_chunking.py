"""Producers chunk: tokens stored once per (document, tokenizer), window plans fixed at
submit and equal to the worker's windows; a worker given them tokenizes no document, and
answers exactly as when it windows everything itself."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from docqa.core.params import AnswerParams
from docqa.core.settings import Settings
from docqa.core.windows import decode_tokens, encode_tokens, plan_windows, tokenize_documents
from docqa.producer.chunking import Chunker, ChunkerUnavailable
from docqa.producer.documents import SourceDocument
from docqa.producer.submit import submit
from docqa.storage.db import make_engine
from docqa.storage.repository import Repository
from docqa.worker.engine import Engine
from docqa.worker.runner import JobRunner, answer_queued

TRICKY = "Line one\r\nzero\u200bwidth 👩\u200d🔬 caf\u0065\u0301 na\u00efve\u00a0nbsp\tend. Tokyo 東京 was built in 1889.  \n"
QUESTIONS = ["Where was it built?", "Who designed the tower?", "What?"]


def _prose(n_words: int, seed: int) -> str:
    import random

    rng = random.Random(seed)
    vocab = "the tower was built in Paris by Gustave Eiffel café naïve 東京 engineers iron 1889 , . ( ) 🚀".split()
    return " ".join(rng.choice(vocab) for _ in range(n_words))


TEXTS = [TRICKY, _prose(40, 1), _prose(2500, 2), _prose(700, 3) + " " + TRICKY * 3]


@pytest.fixture(scope="module")
def engine(tiny_model) -> Engine:
    return Engine(tiny_model, device="cpu").warm_up()


@pytest.fixture(scope="module")
def chunker(tiny_model) -> Chunker:
    return Chunker.load(tiny_model)


def test_tokens_round_trip_and_plans_equal_the_worker_windows(engine, chunker) -> None:
    assert chunker.key == engine.tokenizer_key
    assert chunker.n_special == engine.template().n_special
    for text in TEXTS:
        tokens = chunker.tokenize(text)
        reference = tokenize_documents(engine.tokenizer, [text])[0]
        back = decode_tokens(encode_tokens(tokens))
        for a, b, c in ((tokens.ids, reference.ids, back.ids), (tokens.offsets, reference.offsets, back.offsets),
                        (tokens.word_ids, reference.word_ids, back.word_ids)):
            assert np.array_equal(a, b) and np.array_equal(a, c)
        for params in (AnswerParams(), AnswerParams(max_seq_len=128, doc_stride=32), AnswerParams(max_seq_len=64,
                                                                                                  doc_stride=8)):
            for question in QUESTIONS:
                plan = chunker.plan(tokens, question, params)
                q = len(engine.tokenizer(question, add_special_tokens=False)["input_ids"])
                spans = plan_windows(len(tokens), q, max_seq_len=params.max_seq_len, doc_stride=params.doc_stride,
                                     n_special=engine.template().n_special)
                assert plan.question_tokens == q and plan.spans == spans
                for ts, te, cs, ce in plan.windows:  # the characters each window's context covers
                    assert (cs, ce) == (tokens.offsets[ts, 0], tokens.offsets[te - 1, 1])
                    assert text[cs:ce].strip() and ce <= len(text)
    with pytest.raises(ValueError, match="DQT2"):
        decode_tokens(b"nonsense")


def _dqt1(tokens) -> bytes:
    """The first chunking's format (fixed widths, zlib level 6), as stores made then hold it."""
    import zlib

    starts, ends = tokens.offsets[:, 0], tokens.offsets[:, 1]
    wide = int(tokens.ids.max()) >= 1 << 16
    body = b"".join((tokens.ids.astype("<u4" if wide else "<u2").tobytes(),
                     np.diff(starts, prepend=0).astype("<i4").tobytes(), (ends - starts).astype("<i4").tobytes(),
                     np.diff(tokens.word_ids, prepend=0).astype("<i4").tobytes()))
    return b"DQT1" + len(tokens).to_bytes(4, "little") + bytes([4 if wide else 2]) + zlib.compress(body, 6)


def test_token_blobs_take_the_narrowest_types_and_older_blobs_still_read(chunker) -> None:
    from docqa.core.windows import DocumentTokens

    prose = chunker.tokenize(TEXTS[0])
    blob = encode_tokens(prose)
    assert blob[:4] == b"DQT2" and list(blob[8:12]) == [2, 1, 1, 1]  # uint16 ids, uint8 deltas and lengths
    assert len(blob) < len(_dqt1(prose))
    # Values that need wider types: ids past 65,535, long tokens, far jumps, words going back.
    n = 6
    odd = DocumentTokens(ids=np.array([5, 70_000, 3, 2**31 - 1, 0, 9]),
                         offsets=np.array([[0, 1], [300, 100_300], [100_300, 100_301], [200_000, 200_002],
                                           [200_002, 200_003], [200_003, 200_004]]),
                         word_ids=np.array([-1, 0, 40_000, 2, 2, -1]))
    for tokens in (prose, odd, DocumentTokens(np.zeros(0, np.int64), np.zeros((0, 2), np.int64),
                                              np.zeros(0, np.int64))):
        for data in ((encode_tokens(tokens), _dqt1(tokens)) if len(tokens) else (encode_tokens(tokens),)):
            back = decode_tokens(data)
            assert np.array_equal(back.ids, tokens.ids) and np.array_equal(back.offsets, tokens.offsets)
            assert np.array_equal(back.word_ids, tokens.word_ids)
    assert list(encode_tokens(odd)[8:12]) == [4, 4, 4, 5] and len(odd) == n
    with pytest.raises(ValueError, match="type codes"):
        decode_tokens(blob[:8] + b"\x09" + blob[9:])
    with pytest.raises(ValueError, match="corrupt"):
        decode_tokens(blob[:4] + (len(prose) + 1).to_bytes(4, "little") + blob[8:])


def _store(tmp_path, name: str) -> Repository:
    url = f"sqlite:///{tmp_path / name}"
    from docqa.storage.db import upgrade

    upgrade(url)
    return Repository.from_engine(make_engine(url))


def _answers(repo: Repository) -> list[tuple]:
    return [(r.document_id, r.question, r.rank, r.text, r.char_start, r.char_end, r.score, r.window_index)
            for r in repo.iter_results(rank=None)]


def test_a_worker_given_tokens_and_plans_tokenizes_no_document_and_answers_the_same(tmp_path, tiny_model,
                                                                                   chunker) -> None:
    settings = Settings(model=tiny_model, device="cpu", worker_batch_jobs=4, split_windows=0,
                        batch_windows=10_000)  # runs of 4 jobs, as with no plans: the same batches
    params = AnswerParams(top_k=2, max_seq_len=96, doc_stride=24)
    outcomes = {}
    for name, chunk in (("chunked", chunker), ("plain", None)):
        repo = _store(tmp_path, f"{name}.db")
        report = submit([SourceDocument(source=f"doc{i}", text=t) for i, t in enumerate(TEXTS)], QUESTIONS,
                        repo=repo, model=tiny_model, revision=None, params=params, chunker=chunk and (lambda: chunk))
        assert report.new_jobs == len(TEXTS) * len(QUESTIONS)
        engine = Engine(tiny_model, device="cpu").warm_up()
        total = answer_queued(JobRunner.from_settings(repo, engine, settings), model=tiny_model, revision=None)
        assert total.done == report.new_jobs
        outcomes[name] = (report, engine, _answers(repo))
    report, engine, chunked = outcomes["chunked"]
    assert report.tokens > 0 and report.token_bytes > 0
    assert engine.documents_tokenized == 0  # only questions were tokenized on the worker
    assert engine.plans_used == len(TEXTS) * len(QUESTIONS) and engine.plans_refused == 0
    _report, plain_engine, plain = outcomes["plain"]
    assert plain_engine.documents_tokenized >= len(TEXTS) and plain_engine.plans_used == 0  # once per run at least
    assert chunked == plain  # the same answers, scores and windows either way


def test_the_same_text_is_tokenized_once_and_new_questions_get_plans_from_stored_tokens(tmp_path, tiny_model,
                                                                                       chunker) -> None:
    repo = _store(tmp_path, "once.db")
    doc = [SourceDocument(source="a", text=TEXTS[2])]
    loads = []

    def get():
        loads.append(1)
        return chunker

    first = submit(doc, QUESTIONS[:1], repo=repo, model=tiny_model, revision=None, params=AnswerParams(),
                   chunker=get)
    again = submit(doc, QUESTIONS[:2], repo=repo, model=tiny_model, revision=None, params=AnswerParams(),
                   chunker=get)
    known = submit(doc, QUESTIONS[:2], repo=repo, model=tiny_model, revision=None, params=AnswerParams(),
                   chunker=get)
    assert known.new_jobs == 0 and len(loads) == 2  # all known: the chunker is not even asked for
    assert first.tokens > 0 and again.tokens == 0  # stored once; the new job's plan read the stored tokens
    plans = repo.plans_for(first.new_job_ids + again.new_job_ids)
    assert len(plans) == 2 and all(p.tokenizer == chunker.key for p in plans.values())
    # A job without a plan (an older store, or no tokenizer on the producer) is still
    # answered: the worker windows it.
    legacy = submit([SourceDocument(source="b", text=TEXTS[1])], QUESTIONS[:1], repo=repo, model=tiny_model,
                    revision=None, params=AnswerParams())
    assert repo.plans_for(legacy.new_job_ids) == {}


def test_groups_of_documents_are_tokenized_together_and_jobs_are_sent_after_their_plans(tmp_path, tiny_model,
                                                                                          chunker, monkeypatch) -> None:
    import docqa.producer.submit as submitting

    monkeypatch.setattr(submitting, "GROUP_DOCUMENTS", 3)
    repo = _store(tmp_path, "groups.db")
    calls: list[int] = []
    real = chunker.tokenize_many
    monkeypatch.setattr(chunker, "tokenize_many", lambda texts: calls.append(len(texts)) or real(texts))
    # 7 documents in groups of 3. A text again with a new question of its own: in the same
    # group (d2), in a later group (d5, d6); each new job still gets a plan.
    extra = QUESTIONS[2]
    inputs = [(TEXTS[0], []), (TEXTS[1], []), (TEXTS[1], [extra]), (TEXTS[2], []), (TEXTS[3], []),
              (TEXTS[0], [extra]), (TEXTS[2], [extra])]
    missing_at_send: list[int] = []

    def enqueue(job_ids: list[int]) -> None:  # a worker taking these now must find their plans
        missing_at_send.extend(set(job_ids) - set(repo.plans_for(job_ids)))

    report = submit([SourceDocument(source=f"d{i}", text=t, questions=q) for i, (t, q) in enumerate(inputs)],
                    QUESTIONS[:2], repo=repo, model=tiny_model, revision=None,
                    params=AnswerParams(max_seq_len=64, doc_stride=16), chunker=lambda: chunker, enqueue=enqueue,
                    chunk=4, chunk_windows=10_000)
    # Seven documents (each its own), four texts: tokens, jobs and plans once per text.
    assert (report.documents, report.new_documents, report.texts, report.new_texts) == (7, 7, 4, 4)
    assert (report.questions, report.jobs, report.new_jobs, report.existing_jobs) == (17, 11, 11, 0)
    assert missing_at_send == [] and report.enqueued_messages == 3 and report.unsent_job_ids == []
    assert calls == [2, 2]  # one call per group, each text once; the last group's text was stored already
    assert report.tokens == sum(len(chunker.tokenize(t)) for t in TEXTS[:4])
    plans = repo.plans_for(report.new_job_ids)
    assert sorted(plans) == sorted(report.new_job_ids)
    for text_id in {repo.job(j).text_id for j in report.new_job_ids}:
        stored = repo.tokens_for([text_id], chunker.key)[text_id]
        direct = chunker.tokenize(repo.text_of(text_id))
        assert np.array_equal(stored.ids, direct.ids) and np.array_equal(stored.offsets, direct.offsets)


def test_messages_are_sized_by_windows_and_a_long_job_goes_alone(tmp_path, tiny_model, chunker) -> None:
    repo = _store(tmp_path, "windows.db")
    sent: list[list[int]] = []
    params = AnswerParams(max_seq_len=64, doc_stride=16)
    long_text = " ".join(TEXTS) * 3
    docs = [SourceDocument(source=f"s{i}", text=t) for i, t in enumerate(TEXTS)]
    docs.insert(2, SourceDocument(source="long", text=long_text))
    report = submit(docs, QUESTIONS[:2], repo=repo, model=tiny_model, revision=None, params=params,
                    chunker=lambda: chunker, enqueue=lambda ids: sent.append(list(ids)), chunk=64, chunk_windows=10)
    plans = repo.plans_for(report.new_job_ids)
    windows = {job: len(plan.windows) for job, plan in plans.items()}
    assert sorted(j for m in sent for j in m) == sorted(report.new_job_ids)  # every job sent once
    for message in sent:
        total = sum(windows[j] for j in message)
        assert total <= 10 or len(message) == 1, (message, total)  # a job over the budget goes alone
    assert max(windows.values()) > 10 and any(len(m) == 1 and windows[m[0]] > 10 for m in sent)
    # The store knows each job's windows: what the reconciler and the workers' claims size by.
    assert {j: repo.queued_jobs([j])[0].n_windows for j in windows} == windows


@pytest.mark.slow
def test_chunker_loads_no_torch_and_says_why_it_cannot_load(tmp_path, tiny_model) -> None:
    code = (
        "import sys; from docqa.producer.chunking import Chunker; c = Chunker.load(sys.argv[1]); "
        "t = c.tokenize('The tower was built in 1889.'); print(len(t) > 0, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code, tiny_model], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
    with pytest.raises(ChunkerUnavailable, match="does not exist"):
        Chunker.load(str(tmp_path / "no-such-model"))


def test_damaged_tokens_or_plans_are_ignored_and_the_worker_windows_itself(tmp_path, tiny_model, chunker) -> None:
    from sqlalchemy import text

    repo = _store(tmp_path, "damaged.db")
    report = submit([SourceDocument(source="a", text=TEXTS[1]), SourceDocument(source="b", text=TEXTS[2])],
                    QUESTIONS[:1], repo=repo, model=tiny_model, revision=None, params=AnswerParams(),
                    chunker=lambda: chunker)
    with repo._write() as session:
        session.execute(text("UPDATE text_tokens SET data = :junk WHERE text_id = 1"), {"junk": b"DQT1\x05"})
        session.execute(text("UPDATE job_plans SET windows = 'not json' WHERE job_id = :j"),
                        {"j": report.new_job_ids[1]})
    engine = Engine(tiny_model, device="cpu").warm_up()
    total = answer_queued(JobRunner.from_settings(repo, engine, Settings(model=tiny_model, device="cpu")),
                          model=tiny_model, revision=None)
    assert total.done == 2 and total.failed == 0
    assert engine.documents_tokenized == 1  # the damaged one; the other's tokens were read


def test_ctrl_c_between_documents_leaves_no_stored_document_without_its_jobs(tmp_path, tiny_model, chunker) -> None:
    repo = _store(tmp_path, "interrupted.db")
    sent: list[int] = []

    def documents():
        for i in range(5):  # fewer than a group: without the handler none would have jobs
            yield SourceDocument(source=f"d{i}", text=f"{TEXTS[i % len(TEXTS)]} Part {i}.")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        submit(documents(), QUESTIONS[:2], repo=repo, model=tiny_model, revision=None, params=AnswerParams(),
               chunker=lambda: chunker, enqueue=sent.extend)
    queued = repo.queued_job_ids()
    assert len(queued) == 10 and sorted(sent) == queued  # every stored document's jobs, made and sent
    assert sorted(repo.plans_for(queued)) == queued
