"""Passages of texts and their full-text search, by the store's own engine: PostgreSQL's
tsvector (GIN index, `ts_rank_cd`), SQLite's FTS5 (`bm25`). A question's words are always
bound parameters, never SQL (see `docqa.core.passages` for how passages are cut)."""

from __future__ import annotations

import functools
import itertools
import math
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, cast, column, func, literal, literal_column, select, table, text as sql, true
from sqlalchemy.dialects.postgresql import TSQUERY
from sqlalchemy.orm import Session

from docqa.storage.models import Document, PassageRow, SubmissionDocument, TextRow
from docqa.storage.transactions import Transactions, chunks


@dataclass(frozen=True)
class PassageHit:
    """A retrieved passage: its text, character range, and retrieval score (higher is better;
    ts_rank_cd on PostgreSQL, -bm25 on SQLite: comparable within one search only)."""

    passage_id: int
    text_id: int
    char_start: int
    char_end: int
    score: float


@dataclass(frozen=True)
class CorpusDocument:
    """A document a corpus answer is reported under."""

    id: int
    text_id: int
    key: str
    source: str | None
    external_id: str | None
    meta: Any
    version: int | None
    latest: bool


def index_passages(conn: Any, postgres: bool, text_id: int, ranges: Sequence[tuple[int, int]]) -> None:
    """Store text `text_id`'s passages and their full-text index (the text is in the same
    transaction already). `conn`: a Session or Connection."""
    if not ranges:
        return
    if postgres:  # the passages' text is cut from the stored text in SQL: sent once, not twice
        conn.execute(sql(
            "INSERT INTO passages (text_id, char_start, char_end, tsv) "
            "SELECT :text_id, r.s, r.e, to_tsvector('english', substr(t.text, r.s + 1, r.e - r.s)) "
            "FROM texts t, unnest(CAST(:starts AS integer[]), CAST(:ends AS integer[])) AS r(s, e) "
            "WHERE t.id = :text_id"
        ), {"text_id": text_id, "starts": [s for s, _ in ranges], "ends": [e for _, e in ranges]})
        return
    conn.execute(sql("INSERT INTO passages (text_id, char_start, char_end) VALUES (:text_id, :s, :e)"),
                 [{"text_id": text_id, "s": s, "e": e} for s, e in ranges])
    conn.execute(sql(
        "INSERT INTO passages_fts (rowid, body) "
        "SELECT p.id, substr(t.text, p.char_start + 1, p.char_end - p.char_start) "
        "FROM passages p JOIN texts t ON t.id = p.text_id WHERE p.text_id = :text_id"
    ), {"text_id": text_id})


# PostgreSQL: passages a search may select by its rarest words before it ranks them (the
# words are taken rarest first while the expected matches stay within this). Ranking every
# passage that holds any word would scan a large share of the store for common ones.
CANDIDATES = 3000
# A question whose every word is common ranks at most this many of its matches (WIDER
# times more in the wider pass): the first ones in store order.
MAX_RANKED = 6000
# When the rarest words select fewer passages than asked for (a filter may leave none of
# them), the search runs once more with a budget this many times larger, and no more.
WIDER = 10
# How long a process keeps the store's lexeme statistics, seconds.
STATS_SECONDS = 60.0
_stats: dict[str, tuple[float, LexemeStats]] = {}


@dataclass(frozen=True)
class LexemeStats:
    """The planner's statistics of passages.tsv: the share of passages holding each of the
    most common lexemes (pg_stats.most_common_elems, kept by ANALYZE), and about how many
    passages there are (pg_class.reltuples). Empty before the first ANALYZE."""

    shares: dict[str, float]
    passages: float

    def share(self, lexeme: str) -> float:
        """A lexeme not among the most common is rarer than every one that is."""
        return self.shares.get(lexeme, min(self.shares.values(), default=0.002) / 2)


@dataclass(frozen=True)
class _PgSearch:
    """One PostgreSQL search: a one-row subquery holding each lexeme's tsquery (made once),
    the match and the score on passages.tsv, whether common lexemes were left out of the
    match, and whether every lexeme is common (only the first matches are ranked)."""

    queries: Any
    match: Any
    score: Any
    narrowed: bool
    common: bool


def _pg_search(session: Session, question: str, budget: int) -> _PgSearch | None:
    """ts_rank_cd alone weighs every lexeme alike, so a passage with three common words beats
    one with the rare word that answers. Each of the question's lexemes weighs log(1 / share
    of passages holding it) (`LexemeStats`). Passages are selected by the rarest lexemes
    whose expected matches stay within `budget` (at least the rarest; when even that one
    exceeds it, by k of the k + 1 rarest), and scored by the weights of all the lexemes they
    hold, ts_rank_cd breaking ties. None: the question has no lexeme."""
    lexemes = session.execute(
        select(func.unnest(func.tsvector_to_array(func.to_tsvector("english", question))))).scalars().all()
    if not lexemes:
        return None
    stats = _lexeme_stats(session)
    rarest = sorted(lexemes, key=stats.share)
    chosen = _within_budget(rarest, stats, budget)
    queries = select(*(cast(literal(_quoted(lx)), TSQUERY).label(f"q{i}") for i, lx in enumerate(rarest))).subquery()
    q: list[Any] = [queries.c[f"q{i}"] for i in range(len(rarest))]
    either = functools.reduce(lambda a, b: a.op("||")(b), q[:len(chosen)])
    tsv: Any = literal_column("passages.tsv")
    score: Any = 0.1 * func.ts_rank_cd(tsv, either)
    for i, lx in enumerate(rarest):
        score = score + case((tsv.op("@@")(q[i]), math.log(1 / stats.share(lx))), else_=0.0)
    k, expected = _words_together(rarest, stats, budget)
    if k > 1:  # even the rarest word is in too many passages: those holding k of the k + 1 rarest
        groups = [functools.reduce(lambda a, b: a.op("&&")(b), group) for group in itertools.combinations(q[:k + 1], k)]
        some = functools.reduce(lambda a, b: a.op("||")(b), groups)
        return _PgSearch(queries, tsv.op("@@")(some), score, narrowed=True, common=expected > budget)
    return _PgSearch(queries, tsv.op("@@")(either), score, narrowed=len(chosen) < len(rarest), common=False)


def _words_together(rarest: list[str], stats: LexemeStats, budget: int) -> tuple[int, float]:
    """How many of the rarest lexemes a passage must hold together so that the expected
    matches (words taken as independent) stay within `budget` (1 when the rarest alone
    does; all of them when even all together do not), and the passages expected to hold
    that many."""
    expected = stats.passages
    for k, lx in enumerate(rarest, start=1):
        expected *= stats.share(lx)
        if expected * min(k + 1, len(rarest)) <= budget or k == len(rarest):
            return k, expected
    return 1, expected


def _quoted(lexeme: str) -> str:
    """A tsquery of exactly this lexeme (as to_tsvector made it: "metrics-url" stays one),
    quoted so that no character of it acts as an operator."""
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"


def _within_budget(rarest: list[str], stats: LexemeStats, budget: int) -> list[str]:
    """The rarest lexemes (at least one) whose expected matches stay within `budget`."""
    chosen: list[str] = []
    expected = 0.0
    for lx in rarest:
        expected += stats.share(lx) * stats.passages
        if chosen and expected > budget:
            break
        chosen.append(lx)
    return chosen


def _lexeme_stats(session: Session) -> LexemeStats:
    """The store's LexemeStats, read at most every STATS_SECONDS."""
    key = str(session.get_bind().engine.url)
    now = time.monotonic()
    cached = _stats.get(key)
    if cached is not None and now - cached[0] < STATS_SECONDS:
        return cached[1]
    row = session.execute(sql(
        "SELECT CAST(CAST(s.most_common_elems AS text) AS text[]), s.most_common_elem_freqs, c.reltuples "
        "FROM pg_class c LEFT JOIN pg_stats s ON s.schemaname = current_schema() AND s.tablename = 'passages' "
        "AND s.attname = 'tsv' WHERE c.oid = to_regclass('passages')")).first()
    shares = dict(zip(row[0], row[1])) if row is not None and row[0] else {}
    stats = LexemeStats(shares, max(float(row[2]), 1.0) if row is not None else 1.0)
    _stats[key] = (now, stats)
    return stats


def _pg_rows(session: Session, question: str, texts: Any, limit: int, widen: int) -> tuple[Sequence[Any], bool]:
    """PostgreSQL: the best `limit` passages of the texts `texts` selects, and whether common
    words were left out of the match."""
    search = _pg_search(session, question, CANDIDATES * widen)
    if search is None:
        return [], False
    if search.common:
        stmt = _first_matches(search, texts, MAX_RANKED * widen)
    else:
        stmt = (select(PassageRow.id, PassageRow.text_id, PassageRow.char_start, PassageRow.char_end, search.score)
                .join_from(PassageRow, search.queries, true()).where(search.match, PassageRow.text_id.in_(texts)))
    stmt = stmt.order_by(search.score.desc(), literal_column("passages.id")).limit(limit)
    return session.execute(stmt).all(), search.narrowed


def _first_matches(search: _PgSearch, texts: Any, cap: int) -> Any:
    """The passages to rank when every word of a question is common: the first `cap`
    matches (in store order), not all of them, which could be most of the store."""
    tsv: Any = literal_column("passages.tsv")
    first = (select(PassageRow.id, PassageRow.text_id, PassageRow.char_start, PassageRow.char_end, tsv.label("tsv"))
             .join_from(PassageRow, search.queries, true()).where(search.match, PassageRow.text_id.in_(texts))
             .limit(cap).subquery("passages"))  # named so that the score's passages.tsv is its column
    return select(first.c.id, first.c.text_id, first.c.char_start, first.c.char_end, search.score).select_from(
        first).join(search.queries, true())


def _sqlite_rows(session: Session, question: str, texts: Any, limit: int) -> Sequence[Any]:
    """SQLite: the best `limit` passages by FTS5's bm25 among the texts `texts` selects."""
    from docqa.core.passages import fts5_query

    words = fts5_query(question)
    if words is None:
        return []
    fts: Any = literal_column("passages_fts")
    score = -func.bm25(fts)
    stmt = (select(PassageRow.id, PassageRow.text_id, PassageRow.char_start, PassageRow.char_end, score)
            .join_from(PassageRow, _FTS, _FTS.c.rowid == PassageRow.id)
            .where(fts.op("MATCH")(words), PassageRow.text_id.in_(texts))
            .order_by(score.desc(), PassageRow.id).limit(limit))
    return session.execute(stmt).all()


# SQLite's FTS5 table of passages (rowid = passages.id).
_FTS = table("passages_fts", column("rowid"))


class Passages(Transactions):
    """Passages of stored texts: indexed when a text is stored, searched by corpus questions."""

    def _index_text(self, session: Session, text_id: int, text: str) -> None:
        from docqa.core.passages import split_passages

        index_passages(session, self._postgres, text_id, split_passages(text))

    def search_passages(
        self,
        question: str,
        *,
        limit: int = 32,
        where: Mapping[str, str] | None = None,
        submission_id: int | None = None,
        document_ids: Collection[int] | None = None,
        all_versions: bool = False,
    ) -> list[PassageHit]:
        """The `limit` passages that best match `question`'s words, among the texts of the
        documents the filters keep (applied before ranking): metadata equal to `where`,
        documents of a submission, given document ids, latest versions unless all_versions.
        A question without a searchable word finds nothing."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        with self._read() as session:  # the dialect is known from here on
            texts = self._document_filter(Document.text_id, where, submission_id, document_ids, all_versions)
            rows: Sequence[Any] = []
            for widen in (1, WIDER):
                if self._postgres:
                    rows, narrowed = _pg_rows(session, question, texts, limit, widen)
                else:
                    rows, narrowed = _sqlite_rows(session, question, texts, limit), False
                if len(rows) == limit or not narrowed:  # else: too few by the rarest words, widen once
                    break
        return [PassageHit(int(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]

    def documents_of_texts(
        self,
        text_ids: Collection[int],
        *,
        where: Mapping[str, str] | None = None,
        submission_id: int | None = None,
        document_ids: Collection[int] | None = None,
        all_versions: bool = False,
    ) -> dict[int, list[CorpusDocument]]:
        """The documents (the filters keep) of each given text, by id."""
        out: dict[int, list[CorpusDocument]] = {}
        if not text_ids:
            return out
        with self._read() as session:  # the dialect (of metadata filters) is known from here on
            stmt = self._document_filter(Document, where, submission_id, document_ids, all_versions)
            stmt = stmt.where(Document.text_id.in_(sorted(set(text_ids)))).order_by(Document.id)
            for d in session.execute(stmt).scalars():
                out.setdefault(d.text_id, []).append(CorpusDocument(
                    id=d.id, text_id=d.text_id, key=d.key, source=d.source, external_id=d.external_id, meta=d.meta,
                    version=d.version, latest=d.latest))
        return out

    def _document_filter(self, what, where, submission_id, document_ids, all_versions):
        stmt = select(what)
        for name, value in (where or {}).items():
            stmt = stmt.where(self._metadata_text(name) == str(value))  # type: ignore[attr-defined]
        if submission_id is not None:
            stmt = stmt.where(Document.id.in_(
                select(SubmissionDocument.document_id).where(SubmissionDocument.submission_id == submission_id)))
        if document_ids is not None:
            stmt = stmt.where(Document.id.in_(sorted(set(document_ids))))
        if not all_versions:
            stmt = stmt.where(Document.latest)
        return stmt

    def texts_of(self, text_ids) -> dict[int, str]:
        """The stored text of each given id (ids without one are absent)."""
        ids = sorted(set(text_ids))
        out: dict[int, str] = {}
        with self._read() as session:
            for chunk in chunks(ids):
                rows = session.execute(select(TextRow.id, TextRow.text).where(TextRow.id.in_(chunk))).all()
                out.update((text_id, text) for text_id, text in rows)
        return out
