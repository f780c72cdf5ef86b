"""Long jobs run as window-range parts give exactly the answers of one run of the whole job:
at random split points, on the 5.2.0 goldens, through a real store (SQLite and
PostgreSQL); parts are fenced, durable, merged once, and a failed part fails its job."""

from __future__ import annotations

import json
import random
from datetime import timedelta
from pathlib import Path

import pytest

from docqa.core.params import AnswerParams
from docqa.core.windows import tokenize_document
from docqa.producer.chunking import Chunker
from docqa.producer.documents import SourceDocument
from docqa.producer.submit import submit
from docqa.storage.columns import utcnow
from docqa.storage.db import make_engine
from docqa.storage.errors import LeaseLost
from docqa.storage.models import JobStatus
from docqa.storage.parts import split_fence
from docqa.storage.records import Fence
from docqa.storage.repository import Repository
from docqa.worker.engine import Engine, QAItem
from docqa.worker.parts import decode_windows, encode_windows, part_ranges
from docqa.worker.runner import JobRunner, answer_queued
from docqa.worker.spans import merge_answers

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "golden.json").read_text(encoding="utf-8"))
LONG = [c for c in GOLDEN["cases"] if c["n_windows"] >= 2]
WORDS = ("the river flows north through old towns while engineers in Paris designed a tower of iron in 1889 "
         "and the council met on Tuesday to vote on the bridge").split()


@pytest.fixture(scope="module")
def one_by_one(tiny_model):
    """Every forward holds one window, so a window's logits do not depend on its batch-mates
    and runs that group windows differently compare exactly."""
    return Engine(tiny_model, device="cpu", batch_tokens=1).warm_up()


def _split_run(engine: Engine, item: QAItem, cuts: list[int]):
    """The item answered as parts cut at `cuts` (window indexes), each part run on its own,
    its windows kept through encode/decode, then merged as the worker merges them."""
    n = engine.run([item])[0].n_windows
    bounds = [0, *cuts, n]
    windows = []
    for start, end in zip(bounds, bounds[1:]):
        part = engine.run([QAItem(item.text, item.question, item.params, window_range=(start, end))])[0]
        assert part.ok and part.answers == [] and len(part.windows) == end - start
        windows += decode_windows(encode_windows(part.windows))
    tokens = tokenize_document(engine.tokenizer, item.text)
    return merge_answers(item.text, windows, tokens.offsets, tokens.word_ids, item.params)


def test_part_ranges_cover_every_window_once_in_near_equal_parts():
    for n in range(1, 300):
        for size in (1, 2, 7, 64, 128):
            ranges = part_ranges(n, size)
            assert ranges[0][0] == 0 and ranges[-1][1] == n
            assert all(a < b and b - a <= size for a, b in ranges)
            assert all(r[1] == s[0] for r, s in zip(ranges, ranges[1:]))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1 and len(ranges) == -(-n // size)
    with pytest.raises(ValueError):
        part_ranges(0, 4)


def test_random_split_points_give_exactly_the_whole_runs_answers(one_by_one):
    rng = random.Random(19)
    checked = 0
    for trial in range(12):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(150, 700)))
        params = AnswerParams(
            max_seq_len=rng.choice([32, 48, 64]), doc_stride=rng.choice([0, 8, 16]), top_k=rng.choice([1, 3, 5]),
            handle_impossible_answer=rng.random() < 0.5, align_to_words=rng.random() < 0.7,
            merge_by_text=rng.random() < 0.7, max_answer_len=rng.choice([3, 15]),
        )
        item = QAItem(text, rng.choice(["Who designed the tower?", "When did the council meet?", "Where?"]), params)
        whole = one_by_one.run([item])[0]
        assert whole.ok and whole.n_windows >= 3
        cuts = sorted(rng.sample(range(1, whole.n_windows), rng.randint(1, min(6, whole.n_windows - 1))))
        assert _split_run(one_by_one, item, cuts) == whole.answers, (trial, cuts, params)
        checked += 1
    assert checked == 12


@pytest.mark.parametrize("case", LONG, ids=[c["id"] for c in LONG])
def test_golden_cases_split_at_every_window_give_the_reference_answers(one_by_one, case):
    item = QAItem(case["context"], case["question"], AnswerParams(**case["params"]))
    whole = one_by_one.run([item])[0]
    split = _split_run(one_by_one, item, list(range(1, case["n_windows"])))
    assert split == whole.answers
    want = [(a["answer"], a["start"], a["end"]) for a in case["answers"] if a["score"] > 0]
    got = [(a.text, a.char_start, a.char_end) for a in split if a.score > 0]
    assert got == want
    for a, ref in zip([a for a in split if a.score > 0], [a for a in case["answers"] if a["score"] > 0]):
        assert a.score == pytest.approx(ref["score"], rel=1e-4, abs=1e-12)


def test_a_window_range_outside_the_job_is_an_error_not_an_answer(engine):
    item = QAItem("a short text", "what?", AnswerParams(), window_range=(0, 5))
    [result] = engine.run([item])
    assert not result.ok and "outside this job's 1 windows" in result.error


# -- through a real store -------------------------------------------------------------------
@pytest.fixture
def repo(store_url):
    db = make_engine(store_url)
    yield Repository.from_engine(db)
    db.dispose()


def _submit(repo, engine, texts: list[str], questions: list[str], params: AnswerParams) -> list[int]:
    docs = [SourceDocument(text=t, source=f"doc{i}", external_id=f"doc{i}") for i, t in enumerate(texts)]
    report = submit(docs, questions, repo=repo, model=engine.model_id, revision=None, params=params,
                    chunker=lambda: Chunker(engine.tokenizer))
    return report.new_job_ids


def test_goldens_split_through_the_store_give_the_whole_runs_answers(repo, one_by_one):
    """The 5.2.0 golden cases through a real store, every job over one window split into
    one-window parts that are run, stored, decoded and merged by the worker."""
    cases = LONG[:25]
    ids = []
    for case in cases:
        ids += _submit(repo, one_by_one, [case["context"]], [case["question"]], AnswerParams(**case["params"]))
    runner = JobRunner(repo, one_by_one, lease_seconds=60, name="A", split_windows=1, max_windows=10_000)
    total = answer_queued(runner, model=one_by_one.model_id, revision=None)
    assert total.done == len(cases) and total.failed == 0
    assert total.merged == len(cases)  # every case has two windows or more
    assert repo.split_states() == [] and repo.counts()["done"] == len(cases)
    whole = one_by_one.run([QAItem(c["context"], c["question"], AnswerParams(**c["params"])) for c in cases])
    for job, case, want in zip(ids, cases, whole):
        assert repo.answers_for_job(job) == want.answers, case["id"]


def _split_one(repo, engine, *, seed: int):
    """One 300-word job, split by runner "A" (4-window runs) into parts that wait queued:
    (job id, runner, part ids)."""
    text = " ".join(random.Random(seed).choice(WORDS) for _ in range(300))
    [job] = _submit(repo, engine, [text], ["Where?"], AnswerParams(max_seq_len=48, doc_stride=8))
    runner = JobRunner(repo, engine, lease_seconds=60, name="A", max_windows=4)
    parts: list[int] = []
    runner.on_split = parts.extend
    runner.run([job], fill=False)
    return job, runner, parts


def test_a_long_job_runs_as_parts_any_worker_claims_and_is_answered_once(repo, one_by_one):
    text = " ".join(random.Random(3).choice(WORDS) for _ in range(900))
    params = AnswerParams(max_seq_len=48, doc_stride=8, top_k=3)
    [job] = _submit(repo, one_by_one, [text], ["Who designed the tower?"], params)
    n = len(repo.plans_for([job])[job].spans)
    assert n > 20
    a = JobRunner(repo, one_by_one, lease_seconds=60, name="A", max_windows=8)
    b = JobRunner(repo, one_by_one, lease_seconds=60, name="B", max_windows=8)
    sent: list[int] = []
    a.on_split = sent.extend
    stats = a.run([job], fill=False)
    assert stats.split == [job] and stats.claimed == 0 and len(sent) == -(-n // 8)
    assert repo.job(job).status is JobStatus.RUNNING and repo.job(job).worker is None
    assert repo.counts() == {"queued": 0, "running": 1, "done": 0, "failed": 0}  # parts are not jobs to report
    # Two workers take the parts in turn; each finished part is stored at once.
    done_parts = 0
    for i, part in enumerate(sent):
        runner = (a, b)[i % 2]
        s = runner.run([part], fill=False)
        done_parts += s.parts_done
        assert s.claimed == 1 and s.parts_done == 1
        if i < len(sent) - 1:
            assert s.done == 0 and repo.job(job).status is JobStatus.RUNNING
    assert done_parts == len(sent) and s.merged == 1 and s.done == 1
    assert repo.job(job).status is JobStatus.DONE and repo.split_states() == []
    whole = one_by_one.run([QAItem(text, "Who designed the tower?", params)])[0]
    assert repo.answers_for_job(job) == whole.answers


def test_parts_are_fenced_and_a_lost_range_is_the_only_one_run_again(repo, one_by_one):
    text = " ".join(random.Random(5).choice(WORDS) for _ in range(400))
    params = AnswerParams(max_seq_len=48, doc_stride=8)
    [job] = _submit(repo, one_by_one, [text], ["When did the council meet?"], params)
    a = JobRunner(repo, one_by_one, lease_seconds=60, name="A", max_windows=6)
    parts: list[int] = []
    a.on_split = parts.extend
    a.run([job], fill=False)
    first, second = parts[:2]
    assert a.run([first], fill=False).parts_done == 1
    # A worker claims the second part and dies: only that range's lease runs out.
    [held] = repo.claim([second], worker="dead", lease_seconds=1)
    later = utcnow() + timedelta(seconds=30)
    assert repo.requeue_expired(max_attempts=3, now=later) == [second]
    refused, ready = repo.complete_parts([(second, b"late")], fence=Fence("dead", {second: held.attempts}))
    assert isinstance(refused[second], LeaseLost) and ready == []
    assert repo.job(first).status is JobStatus.DONE  # the finished range is kept
    total = answer_queued(a, model=one_by_one.model_id, revision=None)
    assert total.merged == 1 and repo.job(job).status is JobStatus.DONE
    whole = one_by_one.run([QAItem(text, "When did the council meet?", params)])[0]
    assert repo.answers_for_job(job) == whole.answers


def test_one_merge_wins_when_two_workers_finish_together(repo, one_by_one):
    job, a, parts = _split_one(repo, one_by_one, seed=7)
    for part in parts:
        [claimed] = repo.claim([part], worker="A", lease_seconds=60)
        result = one_by_one.run([QAItem(claimed.text, claimed.question, claimed.params,
                                        window_range=(claimed.window_start, claimed.window_end))])[0]
        repo.complete_parts([(part, encode_windows(result.windows))], fence=Fence("A", {part: claimed.attempts}))
    b = JobRunner(repo, one_by_one, lease_seconds=60, name="B")
    assert a.merge(job) is not None
    assert b.merge(job) is None  # done already: nothing written twice
    assert len(repo.answers_for_job(job)) == 1 and repo.job(job).status is JobStatus.DONE
    # A merge fenced by a stale split generation writes nothing either.
    refused = repo.complete_many([(job, [])], model_label="m", fence=split_fence(job, 99))
    assert isinstance(refused[job], LeaseLost)


def test_a_failed_part_fails_its_job_with_the_reason_and_its_parts_go(repo, one_by_one):
    job, a, parts = _split_one(repo, one_by_one, seed=9)
    # One part keeps killing its worker: attempts run out, the sweeper gives it up.
    victim = parts[1]
    for attempt in range(3):
        repo.claim([victim], worker=f"w{attempt}", lease_seconds=1)
        repo.requeue_expired(max_attempts=3, now=utcnow() + timedelta(seconds=30 * (attempt + 1)))
    record = repo.job(job)
    assert record.status is JobStatus.FAILED
    assert record.error.startswith("its windows ") and "gave up after 3 attempts" in record.error
    assert repo.split_states() == [] and all(repo.job(p) is None for p in parts)
    assert [f.job_id for f in repo.failures()] == [job]
    # Retried, it is split again and answered.
    repo.retry_failed(job_ids=[job])
    total = answer_queued(a, model=one_by_one.model_id, revision=None)
    assert total.merged == 1 and repo.job(job).status is JobStatus.DONE


def test_a_split_job_without_parts_is_queued_again_by_the_sweeper(repo, one_by_one):
    text = " ".join(random.Random(11).choice(WORDS) for _ in range(300))
    [job] = _submit(repo, one_by_one, [text], ["Where?"], AnswerParams(max_seq_len=48, doc_stride=8))
    [claimed] = repo.claim([job], worker="A", lease_seconds=60)
    parts = repo.split_job(job, [(0, 2), (2, 4)], fence=Fence("A", {job: claimed.attempts}))
    with pytest.raises(LeaseLost):  # a second split by a stale claim
        repo.split_job(job, [(0, 4)], fence=Fence("A", {job: claimed.attempts}))
    from sqlalchemy import delete

    from docqa.storage.models import Job

    with repo._write() as session:  # parts lost by hand: nothing should be left stranded
        session.execute(delete(Job).where(Job.id.in_(parts)))
    runner = JobRunner(repo, one_by_one, lease_seconds=60, name="A")
    assert runner.settle_splits() == 0
    assert repo.job(job).status is JobStatus.QUEUED


def test_deleting_the_document_deletes_its_jobs_parts(repo, one_by_one):
    job, a, parts = _split_one(repo, one_by_one, seed=13)
    a.run([parts[0]], fill=False)
    repo.delete_documents(repo.resolve_external_id("doc0"))
    assert repo.job(job) is None and all(repo.job(p) is None for p in parts)


def test_a_worker_claims_what_it_runs_in_a_few_seconds_and_fills_only_what_fits(repo, one_by_one):
    runner = JobRunner(repo, one_by_one, lease_seconds=60, name="A")
    assert runner.max_windows == 32  # before any measure, on a CPU
    runner._measure(300, 1.0)
    assert runner.max_windows == 900  # 3 s at 300 windows/s
    runner._measure(3, 100.0)  # too few windows to tell anything
    assert runner.max_windows == 900
    runner._measure(100, 10.0)  # slower: the budget follows (a moving average)
    assert runner.max_windows == int((0.7 * 300 + 0.3 * 10) * 3)
    assert JobRunner(repo, one_by_one, lease_seconds=60, max_windows=7).max_windows == 7  # as set
    # Claims by windows: the first job whatever its size, then only what fits; `fit` takes
    # only what fits from the start.
    texts = [" ".join(random.Random(k).choice(WORDS) for _ in range(n)) for k, n in enumerate((600, 20, 20, 20))]
    ids = _submit(repo, one_by_one, texts, ["Where?"], AnswerParams(max_seq_len=48, doc_stride=8))
    sizes = {j: repo.queued_jobs([j])[0].n_windows for j in ids}
    assert sizes[ids[0]] > 10 and all(sizes[j] <= 3 for j in ids[1:])
    assert repo.claim(ids, worker="A", lease_seconds=60, max_windows=10, fit=True) == []
    got = repo.claim(ids, worker="A", lease_seconds=60, max_windows=10)
    assert [c.job_id for c in got] == [ids[0]]
    got = repo.claim_queued(limit=10, model=one_by_one.model_id, revision=None, worker="A", lease_seconds=60,
                            max_windows=sizes[ids[1]] + sizes[ids[2]], fit=True)
    assert [c.job_id for c in got] == ids[1:3]


def test_a_worker_times_its_engine_before_its_first_claim(one_by_one, engine):
    runner = JobRunner(None, engine, lease_seconds=60)
    rate = runner.calibrate()
    assert rate > 0 and runner.windows_per_second == rate
    assert runner.max_windows == max(8, min(16384, int(rate * 3)))
    runner.calibrate()  # a later call measures, but the first estimate stands until runs refine it
    assert runner.windows_per_second == rate
