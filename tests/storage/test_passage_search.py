"""Passages and their full-text search on both dialects: kept in step with texts, filtered
before ranking, and the question always a bound parameter."""

from __future__ import annotations

import pytest
from sqlalchemy import text as sql

from docqa.core.passages import split_passages
from docqa.storage.db import downgrade, upgrade

TOWER = "The river Seine flows through Paris. " * 20 + "The tower of iron was built in 1889 by engineers."
BRIDGES = "Engineers from Zürich built bridges and canals; coal went north to the sea."
HOSTILE = [
    "'; DROP TABLE passages; --", '"', "NEAR(tower bridges)", "tower* OR -bridges", "col:tower", "^tower",
    "tower & | ! :* <-> ()", "\\' \\\" %", "東京 naïve café e\u0301", "🗼 tower", "x" * 5000,
]


def _passages(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(sql("SELECT count(*) FROM passages")).scalar_one()


def _fts_rows(engine) -> int:
    if engine.dialect.name != "sqlite":
        return _passages(engine)  # PostgreSQL's index is a column of passages
    with engine.connect() as conn:
        return conn.execute(sql("SELECT count(*) FROM passages_fts")).scalar_one()


def test_a_stored_text_gets_its_passages_once_and_they_are_found_by_its_words(repo, engine):
    tower = repo.add_document(TOWER, external_id="tower")
    repo.add_document(TOWER, external_id="tower-copy")  # the same text: indexed once
    repo.add_document(BRIDGES, external_id="bridges")
    assert _passages(engine) == len(split_passages(TOWER)) + len(split_passages(BRIDGES)) == _fts_rows(engine)
    hits = repo.search_passages("When was the tower built?", limit=5)
    assert hits[0].text_id == tower.text_id
    assert "tower" in TOWER[hits[0].char_start:hits[0].char_end]
    assert hits == sorted(hits, key=lambda h: -h.score)
    assert [h.text_id for h in repo.search_passages("Who built the bridges?", limit=5)][0] != tower.text_id
    assert repo.search_passages("the of a", limit=5) == []  # stopwords only: nothing to search for


def test_filters_apply_before_ranking(repo):
    en = repo.add_document(TOWER, external_id="en", metadata={"lang": "en", "year": 1889})
    de = repo.add_document(TOWER + " Eiffel.", external_id="de", metadata={"lang": "de"})
    old = repo.add_document(BRIDGES + " tower", external_id="v")
    new = repo.add_document(BRIDGES, external_id="v")  # a new version, without the word
    assert new.version == 2
    q = "tower"
    assert {h.text_id for h in repo.search_passages(q, where={"lang": "de"})} == {de.text_id}
    assert {h.text_id for h in repo.search_passages(q, where={"year": "1889"})} == {en.text_id}
    assert {h.text_id for h in repo.search_passages(q, document_ids=[en.id])} == {en.text_id}
    assert old.text_id not in {h.text_id for h in repo.search_passages(q, limit=100)}
    assert old.text_id in {h.text_id for h in repo.search_passages(q, limit=100, all_versions=True)}
    sub = repo.start_submission(command="test", model="m", revision=None)
    repo.add_submission_documents(sub, [de.id])
    assert {h.text_id for h in repo.search_passages(q, submission_id=sub)} == {de.text_id}
    assert len(repo.search_passages(q, limit=1)) == 1
    docs = repo.documents_of_texts([en.text_id, de.text_id], where={"lang": "en"})
    assert [d.id for d in docs[en.text_id]] == [en.id] and de.text_id not in docs


@pytest.mark.parametrize("question", HOSTILE)
def test_quotes_operators_and_unicode_are_words_to_search_never_sql_or_query_syntax(repo, engine, question):
    repo.add_document(TOWER, external_id="tower")
    repo.add_document("東京 naïve café tower", external_id="tokyo")
    hits = repo.search_passages(question, limit=5)
    assert all(isinstance(h.score, float) for h in hits)
    if "tower" in question.lower():
        assert hits, f"{question!r} names the tower: something should match"
    assert _passages(engine) > 0  # nothing was dropped


def test_deleting_a_documents_last_text_removes_its_passages_and_their_index(repo, engine):
    a = repo.add_document(TOWER, external_id="a")
    b = repo.add_document(TOWER, external_id="b")
    repo.add_document(BRIDGES, external_id="c")
    repo.delete_documents([a.id])  # b still has the text
    assert repo.search_passages("tower")
    repo.delete_documents([b.id])
    assert repo.search_passages("tower") == []
    assert _passages(engine) == len(split_passages(BRIDGES)) == _fts_rows(engine)


def test_the_migration_indexes_texts_stored_before_it(store_url, engine):
    downgrade(engine, "0007")
    with engine.begin() as conn:
        conn.execute(sql("INSERT INTO texts (sha256, text, length, created_at) VALUES ('x', :t, :n, :now)"),
                     {"t": TOWER, "n": len(TOWER), "now": "2026-12-01T00:00:00+00:00"})
        conn.execute(sql("INSERT INTO documents (text_id, key, version, latest, created_at) "
                         "SELECT id, 'id:old', 1, true, created_at FROM texts"))
    upgrade(engine)
    from docqa.storage.repository import Repository

    hits = Repository.from_engine(engine).search_passages("tower")
    assert len(hits) == 1 and "tower" in TOWER[hits[0].char_start:hits[0].char_end]
    assert _passages(engine) == len(split_passages(TOWER)) == _fts_rows(engine)


@pytest.mark.services
def test_postgresql_weighs_rare_words_above_common_ones_once_it_has_statistics(postgres_url):
    """ts_rank_cd alone would put passages full of a common word first; with the column's
    statistics (ANALYZE) the one passage holding the rare word leads, and a filter that
    leaves no rare word still finds passages by the common one."""
    from docqa.storage import passages
    from docqa.storage.repository import Repository

    repo = Repository.open(postgres_url)
    common = [repo.add_document(f"river river river {i} flows past mills and river banks", external_id=f"c{i}",
                                metadata={"kind": "common"}) for i in range(300)]
    rare = repo.add_document("a zeppelin crossed once over the river", external_id="rare", metadata={"kind": "rare"})
    with repo._sessions() as session:  # what autovacuum does on a real store
        session.execute(sql("ANALYZE passages"))
        session.commit()
    passages._stats.clear()
    hits = repo.search_passages("Did the zeppelin cross the river?", limit=5)
    assert hits[0].text_id == rare.text_id
    kinds = repo.search_passages("Did the zeppelin cross the river?", limit=5, where={"kind": "common"})
    assert len(kinds) == 5 and {h.text_id for h in kinds} <= {d.text_id for d in common}


@pytest.mark.services
def test_postgresql_ranks_only_the_first_matches_of_a_question_whose_every_word_is_common(postgres_url, monkeypatch):
    """A question of common words alone would rank most of the store: at most MAX_RANKED of
    its matches are ranked (here with budgets shrunk to the size of a test store)."""
    from docqa.storage import passages
    from docqa.storage.repository import Repository

    repo = Repository.open(postgres_url)
    for i in range(200):
        repo.add_document(f"river {i} flows past the mill; the river is wide", external_id=f"c{i}")
    with repo._sessions() as session:
        session.execute(sql("ANALYZE passages"))
        session.commit()
    monkeypatch.setattr(passages, "CANDIDATES", 5)
    monkeypatch.setattr(passages, "MAX_RANKED", 20)
    hits = repo.search_passages("Which river flows?", limit=10)
    assert len(hits) == 10 and len({h.passage_id for h in hits}) == 10
    assert hits == sorted(hits, key=lambda h: -h.score)
    texts = repo.texts_of({h.text_id for h in hits})
    assert all("river" in texts[h.text_id][h.char_start:h.char_end] for h in hits)
    assert len(repo.search_passages("Which river flows?", limit=300)) == 200  # the wider pass: 10 x 20
    monkeypatch.setattr(passages, "WIDER", 1)
    assert len(repo.search_passages("Which river flows?", limit=300)) == 20  # 200 match; 20 are ranked
