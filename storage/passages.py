"""Passages of texts and their full-text search, by the store's own engine: PostgreSQL's
tsvector (GIN index, `ts_rank_cd`), SQLite's FTS5 (`bm25`). A question's words are always
bound parameters, never SQL (see `docqa.core.passages` for how passages are cut)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Text, cast, column, func, literal_column, select, table, text as sql
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
            match, score = self._full_text(question)
            if match is None:
                return []
            texts = self._document_filter(Document.text_id, where, submission_id, document_ids, all_versions)
            stmt = (select(PassageRow.id, PassageRow.text_id, PassageRow.char_start, PassageRow.char_end, score)
                    .where(match, PassageRow.text_id.in_(texts))
                    .order_by(score.desc(), PassageRow.id).limit(limit))
            if not self._postgres:
                stmt = stmt.join_from(PassageRow, _FTS, _FTS.c.rowid == PassageRow.id)
            rows = session.execute(stmt).all()
        return [PassageHit(int(r[0]), int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]

    def _full_text(self, question: str) -> tuple[Any, Any]:
        """(the match condition, the score expression) of `question` in this dialect; (None,
        None) when it has no word to search for."""
        if self._postgres:
            # Any of the question's lexemes: plainto_tsquery joins them with AND, which a
            # natural-language question rarely meets in one passage. Lexemes come out quoted.
            tsv: Any = literal_column("passages.tsv")
            lexemes = cast(func.replace(cast(func.plainto_tsquery("english", question), Text), " & ", " | "), TSQUERY)
            return tsv.op("@@")(lexemes), func.ts_rank_cd(tsv, lexemes)
        from docqa.core.passages import fts5_query

        words = fts5_query(question)
        if words is None:
            return None, None
        return literal_column("passages_fts").op("MATCH")(words), -func.bm25(literal_column("passages_fts"))

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
