"""The repository as producers, workers and exports use it, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from docqa.storage.errors import NotFound
from docqa.storage.identity import text_sha256
from docqa.storage.models import JobStatus
from docqa.storage.repository import Repository
from docqa.storage.columns import utcnow
from docqa.core.answer import Answer
from docqa.core.params import AnswerParams

# Text a normaliser would change: CRLF, zero-width space, emoji with ZWJ, a combining
# acute accent (NFD "é"), NBSP, tabs, trailing whitespace.
TRICKY = "Line one\r\nzero\u200bwidth 👩\u200d🔬 caf\u0065\u0301 na\u00efve\u00a0nbsp\tend  \n"


def answer_at(text: str, start: int, end: int, *, rank: int = 0, score: float = 0.5) -> Answer:
    """An answer whose offsets select text[start:end], as a worker would produce it."""
    return Answer(
        rank=rank,
        text=text[start:end],
        score=score,
        char_start=start,
        char_end=end,
        window_index=0,
        window_char_start=0,
        window_char_end=len(text),
        token_start=start,
        token_end=end,
        start_logit=1.25,
        end_logit=-0.5,
    )


def submit(repo: Repository, params: AnswerParams, text: str = TRICKY, questions=("Who?", "What?")):
    doc = repo.add_document(text, source="stdin")
    jobs = repo.add_jobs(doc.id, list(questions), model="m", revision=None, params=params)
    return doc, [job.id for job in jobs]


# -- documents -----------------------------------------------------------------------


def test_document_text_is_stored_byte_for_byte(repo: Repository) -> None:
    doc = repo.add_document(TRICKY, source="jsonl:in.jsonl:3", external_id="doc-7", metadata={"lang": "en", "n": [1, 2]})
    stored = repo.document(doc.id)
    assert stored is not None
    assert stored.text == TRICKY
    assert stored.text.encode("utf-8") == TRICKY.encode("utf-8")
    assert stored.sha256 == doc.sha256 == text_sha256(TRICKY)
    assert stored.length == len(TRICKY)
    assert (stored.source, stored.external_id, stored.meta) == ("jsonl:in.jsonl:3", "doc-7", {"lang": "en", "n": [1, 2]})
    assert stored.created_at.tzinfo is not None and stored.created_at.utcoffset() == timedelta(0)


def test_one_text_is_stored_once_and_each_document_keeps_its_provenance(repo: Repository) -> None:
    first = repo.add_document(TRICKY, source="a.txt")
    again = repo.add_document(TRICKY, source="b.txt", external_id="x", version_key="id:x")
    assert first.created and again.created and (first.text_created, again.text_created) == (True, False)
    assert again.id != first.id and again.text_id == first.text_id and again.sha256 == first.sha256
    assert (repo.document(first.id).source, repo.document(first.id).external_id) == ("a.txt", None)
    assert (repo.document(again.id).source, repo.document(again.id).external_id) == ("b.txt", "x")


def test_texts_a_normaliser_would_merge_stay_distinct(repo: Repository) -> None:
    nfc, nfd = "caf\u00e9", "cafe\u0301"
    crlf, lf = "a\r\nb", "a\nb"
    ids = {repo.add_document(t).id for t in (nfc, nfd, crlf, lf, lf + " ")}
    assert len(ids) == 5
    assert repo.document(repo.add_document(nfd).id).text == nfd


def test_text_the_store_cannot_keep_is_refused_with_a_reason(repo: Repository) -> None:
    with pytest.raises(ValueError, match="NUL character"):
        repo.add_document("binary\x00junk")
    with pytest.raises(ValueError, match="lone surrogate"):
        repo.add_document("bad \udcff byte")
    assert repo.counts() == {"queued": 0, "running": 0, "done": 0, "failed": 0}


def test_missing_document_is_none(repo: Repository) -> None:
    assert repo.document(999) is None


# -- jobs ----------------------------------------------------------------------------


def test_submitting_the_same_jobs_twice_creates_nothing_new(repo: Repository, params: AnswerParams) -> None:
    doc = repo.add_document(TRICKY)
    first = repo.add_jobs(doc.id, ["Who?", "What?", "Who?"], model="m", revision=None, params=params)
    assert [created for _, created in first] == [True, True, False]
    assert first[0].id == first[2].id != first[1].id
    again = repo.add_jobs(doc.id, ["What?", "Who?", "Where?"], model="m", revision=None, params=params)
    assert again[0] == (first[1].id, False)
    assert again[1] == (first[0].id, False)
    assert again[2].created
    assert repo.counts()["queued"] == 3


def test_job_identity_includes_model_revision_and_parameters(repo: Repository, params: AnswerParams) -> None:
    doc = repo.add_document(TRICKY)
    base = repo.add_jobs(doc.id, ["Q"], model="m", revision=None, params=params)[0]
    variants = [
        repo.add_jobs(doc.id, ["Q"], model="other", revision=None, params=params)[0],
        repo.add_jobs(doc.id, ["Q"], model="m", revision="v2", params=params)[0],
        repo.add_jobs(doc.id, ["Q"], model="m", revision=None, params=AnswerParams(top_k=3))[0],
        repo.add_jobs(repo.add_document("other text").id, ["Q"], model="m", revision=None, params=params)[0],
    ]
    assert all(v.created for v in variants)
    assert len({base.id, *(v.id for v in variants)}) == 5
    # revision None and "" are the same identity (stored as "").
    assert repo.add_jobs(doc.id, ["Q"], model="m", revision="", params=params)[0] == (base.id, False)


def test_new_jobs_are_queued_with_their_parameters(repo: Repository) -> None:
    params = AnswerParams(top_k=2, max_seq_len=256, doc_stride=64)
    doc = repo.add_document(TRICKY)
    (job_id, _), = repo.add_jobs(doc.id, ["Who?"], model="m", revision="abc123", params=params)
    job = repo.job(job_id)
    assert job.status is JobStatus.QUEUED
    assert (job.attempts, job.error, job.worker, job.leased_until) == (0, None, None, None)
    assert job.params == params and job.revision == "abc123"
    assert repo.job(12345) is None


def test_many_questions_in_one_call(repo: Repository, params: AnswerParams) -> None:
    doc = repo.add_document(TRICKY)
    questions = [f"question {i}?" for i in range(700)]  # more than one insert chunk (500)
    jobs = repo.add_jobs(doc.id, questions, model="m", revision=None, params=params)
    assert len({j.id for j in jobs}) == 700 and all(j.created for j in jobs)
    assert not any(j.created for j in repo.add_jobs(doc.id, questions, model="m", revision=None, params=params))
    assert repo.queued_job_ids() == sorted(j.id for j in jobs)


def test_jobs_for_an_unknown_document_are_refused(repo: Repository, params: AnswerParams) -> None:
    with pytest.raises(NotFound, match="document 42 does not exist"):
        repo.add_jobs(42, ["Q"], model="m", revision=None, params=params)
    assert repo.add_jobs(repo.add_document("t").id, [], model="m", revision=None, params=params) == []


def test_jobs_of_many_documents_in_one_transaction(repo: Repository, params: AnswerParams) -> None:
    a, b = repo.add_document("first text").id, repo.add_document("second text").id
    known = repo.add_jobs(b, ["Old?"], model="m", revision=None, params=params)[0]
    many = [f"q{i}?" for i in range(300)]  # 600 (document, question) pairs: more than one insert chunk
    got = repo.add_jobs_many([(a, ["Who?", "What?", "Who?"]), (b, ["Old?", "Who?"]), (a, ["What?", "New?"]),
                              (b, many), (a, many)], model="m", revision=None, params=params)
    assert [[j.created for j in jobs] for jobs in got[:3]] == [[True, True, False], [False, True], [False, True]]
    assert got[0][0].id == got[0][2].id and got[2][0].id == got[0][1].id  # the same pair: the same job
    assert got[1][0] == known._replace(created=False)  # existed before the call
    assert got[1][1].id != got[0][0].id  # same question, other document: another job
    assert all(j.created for j in got[3] + got[4]) and len({j.id for j in got[3] + got[4]}) == 600
    assert [[j.id for j in jobs] for jobs in got] == [  # as add_jobs gives them, one document at a time
        [j.id for j in repo.add_jobs(doc, qs, model="m", revision=None, params=params)]
        for doc, qs in ((a, ["Who?", "What?", "Who?"]), (b, ["Old?", "Who?"]), (a, ["What?", "New?"]), (b, many),
                        (a, many))]
    assert len(repo.queued_job_ids(limit=10_000)) == 1 + 4 + 600
    with pytest.raises(NotFound, match="document 4242 does not exist"):  # nothing of the call is kept
        repo.add_jobs_many([(a, ["Later?"]), (4242, ["Q"])], model="m", revision=None, params=params)
    assert repo.add_jobs(a, ["Later?"], model="m", revision=None, params=params)[0].created


# -- claim / complete / fail ---------------------------------------------------------


def test_claim_hands_out_queued_jobs_with_their_text(repo: Repository, params: AnswerParams) -> None:
    doc, (j1, j2) = submit(repo, params)
    claimed = repo.claim([j2, j1, j1], worker="host:1", lease_seconds=60)
    assert [c.job_id for c in claimed] == [j1, j2]
    c = claimed[0]
    assert (c.text_id, c.sha256, c.text, c.question) == (doc.text_id, doc.sha256, TRICKY, "Who?")
    assert (c.model, c.revision, c.params, c.attempts) == ("m", None, params, 1)
    job = repo.job(j1)
    assert job.status is JobStatus.RUNNING and job.worker == "host:1"
    assert job.leased_until - job.started_at == timedelta(seconds=60)
    # Running under a live lease: nobody else gets it.
    assert repo.claim([j1, j2], worker="host:2", lease_seconds=60) == []


def test_claim_skips_done_failed_and_unknown_jobs(repo: Repository, params: AnswerParams) -> None:
    _, (j1, j2) = submit(repo, params)
    repo.claim([j1, j2], worker="w", lease_seconds=60)
    repo.complete(j1, [], model_label="m")
    repo.fail(j2, "the document is empty")
    later = utcnow() + timedelta(hours=1)
    assert repo.claim([j1, j2, 999], worker="w", lease_seconds=60, now=later) == []


def test_claim_takes_back_a_job_whose_lease_ran_out(repo: Repository, params: AnswerParams) -> None:
    _, (j1, _) = submit(repo, params)
    repo.claim([j1], worker="dead", lease_seconds=10)
    later = utcnow() + timedelta(seconds=11)
    (again,) = repo.claim([j1], worker="alive", lease_seconds=10, now=later)
    assert again.attempts == 2
    assert repo.job(j1).worker == "alive"


def test_claim_with_max_attempts_fails_a_job_that_keeps_killing_workers(repo: Repository, params: AnswerParams) -> None:
    _, (j1, _) = submit(repo, params)
    now = utcnow()
    for attempt in range(2):
        now += timedelta(seconds=11)
        assert repo.claim([j1], worker=f"w{attempt}", lease_seconds=10, max_attempts=2, now=now)
    now += timedelta(seconds=11)
    assert repo.claim([j1], worker="w2", lease_seconds=10, max_attempts=2, now=now) == []
    job = repo.job(j1)
    assert job.status is JobStatus.FAILED
    assert "gave up after 2 attempts" in job.error and "last worker: w1" in job.error


def test_completing_twice_leaves_one_set_of_answers(repo: Repository, params: AnswerParams) -> None:
    _, (j1, _) = submit(repo, params)
    repo.claim([j1], worker="w", lease_seconds=60)
    start = TRICKY.index("👩")
    answers = [answer_at(TRICKY, start, start + 3, rank=0, score=0.75), answer_at(TRICKY, 0, 4, rank=1, score=0.125)]
    repo.complete(j1, answers, model_label="m@rev")
    repo.complete(j1, list(reversed(answers)), model_label="m@rev")
    assert repo.answers_for_job(j1) == answers
    assert len(list(repo.iter_results(job_id=j1))) == 2
    job = repo.job(j1)
    assert job.status is JobStatus.DONE and job.error is None and job.leased_until is None
    assert job.finished_at is not None
    # A re-run with fewer answers replaces, never appends.
    repo.complete(j1, answers[:1], model_label="m@rev")
    assert repo.answers_for_job(j1) == answers[:1]


def test_stored_answers_select_their_text_in_the_document(repo: Repository, params: AnswerParams) -> None:
    _, (j1, _) = submit(repo, params)
    for start, end in [(0, 0), (9, 19), (TRICKY.index("caf"), TRICKY.index("caf") + 5), (len(TRICKY) - 3, len(TRICKY))]:
        repo.complete(j1, [answer_at(TRICKY, start, end)], model_label="m")
        (stored,) = repo.answers_for_job(j1)
        assert TRICKY[stored.char_start : stored.char_end] == stored.text


@pytest.mark.parametrize(
    "bad, reason",
    [
        (dict(text="wrong", char_start=0, char_end=5), "is not the document text"),
        (dict(text="x", char_start=len(TRICKY), char_end=len(TRICKY) + 1), "document has"),
        (dict(text="ab", char_start=0, char_end=3), "span 3"),
        (dict(text="Line", char_start=0, char_end=4, score=float("nan")), "non-finite"),
    ],
)
def test_answers_that_break_the_offset_contract_are_refused(
    repo: Repository, params: AnswerParams, bad: dict, reason: str
) -> None:
    _, (j1, _) = submit(repo, params)
    repo.claim([j1], worker="w", lease_seconds=60)
    fields = {"score": 0.5, **bad}
    with pytest.raises(ValueError, match=reason):
        repo.complete(j1, [Answer(rank=0, **fields)], model_label="m")
    assert repo.answers_for_job(j1) == []
    assert repo.job(j1).status is JobStatus.RUNNING


def test_repeated_ranks_are_refused(repo: Repository, params: AnswerParams) -> None:
    _, (j1, _) = submit(repo, params)
    with pytest.raises(ValueError, match="ranks repeat"):
        repo.complete(j1, [answer_at(TRICKY, 0, 4), answer_at(TRICKY, 0, 4)], model_label="m")


def test_complete_many_stores_a_batch_and_refuses_only_the_bad_jobs(repo: Repository, params: AnswerParams) -> None:
    _, (j1, j2) = submit(repo, params)
    _, (j3, j4) = submit(repo, params, text="Second document.")
    repo.claim([j1, j2, j3, j4], worker="w", lease_seconds=60)
    repo.complete(j2, [answer_at(TRICKY, 0, 4)], model_label="old")  # replaced below
    good = {
        j1: [answer_at(TRICKY, 0, 4, rank=0, score=0.75), answer_at(TRICKY, 9, 13, rank=1, score=0.25)],
        j2: [],  # no answer at all is a valid result
        j4: [answer_at("Second document.", 7, 15)],
    }
    bad = [Answer(rank=0, text="wrong", char_start=0, char_end=5, score=0.5)]
    refused = repo.complete_many(
        [(j1, good[j1]), (j3, bad), (j2, good[j2]), (999, []), (j4, good[j4])], model_label="m@rev"
    )
    assert set(refused) == {j3, 999}
    assert isinstance(refused[j3], ValueError) and "is not the document text" in str(refused[j3])
    assert isinstance(refused[999], NotFound)
    for job_id, answers in good.items():
        assert repo.answers_for_job(job_id) == answers
        assert repo.job(job_id).status is JobStatus.DONE
    assert {r.model for r in repo.iter_results()} == {"m@rev"}
    # the refused job is untouched: still running, no answers, free to be failed or retried
    assert repo.job(j3).status is JobStatus.RUNNING and repo.answers_for_job(j3) == []
    with pytest.raises(ValueError, match="appears twice"):
        repo.complete_many([(j1, []), (j1, [])], model_label="m")
    assert repo.complete_many([], model_label="m") == {}


def test_fail_records_the_reason_and_never_hides_answers(repo: Repository, params: AnswerParams) -> None:
    _, (j1, j2) = submit(repo, params)
    assert repo.fail(j1, "question is empty; give a question")
    job = repo.job(j1)
    assert job.status is JobStatus.FAILED and job.error == "question is empty; give a question"
    repo.complete(j2, [answer_at(TRICKY, 0, 4)], model_label="m")
    assert not repo.fail(j2, "stale delivery failed")
    assert repo.job(j2).status is JobStatus.DONE
    with pytest.raises(NotFound):
        repo.fail(999, "x")
    with pytest.raises(NotFound):
        repo.complete(999, [], model_label="m")


def test_extend_lease_only_for_the_worker_holding_the_job(repo: Repository, params: AnswerParams) -> None:
    _, (j1, j2) = submit(repo, params)
    repo.claim([j1], worker="a", lease_seconds=10)
    repo.claim([j2], worker="b", lease_seconds=10)
    assert repo.extend_lease([j1, j2], worker="a", lease_seconds=600) == [j1]
    assert repo.job(j1).leased_until - utcnow() > timedelta(seconds=500)
    assert repo.job(j2).leased_until - utcnow() < timedelta(seconds=11)


# -- sweeper -------------------------------------------------------------------------


def test_requeue_expired_requeues_then_gives_up_with_the_reason(repo: Repository, params: AnswerParams) -> None:
    _, (j1, j2) = submit(repo, params)
    now = utcnow()
    repo.claim([j2], worker="slow-but-alive", lease_seconds=3600, now=now)
    for attempt in range(1, 4):
        assert repo.claim([j1], worker=f"host:{attempt}", lease_seconds=10, now=now)
        assert repo.requeue_expired(max_attempts=3, now=now + timedelta(seconds=5)) == []
        now += timedelta(seconds=11)
        given_up: list[int] = []
        requeued = repo.requeue_expired(max_attempts=3, now=now, given_up=given_up)
        if attempt < 3:
            assert requeued == [j1] and given_up == []
            assert repo.job(j1).status is JobStatus.QUEUED
            assert repo.queued_job_ids() == [j1]
        else:  # the sweeper counts these as failed jobs
            assert requeued == [] and given_up == [j1]
    job = repo.job(j1)
    assert job.status is JobStatus.FAILED and job.attempts == 3
    assert job.error.startswith(
        "gave up after 3 attempts: the worker process died or stopped renewing its lease while running this job "
        "each time (alone, after the first time: this job itself brings its worker down) (last worker: host:3)"
    )
    assert repo.job(j2).status is JobStatus.RUNNING
    assert repo.counts() == {"queued": 0, "running": 1, "done": 0, "failed": 1}


# -- queries -------------------------------------------------------------------------


def test_counts_include_every_status(repo: Repository, params: AnswerParams) -> None:
    assert repo.counts() == {"queued": 0, "running": 0, "done": 0, "failed": 0}
    _, ids = submit(repo, params, questions=["a", "b", "c", "d"])
    repo.claim(ids[:3], worker="w", lease_seconds=60)
    repo.complete(ids[0], [], model_label="m")
    repo.fail(ids[1], "bad")
    assert repo.counts() == {"queued": 1, "running": 1, "done": 1, "failed": 1}
    assert list(repo.counts()) == [s.value for s in JobStatus]


def test_queued_job_ids_oldest_first(repo: Repository, params: AnswerParams) -> None:
    _, ids = submit(repo, params, questions=["a", "b", "c"])
    assert repo.queued_job_ids() == ids
    assert repo.queued_job_ids(limit=2) == ids[:2]
    repo.claim([ids[0]], worker="w", lease_seconds=60)
    assert repo.queued_job_ids() == ids[1:]


def test_failures_name_the_document_question_and_reason(repo: Repository, params: AnswerParams) -> None:
    jsonl = repo.add_document("one", source="jsonl:in.jsonl:4", external_id="doc-4")
    bare = repo.add_document("two")
    (j1, _), = repo.add_jobs(jsonl.id, ["Q1"], model="m", revision=None, params=params)
    (j2, _), = repo.add_jobs(bare.id, ["Q2"], model="m", revision=None, params=params)
    repo.fail(j1, "the question is longer than max_seq_len allows; raise max_seq_len")
    repo.fail(j2, "boom")
    assert repo.failures() == [
        (j1, "doc-4 (jsonl:in.jsonl:4)", "Q1", "the question is longer than max_seq_len allows; raise max_seq_len"),
        (j2, f"document {bare.id}", "Q2", "boom"),
    ]
    assert repo.failures(limit=1) == repo.failures()[:1]


def test_iter_results_order_filters_and_follow(repo: Repository, params: AnswerParams) -> None:
    doc_a = repo.add_document(TRICKY, source="a.txt")
    doc_b = repo.add_document("Second document.", external_id="b")
    ja = [j.id for j in repo.add_jobs(doc_a.id, ["x", "y"], model="m", revision=None, params=params)]
    (jb, _), = repo.add_jobs(doc_b.id, ["z"], model="m", revision="r", params=params)
    repo.complete(ja[1], [answer_at(TRICKY, 0, 4, rank=0), answer_at(TRICKY, 5, 8, rank=1)], model_label="m")
    repo.complete(jb, [answer_at("Second document.", 7, 15)], model_label="m@r")
    repo.complete(ja[0], [answer_at(TRICKY, 9, 13)], model_label="m")

    everything = list(repo.iter_results(batch=2))  # several batches
    ids = [r.answer_id for r in everything]
    assert ids == sorted(ids) and len(ids) == 4
    assert [(r.job_id, r.rank) for r in everything] == [(ja[1], 0), (ja[1], 1), (jb, 0), (ja[0], 0)]
    b = everything[2]
    assert (b.document_id, b.document_external_id, b.document_source, b.sha256) == (doc_b.id, "b", None, doc_b.sha256)
    assert (b.question, b.text, b.char_start, b.char_end, b.model) == ("z", "document", 7, 15, "m@r")
    assert (b.window_index, b.token_start, b.start_logit, b.end_logit) == (0, 7, 1.25, -0.5)

    assert [r.job_id for r in repo.iter_results(document_id=doc_a.id)] == [ja[1], ja[1], ja[0]]
    assert [r.rank for r in repo.iter_results(job_id=ja[1])] == [0, 1]
    assert list(repo.iter_results(document_id=doc_b.id, job_id=ja[0])) == []

    # Following: poll from the last id seen; a new answer (or a re-run) appears once.
    last = ids[-1]
    assert list(repo.iter_results(after_answer_id=last)) == []
    (jc, _), = repo.add_jobs(doc_b.id, ["w"], model="m", revision=None, params=params)
    repo.complete(jc, [answer_at("Second document.", 0, 6)], model_label="m")
    new = list(repo.iter_results(after_answer_id=last))
    assert [(r.job_id, r.text) for r in new] == [(jc, "Second")]
    assert list(repo.iter_results(after_answer_id=new[-1].answer_id)) == []


def test_timestamps_are_utc(repo: Repository, params: AnswerParams) -> None:
    _, (j1, _) = submit(repo, params)
    before = utcnow()
    repo.claim([j1], worker="w", lease_seconds=30)
    job = repo.job(j1)
    for value in (job.created_at, job.updated_at, job.started_at, job.leased_until):
        assert value.tzinfo is not None and value.utcoffset() == timedelta(0)
    assert before <= job.started_at <= utcnow()
    # Any zone may be passed in; it is compared as the same instant.
    tokyo = timezone(timedelta(hours=9))
    assert repo.requeue_expired(max_attempts=3, now=(before + timedelta(seconds=31)).astimezone(tokyo)) == [j1]


def test_claim_queued_tops_up_with_the_oldest_jobs_of_one_model(repo: Repository, params: AnswerParams) -> None:
    doc = repo.add_document(TRICKY)
    plain = [j.id for j in repo.add_jobs(doc.id, ["a", "b", "c", "d"], model="m", revision=None, params=params)]
    pinned = [j.id for j in repo.add_jobs(doc.id, ["a"], model="m", revision="v2", params=params)]
    other = [j.id for j in repo.add_jobs(doc.id, ["a"], model="other", revision=None, params=params)]
    repo.claim([plain[0]], worker="w0", lease_seconds=60)

    got = repo.claim_queued(limit=2, model="m", revision="", worker="w1", lease_seconds=60)
    assert [c.job_id for c in got] == plain[1:3]
    assert all(c.attempts == 1 and c.text == TRICKY for c in got)
    assert [c.job_id for c in repo.claim_queued(limit=10, model="m", revision=None, worker="w1", lease_seconds=60)] == plain[3:]
    assert repo.claim_queued(limit=10, model="m", revision=None, worker="w1", lease_seconds=60) == []
    assert [c.job_id for c in repo.claim_queued(limit=10, model="m", revision="v2", worker="w", lease_seconds=60)] == pinned
    assert repo.claim_queued(limit=0, model="other", revision=None, worker="w", lease_seconds=60) == []
    assert repo.queued_job_ids(model="other") == other


def test_queued_job_ids_of_one_model(repo: Repository, params: AnswerParams) -> None:
    doc = repo.add_document(TRICKY)
    plain = [j.id for j in repo.add_jobs(doc.id, ["a", "b"], model="m", revision=None, params=params)]
    pinned = [j.id for j in repo.add_jobs(doc.id, ["a"], model="m", revision="v2", params=params)]
    assert repo.queued_job_ids(model="m", revision="") == plain
    assert repo.queued_job_ids(model="m") == plain
    assert repo.queued_job_ids(model="m", revision="v2") == pinned
    assert repo.queued_job_ids(model="x") == []
    assert repo.queued_job_ids() == plain + pinned
    with pytest.raises(ValueError, match="needs a model"):
        repo.queued_job_ids(revision="v2")
