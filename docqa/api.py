"""`docqa.ask`: answer questions about one text in this process, with typed answers.

The engine (model loaded once) is kept per (model, revision, device, dtype, quantize)
for the life of the process, so repeated calls cost only their forwards.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from docqa.core.answer import QuestionAnswers
from docqa.core.params import AnswerParams
from docqa.core.settings import DEFAULT_MODEL

if TYPE_CHECKING:
    from docqa.worker.engine import Engine

# Engines kept loaded at most; the least recently used one is dropped beyond that.
MAX_CACHED_ENGINES = 2

_engines: dict[tuple, Engine] = {}
_lock = threading.Lock()


def ask(
    text: str,
    questions: str | Sequence[str],
    *,
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    quantize: str = "none",
    **params: Any,
) -> list[QuestionAnswers]:
    """Answer each question about `text`; one `QuestionAnswers` per question, in order.

    `params` are answer parameters (`AnswerParams` fields: top_k, max_answer_len,
    max_seq_len, doc_stride, handle_impossible_answer, align_to_words, merge_by_text),
    defaulting to transformers' pipeline's. Answers are best first, with offsets into
    `text`: `text[a.char_start:a.char_end] == a.text`. A question that cannot be
    answered (say, longer than a window) has `error` set and no answers; the others are
    answered. Raises ValueError for bad parameters or text, ModelLoadError when the
    model cannot be loaded.
    """
    from docqa.worker.engine import QAItem

    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text).__name__}")
    if not text.strip():
        raise ValueError("text is empty: there is nothing to answer from")
    asked = [questions] if isinstance(questions, str) else list(questions)
    for q in asked:
        if not isinstance(q, str):
            raise TypeError(f"questions must be str, not {type(q).__name__}")
    answer_params = AnswerParams(**params)
    engine = _engine(model, revision, device, dtype, quantize)
    results = engine.run([QAItem(text, q, answer_params) for q in asked])
    return [
        QuestionAnswers(question=q, answers=r.answers, windows=r.n_windows, error=r.error, model=engine.model_label)
        for q, r in zip(asked, results)
    ]


def _engine(model: str, revision: str | None, device: str, dtype: str, quantize: str) -> Engine:
    from docqa.worker.engine import Engine

    key = (model, revision, device, dtype, quantize)
    with _lock:
        engine = _engines.pop(key, None)
        if engine is None:
            engine = Engine(model, revision=revision, device=device, dtype=dtype, quantize=quantize).warm_up()
        _engines[key] = engine  # most recently used last
        while len(_engines) > MAX_CACHED_ENGINES:
            _engines.pop(next(iter(_engines)))
        return engine
