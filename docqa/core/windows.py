"""Tokenize a document once; cut it into the windows the reference pipeline would build.

A document is tokenized a single time (fast tokenizer, character offsets, no special
tokens). For a question of `q` tokens each window holds `max_seq_len - q - n_special`
context tokens (n_special is 3 for BERT-style `[CLS] q [SEP] c [SEP]`), and two
neighbouring windows share `doc_stride` tokens. Windows are `(start, end)` slices of the
document's token list (end exclusive), so building them for another question costs
nothing.

The slicing rule is the one the `tokenizers` library applies when it truncates the
second sequence with a stride (what transformers 5.2.0's pipeline relied on): windows
start at 0, budget - stride, 2 * (budget - stride), ... and the first window that
reaches the end of the document is the last one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


class WindowError(ValueError):
    """The document/question cannot be windowed; the message names the numbers."""


@dataclass(frozen=True)
class DocumentTokens:
    """One document's tokenization.

    ids: token ids, no special tokens (int64, shape [n]).
    offsets: character offsets into the document text (int64, shape [n, 2]); token i
        covers text[offsets[i, 0]:offsets[i, 1]].
    word_ids: index of the word each token belongs to (int64, shape [n]; -1 for none).
    """

    ids: np.ndarray
    offsets: np.ndarray
    word_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def require_fast(tokenizer) -> None:
    """Offsets and word ids need a fast (Rust) tokenizer; refuse anything else clearly."""
    if not getattr(tokenizer, "is_fast", False):
        raise WindowError(
            f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: docqa needs the "
            "character offsets only fast tokenizers give (install `tokenizers` and use a "
            "model that ships tokenizer.json)"
        )


def tokenize_documents(tokenizer, texts: list[str]) -> list[DocumentTokens]:
    """Tokenize many documents in one call (the Rust tokenizer parallelizes it)."""
    require_fast(tokenizer)
    if not texts:
        return []
    enc = tokenizer(
        list(texts),
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,  # documents are longer than the model's window by design
    )
    out = []
    for i in range(len(texts)):
        ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
        offsets = np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
        words = enc.word_ids(i)
        word_ids = np.fromiter((-1 if w is None else w for w in words), dtype=np.int64, count=len(words))
        out.append(DocumentTokens(ids=ids, offsets=offsets, word_ids=word_ids))
    return out


def tokenize_document(tokenizer, text: str) -> DocumentTokens:
    return tokenize_documents(tokenizer, [text])[0]


def context_budget(question_tokens: int, max_seq_len: int, n_special: int = 3) -> int:
    """Context tokens that fit in one window next to a question of `question_tokens`."""
    return max_seq_len - question_tokens - n_special


def plan_windows(
    n_tokens: int,
    question_tokens: int,
    *,
    max_seq_len: int = 384,
    doc_stride: int = 128,
    n_special: int = 3,
) -> list[tuple[int, int]]:
    """Windows over a document of `n_tokens` context tokens, as (start, end) slices.

    Raises WindowError, naming the numbers, for an empty document or question, a
    question that leaves no room for context, and (only when the document needs more
    than one window) a doc_stride that is not smaller than the context budget.
    """
    if question_tokens <= 0:
        raise WindowError("the question is empty (it has no tokens)")
    if n_tokens <= 0:
        raise WindowError("the document is empty (it has no tokens after tokenization)")
    budget = context_budget(question_tokens, max_seq_len, n_special)
    if budget <= 0:
        raise WindowError(
            f"the question is too long for the window: it has {question_tokens} tokens, and "
            f"max_seq_len {max_seq_len} minus {n_special} special tokens leaves room for at most "
            f"{max_seq_len - n_special - 1} question tokens (shorten the question or raise max_seq_len)"
        )
    if n_tokens <= budget:
        return [(0, n_tokens)]
    if doc_stride >= budget:
        raise WindowError(
            f"doc_stride ({doc_stride}) must be smaller than the context budget of a window "
            f"({budget} tokens = max_seq_len {max_seq_len} - question {question_tokens} tokens - "
            f"{n_special} special tokens); lower doc_stride or raise max_seq_len"
        )
    step = budget - doc_stride
    windows = []
    start = 0
    while True:
        end = min(start + budget, n_tokens)
        windows.append((start, end))
        if end == n_tokens:
            return windows
        start += step
