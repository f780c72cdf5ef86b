"""GPU shape settings on the golden inputs: bucketed padded shapes (pad_buckets) and
torch.compile give the default path's answers.

Both run here on the CPU with the tiny model and the real code paths (no stand-ins): a
bucketed batch pads its width to a multiple of 64 tokens and its rows to a power of two,
which must change nothing but float rounding; a compiled model must give the eager
model's answers. Speed is not asserted.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from docqa.worker.batching import PAD_MULTIPLE, bucket_rows, bucket_width
from docqa.worker.engine import Engine, QAItem

from docqa.core.params import AnswerParams

GOLDEN = json.loads((Path(__file__).resolve().parents[1] / "golden" / "golden.json").read_text(encoding="utf-8"))
CASES = GOLDEN["cases"]
ITEMS = [QAItem(c["context"], c["question"], AnswerParams(**c["params"])) for c in CASES]
BUDGET = 4096  # several windows a forward, so rows are padded too


def answers(results) -> list[list[tuple[str, int, int, float]]]:
    return [[(a.text, a.char_start, a.char_end, a.score) for a in r.answers] for r in results]


def assert_same_answers(got, want, *, positive_only: bool = False) -> None:
    """Identical texts and offsets in the same order; scores equal up to float rounding."""
    for case, g, w in zip(CASES, answers(got), answers(want)):
        if positive_only:
            g, w = [a for a in g if a[3] > 0], [a for a in w if a[3] > 0]
        assert [a[:3] for a in g] == [a[:3] for a in w], case["id"]
        for a, b in zip(g, w):
            assert a[3] == pytest.approx(b[3], rel=1e-4, abs=1e-12), case["id"]


def record_shapes(engine: Engine) -> list[tuple[int, int]]:
    """(rows, width) of every forward from now on, read off the model's real input."""
    shapes: list[tuple[int, int]] = []
    model = engine._eager_model if engine._eager_model is not None else engine.model
    model.register_forward_pre_hook(
        lambda _m, args, kwargs: shapes.append(tuple((kwargs or {}).get("input_ids", args[0] if args else None).shape)),
        with_kwargs=True,
    )
    return shapes


def test_bucket_sizes():
    assert [bucket_width(n, 512) for n in (1, 63, 64, 65, 300, 384, 385, 512)] == [64, 64, 64, 128, 320, 384, 448, 512]
    assert bucket_width(514, 514) == 514  # never past the model's longest input...
    assert bucket_width(600, 512) == 600  # ...unless the window itself is longer (the model then refuses it)
    assert [bucket_rows(n, 384, 131072) for n in (1, 2, 3, 5, 200, 300, 341)] == [1, 2, 4, 8, 256, 341, 341]
    assert bucket_rows(3, 384, 1536) == 4 and bucket_rows(3, 384, 1200) == 3  # the budget caps the padding
    assert bucket_rows(5, 64, 131072, max_windows=6) == 6
    assert bucket_rows(1, 1000, 500) == 1  # a window longer than the budget runs alone


def test_pad_buckets_auto_is_on_for_cuda_only(tiny_model):
    assert Engine(tiny_model, device="cpu").pad_buckets is False
    assert Engine(tiny_model, device="cuda:1").pad_buckets is True  # decided without loading anything
    assert Engine(tiny_model, device="cpu", pad_buckets=True).pad_buckets is True
    assert Engine(tiny_model, device="cuda", pad_buckets=False).pad_buckets is False
    with pytest.raises(ValueError, match="pad_buckets"):
        Engine(tiny_model, pad_buckets="yes")
    with pytest.raises(ValueError, match="compile"):
        Engine(tiny_model, compile="max")


def test_settings_reach_the_engine(tiny_model, monkeypatch):
    from docqa.core.settings import Settings

    monkeypatch.setenv("DOCQA_PAD_BUCKETS", "true")
    monkeypatch.setenv("DOCQA_COMPILE", "reduce-overhead")
    engine = Engine.from_settings(Settings(model=tiny_model, device="cpu"))
    assert engine.pad_buckets is True and engine.compile_mode == "reduce-overhead"
    monkeypatch.delenv("DOCQA_PAD_BUCKETS")
    monkeypatch.delenv("DOCQA_COMPILE")
    engine = Engine.from_settings(Settings(model=tiny_model, device="cpu"))
    assert engine.pad_buckets is False and engine.compile_mode == "off"  # the defaults on CPU


@pytest.fixture(scope="module")
def default_results(tiny_model):
    return Engine(tiny_model, device="cpu", batch_tokens=BUDGET).run(ITEMS)


@pytest.mark.parametrize("span_path", ["numpy", "device"])
def test_buckets_give_the_default_answers_on_the_golden_inputs(tiny_model, default_results, span_path):
    engine = Engine(tiny_model, device="cpu", batch_tokens=BUDGET, pad_buckets=True, span_path=span_path).warm_up()
    shapes = record_shapes(engine)
    padded = []
    engine.on_forward = lambda windows, real, pad, _s: padded.append((windows, real, pad))
    got = engine.run(ITEMS)
    assert all(r.ok for r in got)
    assert [r.n_windows for r in got] == [r.n_windows for r in default_results]
    # The device path returns no zero-score fillers (see test_golden): compare what it returns.
    assert_same_answers(got, default_results, positive_only=span_path == "device")
    # Few shapes: widths on the 64-token grid, rows powers of two or a full budget.
    assert shapes and all(w % PAD_MULTIPLE == 0 for _, w in shapes)
    assert all(r & (r - 1) == 0 or r == BUDGET // w for r, w in shapes)
    assert len(set(shapes)) < len(shapes) / 2
    assert all(rows * width <= BUDGET for rows, width in shapes)
    # The hook counts the padding rows and columns as padded tokens.
    assert [p for *_, p in padded] == [r * w for r, w in shapes]
    assert sum(w for w, *_ in padded) == sum(r.n_windows for r in got)


@pytest.mark.slow
def test_compile_gives_the_eager_answers(tiny_model, default_results):
    """torch.compile (inductor, on the CPU here: it needs a C compiler) with buckets, on a
    third of the golden cases to bound the compile time (about 30-60 s here)."""
    torch = pytest.importorskip("torch")
    subset = list(range(0, len(CASES), 3))
    engine = Engine(tiny_model, device="cpu", batch_tokens=BUDGET, pad_buckets=True, compile="default").warm_up()
    assert isinstance(engine.model, torch._dynamo.eval_frame.OptimizedModule)
    started = time.perf_counter()
    got = engine.run([ITEMS[i] for i in subset])
    print(f"compiled run of {len(subset)} golden cases: {time.perf_counter() - started:.1f} s")
    if engine.compile_error is not None:
        pytest.skip(f"torch.compile does not work here: {engine.compile_error}")
    assert engine._eager_model is not None  # still the compiled model
    want = [default_results[i] for i in subset]
    for i, g, w in zip(subset, answers(got), answers(want)):
        assert [a[:3] for a in g] == [a[:3] for a in w], CASES[i]["id"]
        for a, b in zip(g, w):
            assert a[3] == pytest.approx(b[3], rel=1e-4, abs=1e-12), CASES[i]["id"]
