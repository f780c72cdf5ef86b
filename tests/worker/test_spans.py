"""Span decoding with hand-made logits: no model needed."""

from __future__ import annotations

import numpy as np
import pytest

from docqa.core.params import AnswerParams
from docqa.worker.spans import Candidate, WindowLayout, merge_answers, span_chars, window_candidates

# A window: [CLS] q q [SEP] c0 c1 c2 c3 [SEP]  -> context at positions 4..7
LAYOUT = WindowLayout(seq_len=9, context_offset=4, doc_start=0, doc_end=4)
TEXT = "Alpha beta gamma delta"
OFFSETS = np.array([[0, 5], [6, 10], [11, 16], [17, 22]])
WORDS = np.array([0, 1, 2, 3])


def logits(peaks: dict[int, float], n: int = 9) -> np.ndarray:
    x = np.zeros(n, dtype=np.float32)
    for i, v in peaks.items():
        x[i] = v
    return x


def test_best_span_is_the_product_of_start_and_end_peaks():
    start = logits({5: 8.0})
    end = logits({6: 8.0})
    cands, _null = window_candidates(start, end, LAYOUT, AnswerParams(top_k=1))
    assert (cands[0].start, cands[0].end) == (5, 6)
    s, e = span_chars(cands[0], LAYOUT, OFFSETS, WORDS, True)
    assert TEXT[s:e] == "beta gamma"


def test_question_and_special_tokens_never_answer_even_with_huge_logits():
    start = logits({1: 50.0, 2: 50.0, 8: 50.0, 5: 1.0})
    end = logits({1: 50.0, 3: 50.0, 8: 50.0, 5: 1.0})
    cands, _ = window_candidates(start, end, LAYOUT, AnswerParams(top_k=3))
    assert cands, "some context span must be found"
    for c in cands:
        assert 4 <= c.start <= 7 or c.start == 0
        assert 4 <= c.end <= 7 or c.end == 0


def test_max_answer_len_bounds_the_span():
    start = logits({4: 9.0})
    end = logits({7: 9.0, 5: 1.0})
    long, _ = window_candidates(start, end, LAYOUT, AnswerParams(max_answer_len=4))
    short, _ = window_candidates(start, end, LAYOUT, AnswerParams(max_answer_len=2))
    assert (long[0].start, long[0].end) == (4, 7)
    assert short[0].end - short[0].start <= 1


def test_null_score_is_cls_start_times_cls_end():
    start = logits({0: 3.0, 5: 1.0})
    end = logits({0: 2.0, 6: 1.0})
    _, null = window_candidates(start, end, LAYOUT, AnswerParams(handle_impossible_answer=True))
    allowed = LAYOUT.allowed_mask()
    ps = np.exp(np.where(allowed, start, -10000.0) - 3.0)
    pe = np.exp(np.where(allowed, end, -10000.0) - 2.0)
    assert null == pytest.approx((ps[0] / ps.sum()) * (pe[0] / pe.sum()), rel=1e-6)


def test_impossible_answer_wins_when_cls_dominates():
    start = logits({0: 10.0, 5: 1.0})
    end = logits({0: 10.0, 5: 1.0})
    params = AnswerParams(handle_impossible_answer=True, top_k=2)
    cands, null = window_candidates(start, end, LAYOUT, params)
    answers = merge_answers(TEXT, [(LAYOUT, cands, null, start, end)], OFFSETS, WORDS, params)
    assert answers[0].text == "" and (answers[0].char_start, answers[0].char_end) == (0, 0)
    assert answers[0].window_index is None
    assert answers[1].text != ""


def test_equal_texts_merge_across_windows_ignoring_case_and_keep_first_offsets():
    text = "Paris is big. paris is old."
    offsets = np.array([[0, 5], [6, 8], [9, 12], [12, 13], [14, 19], [20, 22], [23, 26], [26, 27]])
    words = np.arange(8)
    w0 = WindowLayout(seq_len=8, context_offset=2, doc_start=0, doc_end=5)
    w1 = WindowLayout(seq_len=8, context_offset=2, doc_start=3, doc_end=8)
    s = np.zeros(8, dtype=np.float32)
    c0 = [Candidate(2, 2, 0.4)]  # "Paris" in window 0
    c1 = [Candidate(3, 3, 0.3), Candidate(4, 4, 0.35)]  # "paris" and "is" in window 1
    wins = [(w0, c0, 1.0, s, s), (w1, c1, 1.0, s, s)]
    merged = merge_answers(text, wins, offsets, words, AnswerParams(top_k=5))
    assert [a.text for a in merged] == ["Paris", "is"]
    assert merged[0].score == pytest.approx(0.7)
    assert (merged[0].char_start, merged[0].char_end, merged[0].window_index) == (0, 5, 0)
    apart = merge_answers(text, wins, offsets, words, AnswerParams(top_k=5, merge_by_text=False))
    assert [(a.text, a.char_start) for a in apart] == [("Paris", 0), ("is", 20), ("paris", 14)]


def test_align_to_words_widens_to_the_whole_word_inside_the_window():
    offsets = np.array([[0, 2], [2, 6], [6, 12]])  # un ##beli ##evable
    words = np.array([0, 0, 0])
    full = WindowLayout(seq_len=6, context_offset=2, doc_start=0, doc_end=3)
    cut = WindowLayout(seq_len=5, context_offset=2, doc_start=1, doc_end=3)  # window starts mid-word
    c = Candidate(3, 3, 1.0)
    assert span_chars(c, full, offsets, words, True) == (0, 12)
    assert span_chars(Candidate(2, 2, 1.0), cut, offsets, words, True) == (2, 12)
    assert span_chars(c, full, offsets, words, False) == (2, 6)


def test_logits_of_wrong_length_are_refused():
    with pytest.raises(ValueError, match="do not match"):
        window_candidates(np.zeros(3, np.float32), np.zeros(3, np.float32), LAYOUT, AnswerParams())


def _probabilities(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    from docqa.worker.spans import softmax_masked

    if kind == "ties":  # few distinct logits: many equal span scores
        x = rng.integers(0, 3, n).astype(np.float32)
    elif kind == "peaky":  # the spread of a trained model: most products far below the best
        x = (rng.standard_normal(n) * 6).astype(np.float32)
    elif kind == "underflow":  # products that round to zero in float32
        x = (rng.standard_normal(n) * 40).astype(np.float32)
    else:
        x = rng.standard_normal(n).astype(np.float32)
    allowed = rng.random(n) < 0.8
    allowed[0] = True
    p = softmax_masked(x, allowed)
    p[0] = 0.0
    return p, allowed


def test_banded_span_ranking_is_the_full_matrix_ranking():
    """The band (end - start < max_answer_len) gives exactly the full L x L selection, or
    hands over to it: same spans, same order, same float32 scores, ties and fillers included."""
    from docqa.worker.spans import _top_spans_banded, _top_spans_full, top_spans

    rng = np.random.default_rng(2026)
    decided = handed_over = 0
    for case in range(3000):
        n = int(rng.choice([1, 2, 3, 5, 8, 30, 120, 384]))
        kind = ["plain", "ties", "peaky", "underflow"][case % 4]
        p_start, allowed = _probabilities(rng, n, kind)
        p_end, _ = _probabilities(rng, n, kind)
        n_candidates = int(rng.choice([1, 2, 5, 11, 20, 30]))
        max_len = int(rng.choice([1, 2, 3, 15, 30, 500]))
        want = _top_spans_full(p_start, p_end, allowed, n_candidates, max_len)
        got = top_spans(p_start, p_end, allowed, n_candidates=n_candidates, max_answer_len=max_len)
        assert got == want, (case, n, kind, n_candidates, max_len)
        if max_len < n:
            banded = _top_spans_banded(p_start, p_end, allowed, n_candidates, max_len)
            if banded is None:
                handed_over += 1
            else:
                assert banded == want
                decided += 1
    # both branches are exercised: the band decides most windows, ties and fillers go to the full matrix
    assert decided > 500 and handed_over > 100


def _reference_span_chars(cand, layout, offsets, word_ids, align_to_words):
    """span_chars as first written (each word walked both ways, then the ends taken): the
    oracle the faster lookup is held to."""

    def word_chars(doc_pos):
        word = word_ids[doc_pos]
        if word < 0:
            return None
        lo = doc_pos
        while lo - 1 >= layout.doc_start and word_ids[lo - 1] == word:
            lo -= 1
        hi = doc_pos
        while hi + 1 < layout.doc_end and word_ids[hi + 1] == word:
            hi += 1
        return int(offsets[lo, 0]), int(offsets[hi, 1])

    def token_chars(pos):
        doc_pos = pos - layout.context_offset
        if 0 <= doc_pos < layout.n_context:
            o = offsets[layout.doc_start + doc_pos]
            return int(o[0]), int(o[1])
        return 0, 0

    if align_to_words:
        s_doc = cand.start - layout.context_offset + layout.doc_start
        e_doc = cand.end - layout.context_offset + layout.doc_start
        if layout.doc_start <= s_doc < layout.doc_end and layout.doc_start <= e_doc < layout.doc_end:
            sw, ew = word_chars(s_doc), word_chars(e_doc)
            if sw is not None and ew is not None:
                return sw[0], ew[1]
    return token_chars(cand.start)[0], token_chars(cand.end)[1]


def test_merge_finds_each_span_exactly_where_span_chars_does():
    """span_chars (only the start's word walked back, the end's forward) against its first
    definition on random documents, windows cut mid-word, CLS and question positions, with
    and without word alignment."""
    rng = np.random.default_rng(5)
    checked = 0
    for _ in range(200):
        n = int(rng.integers(1, 40))
        word_sizes = rng.integers(1, 4, size=n)  # tokens per word
        word_ids = np.repeat(np.arange(n), word_sizes)[:n]
        word_ids[rng.random(n) < 0.1] = -1  # tokens outside any word
        lengths = rng.integers(1, 5, size=n)
        starts = np.cumsum(np.concatenate([[0], lengths[:-1] + rng.integers(0, 2, size=n - 1)]))
        offsets = np.stack([starts, starts + lengths], axis=1)
        doc_start = int(rng.integers(0, n))
        doc_end = int(rng.integers(doc_start + 1, n + 1))
        ctx = int(rng.integers(1, 5))
        layout = WindowLayout(seq_len=ctx + (doc_end - doc_start) + 1, context_offset=ctx, doc_start=doc_start,
                              doc_end=doc_end)
        for _c in range(10):
            s = int(rng.integers(0, layout.seq_len))
            e = int(rng.integers(s, layout.seq_len))
            cand = Candidate(s, e, 0.5)
            for align in (True, False):
                assert span_chars(cand, layout, offsets, word_ids, align) == _reference_span_chars(
                    cand, layout, offsets, word_ids, align), (cand, layout, align)
                checked += 1
    assert checked == 4000
