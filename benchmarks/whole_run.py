"""Whole process: `docqa run --fast` against transformers 5.2.0's pipeline, start-up included.

    . .venv/bin/activate
    python benchmarks/whole_run.py                    # 4 long documents x 2 questions, 3 rounds
    python benchmarks/whole_run.py --configs pipeline fast float32 --rounds 2

What a user waits for: each configuration is one fresh process, timed from its start to
its exit (imports, model load, quantization, store creation, chunking, answering, writing),
on the same (document, question) pairs:

  pipeline  a script in the transformers 5.2.0 reference venv: `from transformers import
            pipeline`, `pipeline("question-answering", model=M)`, every pair in one call
            (batch_size 1, its default), answers written to a JSON file
  fast      `docqa run WORKLOAD.jsonl --fast --model M` into a new SQLite store
  float32   the same without --fast (float32, the pipeline's arithmetic)
  int8      the same with --quantize int8 (--fast picks it on AVX2 / AVX512-VNNI CPUs)
  bf16      the same with --dtype bfloat16 (--fast picks it on CPUs with AMX; native on
            CPUs with AVX512-BF16, emulated and slow elsewhere)

Both run with their defaults (torch threads = cores; no OMP_NUM_THREADS set), offline
(HF_HUB_OFFLINE=1). Rounds are interleaved and the best round of each configuration is
reported (the machine is shared: other processes only ever slow a run down), with every
round's time, the process's CPU seconds and peak RSS. Answers (text, start, end) are then
compared with the pipeline's and with docqa float32's.

The workload: the first --docs documents of the benchmark corpus (benchmarks/corpus.py,
Debian's python3.11-doc) with at least --min-chars characters (20,000 by default: the long
end of the corpus, which stops at 30,000), --questions questions each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import corpus
from common import cpu_pressure_us

DEFAULT_MODEL = REPO / "bench-out" / "full-distilbert-qa"
DEFAULT_REF_PYTHON = "/work/refvenv/venv/bin/python"
CONFIGS = ("pipeline", "fast", "float32", "int8", "bf16")
DOCQA_FLAGS = {"fast": ["--fast"], "float32": [], "int8": ["--quantize", "int8"],
               "bf16": ["--dtype", "bfloat16"]}

# The reference: what a user of transformers 5.2.0 runs (the pipeline's defaults).
PIPELINE_SCRIPT = """\
import json, sys
from transformers import pipeline

workload, model, out = sys.argv[1:4]
pairs = []
with open(workload, encoding="utf-8") as fh:
    for line in fh:
        doc = json.loads(line)
        pairs += [(doc["id"], q, doc["text"]) for q in doc["questions"]]
qa = pipeline("question-answering", model=model, tokenizer=model)
got = qa(question=[q for _, q, _ in pairs], context=[c for _, _, c in pairs])
got = [got] if isinstance(got, dict) else got
with open(out, "w", encoding="utf-8") as fh:
    json.dump([[i, q, a["answer"], a["start"], a["end"]] for (i, q, _), a in zip(pairs, got)], fh)
"""


def timed(cmd: list[str], env: dict, log: Path) -> dict:
    """Run `cmd` as a fresh process: wall seconds from start to exit, CPU seconds, peak RSS."""
    with open(log, "wb") as fh:
        psi = cpu_pressure_us()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=str(log.parent))
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        psi_after = cpu_pressure_us()
    rc = os.waitstatus_to_exitcode(status)
    out = {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024, "rc": rc,
           # share of the wall time in which some task waited for a CPU: high means other processes competed
           "pressure": (psi_after - psi) / 1e6 / wall if psi is not None and psi_after is not None else None}
    if rc != 0:
        out["error"] = f"exit status {rc}: " + log.read_text(errors="replace")[-1500:]
    return out


def docqa_answers(docqa: str, store: str, env: dict) -> dict:
    """{(document id, question): [text, start, end]} of a store's best answers."""
    done = subprocess.run([docqa, "results", "--database-url", store, "--format", "jsonl"], env=env,
                          capture_output=True, text=True, check=True)
    out = {}
    for line in done.stdout.splitlines():
        r = json.loads(line)
        out[(r["document_external_id"], r["question"])] = [r["text"], r["char_start"], r["char_end"]]
    return out


def same(a: dict, b: dict) -> str:
    keys = set(a) | set(b)
    return f"{sum(a.get(k) is not None and a.get(k) == b.get(k) for k in keys)}/{len(keys)}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--docs", type=int, default=4)
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--min-chars", type=int, default=20_000, help="documents at least this long (default 20,000)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--configs", nargs="+", choices=CONFIGS, default=["pipeline", "fast", "float32"])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder (benchmarks/build_full_model.py)")
    ap.add_argument("--ref-python", default=DEFAULT_REF_PYTHON, help="python of the transformers 5.2.0 venv")
    ap.add_argument("--out", type=Path, help="result folder (default bench-out/whole-run/<time>)")
    args = ap.parse_args(argv)

    out = args.out or REPO / "bench-out" / "whole-run" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    docs = corpus.select_documents(args.docs, args.questions, min_chars=args.min_chars)
    workload = out / "workload.jsonl"
    with open(workload, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps({"id": d.name, "text": d.text, "questions": list(d.questions)}) + "\n" for d in docs)
    (out / "pipeline_qa.py").write_text(PIPELINE_SCRIPT)
    chars = sum(len(d.text) for d in docs)
    pairs = sum(len(d.questions) for d in docs)
    print(f"workload {corpus.workload_digest(docs)}: {len(docs)} documents ({chars:,} characters: "
          f"{', '.join(f'{d.name} {len(d.text):,}' for d in docs)}), {pairs} pairs; results in {out}", flush=True)

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCQA_", "OMP_", "MKL_"))}
    env["HF_HUB_OFFLINE"] = "1"
    docqa = str(Path(sys.executable).with_name("docqa"))
    runs: dict[str, list[dict]] = {c: [] for c in args.configs}
    answers: dict[str, dict] = {}
    for k in range(args.rounds):
        order = args.configs[k % len(args.configs):] + args.configs[: k % len(args.configs)]
        for config in order:
            tag = f"{config}.r{k + 1}"
            if config == "pipeline":
                result_file = out / f"{tag}.answers.json"
                cmd = [args.ref_python, str(out / "pipeline_qa.py"), str(workload), str(args.model), str(result_file)]
            else:
                store = f"sqlite:///{out / (tag + '.db')}"
                cmd = [docqa, "run", str(workload), "--model", str(args.model), "--database-url", store,
                       *DOCQA_FLAGS[config]]
            r = timed(cmd, env, out / f"{tag}.log")
            runs[config].append(r)
            print(f"  round {k + 1}: {config}: {r['wall_s']:.2f} s, CPU {r['cpu_s']:.1f} s, CPU pressure "
                  f"{r['pressure'] if r['pressure'] is None else format(r['pressure'], '.0%')}"
                  f"{' FAILED' if 'error' in r else ''}", flush=True)
            if "error" in r or config in answers:
                continue
            if config == "pipeline":
                answers[config] = {(i, q): [a, s, e] for i, q, a, s, e in json.loads(result_file.read_text())}
            else:
                answers[config] = docqa_answers(docqa, store, env)

    best = {c: min((r for r in rs if "error" not in r), key=lambda r: r["wall_s"], default=None)
            for c, rs in runs.items()}
    base = (best.get("pipeline") or {}).get("wall_s")
    lines = [(f"Workload: {len(docs)} documents x {args.questions} questions ({pairs} pairs, {chars:,} characters, "
             f"workload {corpus.workload_digest(docs)}), {args.rounds} interleaved rounds, best round shown."), "",
             ("| configuration | wall s (best) | every round | CPU s | CPU pressure | peak RSS MiB | share of the "
             "pipeline's time | answers = pipeline | answers = docqa float32 |"), "|---|---:|---|---:|---:|---:|---:|---|---|"]
    for c, rs in runs.items():
        b = best[c]
        if b is None:
            lines.append(f"| {c} | failed: {rs[-1].get('error', '')[:200]!r} | | | | | | | |")
            continue
        walls = ", ".join(f"{r['wall_s']:.2f}" for r in rs)
        share = f"{b['wall_s'] / base:.0%}" if base else "—"
        eq_ref = same(answers[c], answers["pipeline"]) if c in answers and "pipeline" in answers else "—"
        eq_f32 = same(answers[c], answers["float32"]) if c in answers and "float32" in answers else "—"
        pressure = "—" if b["pressure"] is None else f"{b['pressure']:.0%}"
        lines.append(f"| {c} | {b['wall_s']:.2f} | {walls} | {b['cpu_s']:.1f} | {pressure} | {b['peak_rss_mib']:.0f} | {share} "
                     f"| {eq_ref} | {eq_f32} |")
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"runs": runs, "workload": [d.name for d in docs]}, indent=1))
    print()
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
