"""Span decoding: from one window's start/end logits to scored answer candidates, and
from the candidates of all windows to a question's answers.

Pure numpy, no model: every function here can be tested with hand-made logits.
The arithmetic follows transformers 5.2.0's QuestionAnsweringPipeline (fast-tokenizer
path) step for step, in float32, so the same logits give the same answers:

1. logits of tokens that cannot be part of an answer (question, special tokens,
   padding) are set to -10000, except CLS;
2. softmax over the window, for start and end separately;
3. null score = p_start[CLS] * p_end[CLS]; then CLS is zeroed;
4. span score p_start[s] * p_end[e] for s <= e <= s + max_answer_len - 1;
5. the window's `n_candidates` best entries of that matrix are taken (numpy argmax /
   argpartition exactly as the reference, which matters for ties among zero scores)
   and those whose start or end is not an allowed token are dropped;
6. across windows, candidates whose text is equal ignoring case are merged (scores
   added, the first one's offsets kept); the null answer (min over windows) is added
   when allowed; a stable sort by score, cut to top_k.

Index conventions: positions `s`, `e` index the window's full input sequence
(special tokens included), end inclusive. Character offsets are Python str indices into
the document, end exclusive.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from docqa.core.answer import Answer
from docqa.core.params import AnswerParams

MASKED_LOGIT = -10000.0
NO_NULL_SCORE = 1000000.0  # the reference's "large and positive" starting null score


@dataclass(frozen=True)
class WindowLayout:
    """Where one window's context tokens sit, and how they map to the document.

    seq_len: length of the window's input sequence (specials and question included).
    context_offset: position of the first context token in that sequence.
    doc_start, doc_end: the window's slice of the document's tokens (end exclusive).
    cls_positions: positions holding the CLS token id (kept selectable, as the
        reference keeps them for models that point at CLS for "no answer").
    any_token: every position may start or end an answer. transformers' pipeline masks
        nothing for a context-first tokenizer (XLNet): its mask only knew question-first
        pairs. A span over question or special tokens then maps to characters as the
        reference mapped it (see `span_chars`).
    question_offset, question_words, question_chars: where the question's tokens sit,
        their word indexes and their (start, end) characters in the question: what
        `span_chars` needs for such spans (set only with any_token).
    """

    seq_len: int
    context_offset: int
    doc_start: int
    doc_end: int
    cls_positions: tuple[int, ...] = (0,)
    any_token: bool = False
    question_offset: int = 0
    question_words: tuple[int, ...] = ()
    question_chars: tuple[tuple[int, int], ...] = ()

    @property
    def n_context(self) -> int:
        return self.doc_end - self.doc_start

    def allowed_mask(self) -> np.ndarray:
        """True for tokens that may start or end an answer: the context and CLS."""
        if self.any_token:
            return np.ones(self.seq_len, dtype=bool)
        allowed = np.zeros(self.seq_len, dtype=bool)
        allowed[self.context_offset : self.context_offset + self.n_context] = True
        allowed[list(self.cls_positions)] = True
        return allowed


@dataclass(frozen=True)
class Candidate:
    """One scored span of one window, before merging."""

    start: int  # position in the window sequence
    end: int  # position in the window sequence, inclusive
    score: float


def softmax_masked(logits: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """float32 softmax over one window, with disallowed tokens pushed to -10000."""
    x = np.where(allowed, logits.astype(np.float32, copy=False), np.float32(MASKED_LOGIT))
    x = np.exp(x - x.max())
    return x / x.sum()


def top_spans(
    p_start: np.ndarray,
    p_end: np.ndarray,
    allowed: np.ndarray,
    *,
    n_candidates: int,
    max_answer_len: int,
) -> list[Candidate]:
    """The best `n_candidates` spans of a window, best first, disallowed ones dropped.

    p_start and p_end are probabilities (CLS already zeroed). The result is the reference's:
    selection on the full (seq_len x seq_len) score matrix with its numpy calls, so ties
    (including the zero scores that short windows fill their quota with) resolve the same
    way. Only spans shorter than max_answer_len can score above zero, so the usual case is
    decided on that band alone (seq_len x max_answer_len scores, not seq_len squared);
    whenever the band cannot decide it exactly (too few positive scores, or a tie) the
    full matrix is used.
    """
    if max_answer_len < p_start.shape[0]:
        banded = _top_spans_banded(p_start, p_end, allowed, n_candidates, max_answer_len)
        if banded is not None:
            return banded
    return _top_spans_full(p_start, p_end, allowed, n_candidates, max_answer_len)


def _top_spans_full(p_start, p_end, allowed, n_candidates: int, max_answer_len: int) -> list[Candidate]:
    outer = np.multiply.outer(p_start, p_end)
    scores = np.tril(np.triu(outer), max_answer_len - 1)
    flat = scores.ravel()
    if n_candidates == 1:
        order = np.array([np.argmax(flat)])
    elif flat.shape[0] < n_candidates:
        order = np.argsort(-flat)
    else:
        part = np.argpartition(-flat, n_candidates)[0:n_candidates]
        order = part[np.argsort(-flat[part])]
    starts, ends = np.unravel_index(order, scores.shape)
    return _kept(starts, ends, scores[starts, ends], allowed)


def _top_spans_banded(p_start, p_end, allowed, n_candidates: int, width: int) -> list[Candidate] | None:
    """The full matrix's answer from its band (end - start < width) alone, or None when the
    band cannot tell it exactly. Outside the band every score is 0, and inside it the
    values are the same float32 products, so when at least n_candidates band scores are
    positive and no two of the deciding ones are equal, the chosen spans and their order
    are forced, whatever order the reference's partial sort visits them in."""
    seq_len = p_start.shape[0]
    ends = np.arange(seq_len)[:, None] + np.arange(width)[None, :]
    inside = ends < seq_len
    band = p_start[:, None] * p_end[np.minimum(ends, seq_len - 1)]
    band[~inside] = 0
    flat = band.ravel()
    if n_candidates == 1:
        # argmax takes the first maximum in row-major order; the band keeps the full
        # matrix's (start, end) order, so a positive maximum is the same span.
        best = int(np.argmax(flat))
        if not flat[best] > 0:
            return None
        order = np.array([best])
    else:
        positive = int(np.count_nonzero(flat > 0))
        if positive < n_candidates:
            return None  # zero-score filler spans: only the full matrix picks them as the reference does
        if positive == n_candidates:
            part = np.flatnonzero(flat > 0)
        else:
            split = np.argpartition(-flat, n_candidates)
            part = split[:n_candidates]
            if not flat[part].min() > flat[split[n_candidates]]:
                return None  # a tie at the cut: which span gets in is the partial sort's choice
        values = flat[part]
        if np.unique(values).shape[0] != n_candidates:
            return None  # a tie inside: their order is the sort's choice
        order = part[np.argsort(-values)]
    starts, offsets = np.divmod(order, width)
    return _kept(starts, starts + offsets, flat[order], allowed)


def _kept(starts, ends, scores, allowed) -> list[Candidate]:
    keep = allowed[starts] & allowed[ends]
    return [Candidate(int(s), int(e), float(v)) for s, e, v in zip(starts[keep], ends[keep], scores[keep])]


def window_candidates(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    layout: WindowLayout,
    params: AnswerParams,
) -> tuple[list[Candidate], float]:
    """Candidates of one window and its null score p_start[CLS] * p_end[CLS].

    The logits are the window's own (length layout.seq_len, no padding).
    """
    if start_logits.shape[0] != layout.seq_len or end_logits.shape[0] != layout.seq_len:
        raise ValueError(
            f"logits of length {start_logits.shape[0]}/{end_logits.shape[0]} do not match "
            f"the window's sequence length {layout.seq_len}"
        )
    allowed = layout.allowed_mask()
    p_start = softmax_masked(start_logits, allowed)
    p_end = softmax_masked(end_logits, allowed)
    null_score = float(p_start[0] * p_end[0])
    p_start[0] = 0.0
    p_end[0] = 0.0
    n_candidates = params.n_candidates
    spans = top_spans(
        p_start, p_end, allowed, n_candidates=n_candidates, max_answer_len=params.max_answer_len
    )
    return spans, null_score


def span_chars(
    cand: Candidate,
    layout: WindowLayout,
    offsets: np.ndarray,
    word_ids: np.ndarray,
    align_to_words: bool,
) -> tuple[int, int]:
    """Character [start, end) of a candidate in the document.

    With align_to_words the span widens to the words holding its first and last
    tokens, counting only the context tokens inside the window (a word cut by the
    window's edge maps to its part in the window, as in the reference's per-window
    encoding). When either end has no word there (CLS or another special token, or a
    question token whose word index names no context word in the window), the whole span
    falls back to plain token offsets, as in the reference: a special token's are (0, 0),
    a question token's are its characters in the question (read, as the reference read
    them, as if they were the document's).
    """
    if align_to_words:
        s_range = _word_chars(cand.start, layout, offsets, word_ids)
        e_range = _word_chars(cand.end, layout, offsets, word_ids)
        if s_range is not None and e_range is not None:
            return s_range[0], e_range[1]
    return _token_chars(cand.start, layout, offsets)[0], _token_chars(cand.end, layout, offsets)[1]


def _word_chars(pos: int, layout: WindowLayout, offsets: np.ndarray, word_ids: np.ndarray) -> tuple[int, int] | None:
    """(start, end) characters of the window's context tokens that belong to the word of
    the token at window position `pos` (numbered in that token's own text), or None."""
    lo_doc, hi_doc = layout.doc_start, layout.doc_end
    c = pos - layout.context_offset
    if 0 <= c < layout.n_context:
        lo = hi = lo_doc + c
        word = word_ids[lo]
        if word < 0:
            return None
        while lo - 1 >= lo_doc and word_ids[lo - 1] == word:  # a word's tokens are contiguous
            lo -= 1
        while hi + 1 < hi_doc and word_ids[hi + 1] == word:
            hi += 1
        return int(offsets[lo, 0]), int(offsets[hi, 1])
    q = pos - layout.question_offset
    if not layout.question_words or not 0 <= q < len(layout.question_words) or layout.question_words[q] < 0:
        return None
    hits = np.flatnonzero(word_ids[lo_doc:hi_doc] == layout.question_words[q])
    if hits.shape[0] == 0:
        return None
    return int(offsets[lo_doc + hits[0], 0]), int(offsets[lo_doc + hits[-1], 1])


def _token_chars(pos: int, layout: WindowLayout, offsets: np.ndarray) -> tuple[int, int]:
    c = pos - layout.context_offset
    if 0 <= c < layout.n_context:
        return int(offsets[layout.doc_start + c, 0]), int(offsets[layout.doc_start + c, 1])
    q = pos - layout.question_offset
    if layout.question_chars and 0 <= q < len(layout.question_chars):
        return layout.question_chars[q]
    return 0, 0


def merge_answers(
    text: str,
    windows: list[tuple[WindowLayout, list[Candidate], float, np.ndarray, np.ndarray]],
    offsets: np.ndarray,
    word_ids: np.ndarray,
    params: AnswerParams,
) -> list[Answer]:
    """A question's answers from its windows' candidates.

    windows: per window, in document order: (layout, candidates best first, null score,
    raw start logits, raw end logits). Raw logits are reported with each answer: unlike
    the score (a probability within one window) they compare across windows. So are the
    window's null logits (at CLS, position 0): `Answer.margin` is the answer's logits
    minus them, how much the model prefers this span to "no answer" in its window.
    """
    merged, null_score = _merge_candidates(text, windows, offsets, word_ids, params)
    if params.handle_impossible_answer:
        merged.append([null_score, 0, 0, None, None, ""])
    merged.sort(key=lambda m: m[0], reverse=True)
    return [_answer(rank, entry, windows, offsets) for rank, entry in enumerate(merged[: params.top_k])]


def _merge_candidates(text: str, windows: list, offsets: np.ndarray, word_ids: np.ndarray,
                      params: AnswerParams) -> tuple[list[list], float]:
    """The windows' candidates, merged by text (or by characters), in first-seen order, and the
    null score (the least of the windows')."""
    align, by_text = params.align_to_words, params.merge_by_text
    # [score, char start, char end, window index, candidate, text]: the details of an
    # answer (token span, logits) are looked up only for the top_k that are returned.
    merged: list[list] = []
    index: dict[object, list] = {}
    null_score = NO_NULL_SCORE
    for w, (layout, cands, w_null, _start_logits, _end_logits) in enumerate(windows):
        null_score = min(null_score, w_null)
        for cand in cands:
            cs, ce = span_chars(cand, layout, offsets, word_ids, align)
            answer_text = text[cs:ce]
            key = answer_text.lower() if by_text else (cs, ce)
            found = index.get(key)
            if found is not None:
                found[0] += cand.score
                continue
            item = [cand.score, cs, ce, w, cand, answer_text]
            index[key] = item
            merged.append(item)
    return merged, null_score


def _answer(rank: int, entry: list, windows: list, offsets: np.ndarray) -> Answer:
    """The Answer of one merged entry, ranked `rank`; window index None is "no answer"."""
    score, cs, ce, w, cand, answer_text = entry
    if w is None:  # "no answer"
        return Answer(rank=rank, text=answer_text, score=score, char_start=cs, char_end=ce, window_index=None,
                      window_char_start=None, window_char_end=None, token_start=None, token_end=None,
                      start_logit=None, end_logit=None, null_start_logit=None, null_end_logit=None)
    layout, _cands, _null, start_logits, end_logits = windows[w]
    tok_s = cand.start - layout.context_offset + layout.doc_start
    tok_e = cand.end - layout.context_offset + layout.doc_start
    return Answer(
        rank=rank,
        text=answer_text,
        score=score,
        char_start=cs,
        char_end=ce,
        window_index=w,
        window_char_start=int(offsets[layout.doc_start, 0]),
        window_char_end=int(offsets[layout.doc_end - 1, 1]),
        token_start=tok_s if layout.doc_start <= tok_s < layout.doc_end else None,
        token_end=tok_e if layout.doc_start <= tok_e < layout.doc_end else None,
        start_logit=float(start_logits[cand.start]),
        end_logit=float(end_logits[cand.end]),
        null_start_logit=float(start_logits[0]),
        null_end_logit=float(end_logits[0]),
    )
