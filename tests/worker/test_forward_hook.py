"""The engine's on_forward hook (what worker metrics record): one call per forward, with its
windows, real and padded tokens and time, on both span paths."""

from __future__ import annotations

import pytest
from docqa.worker.engine import Engine, QAItem

from docqa.core.params import AnswerParams

BUDGET = 192  # three 64-token windows a forward


@pytest.mark.parametrize("span_path", ["numpy", "device"])
def test_on_forward_sees_every_forward_with_its_windows_and_padding(tiny_model, span_path):
    engine = Engine(tiny_model, device="cpu", span_path=span_path, batch_tokens=BUDGET).warm_up()
    calls = []
    engine.on_forward = lambda *args: calls.append(args)
    params = AnswerParams(max_seq_len=64, doc_stride=16)
    long_text = " ".join(f"word{i} flows to the sea" for i in range(60))
    items = [QAItem(long_text, "Where does it flow?", params), QAItem("Bob signed the memo.", "Who signed?", params)]
    results = engine.run(items)
    assert all(r.ok for r in results)
    assert len(calls) == engine.forward_calls >= 2
    assert sum(c[0] for c in calls) == engine.windows_run == sum(r.n_windows for r in results)
    for windows, real, padded, seconds in calls:
        assert windows >= 1 and 0 < real <= padded and (padded <= BUDGET or windows == 1) and seconds > 0
    # Windows of different lengths share a batch: some padding is counted somewhere.
    assert sum(c[2] - c[1] for c in calls) > 0
    engine.on_forward = None  # off again: nothing is called
    seen = len(calls)
    engine.run(items[1:])
    assert len(calls) == seen < engine.forward_calls
