"""Reading retrieved passages: the windows of a job of the question over each retrieved
text that overlap its passages run in one engine batch, then merge per text exactly as a
job's windows merge (`merge_answers`). An answer found in those windows therefore has the
score, margin and offsets a job over the whole text would give it; its window index is
the job's."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from docqa.core.answer import Answer
from docqa.core.corpus import CorpusAnswer, CorpusResult
from docqa.core.params import AnswerParams
from docqa.core.windows import DocumentTokens
from docqa.storage.passages import PassageHit
from docqa.storage.repository import Repository
from docqa.worker.engine import Engine, QAItem
from docqa.worker.runner import text_tokens
from docqa.worker.spans import merge_answers


@dataclass
class TextReading:
    """What reading one retrieved text gave: its answers (best first), the windows read,
    and the best retrieval score among its passages."""

    text_id: int
    retrieval_score: float
    answers: list[Answer] = field(default_factory=list)
    windows: int = 0
    error: str | None = None


def read_hits(engine: Engine, repo: Repository, question: str, hits: Sequence[PassageHit],
              params: AnswerParams) -> list[TextReading]:
    """Answer `question` from the windows over `hits`, one reading per retrieved text, in the
    order of each text's best hit."""
    by_text: dict[int, list[PassageHit]] = {}
    for hit in hits:
        by_text.setdefault(hit.text_id, []).append(hit)
    texts = repo.texts_of(by_text)
    tokens = text_tokens(repo, engine, texts)
    windows = dict(zip(texts, engine.window_chars([tokens[t] for t in texts], question, params)))
    readings: dict[int, TextReading] = {}
    items: list[QAItem] = []
    starts: list[tuple[int, int]] = []  # (text id, first window index) of each item
    for text_id, text_hits in by_text.items():
        reading = readings[text_id] = TextReading(text_id, max(h.score for h in text_hits))
        if text_id not in texts:  # deleted since it was retrieved
            reading.error = "the text was deleted while it was read"
            continue
        for start, end in _runs(_overlapping(windows[text_id], text_hits)):
            items.append(QAItem(texts[text_id], question, params, tokens=tokens[text_id], window_range=(start, end)))
            starts.append((text_id, start))
    _merge(readings, texts, tokens, items, starts, engine.run(items), params)
    return list(readings.values())


def _overlapping(windows: list[tuple[int, int]], hits: Sequence[PassageHit]) -> list[int]:
    """Indexes of the windows that share a character with any hit."""
    return [i for i, (cs, ce) in enumerate(windows) if any(h.char_start < ce and cs < h.char_end for h in hits)]


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted window indexes as (start, end) ranges of consecutive ones, end exclusive."""
    runs: list[tuple[int, int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def _merge(readings: dict[int, TextReading], texts: dict[int, str], tokens: dict[int, DocumentTokens],
           items: list[QAItem], starts: list[tuple[int, int]], results: list, params: AnswerParams) -> None:
    """Merge each text's window ranges into its answers, window indexes made the job's."""
    windows: dict[int, list] = {}
    indexes: dict[int, list[int]] = {}
    for (text_id, start), result in zip(starts, results):
        if not result.ok:
            readings[text_id].error = result.error
            continue
        windows.setdefault(text_id, []).extend(result.windows)
        indexes.setdefault(text_id, []).extend(range(start, start + len(result.windows)))
    for text_id, wins in windows.items():
        if readings[text_id].error is not None:
            continue
        tok = tokens[text_id]
        answers = merge_answers(texts[text_id], wins, tok.offsets, tok.word_ids, params)
        at = indexes[text_id]
        readings[text_id].answers = [
            a if a.window_index is None else a.model_copy(update={"window_index": at[a.window_index]}) for a in answers
        ]
        readings[text_id].windows = len(wins)


def ask_corpus(engine: Engine, repo: Repository, question: str, *, params: AnswerParams, windows: int = 32,
               top: int = 10, **filters) -> CorpusResult:
    """Answer `question` from the whole store: retrieve the `windows` best passages among
    the documents `filters` keep (`Repository.search_passages`), read them, and rank the
    documents' answers by margin. Returns at most `top` answers."""
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    started = time.perf_counter()
    hits = repo.search_passages(question, limit=windows, **filters)
    retrieved = time.perf_counter()
    readings = read_hits(engine, repo, question, hits, params) if hits else []
    documents = repo.documents_of_texts([r.text_id for r in readings], **filters)
    answers = [
        CorpusAnswer(document_id=d.id, document_key=d.key, path=d.source, external_id=d.external_id, metadata=d.meta,
                     version=d.version, latest=d.latest, text_id=r.text_id, retrieval_score=r.retrieval_score,
                     answer=a)
        for r in readings for d in documents.get(r.text_id, ()) for a in r.answers
    ]
    answers.sort(key=_rank_key)
    return CorpusResult(
        question=question, model=engine.model_label, answers=answers[:top], passages=len(hits), texts=len(readings),
        windows=sum(r.windows for r in readings), retrieval_ms=1000 * (retrieved - started),
        reading_ms=1000 * (time.perf_counter() - retrieved),
        errors=[f"text {r.text_id}: {r.error}" for r in readings if r.error is not None],
    )


def _rank_key(entry: CorpusAnswer) -> tuple:
    margin = entry.answer.margin
    return (margin is None, -(margin or 0.0), -entry.retrieval_score, entry.document_id, entry.answer.rank)
