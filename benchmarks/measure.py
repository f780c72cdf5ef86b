"""One benchmark configuration, measured in its own process (started by benchmarks/run.py).

    python benchmarks/measure.py CONFIG --spec SPEC.json --out RESULT.json

Runs under either virtual environment: the transformers 5.2.0 reference venv (config
`pipeline`, which needs no docqa) or the project venv (everything else). Only the
standard library, benchmarks/common.py and benchmarks/corpus.py are imported at module
level; benchmarks/services.py only when one of its configurations runs.

Every configuration loads what it needs, warms up on a small item (first-call costs
are not what we compare), then times the work on the whole workload, and writes a
JSON result: wall seconds of the timed phase, windows run, forward calls, per-item
answers (for the equality checks), and its own peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402
from common import Timed, peak_rss_mib, set_threads  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")


def load_workload(spec: dict) -> list[corpus.BenchDocument]:
    return [corpus.BenchDocument(d["name"], d["title"], d["text"], tuple(d["questions"])) for d in spec["documents"]]


def pairs(docs: list[corpus.BenchDocument]) -> list[tuple[str, str, str]]:
    """(key, question, text) for every (document, question), key "doc:question" by index."""
    return [(f"{i}:{j}", q, d.text) for i, d in enumerate(docs) for j, q in enumerate(d.questions)]


class ForwardCounter:
    """Counts model forwards and the windows (batch rows) they ran, and times them."""

    def __init__(self, model) -> None:
        self.calls = 0
        self.windows = 0
        self.tokens = 0  # padded tokens run (rows x width)
        self.seconds = 0.0
        self._t = 0.0
        model.register_forward_pre_hook(self._pre, with_kwargs=True)
        model.register_forward_hook(self._post)

    def _pre(self, _module, args, kwargs):
        ids = kwargs.get("input_ids") if kwargs else None
        if ids is None and args:
            ids = args[0]
        if ids is not None:
            self.calls += 1
            self.windows += int(ids.shape[0])
            self.tokens += int(ids.shape[0] * ids.shape[1])
        self._t = time.perf_counter()

    def _post(self, _module, _args, _out):
        self.seconds += time.perf_counter() - self._t

    def reset(self) -> None:
        self.calls = self.windows = self.tokens = 0
        self.seconds = 0.0


# -- configurations ------------------------------------------------------------------------
def run_pipeline(spec: dict, docs) -> dict:
    """transformers 5.2.0 pipeline("question-answering"), float32, batch_size from spec."""
    import torch
    import transformers
    from transformers import pipeline

    set_threads(spec["threads"])
    t0 = time.perf_counter()
    # The reference runs in float32 (its default) on the benchmark's device.
    pipe = pipeline("question-answering", model=spec["model"], tokenizer=spec["model"],
                    device=spec.get("device", "cpu"), dtype=torch.float32)
    counter = ForwardCounter(pipe.model)
    load_s = time.perf_counter() - t0
    items = pairs(docs)
    pipe(question=items[0][1], context=items[0][2][:2000], batch_size=spec["batch_size"])  # warm-up
    counter.reset()
    with Timed(spec["threads"]) as timed:
        out = pipe(question=[q for _, q, _ in items], context=[c for _, _, c in items], batch_size=spec["batch_size"])
    if isinstance(out, dict):
        out = [out]
    answers = {k: [o["answer"], int(o["start"]), int(o["end"]), float(o["score"])] for (k, _, _), o in zip(items, out)}
    return {
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "load_s": load_s, **timed.fields(), "items": len(items), "windows": counter.windows,
        "forward_calls": counter.calls, "forward_s": counter.seconds, "padded_tokens": counter.tokens,
        "answers": answers,
    }


def time_engine(engine, model, spec: dict, docs) -> dict:
    """Warm `engine` up on a small item, then time it on every (document, question) pair in
    chunks of spec['chunk'] per run() call; `model` is what its forwards call (timed by hooks)."""
    from docqa.worker.engine import QAItem

    counter = ForwardCounter(model)
    items = pairs(docs)
    engine.run([QAItem(items[0][2][:2000], items[0][1])])  # warm-up
    counter.reset()
    calls0, windows0 = engine.forward_calls, engine.windows_run
    chunk = spec["chunk"]
    results = []
    with Timed(spec["threads"]) as timed:
        for i in range(0, len(items), chunk):
            results += engine.run([QAItem(text, q) for _, q, text in items[i : i + chunk]])
    answers, errors = {}, {}
    for (k, _, _), res in zip(items, results):
        if res.ok and res.answers:
            a = res.answers[0]
            answers[k] = [a.text, a.char_start, a.char_end, a.score]
        else:
            errors[k] = res.error
    return {
        **timed.fields(), "items": len(items),
        "windows": engine.windows_run - windows0, "forward_calls": engine.forward_calls - calls0,
        "forward_s": counter.seconds, "padded_tokens": counter.tokens,
        "answers": answers, "errors": errors,
    }


def run_engine(spec: dict, docs) -> dict:
    """docqa's Engine in process: all items, in chunks of spec['chunk'] per run() call."""
    import torch
    import transformers

    from docqa.worker.engine import Engine

    set_threads(spec["threads"])
    t0 = time.perf_counter()
    engine = Engine(spec["model"], device=spec.get("device", "cpu"), dtype=spec.get("dtype", "float32"),
                    batch_tokens=spec["batch_tokens"], quantize=spec.get("quantize", "none")).warm_up()
    load_s = time.perf_counter() - t0
    return {
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
        "load_s": load_s, **time_engine(engine, engine.model, spec, docs),
    }


def build_windows(tokenizer, docs, max_seq_len: int = 384, doc_stride: int = 128):
    """Every window of the workload as input ids ([CLS] q [SEP] context [SEP]), docqa's way."""
    import numpy as np

    from docqa.core.windows import plan_windows, tokenize_documents

    toks = tokenize_documents(tokenizer, [d.text for d in docs])
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    windows = []
    for d, doc in zip(docs, toks):
        for q in d.questions:
            qi = tokenizer(q, add_special_tokens=False)["input_ids"]
            head = np.asarray([cls, *qi, sep], dtype=np.int64)
            for s, e in plan_windows(len(doc), len(qi), max_seq_len=max_seq_len, doc_stride=doc_stride):
                windows.append(np.concatenate([head, doc.ids[s:e], [sep]]))
    return windows


def padded_batches(windows, batch_tokens: int, pad_id: int):
    """(input_ids, attention_mask) tensors per batch, planned as the engine plans them."""
    import numpy as np
    import torch

    from docqa.worker.batching import plan_batches

    lengths = [len(w) for w in windows]
    batches = []
    for batch in plan_batches(lengths, batch_tokens):
        width = max(lengths[j] for j in batch)
        ids = np.full((len(batch), width), pad_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for r, j in enumerate(batch):
            ids[r, : lengths[j]] = windows[j]
            mask[r, : lengths[j]] = 1
        batches.append({"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)})
    return batches


def load_model(path: str, quantize: str = "none", device: str = "cpu", dtype: str = "float32"):
    import torch
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForQuestionAnswering.from_pretrained(path, dtype=torch.float32).eval()
    if quantize == "int8":
        from docqa.worker.hardware import quantize_int8

        model = quantize_int8(model)
    else:
        model = model.to(device=device, dtype=getattr(torch, dtype))
    return tok, model


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def run_raw(spec: dict, docs) -> dict:
    """model(**batch) over pre-built padded batches of the same windows: the ceiling."""
    import torch

    set_threads(spec["threads"])
    t0 = time.perf_counter()
    device = spec.get("device", "cpu")
    tok, model = load_model(spec["model"], spec.get("quantize", "none"), device, spec.get("dtype", "float32"))
    load_s = time.perf_counter() - t0
    windows = build_windows(tok, docs)
    batches = padded_batches(windows, spec["batch_tokens"], tok.pad_token_id)
    batches = [{k: v.to(device) for k, v in b.items()} for b in batches]  # inputs in place before timing
    with torch.inference_mode():
        model(**{k: v[:2] for k, v in batches[0].items()})  # warm-up
        synchronize(device)
        with Timed(spec["threads"]) as timed:
            for b in batches:
                model(**b)
            synchronize(device)
    real = sum(len(w) for w in windows)
    padded = sum(int(b["input_ids"].numel()) for b in batches)
    return {
        "load_s": load_s, **timed.fields(), "items": sum(len(d.questions) for d in docs),
        "windows": len(windows), "forward_calls": len(batches), "forward_s": timed.wall_s,
        "padded_tokens": padded, "real_tokens": real,
    }


def model_flops(config: dict, lengths) -> float:
    """Multiply-add FLOPs (2 per MAC) of a DistilBERT forward over windows of these lengths,
    unpadded: the projections, the feed-forward layers and the two attention products."""
    d, ffn, layers = config["dim"], config["hidden_dim"], config["n_layers"]
    per_layer = sum(2 * n * (4 * d * d + 2 * d * ffn) + 2 * 2 * n * n * d for n in lengths)
    return float(layers * per_layer + sum(2 * n * d * 2 for n in lengths))  # + the QA head


def run_roofline(spec: dict, docs) -> dict:
    """The workload's FLOPs and this machine's matmul speed on the model's own shapes: the
    hardware ceiling of any implementation of the model at a given precision."""
    import torch
    from transformers import AutoTokenizer

    from docqa.worker.hardware import cpu_has_bf16

    set_threads(spec["threads"])
    config = json.loads((Path(spec["model"]) / "config.json").read_text())
    windows = build_windows(AutoTokenizer.from_pretrained(spec["model"]), docs)
    lengths = [len(w) for w in windows]
    d, ffn = config["dim"], config["hidden_dim"]
    tokens = 8 * 384  # a batch of 8 full windows, as the engine runs them
    shapes = [(tokens, d, d), (tokens, d, ffn), (tokens, ffn, d)]
    dtypes = [torch.float32] + ([torch.bfloat16] if cpu_has_bf16() else [])
    peaks = {}
    with torch.inference_mode():
        for dtype in dtypes:
            best_total = 0.0
            for m, k, n in shapes:
                a, w = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
                a @ w  # warm-up
                best = 0.0
                for _ in range(5):
                    t = time.perf_counter()
                    for _ in range(4):
                        a @ w
                    best = max(best, 4 * 2 * m * k * n / (time.perf_counter() - t))
                best_total = max(best_total, best)
            peaks[str(dtype).removeprefix("torch.")] = best_total / 1e9
    flops = model_flops(config, lengths)
    return {"windows": len(windows), "real_tokens": sum(lengths), "workload_gflop": flops / 1e9,
            "gemm_gflops": peaks, "shapes": shapes,
            "ceiling_windows_per_s": {k: len(windows) / (flops / 1e9 / v) for k, v in peaks.items()}}


def run_sweep(spec: dict, docs) -> dict:
    """Raw forward on the first windows of the workload at several batch budgets (best of rounds)."""
    import torch

    set_threads(spec["threads"])
    tok, model = load_model(spec["model"])
    windows = build_windows(tok, docs)[: spec.get("sweep_windows", 48)]
    best: dict[int, dict] = {}
    with torch.inference_mode():
        model(**padded_batches(windows[:2], 10**9, tok.pad_token_id)[0])  # warm-up
        for _round in range(spec.get("rounds", 1)):
            for budget in spec["sweep_budgets"]:
                batches = padded_batches(windows, budget, tok.pad_token_id)
                with Timed(spec["threads"]) as timed:
                    for b in batches:
                        model(**b)
                row = {"batch_tokens": budget, "windows": len(windows), "forward_calls": len(batches),
                       **timed.fields(), "windows_per_s": len(windows) / timed.wall_s}
                prev = best.get(budget)
                row["rounds_windows_per_s"] = (prev["rounds_windows_per_s"] if prev else []) + [row["windows_per_s"]]
                if prev is None or row["windows_per_s"] > prev["windows_per_s"]:
                    best[budget] = row
                else:
                    prev["rounds_windows_per_s"] = row["rounds_windows_per_s"]
    return {"sweep": [best[b] for b in spec["sweep_budgets"]]}


def run_threads(spec: dict, docs) -> dict:
    """Per-forward time of one fixed batch, n times; waits at a start barrier (file) first."""
    import torch

    set_threads(spec["threads"])
    tok, model = load_model(spec["model"])
    windows = build_windows(tok, docs)[: spec["rows"]]
    batch = padded_batches(windows, 10**9, tok.pad_token_id)[0]
    times = []
    with torch.inference_mode():
        model(**batch)
        ready, go = Path(spec["barrier"] + f".ready{spec['index']}"), Path(spec["barrier"] + ".go")
        ready.touch()
        deadline = time.time() + 600
        while not go.exists() and time.time() < deadline:
            time.sleep(0.01)
        with Timed(spec["threads"]) as timed:
            for _ in range(spec["repeats"]):
                t0 = time.perf_counter()
                model(**batch)
                times.append(time.perf_counter() - t0)
    return {"threads": spec["threads"], "rows": int(batch["input_ids"].shape[0]),
            "width": int(batch["input_ids"].shape[1]), "forward_s": times,
            "median_forward_s": statistics.median(times), **timed.fields(),
            "windows": int(batch["input_ids"].shape[0]) * spec["repeats"]}


def run_overhead(spec: dict, docs) -> dict:
    """The engine with a model that costs nothing: its CPU side alone (tokenize, windows,
    batches, span decoding, merging), in windows/s. On a GPU this is the ceiling."""
    from types import SimpleNamespace

    import torch
    from transformers import AutoConfig

    from docqa.core.tokenizer import load_tokenizer
    from docqa.worker.engine import Engine, QAItem

    set_threads(spec["threads"])
    config = AutoConfig.from_pretrained(spec["model"])

    class Instant(torch.nn.Module):
        """Logits of the right shape, peaky like the benchmark model's, at no cost."""

        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.gen = torch.Generator().manual_seed(0)

        def forward(self, input_ids, attention_mask, **_ignored):
            shape = tuple(input_ids.shape)
            return SimpleNamespace(start_logits=4 * torch.randn(shape, generator=self.gen),
                                   end_logits=4 * torch.randn(shape, generator=self.gen))

    engine = Engine(spec["model"], device="cpu", dtype="float32", batch_tokens=spec["batch_tokens"])
    # internals: no real model loaded
    engine._qat = load_tokenizer(spec["model"])
    engine._tokenizer = engine._qat.hf
    engine._device, engine._dtype, engine._model = "cpu", torch.float32, Instant()
    items = pairs(docs)
    qa = [QAItem(text, q) for _, q, text in items]
    engine.run(qa[:2])  # warm-up
    best = None
    for _ in range(3):
        w0 = engine.windows_run
        with Timed(spec["threads"]) as timed:
            for i in range(0, len(qa), spec["chunk"]):
                engine.run(qa[i : i + spec["chunk"]])
        row = {**timed.fields(), "windows": engine.windows_run - w0, "items": len(items)}
        if best is None or row["wall_s"] < best["wall_s"]:
            best = row
    best["windows_per_s"] = best["windows"] / best["wall_s"]
    return best


# -- an alternative backend: ONNX Runtime (needs onnxruntime + onnx: see docs/BENCHMARKS.md) --------
def onnx_paths(spec: dict) -> tuple[Path, Path]:
    """Where the exported float32 model and its int8 (dynamic quantization) copy live."""
    model = Path(spec["model"])
    folder = model.parent / "onnx" / model.name
    return folder / "model.onnx", folder / "model.int8.onnx"


def run_ort_export(spec: dict, _docs) -> dict:
    """Export the model to ONNX (float32) and quantize a copy to int8 (once; cached)."""
    import warnings

    import torch

    fp32, int8 = onnx_paths(spec)
    stamp = Path(spec["model"]) / "model.safetensors"
    fresh = int8.exists() and int8.stat().st_mtime > stamp.stat().st_mtime
    t0 = time.perf_counter()
    if not fresh:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        fp32.parent.mkdir(parents=True, exist_ok=True)
        _tok, model = load_model(spec["model"])

        class Logits(torch.nn.Module):
            def __init__(self, m):
                super().__init__()
                self.m = m

            def forward(self, input_ids, attention_mask):
                out = self.m(input_ids=input_ids, attention_mask=attention_mask)
                return out.start_logits, out.end_logits

        ids = torch.ones(2, 384, dtype=torch.long)
        axes = {0: "batch", 1: "sequence"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter (dynamo=False) needs no onnxscript; still in torch 2.13.
            torch.onnx.export(Logits(model), (ids, torch.ones_like(ids)), str(fp32),
                              input_names=["input_ids", "attention_mask"],
                              output_names=["start_logits", "end_logits"],
                              dynamic_axes={"input_ids": axes, "attention_mask": axes, "start_logits": axes,
                                            "end_logits": axes},
                              opset_version=17, dynamo=False)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return {"exported": not fresh, "seconds": time.perf_counter() - t0, "fp32": str(fp32), "int8": str(int8)}


def ort_module(path: Path, threads: int, config=None):
    """A torch Module that runs an ONNX QA model in ONNX Runtime and returns torch logits.

    `config` (the model's transformers config) is exposed as `.config`, as on the real model.
    """
    from types import SimpleNamespace

    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    class OrtQA(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = config

        def forward(self, input_ids, attention_mask, **_ignored):
            start, end = session.run(None, {"input_ids": input_ids.numpy(), "attention_mask": attention_mask.numpy()})
            return SimpleNamespace(start_logits=torch.from_numpy(start), end_logits=torch.from_numpy(end))

    return OrtQA()


def run_ort(spec: dict, docs) -> dict:
    """docqa's Engine with its model swapped for an ONNX Runtime session (prototype backend)."""
    import onnxruntime
    import torch
    from transformers import AutoConfig

    from docqa.core.tokenizer import load_tokenizer
    from docqa.worker.engine import Engine

    set_threads(spec["threads"])
    fp32, int8 = onnx_paths(spec)
    t0 = time.perf_counter()
    engine = Engine(spec["model"], device="cpu", dtype="float32", batch_tokens=spec["batch_tokens"])
    # Engine internals, set by hand so the torch model is never loaded (peak RSS is ORT's).
    engine._qat = load_tokenizer(spec["model"])
    engine._tokenizer = engine._qat.hf
    engine._device, engine._dtype = "cpu", torch.float32
    engine._model = ort_module(int8 if spec.get("quantize") == "int8" else fp32, spec["threads"],
                               AutoConfig.from_pretrained(spec["model"]))
    load_s = time.perf_counter() - t0
    return {
        "versions": {"onnxruntime": onnxruntime.__version__, "torch": torch.__version__},
        "load_s": load_s, **time_engine(engine, engine._model, spec, docs),
    }


# Configurations that go through docqa's services: each names its function in services.py,
# which is imported only when one of them runs (those functions need docqa, psycopg and
# redis: the project venv).
SERVICE_CONFIGS = ("e2e", "rerun", "producer")

CONFIGS = {
    "pipeline": run_pipeline,
    "engine": run_engine,
    "raw": run_raw,
    "roofline": run_roofline,
    "sweep": run_sweep,
    "threads": run_threads,
    "overhead": run_overhead,
    "ort-export": run_ort_export,
    "ort": run_ort,
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", choices=sorted(CONFIGS) + sorted(SERVICE_CONFIGS))
    ap.add_argument("--spec", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    spec = json.loads(args.spec.read_text())
    docs = load_workload(spec)
    if args.config in SERVICE_CONFIGS:
        import services

        result = getattr(services, args.config)(spec, docs)
    else:
        result = CONFIGS[args.config](spec, docs)
    result["peak_rss_mib"] = peak_rss_mib()
    result["pid"] = os.getpid()
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
