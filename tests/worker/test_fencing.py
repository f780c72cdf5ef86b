"""Every write a worker makes for a job is fenced by its claim: a worker whose lease was
taken back (it ran out, or it was judged dead) writes nothing and says so; a store that
fails while a batch's answers are written costs the batch nothing. Real model, real store
(SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.exc import OperationalError

from docqa.core.answer import Answer
from docqa.core.params import AnswerParams
from docqa.storage.columns import utcnow
from docqa.storage.db import make_engine
from docqa.storage.errors import LeaseLost
from docqa.storage.models import JobStatus
from docqa.storage.records import Fence
from docqa.storage.repository import Repository
from docqa.worker.runner import JobRunner

TEXT = "The Rhine flows to the North Sea. The tower was designed by Gustave Eiffel."


@pytest.fixture
def repo(store_url):
    engine = make_engine(store_url)
    yield Repository.from_engine(engine)
    engine.dispose()


def _job(repo: Repository, question: str = "Where does the Rhine flow?", model: str = "m") -> int:
    doc = repo.add_document(TEXT, external_id="rhine")
    return repo.add_jobs(doc.id, [question], model=model, revision=None, params=AnswerParams())[0].id


def _taken_over(repo: Repository, job_id: int) -> None:
    """The sweeper takes the job back (its lease ran out) and worker B claims it."""
    later = utcnow() + timedelta(seconds=120)
    assert repo.requeue_expired(max_attempts=5, now=later) == [job_id]
    assert [c.job_id for c in repo.claim([job_id], worker="B", lease_seconds=600, now=later)] == [job_id]


ANSWER = Answer(rank=0, text="North Sea", score=0.5, char_start=23, char_end=32)


def test_a_worker_that_lost_the_lease_writes_nothing(repo: Repository) -> None:
    job = _job(repo)
    [mine] = repo.claim([job], worker="A", lease_seconds=60)
    fence_a = Fence("A", {job: mine.attempts})
    _taken_over(repo, job)
    refused = repo.complete_many([(job, [ANSWER])], model_label="m", fence=fence_a)
    assert isinstance(refused[job], LeaseLost) and "running under B" in str(refused[job])
    assert repo.fail(job, "A gives up", fence=fence_a) is False
    assert repo.answers_for_job(job) == [] and repo.job(job).status is JobStatus.RUNNING
    # The holder writes; a later claim by A itself (a new generation) does not revive A's old fence.
    repo.complete(job, [ANSWER], model_label="m", fence=Fence("B", {job: mine.attempts + 1}))
    assert repo.job(job).status is JobStatus.DONE and len(repo.answers_for_job(job)) == 1
    with pytest.raises(LeaseLost):
        repo.complete(job, [ANSWER], model_label="m", fence=Fence("B", {job: mine.attempts + 1}))


def test_a_runner_whose_lease_is_taken_mid_batch_drops_its_answers(repo: Repository, engine, caplog) -> None:
    job = _job(repo, model=engine.model_id)
    runner = JobRunner(repo, engine, lease_seconds=60, name="A")
    forward = engine.run

    def slow_batch(items, **kwargs):  # the lease is judged dead and handed to B while A computes
        results = forward(items, **kwargs)
        _taken_over(repo, job)
        return results

    engine.run = slow_batch
    try:
        stats = runner.run([job])
    finally:
        engine.run = forward
    assert (stats.claimed, stats.done, stats.failed, stats.lost) == (1, 0, 0, [job])
    assert repo.job(job).status is JobStatus.RUNNING and repo.job(job).worker == "B"
    assert repo.answers_for_job(job) == []
    assert f"dropped the answers of job {job}" in caplog.text


def test_a_store_outage_while_answers_are_written_costs_the_batch_nothing(repo: Repository, engine, caplog) -> None:
    jobs = [_job(repo, q, model=engine.model_id) for q in ("Where does the Rhine flow?", "Who designed the tower?")]
    runner = JobRunner(repo, engine, lease_seconds=60, name="A")
    complete = repo.complete_many
    outages = []

    def flaky(*args, **kwargs):  # the store is away for the first two tries
        if len(outages) < 2:
            outages.append(1)
            raise OperationalError("INSERT ...", {}, Exception("server closed the connection unexpectedly"))
        return complete(*args, **kwargs)

    repo.complete_many = flaky
    stats = runner.run(jobs)
    assert (stats.done, stats.failed, stats.lost) == (2, 0, [])
    assert all(repo.job(j).status is JobStatus.DONE and repo.job(j).attempts == 1 for j in jobs)
    assert "the store failed while writing the answers of 2 job(s)" in caplog.text


def test_claims_are_handed_back_once_the_store_returns(repo: Repository, engine, caplog) -> None:
    """The store goes away right after a batch was claimed: the claims are handed back when
    it returns (not left to run out their leases and come back as suspects that run alone)."""
    jobs = [_job(repo, q, model=engine.model_id) for q in ("Where does the Rhine flow?", "Who designed the tower?")]
    runner = JobRunner(repo, engine, lease_seconds=60, name="A")
    plans, release = repo.plans_for, repo.release
    refusals = []

    def gone(*_args, **_kwargs):
        raise OperationalError("SELECT ...", {}, Exception("terminating connection due to administrator command"))

    def release_when_back(*args, **kwargs):
        if len(refusals) < 2:
            refusals.append(1)
            gone()
        return release(*args, **kwargs)

    repo.plans_for, repo.release = gone, release_when_back
    try:
        with pytest.raises(Exception, match="administrator command") as raised:
            runner.run(jobs)
    finally:
        repo.plans_for, repo.release = plans, release
    assert raised.value.released == 2 and len(refusals) == 2
    assert all(repo.job(j).status is JobStatus.QUEUED and repo.job(j).attempts == 0 for j in jobs)
    assert "the store failed while handing back 2 job(s)" in caplog.text
