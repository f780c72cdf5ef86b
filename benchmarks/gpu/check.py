"""docqa on one NVIDIA GPU, in one table (and the same check on a CPU, as a dry run).

    benchmarks/gpu/check.sh                      # a GPU machine: under 8 minutes
    benchmarks/gpu/check.sh --device cpu         # a CPU: the dry run, a few minutes
    python benchmarks/gpu/check.py --help

Rows of the table, by part:

  1  golden answers: tests/golden/golden.json (transformers 5.2.0's answers, 156 cases)
     with its tiny model tests/fixtures/tiny-distilbert-qa. float32 on the exact span path
     must be identical (compared as tests/worker/test_golden.py does); the device span path
     (the GPU default) must give the same positive answers; bfloat16 and float16 report
     the share of cases whose answers are unchanged.
  2  the engine (worker.engine.Engine.run) in bfloat16 at batch_tokens 8192 ... 262144:
     windows/s on a full-size DistilBERT QA (distilbert-base-cased's shapes: 6 layers,
     dim 768, FFN 3072; random weights, built here offline by
     benchmarks/build_full_model.make_model) with the tests' real WordPiece tokenizer,
     over generated English prose (long documents, 2 questions each).
  3  the raw forward at the same budgets: model(**batch) over pre-built padded batches of
     the same windows, already on the device. The ceiling.
  4  the share of the GPU's bf16 peak: the workload's FLOPs (unpadded windows) / time /
     peak. The peak comes from a table of known GPUs (--peak-tflops overrides); on a CPU
     it is a matmul measured here on the model's shapes.
  5  time per window on the host (tokenizing, windows, batches, span decoding: the run's
     wall time minus its forwards) vs on the device (the engine's on_forward hook: the
     forward and the copy of its results, by CUDA events on a GPU), with and without
     documents tokenized beforehand (what producers that chunk at submit give a worker).
     The engine overlaps one batch's host work with the next batch's forward, so in its
     rows "host" is the host time not hidden behind the device; the "overlap off" row
     runs one batch at a time, gives the whole host time, and says how much faster the
     overlap runs.
  6  end to end: `docqa run` (embedded, SQLite) on a few long documents x 2 questions, in
     a fresh process: imports, model loading and the store included.
  +  at one budget: pad buckets off/on, torch.compile (default and reduce-overhead) with
     buckets: windows/s and answers against the eager run. Compiling runs in a child
     process with a deadline, so a slow compiler cannot overrun the check.

Needs torch, transformers and tokenizers; parts 1-5 also need pydantic (the engine's
answer types). Part 6 needs docqa's dependencies (pyproject.toml). Nothing is
downloaded: what is missing is named, with the commands that bring its wheels to a
machine without internet. docqa need not be installed: it is imported from this
checkout. No Redis, PostgreSQL or network is used.

The table goes to stdout and to OUT/check.md and OUT/check.json (--out, default
bench-out/gpu), with the `docqa run` log in OUT/e2e/.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import random
import re
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path
from typing import ClassVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BENCH = REPO / "benchmarks"
FIXTURES = REPO / "tests" / "fixtures"
TINY = FIXTURES / "tiny-distilbert-qa"
GOLDEN = REPO / "tests" / "golden" / "golden.json"
DEFAULT_OUT = REPO / "bench-out" / "gpu"
DEFAULT_MODEL_DIR = REPO / "bench-out" / "gpu-model"

for _key, _value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_HUB_DISABLE_PROGRESS_BARS", "1"),
                     ("TRANSFORMERS_VERBOSITY", "error"), ("TOKENIZERS_PARALLELISM", "true"),
                     ("OMP_WAIT_POLICY", "PASSIVE")):
    os.environ.setdefault(_key, _value)

# Dense bf16 tensor-core peaks (TFLOPS, no sparsity) by device name, first match wins.
GPU_BF16_PEAKS = [
    (r"H100.*PCIe", 756.0, "H100 PCIe"),
    (r"H100.*NVL", 835.0, "H100 NVL"),
    (r"H200.*NVL", 835.0, "H200 NVL"),
    (r"H200", 989.0, "H200"),
    (r"H100|H800", 989.0, "H100 SXM"),
    (r"A100|A800", 312.0, "A100"),
    (r"L40S", 362.0, "L40S"),
    (r"\bL4\b", 121.0, "L4"),
    (r"\bA10\b", 125.0, "A10"),
    (r"RTX 4090", 165.0, "RTX 4090"),
]

# Workload and budgets: GPU (default), GPU --quick, CPU (always the quick dry run).
PLANS = {
    "gpu": {"docs": 8, "chars": 275_000, "questions": 2, "budgets": [8192, 32768, 65536, 131072, 262144],
            "compare_budget": 131072, "rounds": 2, "e2e_docs": 4, "time_limit": 450, "warm": "full"},
    "gpu-quick": {"docs": 4, "chars": 100_000, "questions": 2, "budgets": [8192, 32768, 131072, 262144],
                  "compare_budget": 131072, "rounds": 1, "e2e_docs": 2, "time_limit": 240, "warm": "full"},
    # The CPU dry run: ~20 windows, so 8192 tokens already hold them all in one forward.
    "cpu": {"docs": 2, "chars": 5_000, "questions": 2, "budgets": [1536, 8192], "compare_budget": 1536,
            "rounds": 1, "e2e_docs": 2, "time_limit": 280, "warm": "small"},
}
SEED = 20_251_130
ENGINE_IMPORTS = ("torch", "transformers", "tokenizers", "numpy", "pydantic")
# What `docqa run` (embedded, SQLite) needs beyond the engine; the rest of docqa's
# dependencies serve the distributed mode, the HTTP API and metrics.
E2E_REQUIREMENTS = ("pydantic-settings", "sqlalchemy", "alembic", "tqdm")


def say(msg: str = "") -> None:
    print(msg, flush=True)


# -- docqa from this checkout, installed or not ---------------------------------------------
def bootstrap_docqa() -> None:
    """Make `docqa` importable from this checkout: pyproject maps docqa.worker to worker/,
    docqa.producer to producer/ and docqa.storage to storage/, which an install does and a
    bare checkout does not."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    for sub in ("worker", "producer", "storage"):
        name = f"docqa.{sub}"
        if name in sys.modules:
            continue
        try:
            if importlib.util.find_spec(name) is not None:
                continue
        except (ImportError, ValueError):
            pass
        spec = importlib.util.spec_from_file_location(name, REPO / sub / "__init__.py",
                                                      submodule_search_locations=[str(REPO / sub)])
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        setattr(importlib.import_module("docqa"), sub, module)
    for path in (BENCH, FIXTURES):
        if str(path) not in sys.path:
            sys.path.append(str(path))


# -- dependencies ---------------------------------------------------------------------------
def project_requirements() -> list[str]:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    try:
        import tomllib

        return list(tomllib.loads(text)["project"]["dependencies"])
    except ImportError:  # Python < 3.11: the list by hand
        block = re.search(r"^dependencies\s*=\s*\[(.*?)^\]", text, re.DOTALL | re.MULTILINE).group(1)
        return re.findall(r'^\s*"([^"]+)"', block, re.MULTILINE)


def dependency_status() -> list[dict]:
    """Each of docqa's requirements: installed version and whether it satisfies the spec."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        from packaging.requirements import Requirement
    except ImportError:
        Requirement = None
    out = []
    for text in project_requirements():
        name = re.split(r"[\[<>=!~ ;]", text, maxsplit=1)[0]
        try:
            installed = version(name)
        except PackageNotFoundError:
            installed = None
        ok = installed is not None
        if ok and Requirement is not None:
            ok = Requirement(text).specifier.contains(installed, prereleases=True)
        out.append({"requirement": text, "name": name, "installed": installed, "ok": ok})
    return out


def wheel_commands(requirements: list[str]) -> str:
    """How to bring `requirements` to this machine without internet: wheels downloaded
    elsewhere for this machine's Python and platform, installed from a folder."""
    major, minor = sys.version_info[:2]
    libc, libc_version = platform.libc_ver()
    machine = platform.machine() or "x86_64"
    if libc == "glibc" and libc_version:
        plat = f"manylinux_{libc_version.replace('.', '_')}_{machine}"
    else:
        plat = f"manylinux2014_{machine}"
    wanted = [*requirements, "setuptools>=68", "wheel"]
    quoted = " ".join(shlex.quote(r) for r in wanted)
    py = shlex.quote(sys.executable)
    return "\n".join([
        (f"# 1. On a machine with internet (any OS, pip >= 21), wheels for this machine (CPython {major}.{minor}, "
         f"{plat}):"),
        (f"python3 -m pip download --dest docqa-wheels --only-binary=:all: --python-version {major}.{minor} "
         f"--implementation cp --abi cp{major}{minor} --platform {plat} {quoted}"),
        "# 2. Copy the folder docqa-wheels/ to this machine, then:",
        f"{py} -m pip install --no-index --find-links docqa-wheels {quoted}",
        "# 3. Optional (the check imports docqa from this checkout; this makes `docqa` a command):",
        f"{py} -m pip install --no-index --find-links docqa-wheels --no-deps -e {shlex.quote(str(REPO))}",
    ])


# -- the workload -----------------------------------------------------------------------------
def make_documents(n_docs: int, chars: int, n_questions: int, seed: int = SEED):
    """Long English documents (the tiny model's prose generator: tests/fixtures), each with
    its questions; the same on every machine."""
    import build_tiny_model as prose
    import corpus

    docs = []
    for i in range(n_docs):
        rng = random.Random(seed + i)
        paragraphs, total = [], 0
        while total < chars:
            if rng.random() < 0.15:
                para = " ".join(rng.choice(prose.PROSE).split())
            else:
                para = " ".join(prose.generated_sentences(rng, rng.randrange(4, 10)))
            paragraphs.append(para)
            total += len(para) + 2
        questions = []
        for k in range(n_questions):
            noun, place, verb = rng.choice(prose.NOUNS), rng.choice(prose.PLACES), rng.choice(prose.VERBS)
            name = f"{rng.choice(prose.GIVEN_NAMES)} {rng.choice(prose.FAMILY_NAMES)}"
            templates = [f"Who {verb} the {rng.choice(prose.ADJECTIVES)} {noun} near {place}?",
                         f"When was the {noun} of {place} {verb}?",
                         f"How many people visited the {noun} every year?",
                         f"Why did {name} leave {place}?"]
            questions.append(templates[(i + k) % len(templates)])
        name = f"generated-{i:02d}"
        docs.append(corpus.BenchDocument(name, name, "\n\n".join(paragraphs)[:chars], tuple(questions)))
    return docs


def full_model(model_dir: Path, log=say) -> Path:
    """A full-size DistilBERT QA folder (distilbert-base-cased's configuration, random
    weights with the benchmarks' seed and QA-head scaling) with the tests' WordPiece
    tokenizer; built once, offline, then reused."""
    import build_full_model as bfm

    stamp = model_dir / "docqa-gpu-check.json"
    recipe = {"recipe": bfm.recipe(), "tokenizer": "tests/fixtures/tiny-distilbert-qa", "version": 1}
    if stamp.exists():
        try:
            if json.loads(stamp.read_text())["recipe"] == json.loads(json.dumps(recipe)):
                return model_dir
        except (ValueError, KeyError):
            pass
    from transformers import AutoTokenizer

    t0 = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(str(TINY))
    probes = [d.text[k : k + 1500] for d in make_documents(4, 20_000, 1, seed=SEED + 1000) for k in (0, 9000)]
    model = bfm.make_model(tok, probes)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    tok.save_pretrained(str(model_dir))
    model.save_pretrained(str(model_dir), safe_serialization=True)
    stamp.write_text(json.dumps({"recipe": recipe, "note": "random weights, distilbert-base-cased's shapes; "
                                 "built by benchmarks/gpu/check.py"}, indent=1))
    log(f"  built {model_dir} ({sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters) in "
        f"{time.perf_counter() - t0:.1f} s")
    return model_dir


def model_flops(config: dict, lengths) -> float:
    """FLOPs (2 per multiply-add) of an encoder forward over windows of these lengths,
    unpadded: projections, feed-forward, both attention products, the QA head
    (benchmarks/measure.py's formula, for DistilBERT and BERT-style configs)."""
    d = config.get("dim") or config["hidden_size"]
    ffn = config.get("hidden_dim") or config["intermediate_size"]
    layers = config.get("n_layers") or config["num_hidden_layers"]
    per_layer = sum(2 * n * (4 * d * d + 2 * d * ffn) + 2 * 2 * n * n * d for n in lengths)
    return float(layers * per_layer + sum(2 * n * d * 2 for n in lengths))


# -- measuring --------------------------------------------------------------------------------
def sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def top1(results) -> list:
    return [(r.answers[0].text, r.answers[0].char_start, r.answers[0].char_end) if r.ok and r.answers else None
            for r in results]


def time_engine(engine, items, *, rounds: int, warm_items) -> dict:
    """Best of `rounds` runs of engine.run(items) after a warm-up run of `warm_items`:
    wall time, windows, and the forwards' share (the on_forward hook)."""
    acc = {"device_s": 0.0, "forwards": 0, "real_tokens": 0, "padded_tokens": 0}

    def hook(windows, real, padded, seconds):
        acc["device_s"] += seconds
        acc["forwards"] += 1
        acc["real_tokens"] += real
        acc["padded_tokens"] += padded

    engine.on_forward = hook
    try:
        t0 = time.perf_counter()
        engine.run(warm_items)
        warm_s = time.perf_counter() - t0
        best = None
        for _ in range(rounds):
            for k in acc:
                acc[k] = 0 if k != "device_s" else 0.0
            w0 = engine.windows_run
            t0 = time.perf_counter()
            results = engine.run(items)
            wall = time.perf_counter() - t0
            row = {"wall_s": wall, "windows": engine.windows_run - w0, **acc, "results": results}
            if best is None or wall < best["wall_s"]:
                best = row
    finally:
        engine.on_forward = None
    best["warm_s"] = warm_s
    best["errors"] = sorted({r.error for r in best["results"] if not r.ok})
    return best


def time_raw(model, windows, budget: int, pad_id: int, device: str, rounds: int, warm_full: bool) -> dict:
    """model(**batch) over padded batches (the engine's plan, no buckets) already on the device."""
    import torch
    from measure import padded_batches

    batches = [{k: v.to(device) for k, v in b.items()} for b in padded_batches(windows, budget, pad_id)]
    with torch.inference_mode():
        for b in batches if warm_full else batches[:1]:
            model(**(b if warm_full else {k: v[:1] for k, v in b.items()}))
        sync(device)
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            for b in batches:
                model(**b)
            sync(device)
            best = min(best, time.perf_counter() - t0)
    return {"wall_s": best, "forwards": len(batches), "padded_tokens": sum(int(b["input_ids"].numel()) for b in batches)}


def cpu_matmul_peak(dtype_name: str, config: dict) -> float:
    """Best matmul TFLOPS of this CPU on the model's shapes (a batch of 8 windows)."""
    import torch

    dtype = getattr(torch, dtype_name)
    d = config.get("dim") or config["hidden_size"]
    ffn = config.get("hidden_dim") or config["intermediate_size"]
    tokens = 8 * 384
    best = 0.0
    with torch.inference_mode():
        for m, k, n in ((tokens, d, d), (tokens, d, ffn), (tokens, ffn, d)):
            a, w = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
            a @ w
            for _ in range(6):
                t0 = time.perf_counter()
                for _ in range(3):
                    a @ w
                best = max(best, 3 * 2 * m * k * n / (time.perf_counter() - t0))
    return best / 1e12


def load_average() -> str | None:
    return " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else None


def gpu_peak(name: str) -> tuple[float | None, str]:
    for pattern, peak, label in GPU_BF16_PEAKS:
        if re.search(pattern, name):
            return peak, label
    return None, ""


# -- golden (part 1) --------------------------------------------------------------------------
def golden_identical(case: dict, res) -> bool:
    """tests/worker/test_golden.py's comparison, as a yes/no."""
    if not res.ok or res.n_windows != case["n_windows"]:
        return False
    got = [(a.text, a.char_start, a.char_end, a.score) for a in res.answers]
    want = [(a["answer"], a["start"], a["end"], a["score"]) for a in case["answers"]]
    got_pos, want_pos = [g for g in got if g[3] > 0], [w for w in want if w[3] > 0]
    if [g[:3] for g in got_pos] != [w[:3] for w in want_pos] or got[: len(got_pos)] != got_pos:
        return False
    for g, w in zip(got_pos, want_pos):
        if abs(g[3] - w[3]) > max(1e-4 * abs(w[3]), 1e-12):
            return False
    fillers = got[len(got_pos):]
    if len(got) > case["params"]["top_k"] or any(f[3] != 0.0 for f in fillers):
        return False
    if len(fillers) == len(want) - len(want_pos) and [g[:3] for g in fillers] != [w[:3] for w in want[len(want_pos):]]:
        return False
    return all(case["context"][a.char_start : a.char_end] == a.text for a in res.answers)


def golden_unchanged(case: dict, res) -> tuple[bool, bool]:
    """(every positive answer unchanged in text and offsets, the best one unchanged)."""
    if not res.ok:
        return False, False
    got = [(a.text, a.char_start, a.char_end) for a in res.answers if a.score > 0]
    want = [(a["answer"], a["start"], a["end"]) for a in case["answers"] if a["score"] > 0]
    return got == want, got[:1] == want[:1]


def golden_rows(table, device: str) -> None:
    import torch
    from docqa.worker.engine import Engine, QAItem
    from docqa.worker.loading import ModelLoadError
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer

    from docqa.core.params import AnswerParams

    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    cases = golden["cases"]
    items = [QAItem(c["context"], c["question"], AnswerParams(**c["params"])) for c in cases]
    n = len(cases)
    default_buckets = Engine(str(TINY), device=device).pad_buckets
    for span_path, buckets in (("numpy", "auto"), ("device", "auto"), ("numpy", not default_buckets)):
        engine = Engine(str(TINY), device=device, dtype="float32", span_path=span_path, pad_buckets=buckets)
        t0 = time.perf_counter()
        results = engine.run(items)
        wall = time.perf_counter() - t0
        label = f"golden float32, {span_path} span path, pad buckets {'on' if engine.pad_buckets else 'off'}"
        if span_path == "numpy":
            same = sum(golden_identical(c, r) for c, r in zip(cases, results))
            table.add("1", label, f"{same}/{n} identical", notes=f"{wall:.1f} s; as tests/worker/test_golden.py "
                      "compares (texts, offsets, order; scores within 1e-4)", ok=same == n)
        else:
            same = sum(golden_unchanged(c, r)[0] for c, r in zip(cases, results))
            table.add("1", label, f"{same}/{n} identical", notes=f"{wall:.1f} s; positive-score answers (the "
                      "device path returns no zero-score fillers)", ok=same == n)
    for dtype in ("bfloat16", "float16"):
        label = f"golden {dtype}"
        note = ""
        try:
            engine = Engine(str(TINY), device=device, dtype=dtype).warm_up()
        except ModelLoadError as exc:
            if not device.startswith("cpu"):
                table.add("1", label, "n/a", notes=str(exc))
                continue
            # The engine refuses half precision on this CPU (slow there); the numerics are still
            # worth seeing, so the model is cast by hand and handed over as it is.
            note = f"the engine refuses {dtype} on this CPU ({exc}); cast by hand (Engine.from_loaded) to see its answers"
            tok = AutoTokenizer.from_pretrained(str(TINY))
            model = AutoModelForQuestionAnswering.from_pretrained(str(TINY), dtype=torch.float32).eval()
            engine = Engine.from_loaded(model.to(getattr(torch, dtype)), tok, model_id=str(TINY))
        try:
            t0 = time.perf_counter()
            results = engine.run(items)
            wall = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 (e.g. an op with no half-precision kernel on this device)
            table.add("1", label, "n/a", notes=f"{type(exc).__name__}: {exc}"[:300] + (f"; {note}" if note else ""))
            continue
        pairs = [golden_unchanged(c, r) for c, r in zip(cases, results)]
        same, best = sum(p[0] for p in pairs), sum(p[1] for p in pairs)
        table.add("1", label, f"{same}/{n} unchanged ({100 * same / n:.0f}%)",
                  notes=f"best answer unchanged {best}/{n}; span path {engine.span_path}; {wall:.1f} s"
                  + (f"; {note}" if note else ""))


# -- the table --------------------------------------------------------------------------------
class Table:
    COLUMNS: ClassVar[list[str]] = ["part", "check", "result", "windows/s", "% of peak", "host ms/window", "device ms/window", "notes"]

    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.peak_tflops: float | None = None  # shares are taken of this when the table is shown

    def add(self, part: str, check: str, result: str = "", *, wps=None, tflops=None, host=None, device=None,
            notes: str = "", ok: bool | None = None) -> dict:
        row = {"part": part, "check": check, "result": result, "windows_per_s": wps, "achieved_tflops": tflops,
               "host_ms_per_window": host, "device_ms_per_window": device, "notes": notes, "ok": ok}
        self.rows.append(row)
        cells = self.cells(row)
        say(f"  [{part}] {check}: {cells[2]}" + "".join(f"; {h} {c}" for h, c in zip(self.COLUMNS[3:7], cells[3:7])
                                                      if c != "") + (f"  ({notes})" if notes else ""))
        return row

    def share(self, row: dict) -> float | None:
        tflops = row["achieved_tflops"]
        return tflops / self.peak_tflops if tflops is not None and self.peak_tflops else None

    def cells(self, row: dict) -> list[str]:
        def num(x, fmt):
            return "" if x is None else format(x, fmt)

        peak = self.share(row)
        return [row["part"], row["check"], row["result"], num(row["windows_per_s"], ",.1f"),
                "" if peak is None else f"{100 * peak:.1f}%", num(row["host_ms_per_window"], ".3f"),
                num(row["device_ms_per_window"], ".3f"), row["notes"]]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.COLUMNS) + " |", "|---|---|---|---:|---:|---:|---:|---|"]
        order = "123456+"
        for row in sorted(self.rows, key=lambda r: order.index(r["part"]) if r["part"] in order else len(order)):
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in self.cells(row)) + " |")
        return "\n".join(lines)


# -- the check --------------------------------------------------------------------------------
class Check:
    def __init__(self, args) -> None:
        self.args = args
        self.started = time.perf_counter()
        self.table = Table()
        self.info: dict = {}
        self.device = args.device
        self.gpu = self.device.startswith("cuda")
        key = "cpu" if not self.gpu else ("gpu-quick" if args.quick else "gpu")
        self.plan = dict(PLANS[key])
        for name in ("docs", "chars", "rounds", "time_limit"):
            if getattr(args, name) is not None:
                self.plan[name] = getattr(args, name)
        if args.budgets:
            self.plan["budgets"] = args.budgets
        if args.compare_budget:
            self.plan["compare_budget"] = args.compare_budget
        self.deadline = self.started + self.plan["time_limit"]
        self.out = args.out
        self.out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def left(self) -> float:
        return self.deadline - time.perf_counter()

    def part(self, name: str, fn, *fn_args) -> None:
        say(f"[{self.elapsed():5.0f} s] {name}")
        try:
            fn(*fn_args)
        except Exception as exc:  # noqa: BLE001 (a failed part is a row saying why; the others still run)
            traceback.print_exc()
            self.table.add(name.split()[0].strip(":"), f"{name}: failed", "error",
                           notes=f"{type(exc).__name__}: {exc}"[:400], ok=False)

    # environment ----------------------------------------------------------------------------
    def environment(self) -> bool:
        """Versions, the device, docqa's dependencies. False when the engine cannot run."""
        info = self.info
        info["python"] = f"{platform.python_version()} ({sys.executable})"
        info["platform"] = platform.platform()
        deps = dependency_status()
        info["dependencies"] = deps
        missing_engine = self.missing_engine = [m for m in ENGINE_IMPORTS if importlib.util.find_spec(m) is None]
        info["versions"] = {d["name"]: d["installed"] for d in deps if d["name"] in ENGINE_IMPORTS}
        self.missing_all = [d["requirement"] for d in deps if not d["ok"]]
        for d in deps:
            if not d["ok"]:
                state = "missing" if d["installed"] is None else f"{d['installed']} does not satisfy the requirement"
                say(f"  docqa dependency {d['requirement']}: {state}")
        if missing_engine:
            say(f"\nThe engine (parts 1-5) needs {', '.join(ENGINE_IMPORTS)}; missing here: "
                f"{', '.join(missing_engine)}. To bring docqa's missing packages without internet:\n")
            say(wheel_commands(self.missing_all or list(missing_engine)))
            return False
        import numpy
        import tokenizers
        import torch
        import transformers

        info["versions"] = {"torch": torch.__version__, "cuda": torch.version.cuda, "transformers": transformers.__version__,
                            "tokenizers": tokenizers.__version__, "numpy": numpy.__version__}
        if self.gpu:
            if not torch.cuda.is_available():
                raise SystemExit(f"--device {self.device}: torch {torch.__version__} sees no CUDA GPU "
                                 f"(CUDA build: {torch.version.cuda}); use --device cpu for the dry run")
            index = torch.device(self.device).index or 0
            props = torch.cuda.get_device_properties(index)
            info["gpu"] = {"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1),
                           "capability": f"{props.major}.{props.minor}", "count": torch.cuda.device_count()}
            info["bf16"] = torch.cuda.is_bf16_supported()
        else:
            try:
                out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True, timeout=10).stdout
                info["cpu"] = next((ln.split(":", 1)[1].strip() for ln in out.splitlines()
                                    if ln.startswith("Model name")), platform.processor())
            except (OSError, subprocess.TimeoutExpired):
                info["cpu"] = platform.processor()
            info["cores"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            info["load_average"] = load_average()
            bootstrap_docqa()
            from docqa.worker.hardware import cpu_has_bf16

            info["bf16"] = cpu_has_bf16()
        say(f"  python {info['python']}; torch {torch.__version__} (CUDA {torch.version.cuda}), transformers "
            f"{transformers.__version__}, tokenizers {tokenizers.__version__}, numpy {numpy.__version__}")
        say(f"  device {self.device}: " + (f"{info['gpu']['name']}, {info['gpu']['memory_gib']} GiB" if self.gpu
                                           else f"{info['cpu']}, {info['cores']} cores") + f"; bf16 {info['bf16']}")
        return True

    # parts ---------------------------------------------------------------------------------
    def setup_workload(self) -> None:
        import torch
        from docqa.worker.engine import Engine, QAItem
        from transformers import AutoTokenizer

        self.model_dir = self.args.model or full_model(self.args.model_dir)
        self.config = json.loads((Path(self.model_dir) / "config.json").read_text())
        self.docs = make_documents(self.plan["docs"], self.plan["chars"], self.plan["questions"])
        self.items = [QAItem(d.text, q) for d in self.docs for q in d.questions]
        self.tok = AutoTokenizer.from_pretrained(str(self.model_dir))
        from measure import build_windows

        self.windows = build_windows(self.tok, self.docs)
        self.lengths = [len(w) for w in self.windows]
        self.flops = model_flops(self.config, self.lengths)
        # bf16 where the device has it; else float16 on a GPU (as the engine's "auto" picks) and
        # float32 on a CPU (the engine refuses emulated bf16 there: slower than float32).
        self.dtype = "bfloat16" if self.info.get("bf16") else "float16" if self.gpu else "float32"
        # span_path "device" is the GPU's default; the CPU dry run takes it too, to run the GPU's code.
        self.engine = Engine(str(self.model_dir), device=self.device, dtype=self.dtype, span_path="device").warm_up()
        self.warm_items = self.items if self.plan["warm"] == "full" else [QAItem(self.docs[0].text[:2000], "Who?")]
        if self.args.peak_tflops:
            self.peak, self.peak_label = self.args.peak_tflops, f"{self.args.peak_tflops:g} TFLOPS (--peak-tflops)"
        elif self.gpu:
            peak, label = gpu_peak(self.info["gpu"]["name"])
            self.peak = peak
            self.peak_label = (f"{peak:g} TFLOPS dense bf16 ({label}, from the table in check.py)" if peak
                               else "unknown GPU: give --peak-tflops")
        else:
            self.peak = cpu_matmul_peak(self.dtype, self.config)
            self.peak_label = f"{self.peak:.2f} TFLOPS {self.dtype} (best matmul measured here on the model's shapes)"
        n_tok = sum(self.lengths)
        self.table.add("2", "workload", f"{len(self.windows):,} windows",
                       notes=f"{len(self.docs)} documents x {self.plan['questions']} questions, "
                       f"{sum(len(d.text) for d in self.docs):,} chars, {n_tok:,} tokens in windows, "
                       f"{self.flops / 1e12:.2f} TFLOP; span path device; model {self.model_dir} "
                       f"({sum(p.numel() for p in self.engine.model.parameters()) / 1e6:.1f} M parameters), {self.dtype}; "
                       f"torch threads {torch.get_num_threads()}")
        self.table.peak_tflops = self.peak

    def tflops(self, seconds: float) -> float | None:
        """What the workload's FLOPs in `seconds` achieve (its share of the peak is taken at the end)."""
        return self.flops / seconds / 1e12 if seconds > 0 else None

    def engine_row(self, part: str, label: str, got: dict, extra: str = "") -> dict:
        w = got["windows"]
        host = (got["wall_s"] - got["device_s"]) / w * 1e3 if w else None
        device = got["device_s"] / w * 1e3 if w else None
        notes = (f"{got['forwards']} forwards, padding {got['padded_tokens'] / max(got['real_tokens'], 1) - 1:.1%}, "
                 f"{got['wall_s']:.2f} s (warm-up {got['warm_s']:.1f} s)")
        if w != len(self.windows):
            notes += f"; {w} windows run, {len(self.windows)} planned"
        if got["errors"]:
            notes += f"; errors: {'; '.join(got['errors'])[:200]}"
        if self.gpu:
            import torch

            notes += f"; peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
            torch.cuda.reset_peak_memory_stats()
        return self.table.add(part, label, wps=w / got["wall_s"], tflops=self.tflops(got["wall_s"]), host=host,
                              device=device, notes=notes + extra)

    def sweep(self) -> None:
        self.sweep_results = {}
        for budget in self.plan["budgets"]:
            self.engine.batch_tokens_request = budget
            got = time_engine(self.engine, self.items, rounds=self.plan["rounds"], warm_items=self.warm_items)
            self.sweep_results[budget] = got
            self.engine_row("2", f"engine {self.dtype}, batch_tokens {budget:,}", got,
                            f"; pad buckets {'on' if self.engine.pad_buckets else 'off'}")
            if self.left() < 60:
                self.table.add("2", "engine: larger budgets", "skipped", notes="the check's time limit")
                break

    def precision(self) -> None:
        """The full model's answers on the workload in the sweep's dtype against float32."""
        from docqa.worker.engine import Engine

        label = f"full model {'float16' if self.dtype == 'float16' else 'bfloat16'} vs float32: best answers unchanged (workload)"
        budget = self.plan["compare_budget"]
        if self.dtype == "float32" or budget not in self.sweep_results:
            self.table.add("1", label, "n/a", notes="the sweep ran in float32 here (no bf16 on this device)"
                           if self.dtype == "float32" else "the sweep has no row at the compare budget")
            return
        engine = Engine(str(self.model_dir), device=self.device, dtype="float32", span_path="device",
                        batch_tokens=budget).warm_up()
        t0 = time.perf_counter()
        ref = top1(engine.run(self.items))
        got = top1(self.sweep_results[budget]["results"])
        same = sum(a == b for a, b in zip(got, ref))
        self.table.add("1", label, f"{same}/{len(ref)} unchanged",
                       notes=f"{len(self.windows):,} windows; float32 run {time.perf_counter() - t0:.1f} s")
        del engine

    def raw(self) -> None:
        try:
            self._raw()
        finally:
            if not self.gpu and not self.args.peak_tflops:  # measured again after the busiest part: the best counts
                self.peak = self.table.peak_tflops = max(self.peak, cpu_matmul_peak(self.dtype, self.config))
                self.peak_label = (f"{self.peak:.2f} TFLOPS {self.dtype} (the best matmul measured here on the "
                                   "model's shapes, twice)")

    def _raw(self) -> None:
        model = self.engine.model
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else 0
        for budget in self.plan["budgets"]:
            got = time_raw(model, self.windows, budget, pad, self.device, max(self.plan["rounds"], 2 if self.gpu else 1),
                           warm_full=self.gpu)
            w = len(self.windows)
            eng = self.sweep_results.get(budget)
            ratio = f"; the engine runs at {got['wall_s'] / eng['wall_s']:.2f}x of this" if eng else ""
            self.table.add("3", f"raw forward {self.dtype}, batch_tokens {budget:,}", wps=w / got["wall_s"],
                           tflops=self.tflops(got["wall_s"]), device=got["wall_s"] / w * 1e3,
                           notes=f"{got['forwards']} forwards, {got['wall_s']:.2f} s{ratio}")

    def host_device(self) -> None:
        from docqa.worker.engine import QAItem

        from docqa.core.windows import tokenize_documents

        budget = self.plan["compare_budget"]
        texts = [d.text for d in self.docs]
        best = float("inf")
        for _ in range(2):
            t0 = time.perf_counter()
            toks = tokenize_documents(self.tok, texts)
            best = min(best, time.perf_counter() - t0)
        w = len(self.windows)
        self.table.add("5", "tokenizing the documents (host)", f"{best:.2f} s", host=best / w * 1e3,
                       notes=f"{sum(len(t) for t in toks):,} tokens, {sum(len(t) for t in toks) / best:,.0f} tokens/s "
                       "(tokenize_documents, one process)")
        by_text = dict(zip(texts, toks))
        pre = [QAItem(it.text, it.question, tokens=by_text[it.text]) for it in self.items]
        self.engine.batch_tokens_request = budget
        got = time_engine(self.engine, pre, rounds=self.plan["rounds"],
                          warm_items=pre if self.plan["warm"] == "full" else self.warm_items)
        row = self.engine_row("5", f"engine {self.dtype}, batch_tokens {budget:,}, documents tokenized beforehand", got)
        base = self.sweep_results.get(budget)
        if base is None:
            return
        # The engine overlaps a batch's host work with the next batch's forward, so its own
        # rows cannot split the time; run it once sequentially (overlap off) for the split.
        self.engine.overlap = False
        try:
            seq = time_engine(self.engine, self.items, rounds=self.plan["rounds"], warm_items=self.warm_items)
        finally:
            self.engine.overlap = True
        same = sum(a == b for a, b in zip(top1(seq["results"]), top1(base["results"])))
        self.engine_row("5", f"engine {self.dtype}, batch_tokens {budget:,}, overlap off (one batch at a time)", seq,
                        f"; with overlap (the default) the engine's windows/s are {seq['wall_s'] / base['wall_s']:.2f}x this; "
                        f"best answers unchanged {same}/{len(self.items)}")
        host = (seq["wall_s"] - seq["device_s"]) / w * 1e3
        device = seq["device_s"] / w * 1e3
        tok_ms = best / w * 1e3
        bound = "host" if host > device else "device"
        ceiling = 1e3 / max(host, device)
        split = (f"tokenizing ~{tok_ms:.3f} ms + windows, batches, span decoding, merging ~{host - tok_ms:.3f} ms"
                 if tok_ms < host else "the host's share is within the noise of the device's here")
        self.table.add("5", f"where a window's time goes (batch_tokens {budget:,}, overlap off)",
                       f"{bound}-bound", host=host, device=device,
                       notes=f"host: {split}; pre-tokenized, the host time not hidden by the overlap is "
                       f"{row['host_ms_per_window']:.3f} ms; with host and device fully overlapped: at most {ceiling:,.0f} windows/s, "
                       f"the engine with overlap ran {w / base['wall_s']:,.0f}")

    def buckets_and_compile(self) -> None:
        budget = self.plan["compare_budget"]
        self.engine.batch_tokens_request = budget
        ref = None
        default = self.engine.pad_buckets  # what the sweep ran with ('auto': on for CUDA)
        for buckets in (False, True):
            if buckets == default and budget in self.sweep_results:
                got = self.sweep_results[budget]  # the sweep's row at this budget: not run twice
            else:
                self.engine.pad_buckets_request = buckets
                got = time_engine(self.engine, self.items, rounds=self.plan["rounds"], warm_items=self.warm_items)
            answers = top1(got["results"])
            if ref is None:
                ref = answers
                same = ""
            else:
                same = f"; best answers unchanged {sum(a == b for a, b in zip(answers, ref))}/{len(ref)}"
            self.engine_row("+", f"engine {self.dtype}, batch_tokens {budget:,}, pad buckets {'on' if buckets else 'off'}, "
                            "eager", got, same)
        self.engine.pad_buckets_request = "auto"
        self.reference_top1 = ref
        modes = ["default", "reduce-overhead"] if self.gpu else ["default"]
        if not self.gpu:
            self.table.add("+", "compile reduce-overhead", "skipped",
                           notes="CUDA graphs need a GPU; on a CPU the mode compiles as `default` does")
        for mode in modes:
            left = self.left() - 15
            label = f"engine {self.dtype}, batch_tokens {budget:,}, pad buckets on, compile {mode}"
            if self.args.skip_compile:
                self.table.add("+", label, "skipped", notes="--skip-compile")
                continue
            if left < 45:
                self.table.add("+", label, "skipped", notes=f"the check's time limit ({self.plan['time_limit']} s) is "
                               "nearly spent; run again with --time-limit or --skip-e2e")
                continue
            self.compile_row(label, mode, budget, left)

    def compile_row(self, label: str, mode: str, budget: int, timeout: float) -> None:
        spec = {"model_dir": str(self.model_dir), "device": self.device, "dtype": self.dtype, "budget": budget,
                "mode": mode, "docs": self.plan["docs"], "chars": self.plan["chars"],
                "questions": self.plan["questions"], "rounds": self.plan["rounds"], "warm": self.plan["warm"]}
        spec_path = self.out / f"compile-{mode}.spec.json"
        result_path = self.out / f"compile-{mode}.json"
        log_path = self.out / f"compile-{mode}.log"
        spec_path.write_text(json.dumps(spec))
        result_path.unlink(missing_ok=True)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--_compile-child", str(spec_path), str(result_path)]
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
        took = time.perf_counter() - t0
        got = json.loads(result_path.read_text()) if result_path.exists() else {}
        if "wall_s" not in got:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
            why = (f"stopped after {took:.0f} s (the check's time limit), {got.get('stage', 'starting')}"
                   if proc.returncode and proc.returncode < 0 else f"exit {proc.returncode}: {' / '.join(tail)}"[:400])
            self.table.add("+", label, "n/a", notes=f"{why}; log {log_path}", ok=False)
            return
        got["errors"] = got.get("errors", [])
        same = sum(tuple(a) == tuple(b) if a and b else a == b for a, b in zip(got["top1"], self.reference_top1))
        extra = (f"; compiling (first pass) {got['warm_s']:.0f} s; best answers unchanged vs eager "
                 f"{same}/{len(self.reference_top1)}")
        if got.get("compile_error"):
            extra += f"; COMPILE FAILED, ran eager: {got['compile_error'][:200]}"
        self.engine_row("+", label, got, extra)

    def e2e(self) -> None:
        label = "docqa run (SQLite), model loading included"
        need = [d for d in self.info["dependencies"] if not d["ok"] and d["name"] in E2E_REQUIREMENTS]
        if need:
            self.table.add("6", label, "skipped", notes="`docqa run` needs " + ", ".join(d["requirement"] for d in need)
                           + " beyond the engine's packages; missing here (the commands below bring them)")
            return
        folder = self.out / "e2e"
        shutil.rmtree(folder, ignore_errors=True)
        docs_dir = folder / "documents"
        docs_dir.mkdir(parents=True)
        docs = self.docs[: self.plan["e2e_docs"]]
        questions = list(self.docs[0].questions[:2])
        for d in docs:
            (docs_dir / f"{d.name}.txt").write_text(d.text, encoding="utf-8")
        (folder / "questions.txt").write_text("\n".join(questions) + "\n", encoding="utf-8")
        import corpus
        from measure import build_windows

        n_windows = len(build_windows(self.tok, [corpus.BenchDocument(d.name, d.title, d.text, tuple(questions))
                                                for d in docs]))
        db = folder / "answers.db"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--docqa-cli", "run", str(docs_dir),
               "--questions", str(folder / "questions.txt"), "--model", str(self.model_dir),
               "--database-url", f"sqlite:///{db}", "--device", self.device, "--dtype", self.dtype]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=max(self.left(), 60))
        wall = time.perf_counter() - t0
        (folder / "run.log").write_text(f"$ {shlex.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        summary = next((ln for ln in proc.stdout.splitlines() if "answered now" in ln), proc.stdout.strip()[-200:])
        failed = re.search(r"(\d+) failed", summary)
        ok = proc.returncode == 0 and failed is not None and failed.group(1) == "0"
        if proc.returncode != 0:
            summary = f"exit {proc.returncode}: " + (proc.stderr.strip().splitlines() or [""])[-1][:300]
        self.table.add("6", label, f"{wall:.1f} s" if ok else "failed", wps=n_windows / wall if ok else None,
                       notes=f"{len(docs)} documents x {len(questions)} questions, {n_windows:,} windows, {self.device}, "
                       f"{self.dtype}; {summary}; log {folder / 'run.log'}", ok=ok)

    def run(self) -> int:
        say(f"docqa GPU check, device {self.device}; results in {self.out}")
        say(f"[{self.elapsed():5.0f} s] environment")
        engine_ok = self.environment()
        if engine_ok:
            bootstrap_docqa()
            self.part("1 golden answers", golden_rows, self.table, self.device)
            self.part("2 workload and model", self.setup_workload)
            if hasattr(self, "engine"):
                self.part("2 engine windows/s by budget", self.sweep)
                self.part("3 raw forward by budget", self.raw)
                self.part("1 full model precision", self.precision)
                self.part("5 host vs device", self.host_device)
                if self.args.skip_e2e:
                    self.table.add("6", "docqa run (SQLite)", "skipped", notes="--skip-e2e")
                else:
                    self.part("6 docqa run", self.e2e)
                self.part("+ pad buckets and torch.compile", self.buckets_and_compile)
        else:
            why = f"the engine needs {', '.join(ENGINE_IMPORTS)}; missing here: {', '.join(self.missing_engine)}"
            for part in ("1", "2", "3", "4", "5"):
                self.table.add(part, "engine parts", "skipped", notes=why)
            self.table.add("6", "docqa run", "skipped", notes="docqa's dependencies are missing (see below)")
        return self.report()

    def report(self) -> int:
        if hasattr(self, "peak_label"):
            shown = "n/a" if not self.peak else f"{self.peak:,.0f} TFLOPS" if self.peak >= 10 else f"{self.peak:.3f} TFLOPS"
            self.table.add("4", "peak", shown, notes=self.peak_label)
            fastest = max((r["achieved_tflops"] or 0 for r in self.table.rows), default=0)
            if self.peak and fastest > self.peak:
                self.table.add("4", "peak too low", "warning", notes=f"a row reached {fastest:.3f} TFLOPS, more than "
                               "the peak: other processes slowed the peak's measurement; read the shares as relative")
        total = self.elapsed()
        command = shlex.join([Path(sys.executable).name, *sys.argv])
        head = [f"# docqa GPU check ({'dry run on a CPU' if not self.gpu else 'GPU'})", "",
                (f"- when: {datetime.now().isoformat(timespec='seconds')}; total {total:.0f} s "
                 f"(limit {self.plan['time_limit']} s); command: `{command}`"),
                f"- python {self.info.get('python')}; {self.info.get('platform')}",
                f"- versions: {self.info.get('versions')}"]
        if self.gpu and "gpu" in self.info:
            head.append(f"- device {self.device}: {self.info['gpu']}")
        elif not self.gpu:
            load = load_average()
            head.append(f"- device cpu: {self.info.get('cpu')}, {self.info.get('cores')} cores, bf16 instructions "
                        f"{self.info.get('bf16')}; load average at the start {self.info.get('load_average')}, "
                        f"at the end {load} (other processes slow a CPU run down: compare rows, not runs)")
        missing = getattr(self, "missing_all", [])
        head.append(f"- docqa dependencies missing here: {', '.join(missing) if missing else 'none'}")
        md = "\n".join(head) + "\n\n" + self.table.markdown() + "\n"
        if missing:
            md += "\nTo bring the missing packages to this machine without internet:\n\n```bash\n" + \
                  wheel_commands(missing) + "\n```\n"
        (self.out / "check.md").write_text(md, encoding="utf-8")
        rows = [dict(r, peak_share=self.table.share(r)) for r in self.table.rows]
        (self.out / "check.json").write_text(json.dumps({"info": self.info, "plan": self.plan, "rows": rows,
                                                         "peak_tflops": self.table.peak_tflops, "total_s": total},
                                                        indent=1, default=str))
        say("")
        say(md)
        say(f"total {total:.0f} s; {self.out / 'check.md'}, {self.out / 'check.json'}")
        failed = [r for r in self.table.rows if r["ok"] is False]
        return 1 if failed else 0


# -- child processes ------------------------------------------------------------------------
def compile_child(spec_path: str, result_path: str) -> int:
    """One compile row, in its own process (the parent kills it at its deadline)."""
    spec = json.loads(Path(spec_path).read_text())
    out = Path(result_path)
    bootstrap_docqa()
    from docqa.worker.engine import Engine, QAItem

    def stage(text: str) -> None:
        out.write_text(json.dumps({"stage": text}))
        say(text)

    stage("loading the model")
    docs = make_documents(spec["docs"], spec["chars"], spec["questions"])
    items = [QAItem(d.text, q) for d in docs for q in d.questions]
    engine = Engine(spec["model_dir"], device=spec["device"], dtype=spec["dtype"], batch_tokens=spec["budget"],
                    pad_buckets=True, compile=spec["mode"], span_path="device").warm_up()
    stage("compiling (the first pass over the workload)")
    warm = items if spec["warm"] == "full" else [QAItem(docs[0].text[:2000], "Who?")]
    if spec["warm"] != "full":
        engine.run(warm)  # compiles the small shape; the timed warm-up below compiles the workload's
        warm = items
    got = time_engine(engine, items, rounds=spec["rounds"], warm_items=warm)
    results = got.pop("results")
    got.update(top1=top1(results), compile_error=engine.compile_error, stage="done")
    out.write_text(json.dumps(got))
    return 0


def docqa_cli(argv: list[str]) -> int:
    """`docqa ARGS` from this checkout (installed or not)."""
    bootstrap_docqa()
    from docqa.cli import main

    return main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--_compile-child"]:
        return compile_child(argv[1], argv[2])
    if argv[:1] == ["--docqa-cli"]:
        return docqa_cli(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None, help="cuda (default when a GPU is visible), cuda:N, or cpu (the dry run)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--quick", action="store_true", help="a smaller GPU workload (a CPU always runs the small one)")
    ap.add_argument("--peak-tflops", type=float, help="the device's dense bf16 peak, TFLOPS (default: a table of known GPUs)")
    ap.add_argument("--model", type=Path, help="a QA model folder to measure instead of the generated full-size one")
    ap.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR,
                    help=f"where the full-size random-weights model is built once (default {DEFAULT_MODEL_DIR})")
    ap.add_argument("--budgets", type=int, nargs="+", help="batch_tokens to measure (default 8192 ... 262144 on a GPU)")
    ap.add_argument("--compare-budget", type=int, help="the budget of the buckets/compile rows (default 131072 on a GPU)")
    ap.add_argument("--docs", type=int, help="documents in the workload (2 questions each)")
    ap.add_argument("--chars", type=int, help="characters per document")
    ap.add_argument("--rounds", type=int, help="timed runs per row (the best is kept)")
    ap.add_argument("--time-limit", type=int, help="seconds the check may take (default 450 on a GPU, 280 on a CPU)")
    ap.add_argument("--skip-e2e", action="store_true", help="leave out part 6 (docqa run)")
    ap.add_argument("--skip-compile", action="store_true", help="leave out the torch.compile rows")
    args = ap.parse_args(argv)
    if args.device is None:
        try:
            import torch

            args.device = "cuda" if torch.cuda.is_available() else None
        except ImportError:
            args.device = "cuda"  # the environment check then says what is missing
        if args.device is None:
            ap.error("no CUDA GPU is visible to torch here: pass --device cpu for the dry run")
    return Check(args).run()


if __name__ == "__main__":
    sys.exit(main())
