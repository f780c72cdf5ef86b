"""Span candidates computed where the logits are (the GPU), so only candidates come back.

The numpy path (`docqa.worker.spans`) copies every window's full start/end logits to the host
and ranks a seq_len x seq_len matrix per window: exact against the reference, but on a
GPU serving thousands of windows a second the copies and the host work dominate. Here
the same arithmetic runs batched on the device: masked softmax, null score, CLS zeroed,
span scores restricted to the band `s <= e < s + max_answer_len` (a [B, L, max_answer_len]
tensor instead of [B, L, L]), and `torch.topk`; the host receives k candidates per window.

Positive-score candidates equal the numpy path's. The difference: where a window has
fewer valid spans than candidates requested, the reference fills its quota with
zero-score spans chosen by numpy's partition order; this path returns only spans with a
positive score. Use the numpy path (the CPU default) where byte-identical fillers matter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from docqa.worker.spans import MASKED_LOGIT, Candidate


@dataclass
class DeviceCandidates:
    """Per window (rows): candidates best first, and the null score."""

    starts: np.ndarray  # [B, k] positions in the window sequence
    ends: np.ndarray  # [B, k] inclusive
    scores: np.ndarray  # [B, k] float32; 0 where the row has fewer than k valid spans
    null_scores: np.ndarray  # [B]
    start_logits: np.ndarray  # [B, k] raw start logit at each candidate's start
    end_logits: np.ndarray  # [B, k] raw end logit at each candidate's end

    def window(self, row: int) -> list[Candidate]:
        # Python numbers at once (tolist): the same values as int()/float() of each element.
        return [
            Candidate(s, e, v)
            for s, e, v in zip(self.starts[row].tolist(), self.ends[row].tolist(), self.scores[row].tolist())
            if v > 0
        ]


def device_candidates(start_logits, end_logits, allowed, *, n_candidates: int, max_answer_len: int) -> DeviceCandidates:
    """Top `n_candidates` spans per row of [B, L] logits; `allowed` [B, L] bool marks context + CLS.

    Padding positions must be False in `allowed`. Computed in float32 whatever the
    model's dtype (as the reference upcasts bf16 logits).
    """
    tensors = candidate_tensors(start_logits, end_logits, allowed, n_candidates=n_candidates,
                                max_answer_len=max_answer_len)
    return DeviceCandidates(*(t.cpu().numpy() for t in tensors))


def candidate_tensors(start_logits, end_logits, allowed, *, n_candidates: int, max_answer_len: int) -> tuple:
    """What `device_candidates` computes, left on the device: (starts, ends, scores, null
    scores, start logits, end logits), for a caller that copies them back asynchronously."""
    import torch

    raw_s = start_logits.float()
    raw_e = end_logits.float()
    # A fill on the device, not a copy from host memory (which could wait for the stream).
    masked = torch.full((), MASKED_LOGIT, dtype=torch.float32, device=raw_s.device)
    p_s = torch.softmax(torch.where(allowed, raw_s, masked), dim=-1)
    p_e = torch.softmax(torch.where(allowed, raw_e, masked), dim=-1)
    null = p_s[:, 0] * p_e[:, 0]
    p_s[:, 0] = 0.0
    p_e[:, 0] = 0.0
    b, length = p_s.shape
    width = min(max_answer_len, length)
    # band[b, s, j] = p_s[b, s] * p_e[b, s + j], for j < width and s + j < L
    padded_e = torch.nn.functional.pad(p_e, (0, width - 1))
    shifted = padded_e.unfold(1, width, 1)[:, :length, :]  # [B, L, width]
    ok_e = torch.nn.functional.pad(allowed, (0, width - 1)).unfold(1, width, 1)[:, :length, :]
    band = p_s.unsqueeze(-1) * shifted
    band = torch.where(ok_e & allowed.unsqueeze(-1), band, torch.zeros((), device=band.device))
    k = min(n_candidates, band.shape[1] * band.shape[2])
    scores, flat = torch.topk(band.reshape(b, -1), k, dim=-1)
    starts = torch.div(flat, width, rounding_mode="floor")
    ends = starts + flat % width
    rows = torch.arange(b, device=raw_s.device).unsqueeze(-1)
    s_log = raw_s[rows, starts]
    e_log = raw_e[rows, ends.clamp(max=length - 1)]
    return starts, ends, scores, null, s_log, e_log
