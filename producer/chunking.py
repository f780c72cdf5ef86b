"""Chunking at submit: tokenize each new document once and fix every job's windows.

The producer loads only the model's tokenizer (no torch): it tokenizes a new document
once (stored compactly, keyed by the tokenizer's definition, so the same text under the
same tokenizer is tokenized once whatever the model id), and plans each new job's
windows (token and character ranges) with the same rule the worker applies. Workers then
read tokens and plans and run the model; they tokenize only the question.
"""

from __future__ import annotations

from docqa.core.errors import DocqaError, first_line

import logging
import threading
from collections.abc import Callable

from docqa.core.params import AnswerParams
from docqa.core.tokenizer import QATokenizer, TokenizerError, load_tokenizer, wrap_tokenizer
from docqa.core.windows import (
    DocumentTokens,
    WindowError,
    WindowPlan,
    plan_windows,
    tokenize_documents,
    window_ranges,
)


class ChunkerUnavailable(DocqaError, RuntimeError):
    """The model's tokenizer cannot be loaded here; the message says why."""


class Chunker:
    """A model's tokenizer (docqa.core.tokenizer's contract) and what windowing needs from it."""

    def __init__(self, tokenizer) -> None:
        self.qat = tokenizer if isinstance(tokenizer, QATokenizer) else wrap_tokenizer(tokenizer)
        self.tokenizer = self.qat.hf
        self.key = self.qat.key
        self._questions: dict[str, int] = {}

    @property
    def n_special(self) -> int:
        """Special tokens around a (question, context) pair: [CLS] q [SEP] c [SEP] has 3."""
        return self.qat.template().n_special

    @classmethod
    def load(cls, model: str, revision: str | None = None) -> Chunker:
        """The tokenizer of `model` (a local folder or a hub id, from the local cache when
        offline); ChunkerUnavailable with the reason when it cannot be had."""
        logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
        from docqa.core.loading import ModelLoadError, locate_model

        try:
            # In seconds with the reason (a missing path, no model in the folder, the hub
            # unreachable and the model not cached), not after the hub client's retries.
            local_only = locate_model(model, revision)
        except ModelLoadError as exc:
            raise ChunkerUnavailable(str(exc)) from None
        try:
            # The loader workers use too (same tokenizer_key, same pair template); the
            # worker also compares it with the installed tokenizer class.
            return cls(load_tokenizer(model, revision, local_only=local_only))
        except TokenizerError as exc:
            raise ChunkerUnavailable(str(exc)) from None
        except Exception as exc:  # missing files, no network, not a model: any of these
            raise ChunkerUnavailable(f"cannot load the tokenizer of {model!r}: {first_line(exc)}") from None

    def tokenize(self, text: str) -> DocumentTokens:
        return tokenize_documents(self.tokenizer, [text])[0]

    def tokenize_many(self, texts: list[str]) -> list[DocumentTokens]:
        """Several documents in one call: the Rust tokenizer spreads them over the cores."""
        return tokenize_documents(self.tokenizer, texts)

    def question_tokens(self, question: str) -> int:
        n = self._questions.get(question)
        if n is None:
            n = len(self.tokenizer(question, add_special_tokens=False, verbose=False)["input_ids"])
            if len(self._questions) < 10_000:
                self._questions[question] = n
        return n

    def plan(self, tokens: DocumentTokens, question: str, params: AnswerParams) -> WindowPlan | None:
        """The job's windows, or None when it cannot be windowed (the worker then fails it
        with the reason, as it always has)."""
        q = self.question_tokens(question)
        try:
            spans = plan_windows(len(tokens), q, max_seq_len=params.max_seq_len, doc_stride=params.doc_stride,
                                 n_special=self.qat.template(params.pair_template).n_special)
        except WindowError:
            return None
        return WindowPlan(self.key, q, tuple(window_ranges(tokens, spans)))


def chunker_for(settings, say=None) -> Callable[[], Chunker | None] | None:
    """A zero-argument function giving the chunker for `settings.model` (loaded at the first
    call, once), or None when `settings.chunk_at_submit` is off. Loading waits for a document
    or job that needs it, so input that is all known already costs no tokenizer load. When
    the tokenizer cannot be loaded here, `say` gets one sentence and the function gives
    None: the documents are still submitted, and workers tokenize them."""
    if not settings.chunk_at_submit:
        return None
    loaded: list = []
    lock = threading.Lock()  # a server warms it in a thread while a request may ask for it

    def get() -> Chunker | None:
        with lock:
            if not loaded:
                try:
                    loaded.append(Chunker.load(settings.model, settings.revision))
                except ChunkerUnavailable as exc:
                    loaded.append(None)
                    if say is not None:
                        say(f"submitting without window plans ({exc}); workers will tokenize the documents "
                            "(DOCQA_CHUNK_AT_SUBMIT=0 says this is intended)")
            return loaded[0]

    return get
