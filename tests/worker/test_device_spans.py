"""The on-device span path (used on GPUs) agrees with the exact numpy path, run here on CPU tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from docqa.worker.device_spans import device_candidates
from docqa.core.params import AnswerParams
from docqa.worker.spans import WindowLayout, window_candidates


def _layouts(rng, n, max_len=60):
    out = []
    for _ in range(n):
        q = int(rng.integers(2, 8))
        c = int(rng.integers(5, max_len - q - 3))
        out.append(WindowLayout(seq_len=q + c + 3, context_offset=q + 2, doc_start=0, doc_end=c))
    return out


@pytest.mark.parametrize("top_k,max_answer_len", [(1, 15), (5, 3), (3, 30), (2, 1)])
def test_device_candidates_equal_the_numpy_path(top_k, max_answer_len):
    rng = np.random.default_rng(top_k * 100 + max_answer_len)
    layouts = _layouts(rng, 12)
    width = max(lay.seq_len for lay in layouts)
    start = np.zeros((len(layouts), width), np.float32)
    end = np.zeros_like(start)
    allowed = np.zeros((len(layouts), width), bool)
    for i, lay in enumerate(layouts):
        start[i, : lay.seq_len] = rng.normal(0, 4, lay.seq_len)
        end[i, : lay.seq_len] = rng.normal(0, 4, lay.seq_len)
        start[i, lay.seq_len :] = 99.0  # padding must never matter
        allowed[i, : lay.seq_len] = lay.allowed_mask()
    params = AnswerParams(top_k=top_k, max_answer_len=max_answer_len)
    n = top_k * 2 + 10
    got = device_candidates(
        torch.from_numpy(start), torch.from_numpy(end), torch.from_numpy(allowed),
        n_candidates=n, max_answer_len=max_answer_len,
    )
    for i, lay in enumerate(layouts):
        want, null = window_candidates(start[i, : lay.seq_len], end[i, : lay.seq_len], lay, params)
        want = [c for c in want if c.score > 0]
        have = got.window(i)
        assert [(c.start, c.end) for c in have] == [(c.start, c.end) for c in want]
        assert [c.score for c in have] == pytest.approx([c.score for c in want], rel=1e-5)
        assert got.null_scores[i] == pytest.approx(null, rel=1e-5)
        for j, c in enumerate(have):
            assert got.start_logits[i, j] == start[i, c.start] and got.end_logits[i, j] == end[i, c.end]


def test_band_never_returns_a_span_longer_than_max_answer_len_or_reversed():
    rng = np.random.default_rng(0)
    start = torch.from_numpy(rng.normal(0, 3, (4, 40)).astype(np.float32))
    end = torch.from_numpy(rng.normal(0, 3, (4, 40)).astype(np.float32))
    allowed = torch.ones(4, 40, dtype=torch.bool)
    got = device_candidates(start, end, allowed, n_candidates=50, max_answer_len=4)
    keep = got.scores > 0
    assert ((got.ends - got.starts)[keep] >= 0).all()
    assert ((got.ends - got.starts)[keep] <= 3).all()
