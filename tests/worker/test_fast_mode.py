"""--fast / DOCQA_FAST: the fastest mode for the machine, chosen from the CPU's features
(a pure function, tested here on flag sets of CPUs this machine is not) and said in one line;
an explicit --dtype or --quantize wins. Speed itself is measured in benchmarks/, never here."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from cli_in_process import docqa_in_process
from docqa.worker.engine import Engine
from docqa.worker.hardware import (
    apply_fast,
    cpu_features,
    fast_mode,
    faster_cpu_mode,
    mode_name,
)

from docqa.cli import build_parser
from docqa.core.settings import Settings

SAPPHIRE_RAPIDS = {"amx", "avx512_vnni", "avx512_bf16", "avx2"}
ZEN4 = {"avx512_vnni", "avx512_bf16", "avx2"}
ICE_LAKE = {"avx512_vnni", "avx2"}
ZEN3 = {"avx2"}


@pytest.mark.parametrize(
    "features,dtype,quantize,named",
    [
        (SAPPHIRE_RAPIDS, "bfloat16", "none", "AMX"),
        (ZEN4, "float32", "int8", "AVX512-VNNI, no AMX"),
        (ICE_LAKE, "float32", "int8", "AVX512-VNNI, no AMX"),
        ({"avx512_bf16", "avx2"}, "bfloat16", "none", "AVX512-BF16"),
        (ZEN3, "float32", "int8", "AVX2"),
        (set(), "float32", "none", "without AVX2"),
    ],
)
def test_the_cpu_mode_follows_the_features(features, dtype, quantize, named):
    got = fast_mode(features, "cpu")
    assert got[:2] == (dtype, quantize)
    assert named in got[2]
    assert fast_mode(sorted(features)) == got  # any iterable of names; the CPU is the default device


@pytest.mark.parametrize("features", [SAPPHIRE_RAPIDS, ZEN3, set()])
def test_a_gpu_runs_its_half_precision_whatever_the_cpu(features):
    for device in ("cuda", "cuda:1"):
        dtype, quantize, why = fast_mode(features, device)
        assert (dtype, quantize) == ("auto", "none") and "CUDA" in why  # auto: bfloat16 (float16 without it)
    assert fast_mode(features, "mps")[:2] == ("auto", "none")


def test_explicit_dtype_or_quantize_wins_and_the_line_says_so():
    name = mode_name(*fast_mode(cpu_features())[:2])
    for dtype, quantize, given in (("float32", "none", "--dtype float32"), ("auto", "int8", "--quantize int8")):
        got_dtype, got_quantize, line = apply_fast(dtype, quantize, "cpu")
        assert (got_dtype, got_quantize) == (dtype, quantize)
        assert line.startswith(f"--fast: {given} given, which wins over --fast") and f"pick {name} here" in line
        assert "\n" not in line
    dtype, quantize, line = apply_fast("auto", "none", "cpu")
    assert (dtype, quantize) == fast_mode(cpu_features())[:2]
    assert line.startswith(f"--fast: {name} (this CPU ")


def test_the_hint_names_the_mode_fast_picks_here():
    mode = faster_cpu_mode()
    dtype, quantize, why = fast_mode(cpu_features())
    assert mode == (None if mode_name(dtype, quantize) == "float32" else (mode_name(dtype, quantize), why))


def test_fast_is_a_setting_flag_and_variable(monkeypatch):
    assert Settings().fast is False
    monkeypatch.setenv("DOCQA_FAST", "1")
    assert Settings().fast is True
    parser = build_parser()
    for command in (["ask", "x", "-q", "q"], ["eval", "x.json"], ["run", "x", "-q", "q"], ["worker"]):
        assert parser.parse_args([*command, "--fast"]).fast is True
        assert parser.parse_args([*command, "--no-fast"]).fast is False
        assert parser.parse_args(command).fast is None  # not given: the environment decides


def test_the_engine_applies_fast_at_warm_up(tiny_model):
    dtype, quantize, _ = fast_mode(cpu_features())
    engine = Engine.from_settings(Settings(model=tiny_model, device="cpu", fast=True))
    assert engine.fast_note is None  # cheap constructor: nothing is chosen before loading
    engine.warm_up()
    assert engine.precision == mode_name(dtype, quantize)
    assert engine.fast_note.startswith(f"--fast: {engine.precision} (")
    answers = engine.answer("The river flows north to the sea.", "Where does the river flow?")
    assert answers and "The river flows north to the sea."[answers[0].char_start : answers[0].char_end] == answers[0].text
    plain = Engine(tiny_model, device="cpu", dtype="float32", fast=True).warm_up()
    assert plain.precision == "float32" and "wins over --fast" in plain.fast_note


def test_docqa_ask_fast_says_what_it_chose_and_answers(tmp_path, tiny_model):
    doc = tmp_path / "doc.txt"
    text = "The tower was finished in 1889. It stands in Paris, near the river Seine."
    doc.write_text(text, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env["HF_HUB_OFFLINE"] = "1"
    done = docqa_in_process(["ask", "--fast", "--model", tiny_model, "-q", "Where does it stand?", str(doc)], env,
                            cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    name = mode_name(*fast_mode(cpu_features())[:2])
    lines = [ln for ln in done.stderr.splitlines() if "--fast" in ln]
    assert len(lines) == 1 and lines[0].startswith(f"docqa ask: --fast: {name} (this CPU "), done.stderr
    out = json.loads(done.stdout)
    assert out["model"] == tiny_model + ("" if name == "float32" else f"+{name}")
    answers = out["results"][0]["answers"]
    assert answers and all(text[a["char_start"] : a["char_end"]] == a["text"] for a in answers)


def test_int8_quantization_equals_torchs_quantize_dynamic(tiny_model):
    """docqa quantizes the Linear layers on several threads; the model must be the one
    torch.ao.quantization.quantize_dynamic makes: same int8 weights, same logits."""
    import warnings

    import torch
    from docqa.worker.hardware import quantize_int8
    from transformers import AutoModelForQuestionAnswering

    def loaded():
        return AutoModelForQuestionAnswering.from_pretrained(tiny_model, dtype=torch.float32).eval()

    ours = quantize_int8(loaded())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = torch.ao.quantization.quantize_dynamic(loaded(), {torch.nn.Linear}, dtype=torch.qint8)
    quantized = torch.ao.nn.quantized.dynamic.Linear
    names = [n for n, m in reference.named_modules() if type(m) is quantized]
    assert names and names == [n for n, m in ours.named_modules() if type(m) is quantized]
    modules = dict(ours.named_modules())
    for name, module in reference.named_modules():
        if name in names:
            (w_ref, b_ref), (w, b) = module._weight_bias(), modules[name]._weight_bias()
            assert torch.equal(w_ref.int_repr(), w.int_repr()) and w_ref.q_scale() == w.q_scale()
            assert torch.equal(b_ref, b)
    torch.manual_seed(0)
    ids = torch.randint(0, ours.config.vocab_size, (3, 64))
    with torch.inference_mode():
        a, b = ours(input_ids=ids), reference(input_ids=ids)
    assert torch.equal(a.start_logits, b.start_logits) and torch.equal(a.end_logits, b.end_logits)


@pytest.mark.slow
def test_docqa_run_fast_exits_with_its_store_closed(tmp_path, tiny_model):
    """`docqa run` skips the interpreter's last garbage collections at exit (docqa.cli.console),
    after closing its store: SQLite's write-ahead log is folded back, nothing is left beside
    the database file, and the answers are there for the next command."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("The river flows north to the sea. " * 40, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOCQA_")}
    env["HF_HUB_OFFLINE"] = "1"
    run = subprocess.run([sys.executable, "-m", "docqa", "run", "docs", "-q", "Where does the river flow?", "--fast",
                          "--model", tiny_model], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=180,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "1 answered now with 1 answer" in run.stdout and "--fast: " in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docqa.db", "docs"]  # no docqa.db-wal / -shm
    results = docqa_in_process(["results"], env, cwd=tmp_path)
    assert results.returncode == 0 and json.loads(results.stdout.splitlines()[0])["question"] == "Where does the river flow?"
