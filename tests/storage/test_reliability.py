"""The store's side of distributed reliability: hand-backs, suspects, unsent jobs, retries,
submissions, the worker registry and fleet roles, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from docqa.core.params import AnswerParams
from docqa.storage.columns import utcnow
from docqa.storage.models import JobStatus
from docqa.storage.repository import Repository


def _jobs(repo: Repository, params: AnswerParams, n: int = 3) -> list[int]:
    doc = repo.add_document("The Rhine flows to the North Sea.")
    return [j.id for j in repo.add_jobs(doc.id, [f"Question {i}?" for i in range(n)], model="m", revision=None,
                                        params=params)]


def test_release_hands_a_claim_back_without_counting_the_attempt(repo: Repository, params: AnswerParams) -> None:
    j1, j2, j3 = _jobs(repo, params)
    repo.claim([j1, j2], worker="a", lease_seconds=60)
    repo.claim([j3], worker="b", lease_seconds=60)
    assert repo.release([j1, j2, j3], worker="a") == [j1, j2]  # not b's job
    assert [(repo.job(j).status, repo.job(j).attempts) for j in (j1, j2, j3)] == [
        ("queued", 0), ("queued", 0), ("running", 1)
    ]


def test_suspects_are_not_claimed_with_fresh_jobs(repo: Repository, params: AnswerParams) -> None:
    j1, j2, j3 = _jobs(repo, params)
    now = utcnow()
    repo.claim([j1], worker="dead", lease_seconds=5, now=now)
    assert repo.requeue_expired(max_attempts=3, now=now + timedelta(seconds=6)) == [j1]
    fresh = repo.claim([j1, j2, j3], worker="w", lease_seconds=60, fresh_only=True)
    assert sorted(c.job_id for c in fresh) == [j2, j3]
    assert repo.claim_queued(limit=10, model="m", revision=None, worker="w", lease_seconds=60) == []
    (alone,) = repo.claim([j1], worker="w", lease_seconds=60)
    assert alone.attempts == 2


def test_unsent_queued_jobs_are_found_after_the_bound(repo: Repository, params: AnswerParams) -> None:
    j1, j2, j3 = _jobs(repo, params)
    now = utcnow()
    assert repo.unsent_queued(older_than=60, now=now) == []  # just created
    later = now + timedelta(seconds=61)
    assert [j.id for j in repo.unsent_queued(older_than=60, now=later)] == [j1, j2, j3]  # never sent
    assert repo.count_unsent_queued(older_than=60, now=later) == 3
    repo.mark_sent([j1], now=later)
    repo.claim([j2], worker="w", lease_seconds=60)
    assert [j.id for j in repo.unsent_queued(older_than=60, now=later)] == [j3]
    assert repo.count_unsent_queued(older_than=60, now=later) == 1
    assert [(j.id, j.model, j.revision, j.attempts) for j in repo.queued_jobs([j1, j2, j3])] == [
        (j1, "m", None, 0), (j3, "m", None, 0)
    ]


def test_retry_failed_by_submission_resets_attempts(repo: Repository, params: AnswerParams) -> None:
    j1, j2, j3 = _jobs(repo, params)
    sid = repo.start_submission(command="submit", model="m", revision=None)
    repo.add_submission_jobs(sid, [j1, j2])
    repo.add_submission_jobs(sid, [j2])  # linking twice is harmless
    for j in (j1, j2, j3):
        repo.claim([j], worker="w", lease_seconds=60)
        repo.fail(j, "broke")
    retried = repo.retry_failed(submission_id=sid)
    assert [j.id for j in retried] == [j1, j2]
    assert [(repo.job(j).status, repo.job(j).attempts, repo.job(j).error) for j in (j1, j2)] == [
        ("queued", 0, None), ("queued", 0, None)
    ]
    assert repo.job(j3).status == "failed"
    assert repo.submission_progress(sid) == {"queued": 2, "running": 0, "done": 0, "failed": 0}
    assert [j.id for j in repo.retry_failed()] == [j3]


def test_one_holder_of_a_role_at_a_time_until_its_hold_runs_out(repo: Repository) -> None:
    now = utcnow()
    assert repo.hold_role("reconciler", "a", seconds=30, now=now)
    assert not repo.hold_role("reconciler", "b", seconds=30, now=now + timedelta(seconds=1))
    assert repo.hold_role("reconciler", "a", seconds=30, now=now + timedelta(seconds=10))  # renewal
    assert repo.hold_role("reconciler", "b", seconds=30, now=now + timedelta(seconds=41))  # a stopped renewing
    repo.release_role("reconciler", "b")
    assert repo.hold_role("reconciler", "c", seconds=30)


def test_worker_registry_shows_live_workers(repo: Repository) -> None:
    repo.register_worker("h:1:ns:aa", host="h", pid=1, model="m", queue="docqa.m-x")
    repo.register_worker("h:2:ns:bb", host="h", pid=2, model="m", queue="docqa.m-x")
    repo.stop_worker("h:2:ns:bb")
    assert [w.name for w in repo.live_workers(seen_within=30)] == ["h:1:ns:aa"]
    assert repo.live_workers(seen_within=30, now=utcnow() + timedelta(seconds=60)) == []
    assert len(repo.store_id()) == 32


def test_null_logits_and_margin_survive_the_store(repo: Repository, params: AnswerParams) -> None:
    from docqa.core.answer import Answer

    (j1, _j2, _j3) = _jobs(repo, params)
    repo.claim([j1], worker="w", lease_seconds=60)
    answer = Answer(rank=0, text="Rhine", score=0.5, char_start=4, char_end=9, window_index=0, window_char_start=0,
                    window_char_end=33, token_start=1, token_end=1, start_logit=4.0, end_logit=3.5,
                    null_start_logit=1.25, null_end_logit=0.25)
    repo.complete(j1, [answer], model_label="m")
    (record,) = list(repo.iter_results(job_id=j1))
    assert (record.null_start_logit, record.null_end_logit, record.margin) == (1.25, 0.25, 6.0)
    assert repo.answers_for_job(j1) == [answer]


def test_deleting_documents_takes_their_jobs_and_answers_and_an_in_flight_job_writes_nothing(
    repo: Repository, params: AnswerParams
) -> None:
    from docqa.core.answer import Answer
    from docqa.storage.errors import NotFound

    keep = repo.add_document("Kept text.", external_id="keep")
    (kept_job,) = repo.add_jobs(keep.id, ["Q?"], model="m", revision=None, params=params)
    j1, j2, _j3 = _jobs(repo, params)  # "The Rhine flows to the North Sea."
    [doc_id] = repo.documents_of_job(j1)
    sid = repo.start_submission(command="submit", model="m", revision=None)
    repo.add_submission_jobs(sid, [j1, j2, kept_job.id])
    repo.add_submission_documents(sid, [doc_id, keep.id])
    repo.claim([j1], worker="w", lease_seconds=60)
    answer = Answer(rank=0, text="Rhine", score=0.5, char_start=4, char_end=9)
    repo.claim([j2], worker="w", lease_seconds=60)
    repo.complete(j2, [answer], model_label="m")
    assert repo.delete_documents([doc_id], dry_run=True) == (1, 3, 1, 1)
    assert repo.job(j1) is not None and repo.document(doc_id) is not None  # a dry run removes nothing
    assert repo.delete_documents([doc_id]) == (1, 3, 1, 1)
    assert repo.document(doc_id) is None and repo.job(j1) is None and list(repo.iter_results(job_id=j2)) == []
    refused = repo.complete_many([(j1, [answer])], model_label="m")  # the worker finishing j1 afterwards
    assert isinstance(refused[j1], NotFound)
    assert repo.job(kept_job.id) is not None and repo.documents_of_submission(sid) == [keep.id]
    assert repo.resolve_documents("keep") == [keep.id] and repo.resolve_documents(str(keep.id)) == [keep.id]


def test_a_loss_in_a_batch_is_no_evidence_only_losses_alone_fail_a_job(repo: Repository, params: AnswerParams) -> None:
    """A batch dies for any of its jobs, or for none (a killed or restarted worker): its jobs
    become suspects that run alone, and only losses while alone count toward max_attempts."""
    j1, j2, j3 = _jobs(repo, params)
    now = utcnow()
    repo.claim([j1, j2, j3], worker="batch", lease_seconds=10, now=now)
    now += timedelta(seconds=11)
    assert repo.requeue_expired(max_attempts=2, now=now) == [j1, j2, j3]
    assert all(repo.job(j).attempts == 1 for j in (j1, j2, j3))  # suspects: they run alone now
    for alone in ("alone-1", "alone-2"):
        [claimed] = repo.claim([j1], worker=alone, lease_seconds=10, max_attempts=2, now=now)
        now += timedelta(seconds=11)
        given_up: list[int] = []
        requeued = repo.requeue_expired(max_attempts=2, now=now, given_up=given_up)
        if alone == "alone-1":  # one loss alone: not yet enough with max_attempts 2
            assert requeued == [j1] and given_up == []
        else:
            assert requeued == [] and given_up == [j1]
    assert repo.job(j1).status is JobStatus.FAILED and repo.job(j1).attempts == 3
    # A job lost alone the first time (its message held it alone) is judged as before.
    [(solo, _)] = repo.add_jobs(repo.add_document("Another text.").id, ["Q?"], model="m", revision=None,
                                params=params)
    for n in range(2):
        repo.claim([solo], worker=f"s{n}", lease_seconds=10, max_attempts=2, now=now)
        now += timedelta(seconds=11)
        repo.requeue_expired(max_attempts=2, now=now)
    assert repo.job(solo).status is JobStatus.FAILED
    # Retrying a failed job forgets its losses.
    repo.retry_failed(job_ids=[j1])
    assert repo.job(j1).attempts == 0


def test_a_sweeper_back_from_an_outage_judges_only_dead_processes(repo: Repository, params: AnswerParams) -> None:
    j1, j2, _j3 = _jobs(repo, params)
    now = utcnow()
    repo.claim([j1], worker="renewing-soon", lease_seconds=10, now=now)
    repo.claim([j2], worker="gone", lease_seconds=10, now=now)
    later = now + timedelta(seconds=30)
    assert repo.requeue_expired(max_attempts=3, now=later, dead_workers=["gone"], expired=False) == [j2]
    assert repo.job(j1).status is JobStatus.RUNNING
    assert repo.requeue_expired(max_attempts=3, now=later) == [j1]
