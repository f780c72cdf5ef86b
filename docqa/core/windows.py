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

from docqa.core.errors import UsageError

from dataclasses import dataclass

import numpy as np


class WindowError(UsageError):
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


# -- tokens and window plans made once, by the producer -----------------------------------

TOKENS_FORMAT = b"DQT2"  # what encode_tokens writes; decode_tokens also reads DQT1
_OLD_TOKENS_FORMAT = b"DQT1"
# The integer types a DQT2 array may be stored in, by their one-byte code.
_TYPES = {1: "<u1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4"}
_CODES = {v: k for k, v in _TYPES.items()}
_ZLIB_LEVEL = 3  # 2.4x faster than 6 on these arrays for 6% more bytes (docs/BENCHMARKS.md)


def _narrowest(values: np.ndarray) -> str:
    """The smallest stored type that holds every value (32 bits at most: the ids and
    offsets of one document fit)."""
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for code in (1, 2, 4) if lo >= 0 else (3, 5):
        info = np.iinfo(np.dtype(_TYPES[code]))
        if info.min <= lo and hi <= info.max:
            return _TYPES[code]
    raise ValueError(f"token values {lo}..{hi} do not fit 32 bits")


def tokenizer_key(tokenizer) -> str:
    """sha256 hex of the fast tokenizer's full definition (vocabulary, normalizer, rules):
    two tokenizers with the same key tokenize every text the same way, whatever model id
    they were loaded under."""
    import hashlib

    require_fast(tokenizer)
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


def encode_tokens(tokens: DocumentTokens) -> bytes:
    """A compact, lossless byte form of a tokenization (zlib over delta-coded arrays, each
    in the narrowest integer type that holds it).

    Layout (DQT2): b"DQT2", n (uint32 LE), four type codes (one byte each: 1 uint8,
    2 uint16, 3 int16, 4 uint32, 5 int32), then zlib of: ids, start deltas, token lengths,
    word id deltas. Prose gives uint16 ids, uint8 start deltas and lengths and uint8 word
    id deltas: about 2 bytes per token once compressed.
    """
    import zlib

    n = len(tokens)
    starts = tokens.offsets[:, 0] if n else np.zeros(0, dtype=np.int64)
    lengths = (tokens.offsets[:, 1] - starts) if n else np.zeros(0, dtype=np.int64)
    arrays = (tokens.ids, np.diff(starts, prepend=0), lengths, np.diff(tokens.word_ids, prepend=0))
    types = [_narrowest(a) for a in arrays]
    body = b"".join(a.astype(t).tobytes() for a, t in zip(arrays, types))
    header = TOKENS_FORMAT + int(n).to_bytes(4, "little") + bytes(_CODES[t] for t in types)
    return header + zlib.compress(body, _ZLIB_LEVEL)


def decode_tokens(data: bytes) -> DocumentTokens:
    """The tokenization `encode_tokens` wrote (DQT2, or DQT1 from stores of docqa 0.12's
    first chunking); ValueError for bytes it did not write."""
    import zlib

    if len(data) >= 9 and data[:4] == _OLD_TOKENS_FORMAT:
        n, width, body = int.from_bytes(data[4:8], "little"), data[8], zlib.decompress(data[9:])
        if width not in (2, 4):
            raise ValueError(f"corrupt docqa token blob: id width {width}")
        types = ["<u4" if width == 4 else "<u2", "<i4", "<i4", "<i4"]
    elif len(data) >= 12 and data[:4] == TOKENS_FORMAT:
        n = int.from_bytes(data[4:8], "little")
        if any(code not in _TYPES for code in data[8:12]):
            raise ValueError(f"corrupt docqa token blob: type codes {list(data[8:12])}")
        types = [_TYPES[code] for code in data[8:12]]
        body = zlib.decompress(data[12:])
    else:
        raise ValueError("not a docqa token blob (format DQT2 or DQT1)")
    sizes = [n * np.dtype(t).itemsize for t in types]
    if len(body) != sum(sizes):
        raise ValueError(f"corrupt docqa token blob: {len(body)} bytes for {n} tokens of types {types}")
    arrays, at = [], 0
    for t, size in zip(types, sizes):
        arrays.append(np.frombuffer(body, dtype=t, count=n, offset=at).astype(np.int64))
        at += size
    ids, start_deltas, lengths, word_deltas = arrays
    starts = np.cumsum(start_deltas)
    offsets = np.stack([starts, starts + lengths], axis=1) if n else np.zeros((0, 2), dtype=np.int64)
    return DocumentTokens(ids=ids, offsets=offsets, word_ids=np.cumsum(word_deltas))


def window_ranges(tokens: DocumentTokens, spans: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """(token_start, token_end, char_start, char_end) of each window: token slices end
    exclusive, characters the text the window's context covers (end exclusive)."""
    out = []
    for start, end in spans:
        if end > start:
            out.append((start, end, int(tokens.offsets[start, 0]), int(tokens.offsets[end - 1, 1])))
        else:
            out.append((start, end, 0, 0))
    return out


@dataclass(frozen=True)
class WindowPlan:
    """A job's windows, fixed when it was submitted: which tokenizer, how many question
    tokens, and every window's token and character range."""

    tokenizer: str
    question_tokens: int
    windows: tuple[tuple[int, int, int, int], ...]

    @property
    def spans(self) -> list[tuple[int, int]]:
        return [(ts, te) for ts, te, _cs, _ce in self.windows]
