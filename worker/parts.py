"""Long jobs run as window-range parts: how a job is cut, what a finished part keeps, and
the merge that turns all parts into the answers one worker running the whole job gives.

Each window's candidates depend on that window alone (its logits, softmax and top spans:
docqa.worker.spans.window_candidates); only the merge looks across windows. So a part
keeps, per window, exactly what `merge_answers` reads: the window's layout, its
candidates (start, end, score), its null score, and its raw logits at the candidates'
positions and at CLS. All numbers are the float32 values of the run, kept exactly (JSON
writes a float so that it reads back bit for bit). Merging the parts' windows in window
order is then the same computation as merging one run's windows.
"""

from __future__ import annotations

import json
import math
import zlib

import numpy as np

from docqa.worker.spans import Candidate, WindowLayout

FORMAT = 1


def part_ranges(n_windows: int, size: int) -> list[tuple[int, int]]:
    """[start, end) window ranges covering n_windows, as few as hold at most `size` windows
    each, of equal size give or take one."""
    if n_windows < 1 or size < 1:
        raise ValueError(f"need at least one window and a positive part size (got {n_windows}, {size})")
    k = math.ceil(n_windows / size)
    bounds = [round(i * n_windows / k) for i in range(k + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(k)]


def encode_windows(windows: list) -> bytes:
    """A part's windows ((layout, candidates, null score, start logits, end logits) each) as
    compact bytes: only the logits the merge reads are kept."""
    out = []
    for layout, cands, null, s_log, e_log in windows:
        starts = sorted({0, *(c.start for c in cands)})
        ends = sorted({0, *(c.end for c in cands)})
        row = [
            layout.seq_len, layout.context_offset, layout.doc_start, layout.doc_end, list(layout.cls_positions),
            float(null), [[c.start, c.end, c.score] for c in cands],
            starts, np.asarray(s_log)[starts].tolist(), ends, np.asarray(e_log)[ends].tolist(),
        ]
        if layout.any_token:  # a context-first window: where its question sits, for span_chars
            row.append([layout.question_offset, list(layout.question_words), [list(c) for c in layout.question_chars]])
        out.append(row)
    return zlib.compress(json.dumps({"format": FORMAT, "windows": out}, separators=(",", ":")).encode(), 3)


def decode_windows(data: bytes) -> list:
    """The windows `encode_windows` kept, in its order, as `merge_answers` takes them (logits
    it does not read are NaN)."""
    doc = json.loads(zlib.decompress(data))
    if doc.get("format") != FORMAT:
        raise ValueError(f"part results in format {doc.get('format')!r}; this worker reads format {FORMAT}")
    windows = []
    for seq_len, ctx, start, end, cls, null, cands, starts, s_vals, ends, e_vals, *question in doc["windows"]:
        extra = {}
        if question:
            q_offset, q_words, q_chars = question[0]
            extra = {"any_token": True, "question_offset": q_offset, "question_words": tuple(q_words),
                     "question_chars": tuple(tuple(c) for c in q_chars)}
        layout = WindowLayout(seq_len=seq_len, context_offset=ctx, doc_start=start, doc_end=end,
                              cls_positions=tuple(cls), **extra)
        s_log = np.full(seq_len, np.nan, dtype=np.float32)
        e_log = np.full(seq_len, np.nan, dtype=np.float32)
        s_log[starts] = s_vals
        e_log[ends] = e_vals
        windows.append((layout, [Candidate(s, e, v) for s, e, v in cands], null, s_log, e_log))
    return windows
