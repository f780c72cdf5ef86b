"""The engine with a real (tiny) DistilBERT QA model and its real WordPiece tokenizer."""

from __future__ import annotations

import random

import pytest

from docqa.worker.engine import Engine, ItemError, ModelLoadError, QAItem
from docqa.core.params import AnswerParams

WORDS = (
    "the river Seine flows through Paris and the tower of iron stood near it in 1889 while "
    "engineers from Zürich and café owners watched ; 東京 also grew , with naïve plans"
).split()


def _doc(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(n))


def _items(n_items: int = 40):
    rng = random.Random(7)
    items = []
    for i in range(n_items):
        text = _doc(rng.choice([4, 30, 200, 900]), seed=i)
        if i % 5 == 0:
            text = "  " + text.replace(" ", "\n\n", 3) + " e\u0301 zero\u200bwidth 👩\u200d👩\u200d👧 "
        question = " ".join(rng.choice(WORDS) for _ in range(rng.choice([3, 9]))) + "?"
        params = AnswerParams(
            top_k=rng.choice([1, 5]),
            max_answer_len=rng.choice([3, 15]),
            handle_impossible_answer=rng.random() < 0.3,
            max_seq_len=rng.choice([384, 128]),
            doc_stride=32,
        )
        items.append(QAItem(text, question, params))
    return items


def _key(results):
    return [[(a.text, a.char_start, a.char_end, a.window_index) for a in r.answers] for r in results]


def test_every_answer_text_is_the_document_slice_at_its_offsets(engine):
    items = _items()
    results = engine.run(items)
    n = 0
    for item, res in zip(items, results):
        assert res.ok, res.error
        assert 1 <= len(res.answers) <= item.params.top_k
        for a in res.answers:
            assert item.text[a.char_start : a.char_end] == a.text
            n += 1
            if a.window_index is not None:
                assert a.window_char_start <= max(a.char_start, 0)
    assert n >= len(items)


@pytest.mark.parametrize("batch_windows", [1, 7, 64])
def test_same_answers_whatever_the_batch_size(tiny_model, engine, batch_windows):
    items = _items()
    baseline = engine.run(items)
    other = Engine(tiny_model, device="cpu", batch_tokens=10**7, max_batch_windows=batch_windows)
    results = other.run(items)
    assert _key(results) == _key(baseline)
    for r0, r1 in zip(baseline, results):
        for a0, a1 in zip(r0.answers, r1.answers):
            assert a1.score == pytest.approx(a0.score, rel=1e-4, abs=1e-7)
    assert other.windows_run == sum(r.n_windows for r in results)
    if batch_windows == 1:
        assert other.forward_calls == other.windows_run


def test_same_answers_whatever_the_input_order(engine):
    items = _items()
    baseline = _key(engine.run(items))
    order = list(range(len(items)))
    random.Random(3).shuffle(order)
    shuffled = _key(engine.run([items[i] for i in order]))
    assert [shuffled[order.index(i)] for i in range(len(items))] == baseline


def test_many_one_window_questions_share_forwards(tiny_model):
    eng = Engine(tiny_model, device="cpu", batch_tokens=16384)
    items = [QAItem(_doc(20, seed=i), "Where does the river flow?") for i in range(200)]
    results = eng.run(items)
    assert all(r.ok and r.n_windows == 1 for r in results)
    assert eng.windows_run == 200
    assert eng.forward_calls <= 5  # 200 short windows fit a handful of batches, not 200 forwards


def test_bad_items_fail_alone_with_clear_reasons(engine):
    good = QAItem(_doc(50, seed=1), "Who watched the tower?")
    too_long = QAItem(_doc(50, seed=2), " ".join(["river"] * 400) + "?")
    empty_doc = QAItem("\u200b \n\t ", "What is here?")
    empty_q = QAItem(_doc(10, seed=3), "   ")
    results = engine.run([good, too_long, empty_doc, empty_q])
    assert results[0].ok and results[0].answers
    assert "question is too long" in results[1].error and "401 tokens" in results[1].error  # 400 words + "?"
    assert "document is empty" in results[2].error
    assert "question is empty" in results[3].error
    with pytest.raises(ItemError, match="question is too long"):
        engine.answer(too_long.text, too_long.question)


def test_unknown_model_gives_one_clear_sentence(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as info:
        Engine("no-such-org/no-such-model-xyz", device="cpu").warm_up()
    msg = str(info.value)
    assert "no-such-org/no-such-model-xyz" in msg and "--model PATH" in msg
    empty = tmp_path / "not-a-model"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="local folder"):
        Engine(str(empty), device="cpu").warm_up()


def test_half_precision_on_cpu_is_refused(tiny_model):
    with pytest.raises(ModelLoadError, match="float16 on the CPU"):
        Engine(tiny_model, device="cpu", dtype="float16").warm_up()


def test_warm_up_is_idempotent_and_loads_once(tiny_model):
    eng = Engine(tiny_model, device="cpu")
    assert eng._model is None  # construction is cheap
    model = eng.warm_up().model
    assert eng.warm_up().model is model
    assert eng.model_label == tiny_model
    assert Engine(tiny_model, revision="main").model_label == f"{tiny_model}@main"


def test_int8_mode_answers_with_valid_offsets_and_says_so_in_the_label(tiny_model, engine):
    items = _items(12)
    eng = Engine(tiny_model, device="cpu", quantize="int8")
    results = eng.run(items)
    assert eng.model_label == f"{tiny_model}+int8"
    linear = __import__("torch").nn.Linear
    assert not any(type(m) is linear for m in eng.model.modules())  # the Linear layers were replaced
    same = 0
    for item, r, ref in zip(items, results, engine.run(items)):
        assert r.ok
        for a in r.answers:
            assert item.text[a.char_start : a.char_end] == a.text
        same += [a.text for a in r.answers] == [a.text for a in ref.answers]
    assert same >= len(items) // 2  # int8 changes some scores, not most answers


def test_bfloat16_on_a_cpu_without_bf16_instructions_is_refused(tiny_model, monkeypatch):
    import docqa.worker.hardware as hardware

    monkeypatch.setattr(hardware, "cpu_has_bf16", lambda: False)  # the hardware answer, not the model
    with pytest.raises(ModelLoadError, match="bfloat16 on this CPU is slower than float32.*AVX512-BF16 or AMX"):
        Engine(tiny_model, device="cpu", dtype="bfloat16").warm_up()


@pytest.mark.skipif(not __import__("importlib").import_module("docqa.worker.hardware").cpu_has_bf16(), reason="this CPU has no bf16 instructions")
def test_bfloat16_on_a_cpu_with_bf16_instructions_answers_and_says_so(tiny_model, engine):
    items = _items(40)
    eng = Engine(tiny_model, device="cpu", dtype="bfloat16")
    results = eng.run(items)
    assert eng.model_label == f"{tiny_model}+bfloat16"
    assert next(eng.model.parameters()).dtype == __import__("torch").bfloat16
    same = 0
    for item, r, ref in zip(items, results, engine.run(items)):
        assert r.ok, r.error
        assert 1 <= len(r.answers) <= item.params.top_k
        for a in r.answers:
            assert item.text[a.char_start : a.char_end] == a.text
            assert 0.0 <= a.score <= 1.0
        same += [a.text for a in r.answers[:1]] == [a.text for a in ref.answers[:1]]
    assert same >= len(items) // 2  # bf16 moves scores a little, the best answer rarely


def test_windows_longer_than_the_model_takes_are_refused(engine):
    assert engine.max_model_len == 512
    [res] = engine.run([QAItem(_doc(30, seed=4), "Where?", AnswerParams(max_seq_len=1024))])
    assert "max_seq_len 1024 is more than this model takes (512 tokens)" in res.error


def test_the_batch_budget_defaults_by_device_and_an_explicit_one_wins(tiny_model):
    from docqa.worker.hardware import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS

    eng = Engine(tiny_model, device="cpu")
    assert eng.batch_tokens == CPU_BATCH_TOKENS < GPU_BATCH_TOKENS
    assert Engine(tiny_model, device="cuda").batch_tokens == GPU_BATCH_TOKENS  # before loading: as asked
    assert Engine(tiny_model, device="cpu", batch_tokens=4096).batch_tokens == 4096
    # the budget shapes the forwards: 40 items at 128 tokens a window take more forwards at a small budget
    items = _items(40)
    small = Engine(tiny_model, device="cpu", batch_tokens=512)
    small.run(items)
    eng.run(items)
    assert small.forward_calls > eng.forward_calls
    with pytest.raises(ValueError, match="batch_tokens must be positive"):
        Engine(tiny_model, batch_tokens=0)


def test_freed_memory_is_given_back_on_the_cpu_every_few_seconds(tiny_model, engine, monkeypatch):
    from docqa.core.settings import Settings
    from docqa.worker.hardware import malloc_trim

    items = _items(24)
    monkeypatch.setenv("DOCQA_TRIM_SECONDS", "0.000001")  # after every forward
    eager = Engine.from_settings(Settings(model=tiny_model, device="cpu", batch_tokens=512))
    results = eager.run(items)
    assert eager.trims == (eager.forward_calls if malloc_trim() else 0) and eager.forward_calls > 1
    spans = lambda rs: [[(a.text, a.char_start, a.char_end) for a in r.answers] for r in rs]  # noqa: E731
    assert spans(results) == spans(engine.run(items))  # answers untouched
    off = Engine(tiny_model, device="cpu", batch_tokens=512, trim_seconds=0)  # switched off
    off.run(items)
    assert off.trims == 0
    monkeypatch.setenv("DOCQA_TRIM_SECONDS", "soon")
    with pytest.raises(ValueError, match="trim_seconds"):
        Settings()


def test_answers_carry_their_windows_null_logits_and_a_comparable_margin(tiny_model, engine):
    from docqa.core.answer import Answer

    text = " ".join(["The tower was designed by Gustave Eiffel and built in Paris in 1889."] * 40)
    params = AnswerParams(top_k=5, max_seq_len=64, doc_stride=16)
    (result,) = engine.run([QAItem(text, "Who designed the tower?", params)])
    assert result.n_windows > 3 and result.answers
    by_window: dict[int, set] = {}
    for a in result.answers:
        assert a.margin == pytest.approx(a.start_logit + a.end_logit - a.null_start_logit - a.null_end_logit)
        by_window.setdefault(a.window_index, set()).add((a.null_start_logit, a.null_end_logit))
    assert all(len(nulls) == 1 for nulls in by_window.values())  # one null per window
    assert "margin" in result.answers[0].model_dump()
    assert Answer.model_validate(result.answers[0].model_dump()) == result.answers[0]
    # The GPU's span path reports the same null logits.
    device = Engine(tiny_model, device="cpu", span_path="device")
    (dev,) = device.run([QAItem(text, "Who designed the tower?", params)])
    for a, b in zip(result.answers, dev.answers):
        if a.score > 0:
            assert (a.text, a.window_index) == (b.text, b.window_index)
            assert b.null_start_logit == pytest.approx(a.null_start_logit, abs=1e-4)
            assert b.margin == pytest.approx(a.margin, abs=1e-3)


@pytest.mark.parametrize("span_path", ["numpy", "device"])
def test_overlapped_batches_launch_the_next_before_collecting_and_answer_as_one_at_a_time(tiny_model, span_path):
    """The pipeline (batch k+1 built and launched before batch k is decoded) changes no
    answer, score or window, and every batch is collected exactly once, in order."""
    items = _items()
    got = {}
    for overlap in (False, True):
        engine = Engine(tiny_model, device="cpu", span_path=span_path, batch_tokens=512, overlap=overlap).warm_up()
        steps: list[tuple[str, tuple]] = []
        launch, collect = engine._launch, engine._collect

        def traced_launch(batch, *args, _launch=launch, _steps=steps):
            _steps.append(("launch", tuple(batch)))
            return _launch(batch, *args)

        def traced_collect(flight, *args, _collect=collect, _steps=steps):
            _steps.append(("collect", tuple(flight.batch)))
            return _collect(flight, *args)

        engine._launch, engine._collect = traced_launch, traced_collect
        forwards: list[tuple] = []
        engine.on_forward = lambda *call: forwards.append(call)
        results = engine.run(items)
        got[overlap] = [[(a.text, a.char_start, a.char_end, a.score, a.window_index) for a in r.answers]
                        for r in results]
        batches = [b for kind, b in steps if kind == "launch"]
        assert len(batches) > 3 and [b for kind, b in steps if kind == "collect"] == batches
        assert len(forwards) == len(batches) and all(seconds >= 0 for *_rest, seconds in forwards)
        if overlap:  # launch 0, launch 1, collect 0, launch 2, collect 1, ..., collect last
            expected = [("launch", batches[0])]
            for k in range(1, len(batches)):
                expected += [("launch", batches[k]), ("collect", batches[k - 1])]
            assert steps == expected + [("collect", batches[-1])]
        else:
            assert steps == [step for b in batches for step in (("launch", b), ("collect", b))]
    assert got[True] == got[False]
