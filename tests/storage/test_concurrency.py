"""Many producers and workers on one store at once: no double claims, no duplicates.

Each thread has its own engine (its own connections), as separate processes would.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from docqa.storage.db import make_engine
from docqa.storage.models import JobStatus
from docqa.storage.repository import Repository
from docqa.storage.columns import utcnow
from docqa.core.answer import Answer
from docqa.core.params import AnswerParams

T = TypeVar("T")


@pytest.fixture
def repos(store_url: str) -> Iterator[list[Repository]]:
    engines = [make_engine(store_url) for _ in range(4)]
    try:
        yield [Repository.from_engine(e) for e in engines]
    finally:
        for e in engines:
            e.dispose()


def run_together(calls: list[Callable[[], T]]) -> list[T]:
    """Run the calls in threads released at the same moment; return results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[T | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = calls[i]()
        except BaseException as exc:  # re-raised below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results  # type: ignore[return-value]


def test_each_job_is_claimed_by_exactly_one_worker(repos: list[Repository]) -> None:
    doc = repos[0].add_document("a document")
    ids = [j.id for j in repos[0].add_jobs(doc.id, [f"q{i}" for i in range(120)], model="m", revision=None, params=AnswerParams())]

    def worker(n: int) -> Callable[[], list[int]]:
        # Overlapping batches in different orders, as redelivered messages would be.
        order = ids if n % 2 == 0 else list(reversed(ids))
        batches = [order[i : i + 16] for i in range(0, len(order), 16)]

        def claim_all() -> list[int]:
            got: list[int] = []
            for batch in batches:
                got.extend(c.job_id for c in repos[n].claim(batch, worker=f"w{n}", lease_seconds=60))
            return got

        return claim_all

    claimed = run_together([worker(n) for n in range(4)])
    flat = [job_id for got in claimed for job_id in got]
    assert sorted(flat) == ids  # every job once, none twice
    assert repos[0].counts()["running"] == 120
    for n, got in enumerate(claimed):
        assert {repos[0].job(job_id).worker for job_id in got} <= {f"w{n}"}


def test_producers_racing_on_one_document_get_one_row(repos: list[Repository]) -> None:
    text = "the same document, submitted by four producers at once \r\n 👍"
    results = run_together([lambda r=r: r.add_document(text, source="p") for r in repos])
    assert len({doc.id for doc in results}) == 1
    assert sum(doc.created for doc in results) == 1


def test_producers_racing_on_the_same_jobs_create_each_once(repos: list[Repository]) -> None:
    doc = repos[0].add_document("shared")
    questions = [f"q{i}" for i in range(60)]
    results = run_together(
        [lambda r=r: r.add_jobs(doc.id, questions, model="m", revision=None, params=AnswerParams()) for r in repos]
    )
    for position in range(len(questions)):
        entries = [result[position] for result in results]
        assert len({e.id for e in entries}) == 1
        assert sum(e.created for e in entries) == 1
    assert repos[0].counts()["queued"] == 60


def test_two_deliveries_completing_one_job_leave_one_set_of_answers(repos: list[Repository]) -> None:
    text = "Alpha beta gamma."
    doc = repos[0].add_document(text)
    (job_id, _), = repos[0].add_jobs(doc.id, ["Which?"], model="m", revision=None, params=AnswerParams(top_k=3))
    answers = [
        Answer(rank=r, text=text[s:e], score=1.0 / (r + 1), char_start=s, char_end=e)
        for r, (s, e) in enumerate([(0, 5), (6, 10), (11, 16)])
    ]
    for _ in range(3):
        run_together([lambda r=r: r.complete(job_id, answers, model_label="m") for r in repos])
    assert repos[0].answers_for_job(job_id) == answers
    assert len(list(repos[0].iter_results(job_id=job_id))) == 3
    assert repos[0].job(job_id).status is JobStatus.DONE


def test_sweeper_and_workers_at_once(repos: list[Repository]) -> None:
    """A sweeper running while workers claim never loses or duplicates a job."""
    doc = repos[0].add_document("sweep")
    ids = [j.id for j in repos[0].add_jobs(doc.id, [f"q{i}" for i in range(40)], model="m", revision=None, params=AnswerParams())]
    start = utcnow()
    repos[0].claim(ids, worker="dead", lease_seconds=1, now=start)
    later = start + timedelta(seconds=5)
    results = run_together(
        [
            lambda: repos[0].requeue_expired(max_attempts=3, now=later),
            lambda: [c.job_id for c in repos[1].claim(ids, worker="w1", lease_seconds=60, now=later)],
            lambda: [c.job_id for c in repos[2].claim(ids, worker="w2", lease_seconds=60, now=later)],
        ]
    )
    requeued, by_w1, by_w2 = results
    claimed = set(by_w1) | set(by_w2)
    assert len(claimed) == len(by_w1) + len(by_w2)  # no job went to both workers
    # Every expired job was either taken by a live worker or handed back for re-enqueueing.
    assert claimed | set(requeued) == set(ids)
    statuses = repos[0].job_statuses(ids)
    assert {i for i, s in statuses.items() if s is JobStatus.RUNNING} == claimed
    assert {i for i, s in statuses.items() if s is JobStatus.QUEUED} == set(requeued) - claimed


def test_workers_topping_up_at_once_never_share_a_job(repos: list[Repository]) -> None:
    doc = repos[0].add_document("top up")
    ids = [j.id for j in repos[0].add_jobs(doc.id, [f"q{i}" for i in range(90)], model="m", revision=None, params=AnswerParams())]

    def drain(n: int) -> Callable[[], list[int]]:
        def run() -> list[int]:
            got: list[int] = []
            while batch := repos[n].claim_queued(limit=7, model="m", revision=None, worker=f"w{n}", lease_seconds=60):
                got.extend(c.job_id for c in batch)
            return got

        return run

    claimed = run_together([drain(n) for n in range(4)])
    assert sorted(j for got in claimed for j in got) == ids


def test_producers_making_jobs_of_the_same_documents_in_other_orders_neither_deadlock_nor_duplicate(
        repos: list[Repository]) -> None:
    """Groups of documents arrive in any order (producers read different files); the jobs of
    a group are inserted in one statement in a fixed order, so two producers never wait on
    each other's rows in opposite orders (PostgreSQL would abort one with a deadlock)."""
    import random

    docs = [repos[0].add_document(f"document {i}").id for i in range(40)]
    questions = [f"q{i}?" for i in range(5)]

    def producer(n: int) -> Callable[[], list[list]]:
        order = docs[:]
        random.Random(n).shuffle(order)
        requests = [(doc, questions[::-1] if n % 2 else questions) for doc in order]
        return lambda: [repos[n].add_jobs_many(requests[i:i + 20], model="m", revision=None, params=AnswerParams())
                        for i in range(0, len(requests), 20)]

    results = run_together([producer(n) for n in range(4)])
    made: dict[int, int] = {}
    for groups in results:
        for group in groups:
            for jobs in group:
                for job in jobs:
                    made[job.id] = made.get(job.id, 0) + job.created
    assert len(made) == len(docs) * len(questions) and set(made.values()) == {1}
    assert repos[0].counts()["queued"] == len(docs) * len(questions)


def test_producers_storing_tokens_of_the_same_documents_in_other_orders_do_not_deadlock(
        repos: list[Repository]) -> None:
    import random

    import numpy as np

    from docqa.core.windows import DocumentTokens

    docs = [repos[0].add_document(f"tokens of document {i}").id for i in range(400)]
    tokens = DocumentTokens(ids=np.arange(5), offsets=np.array([[i, i + 1] for i in range(5)]), word_ids=np.arange(5))

    def producer(n: int) -> Callable[[], int]:
        order = docs[:]
        random.Random(n).shuffle(order)
        return lambda: sum(repos[n].add_tokens_many("tok", [(doc, tokens) for doc in order[i:i + 200]])
                           for i in range(0, len(order), 200))

    run_together([producer(n) for n in range(4)])
    stored = repos[0].tokens_for(docs, "tok")
    assert sorted(stored) == sorted(docs) and all(np.array_equal(t.ids, tokens.ids) for t in stored.values())


def test_producers_asking_one_document_in_opposite_orders_meet_and_both_get_the_jobs(repos: list[Repository]) -> None:
    """Two producers insert one document's 400 questions, one in the reverse order of the
    other: on PostgreSQL they meet in the middle and one is aborted as a deadlock; it tries
    again and both get every job, each created once. Job ids follow the first one's order."""
    doc = repos[0].add_document("asked in opposite orders").id
    questions = [f"question {i}?" for i in range(400)]
    orders = [questions, questions[::-1]]
    results = run_together([lambda n=n: repos[n].add_jobs(doc, orders[n], model="m", revision=None,
                                                          params=AnswerParams()) for n in range(2)])
    forward = {q: job for q, job in zip(orders[0], results[0])}
    backward = {q: job for q, job in zip(orders[1], results[1])}
    assert {q: j.id for q, j in forward.items()} == {q: j.id for q, j in backward.items()}
    assert all(forward[q].created != backward[q].created for q in questions)  # each created by one of them
    assert repos[0].counts()["queued"] >= 400


def test_a_deadlock_while_making_jobs_is_tried_again(repos: list[Repository], monkeypatch) -> None:
    from sqlalchemy.exc import OperationalError

    repo = repos[0]
    doc = repo.add_document("tried again").id
    real, calls = repo._insert_jobs, []

    class Deadlock(Exception):
        sqlstate = "40P01"

    def once_deadlocked(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OperationalError("INSERT INTO jobs ...", {}, Deadlock("deadlock detected"))
        return real(*args, **kwargs)

    monkeypatch.setattr(repo, "_insert_jobs", once_deadlocked)
    jobs = repo.add_jobs(doc, ["A?", "B?"], model="m", revision=None, params=AnswerParams())
    assert len(calls) == 2 and all(j.created for j in jobs)

    class Other(Exception):
        sqlstate = "08006"  # the connection failed: not ours to retry

    def broken(*args, **kwargs):
        raise OperationalError("INSERT INTO jobs ...", {}, Other("connection lost"))

    monkeypatch.setattr(repo, "_insert_jobs", broken)
    with pytest.raises(OperationalError, match="connection lost"):
        repo.add_jobs(doc, ["C?"], model="m", revision=None, params=AnswerParams())


def test_a_producer_linking_a_document_to_a_job_being_completed_neither_waits_nor_deadlocks(
    repos: list[Repository], monkeypatch: pytest.MonkeyPatch, store_url: str
) -> None:
    """PostgreSQL: a worker holds a job's row while it checks its answers, then takes the
    results lock; a producer takes the results lock, then links a second document of the same
    text to that job (the link's foreign key locks the job's key). Neither may wait on the
    other (with FOR UPDATE on the job they deadlocked). SQLite has one writer at a time."""
    import docqa.storage.answers as answers_module

    if not store_url.startswith("postgresql"):
        pytest.skip("row locks are PostgreSQL's; SQLite writes one transaction at a time")

    text = "The river flows north to the sea."
    first = repos[0].add_document(text, external_id="first")
    (job,) = repos[0].add_jobs(first.id, ["Where?"], model="m", revision=None, params=AnswerParams())
    repos[0].claim([job.id], worker="w", lease_seconds=60)
    second = repos[1].add_document(text, external_id="second")
    holding, linked = threading.Event(), threading.Event()
    check = answers_module._check_offsets

    def slow_check(*args, **kwargs):  # the worker holds the job's row lock here
        holding.set()
        linked.wait(20)
        return check(*args, **kwargs)

    monkeypatch.setattr(answers_module, "_check_offsets", slow_check)
    answer = Answer(rank=0, text="north", score=0.5, char_start=16, char_end=21)
    worker = threading.Thread(target=lambda: repos[2].complete(job.id, [answer], model_label="m"))
    worker.start()
    assert holding.wait(20)
    started = utcnow()
    (again,) = repos[1].add_jobs(second.id, ["Where?"], model="m", revision=None, params=AnswerParams())
    waited = utcnow() - started
    linked.set()
    worker.join(30)
    assert again == (job.id, False) and waited < timedelta(seconds=10)  # not blocked until the worker's 20 s
    assert repos[3].job(job.id).status is JobStatus.DONE
    assert sorted(r.document_external_id for r in repos[3].iter_results()) == ["first", "second"]
