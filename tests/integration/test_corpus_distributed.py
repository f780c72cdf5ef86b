"""Corpus questions in distributed mode: a real `docqa worker` reads them, ahead of its bulk
backlog, and a caller hears by name when no worker serves the model or none answers in time."""

from __future__ import annotations

import os
import signal
import time

import pytest
import redis
from support import model_queue, prose, wait_for

import docqa
from docqa.core.params import AnswerParams
from docqa.storage.repository import Repository
from docqa.worker.corpus import ask_corpus
from docqa.worker.interactive import AskTimeout, NoLiveWorker, ask_queue

QUESTION = "Where does the river flow?"


def client_of(env) -> docqa.Client:
    return docqa.Client(env["DOCQA_DATABASE_URL"], env["DOCQA_BROKER_URL"], queue=env["DOCQA_QUEUE"],
                        model=env["DOCQA_MODEL"], live_worker_seconds=30)


def test_a_worker_answers_corpus_questions_before_its_bulk_backlog_as_embedded_would(distributed_env, workers,
                                                                                     engine):
    env = distributed_env
    client = client_of(env)
    docs = [{"id": f"d{i}", "text": prose(60, seed=i), "metadata": {"half": str(i % 2)}} for i in range(40)]
    client.submit(docs, [QUESTION])
    with pytest.raises(NoLiveWorker, match="no live worker serves model"):
        client.ask_corpus(QUESTION)
    env["DOCQA_BATCH_WINDOWS"] = "64"  # runs of at most 64 windows: a question waits for one run at most
    workers.start(1)
    wait_for(lambda: "ready: model" in workers.logs(), timeout=120, what="the worker to load its model",
             logs=workers.logs)
    # A bulk backlog: ~1,500 windows of other documents (several seconds of this worker), many messages.
    client.submit([{"id": f"bulk{i}", "text": prose(6000, seed=1000 + i)} for i in range(40)], ["Who watched?"])
    broker = redis.Redis.from_url(env["DOCQA_BROKER_URL"])
    assert broker.llen(ask_queue(model_queue(env))) == 0  # bulk messages go to the bulk queue alone
    started = time.monotonic()
    got = client.ask_corpus(QUESTION, windows=64, top=100, where={"half": "1"}, timeout=60)
    took = time.monotonic() - started
    queued = Repository.open(env["DOCQA_DATABASE_URL"]).counts()["queued"]
    assert queued > 0, f"the backlog drained before the question was answered ({took:.1f} s)"
    assert not got.errors and got.answers and {a.external_id for a in got.answers} <= {f"d{i}" for i in range(1, 40, 2)}
    # The worker read it as this process reads it embedded (on the store's same passages).
    here = ask_corpus(engine, Repository.open(env["DOCQA_DATABASE_URL"]), QUESTION, params=AnswerParams(),
                      windows=64, top=100, where={"half": "1"})
    assert [(a.document_id, a.answer.text, a.answer.char_start, a.answer.window_index) for a in got.answers] == [
        (a.document_id, a.answer.text, a.answer.char_start, a.answer.window_index) for a in here.answers]
    assert [a.answer.margin for a in got.answers] == pytest.approx([a.answer.margin for a in here.answers], abs=1e-4)


def test_a_question_no_worker_takes_in_time_times_out_by_name_and_is_never_started(distributed_env, workers):
    env = distributed_env
    client = client_of(env)
    client.submit([{"id": "a", "text": "The river flows north to the sea."}], [QUESTION])
    workers.start(1)
    wait_for(lambda: client.counts()["done"] == 1, timeout=120, what="the worker to answer", logs=workers.logs)
    os.killpg(workers.procs[0].pid, signal.SIGSTOP)  # live in the registry, but taking nothing
    try:
        with pytest.raises(AskTimeout, match="answered within 2 s"):
            client.ask_corpus(QUESTION, timeout=2)
    finally:
        os.killpg(workers.procs[0].pid, signal.SIGCONT)
    got = client.ask_corpus(QUESTION, timeout=60)  # the stale question was dropped, this one answered
    assert [a.external_id for a in got.answers] == ["a"]
    assert "Discarding revoked task: docqa.ask_corpus" in workers.logs(tail=None)  # expired: never started
