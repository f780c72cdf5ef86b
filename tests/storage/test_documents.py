"""Documents share texts, not provenance: results per document, paging and following them,
deleting one document of a shared text, counted and verified in the store."""

from __future__ import annotations

from docqa.core.params import AnswerParams
from docqa.storage.answers import result_cursor
from docqa.storage.repository import Repository

from tests.storage.test_repository import answer_at

SHARED = "The licence is granted by the authors."


def _ask(repo: Repository, params: AnswerParams, doc_id: int, question: str = "Who?") -> int:
    ((job_id, _created),) = repo.add_jobs(doc_id, [question], model="m", revision=None, params=params)
    return job_id


def test_each_document_of_a_text_gets_the_answer_under_its_own_name(repo: Repository, params: AnswerParams) -> None:
    docs = [repo.add_document(SHARED, source=f"/corpus/{n}/LICENSE", version_key=f"path:/corpus/{n}/LICENSE",
                              metadata={"n": n}) for n in range(3)]
    jobs = {_ask(repo, params, d.id) for d in docs}
    assert len(jobs) == 1 and len({d.text_id for d in docs}) == 1  # one text, one job
    (job,) = jobs
    repo.complete(job, [answer_at(SHARED, SHARED.index("the authors"), SHARED.index("the authors") + 11)], model_label="m")
    records = list(repo.iter_results())
    assert [(r.document_id, r.document_source, r.document_metadata) for r in records] == [
        (d.id, f"/corpus/{n}/LICENSE", {"n": n}) for n, d in enumerate(docs)]
    assert {(r.answer_id, r.job_id, r.text_id, r.text) for r in records} == {
        (records[0].answer_id, job, docs[0].text_id, "the authors")}
    # A question only one document asked is reported for that document alone.
    only = _ask(repo, params, docs[1].id, "What?")
    repo.complete(only, [answer_at(SHARED, 4, 11)], model_label="m")
    assert [r.document_id for r in repo.iter_results(question="What?")] == [docs[1].id]


def test_pages_in_every_order_give_each_record_once(repo: Repository, params: AnswerParams) -> None:
    texts = [f"Text number {n} about rivers." for n in range(4)]
    for n in range(12):  # 12 documents over 4 texts
        doc = repo.add_document(texts[n % 4], external_id=f"d{n}")
        job = _ask(repo, params, doc.id)
        if n < 4:
            repo.complete(job, [answer_at(texts[n], 0, 4, score=0.1 * (n + 1))], model_label="m")
    for order in ("answer", "reference", "margin"):
        whole = [(r.answer_id, r.document_id) for r in repo.iter_results(order=order)]
        assert len(whole) == 12 and len(set(whole)) == 12
        paged, cursor = [], None
        while True:
            page = list(repo.iter_results(order=order, after=cursor, batch=5))[:5]
            paged += [(r.answer_id, r.document_id) for r in page]
            if len(page) < 5:
                break
            cursor = result_cursor(page[-1], order)
        assert paged == whole, order
    # A cursor of an earlier release (no document id) resumes after every record of its answer.
    first = next(repo.iter_results())
    rest = list(repo.iter_results(after=str(first.answer_id)))
    assert all(r.answer_id > first.answer_id for r in rest) and len(rest) == 9


def test_following_shows_documents_linked_to_answers_seen_before(repo: Repository, params: AnswerParams) -> None:
    a = repo.add_document(SHARED, external_id="a")
    job = _ask(repo, params, a.id)
    seen, position = [], None

    def follow() -> None:
        nonlocal position
        records, position = repo.follow_results(position)
        seen.extend((r.answer_id, r.document_external_id) for r in records)

    follow()
    assert seen == []
    repo.complete(job, [answer_at(SHARED, SHARED.index("the authors"), SHARED.index("the authors") + 11)], model_label="m")
    follow()
    assert [doc for _answer, doc in seen] == ["a"]
    # A document whose text was answered before: its record appears with an old answer id.
    b = repo.add_document(SHARED, external_id="b")
    assert _ask(repo, params, b.id) == job
    follow()
    assert [doc for _answer, doc in seen] == ["a", "b"] and seen[0][0] == seen[1][0]
    # A new answer and a new link in one pass; nothing twice; nothing more when nothing changed.
    other = repo.add_document("Another text entirely.", external_id="c")
    repo.complete(_ask(repo, params, other.id), [answer_at("Another text entirely.", 0, 7)], model_label="m")
    d = repo.add_document(SHARED, external_id="d")
    _ask(repo, params, d.id)
    follow()
    follow()
    assert sorted(doc for _answer, doc in seen) == ["a", "b", "c", "d"] and len(set(seen)) == 4
    # Filters apply to both kinds of record.
    e = repo.add_document(SHARED, external_id="e", metadata={"team": "ops"})
    _ask(repo, params, e.id)
    records, _ = repo.follow_results(position, where={"team": "ops"})
    assert [r.document_external_id for r in records] == ["e"]


def test_deleting_documents_keeps_what_others_need_and_counts_what_goes(repo: Repository, params) -> None:
    a = repo.add_document(SHARED, external_id="a")
    b = repo.add_document(SHARED, external_id="b")
    shared_job = _ask(repo, params, a.id)
    _ask(repo, params, b.id)
    own_job = _ask(repo, params, a.id, "Only a asks this?")
    for job in (shared_job, own_job):
        repo.complete(job, [answer_at(SHARED, 4, 11)], model_label="m")
    # a goes: its own question's job and answer go, the shared text and its answer stay for b.
    assert repo.delete_documents(repo.resolve_documents("a")) == (1, 1, 1, 0)
    assert repo.job(own_job) is None and repo.job(shared_job) is not None
    assert [r.document_external_id for r in repo.iter_results(all_versions=True)] == ["b"]
    assert repo.delete_documents(repo.resolve_documents("b")) == (1, 1, 1, 1)
    assert repo.text_of(b.text_id) is None and sum(repo.counts().values()) == 0
