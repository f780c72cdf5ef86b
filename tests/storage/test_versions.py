"""Document versions: the same id or path with new content is a new version (a document of
its own, pointing at its text); results show the latest unless all versions are asked for;
one latest version even under races; versions never leak from one key to another."""

from __future__ import annotations

import multiprocessing

import pytest
from sqlalchemy import func, select

from docqa.core.params import AnswerParams
from docqa.storage.db import make_engine
from docqa.storage.models import Document
from docqa.storage.repository import Repository

from tests.storage.test_repository import answer_at


def answered(repo: Repository, params: AnswerParams, doc_id: int, text: str, question: str = "Q?") -> int:
    ((job_id, _),) = repo.add_jobs(doc_id, [question], model="m", revision=None, params=params)
    repo.complete(job_id, [answer_at(text, 0, 3)], model_label="m")
    return job_id


def versions(repo: Repository, key: str) -> list[tuple[int, int, bool]]:
    """(version, text id, latest) of each version of `key`."""
    with repo._read() as session:
        rows = session.execute(
            select(Document.version, Document.text_id, Document.latest).where(Document.key == key)
            .order_by(Document.version)
        ).all()
    return [tuple(r) for r in rows]


def test_new_content_is_a_new_version_and_results_show_the_latest(repo: Repository, params: AnswerParams) -> None:
    v1 = repo.add_document("First text.", external_id="doc", version_key="id:doc", metadata={"rev": 1})
    assert (v1.created, v1.version, v1.changed, v1.text_created) == (True, 1, False, True)
    again = repo.add_document("First text.", external_id="doc", version_key="id:doc", metadata={"rev": "1b"})
    assert (again.id, again.created, again.version, again.changed) == (v1.id, False, 1, False)
    assert repo.document(v1.id).meta == {"rev": "1b"}  # the same document, described as given last
    answered(repo, params, v1.id, "First text.")

    v2 = repo.add_document("Second text.", external_id="doc", version_key="id:doc", metadata={"rev": 2})
    assert (v2.created, v2.version, v2.changed) == (True, 2, True)
    answered(repo, params, v2.id, "Second text.")
    assert versions(repo, "id:doc") == [(1, v1.text_id, False), (2, v2.text_id, True)]

    latest = list(repo.iter_results())
    assert [(r.document_id, r.document_version, r.superseded) for r in latest] == [(v2.id, 2, False)]
    every = list(repo.iter_results(all_versions=True))
    assert [(r.document_id, r.document_version, r.superseded) for r in every] == [(v1.id, 1, True), (v2.id, 2, False)]
    assert [r.document_metadata for r in every] == [{"rev": "1b"}, {"rev": 2}]
    # The id names every version; results of it show the latest unless asked for all.
    assert repo.resolve_documents("doc") == [v1.id, v2.id]
    assert [r.document_id for r in repo.iter_results(document_ids=repo.resolve_documents("doc"))] == [v2.id]
    assert [r.document_id for r in repo.top_results(question="Q?", top=5)] == [v2.id]

    # Back to the first text: version 3, a document of its own on the stored text, whose
    # job exists (asking it again creates nothing, so nothing is answered again).
    v3 = repo.add_document("First text.", external_id="doc", version_key="id:doc")
    assert (v3.created, v3.version, v3.changed, v3.text_id, v3.text_created) == (True, 3, True, v1.text_id, False)
    assert v3.id not in (v1.id, v2.id)
    [(_job, created)] = repo.add_jobs(v3.id, ["Q?"], model="m", revision=None, params=params)
    assert created is False
    assert versions(repo, "id:doc") == [(1, v1.text_id, False), (2, v2.text_id, False), (3, v1.text_id, True)]
    assert [(r.document_id, r.document_version) for r in repo.iter_results()] == [(v3.id, 3)]


def test_one_text_under_two_keys_is_two_documents_with_their_own_versions(repo: Repository, params) -> None:
    a = repo.add_document("Shared text.", external_id="a", version_key="id:a")
    b = repo.add_document("Shared text.", external_id="b", version_key="id:b")
    assert a.id != b.id and a.text_id == b.text_id and (a.text_created, b.text_created) == (True, False)
    for doc in (a, b):
        repo.add_jobs(doc.id, ["Q?"], model="m", revision=None, params=params)
    assert repo.counts()["queued"] == 1  # one text, one question: one job
    a2 = repo.add_document("A moved on.", external_id="a", version_key="id:a")
    assert repo.document_superseded(a.id) is True and repo.document_superseded(b.id) is False
    assert repo.resolve_documents("b") == [b.id] and repo.resolve_documents("a") == [a.id, a2.id]
    assert versions(repo, "id:b") == [(1, b.text_id, True)]  # a's new version is not b's


def test_deleting_the_latest_version_restores_the_one_before(repo: Repository, params: AnswerParams) -> None:
    v1 = repo.add_document("Old.", source="/data/a.txt", version_key="path:/data/a.txt")
    v2 = repo.add_document("New.", source="/data/a.txt", version_key="path:/data/a.txt")
    answered(repo, params, v1.id, "Old.")
    repo.delete_documents([v2.id])
    assert versions(repo, "path:/data/a.txt") == [(1, v1.text_id, True)]
    assert [(r.document_id, r.superseded) for r in repo.iter_results()] == [(v1.id, False)]
    v3 = repo.add_document("Newer.", source="/data/a.txt", version_key="path:/data/a.txt")
    assert v3.version == 3  # numbers are never reused


def test_unnamed_documents_are_one_per_source_and_text(repo: Repository) -> None:
    first = repo.add_document("Typed in.", source="stdin")
    assert (first.created, first.version, first.changed) == (True, None, False)
    assert repo.add_document("Typed in.", source="stdin").id == first.id  # the same input again
    other = repo.add_document("Typed in.", source="notes.jsonl:3")
    assert other.id != first.id and other.text_id == first.text_id
    assert repo.add_document("Typed again.", source="stdin").id not in (first.id, other.id)  # not a version
    # A made-up name (a position, a stream) names no document: it recurs across submissions.
    assert repo.resolve_documents("notes.jsonl:3") == [] and repo.resolve_documents("stdin") == []
    assert repo.resolve_documents(str(other.id)) == [other.id]


def test_metadata_filter_and_orders(repo: Repository, params: AnswerParams) -> None:
    texts = {"en": "Alpha beta gamma.", "de": "Delta epsilon zeta.", "fr": "Eta theta iota."}
    scores = {"en": 0.2, "de": 0.9, "fr": 0.5}
    years = {"en": 2024, "de": 2023, "fr": 2024}
    for lang, text in texts.items():
        doc = repo.add_document(text, metadata={"lang": lang, "year": years[lang], "draft": lang == "fr"})
        ((job, _),) = repo.add_jobs(doc.id, ["Q?"], model="m", revision=None, params=params)
        a = answer_at(text, 0, 5, score=scores[lang]).model_copy(
            update={"null_start_logit": 0.0, "null_end_logit": -scores[lang] * 10}
        )
        repo.complete(job, [a], model_label="m")
    def langs(**kw):
        return [r.document_metadata["lang"] for r in repo.iter_results(**kw)]

    assert langs(where={"lang": "de"}) == ["de"]
    assert langs(where={"year": "2024"}) == ["en", "fr"]  # numbers compare as their JSON text
    assert langs(where={"year": "2024", "draft": "true"}) == ["fr"]
    assert langs(where={"draft": "false"}) == ["en", "de"]
    assert langs(where={"missing": "x"}) == []
    assert langs(order="reference") == ["de", "fr", "en"]
    assert langs(order="margin") == ["de", "fr", "en"]  # margin = 0.75 + score * 10 here
    # Keyset paging in score order: batches of one give the same order.
    assert [r.answer_id for r in repo.iter_results(order="reference", batch=1)] == [
        r.answer_id for r in repo.iter_results(order="reference")
    ]
    with pytest.raises(ValueError, match="quotes"):
        list(repo.iter_results(where={'a"b': "x"}))
    with pytest.raises(ValueError, match="order"):
        list(repo.iter_results(order="sideways"))


def _race(url: str, key_id: str, worker: int, rounds: int, start) -> None:
    engine = make_engine(url)
    try:
        repo = Repository.from_engine(engine)
        start.wait(30)
        for n in range(rounds):
            repo.add_document(f"producer {worker} round {n}", external_id=key_id, version_key=f"id:{key_id}")
    finally:
        engine.dispose()


@pytest.mark.services
def test_concurrent_producers_leave_exactly_one_latest_version_on_postgres(postgres_url: str) -> None:
    from docqa.storage.db import upgrade

    upgrade(postgres_url)
    context = multiprocessing.get_context("fork")
    start = context.Event()
    procs = [context.Process(target=_race, args=(postgres_url, "same-id", w, 10, start)) for w in range(4)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    engine = make_engine(postgres_url)
    try:
        repo = Repository.from_engine(engine)
        rows = versions(repo, "id:same-id")
        # Every submission of new content became a version, numbered without gaps, and
        # exactly one is latest: the highest.
        assert [v for v, _doc, _latest in rows] == list(range(1, 41))
        assert [latest for _v, _doc, latest in rows] == [False] * 39 + [True]
        with repo._read() as session:
            current = session.execute(
                select(func.count()).select_from(Document).where(Document.key == "id:same-id", Document.latest)
            ).scalar_one()
        assert current == 1
    finally:
        engine.dispose()


def test_upgrading_a_store_gives_existing_ids_their_versions(sqlite_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    from docqa.storage.db import alembic_config, upgrade

    engine = make_engine(sqlite_url)
    try:
        config = alembic_config()
        with engine.begin() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0003")
        with engine.begin() as conn:
            for n, (ext, body) in enumerate([("x", "x one"), ("y", "y only"), ("x", "x two"), (None, "no id")], 1):
                conn.execute(
                    text("INSERT INTO documents (id, sha256, text, external_id, length, created_at) "
                         "VALUES (:id, :sha, :text, :ext, :len, '2026-01-0' || :id || ' 00:00:00.000000')"),
                    {"id": n, "sha": f"{n:064d}", "text": body, "ext": ext, "len": len(body)},
                )
        upgrade(engine)
        repo = Repository.from_engine(engine)
        assert versions(repo, "id:x") == [(1, 1, False), (2, 3, True)]
        assert versions(repo, "id:y") == [(1, 2, True)]
        x1, x2 = repo.resolve_documents("x")
        assert [repo.document_superseded(i) for i in (x1, x2, *repo.resolve_documents("y"))] == [True, False, False]
        with repo._read() as session:  # no id, no path: its source is made up from its text's row
            [unnamed] = session.execute(select(Document.id).where(Document.source == "document 4")).scalars().all()
        assert repo.document(unnamed).text == "no id" and repo.document(unnamed).version is None
        # The next text for x continues the numbering.
        assert repo.add_document("x three", external_id="x", version_key="id:x").version == 3
    finally:
        engine.dispose()
