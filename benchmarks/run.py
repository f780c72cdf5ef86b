"""docqa benchmark: every configuration side by side on one workload, one command.

    . .venv/bin/activate
    python benchmarks/run.py                          # default workload (see --docs/--questions)
    python benchmarks/run.py --docs 20 --questions 3  # larger
    python benchmarks/run.py --quick                  # a smoke run of every configuration

Configurations (each in its own subprocess, so peak RSS is per configuration):

  pipeline-bs1 / pipeline-bs8  transformers 5.2.0 pipeline("question-answering") (reference venv)
  engine        docqa Engine in process, float32, torch threads = cores
  raw           model(**batch) over pre-built padded batches of the same windows (the ceiling)
  e2e           docqa submit -> Redis -> docqa worker (Celery, concurrency 1) -> PostgreSQL
  int8          docqa Engine with quantize="int8" (torch dynamic quantization of Linear layers)
  raw-int8      the raw forward of that quantized model
  bf16          docqa Engine with dtype bfloat16 on the CPU (needs AVX512-BF16/AMX; skipped without)
  raw-bf16      the raw forward of the bfloat16 model
  e2e-bf16      e2e with the worker in bfloat16 (DOCQA_DTYPE=bfloat16)
  rerun         docqa run (embedded, SQLite) twice; the second run should cost ~nothing
  producer      tokenize+window tokens/s, docqa submit jobs/s, Repository.complete rows/s
  overhead      the engine with a zero-cost model: its CPU side alone (the GPU ceiling)
  threads       one process x 2 threads vs two concurrent processes (oversubscription)
  roofline      the workload's FLOPs and this machine's matmul GFLOP/s on the model's shapes:
                the hardware ceiling at float32 (and bfloat16), and each row's share of it
  sweep         (opt-in) raw forward windows/s at several --batch-tokens budgets
  ort-fp32 / ort-int8  (opt-in, --alternatives) docqa Engine with an ONNX Runtime backend,
                float32 and int8 (dynamic quantization); needs the side venv of docs/BENCHMARKS.md

The compute configurations run --rounds times (default 2), interleaved, each round in
fresh processes; the table reports each one's best round (the machine is shared: other
processes only ever slow a run down), with cpu_util (CPU seconds / (wall x threads)) as
the sign of how much of the machine a run had.

Results go to bench-out/results/<time>/ (results.json, results.md, per-configuration
logs) and the table is printed. Timings are wall-clock on a shared machine: compare
rows of one run (ratios), not runs of different days.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402

DEFAULT_MODEL = REPO / "bench-out" / "full-distilbert-qa"
DEFAULT_REF_PYTHON = "/work/refvenv/venv/bin/python"
ALL = ["pipeline-bs1", "pipeline-bs8", "engine", "raw", "e2e", "int8", "raw-int8", "bf16", "raw-bf16", "e2e-bf16",
       "rerun",
       "producer", "overhead", "threads", "roofline"]
OPTIONAL = ["sweep", "ort-fp32", "ort-int8"]
# Measured once per round, rounds interleaved; the best round (least wall time) is reported.
ROUNDED = ["pipeline-bs1", "pipeline-bs8", "engine", "raw", "int8", "bf16", "e2e", "e2e-bf16", "ort-fp32",
           "ort-int8"]
DEFAULT_ORT_PYTHON = REPO / "bench-out" / "ortvenv" / "bin" / "python"
# A run whose process had less than this share of the cores it asked for was slowed by
# other processes: its figures are flagged and ratios built on them marked unreliable.
CONTENDED_UTIL = 0.85
TARGETS = {
    "engine_vs_pipeline_bs1": 1.4,
    "e2e_vs_engine": 0.90,
    "int8_vs_pipeline_bs1": 2.5,
    "bf16_vs_pipeline_bs1": 2.5,
    "e2e_bf16_vs_bf16": 0.90,
    "rerun_pct_of_first": 2.0,
}


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def machine() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cores": usable_cores()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Flags"):
                info[key.strip()] = value.strip()
        flags = set(info.pop("Flags", "").split())
        info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                                                      "amx_int8") if f in flags)
    except OSError:
        pass
    try:
        with open("/proc/meminfo") as fh:
            info["ram_gib"] = round(int(fh.readline().split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def versions(args) -> dict:
    out = {}
    code = ("import torch, transformers, tokenizers, numpy; print(torch.__version__, transformers.__version__, "
            "tokenizers.__version__, numpy.__version__)")
    for label, py in (("project", sys.executable), ("reference", args.ref_python)):
        try:
            v = subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=120).stdout.split()
            out[label] = dict(zip(("torch", "transformers", "tokenizers", "numpy"), v))
        except (OSError, subprocess.TimeoutExpired):
            out[label] = "unavailable"
    try:
        import celery
        import psycopg
        import redis
        import sqlalchemy

        out["project"].update(celery=celery.__version__, sqlalchemy=sqlalchemy.__version__,
                              psycopg=psycopg.__version__, redis_py=redis.__version__)
        r = redis.Redis.from_url(args.redis_url)
        out["redis_server"] = r.info("server")["redis_version"]
        with psycopg.connect(host=args.pg_host, port=args.pg_port, user=args.pg_user, dbname="postgres") as c:
            out["postgresql"] = c.execute("SHOW server_version").fetchone()[0]
    except Exception as exc:  # services missing: the service configurations will say so
        out["services"] = f"{type(exc).__name__}: {exc}"
    return out


# -- running children ------------------------------------------------------------------------
class Runner:
    def __init__(self, args, out: Path, spec: dict) -> None:
        self.args = args
        self.out = out
        self.base_spec = spec

    def child(self, name: str, config: str, python: str, extra: dict, env_extra: dict | None = None,
              wait: bool = True):
        spec = dict(self.base_spec, **extra)
        spec_path = self.out / f"{name}.spec.json"
        spec_path.write_text(json.dumps(spec))
        result_path = self.out / f"{name}.json"
        env = dict(os.environ)
        env.update({"OMP_NUM_THREADS": str(spec["threads"]), "MKL_NUM_THREADS": str(spec["threads"]),
                    "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
                    "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore"})
        env.update(env_extra or {})
        log = open(self.out / f"{name}.log", "wb")
        cmd = [python, str(HERE / "measure.py"), config, "--spec", str(spec_path), "--out", str(result_path)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(REPO),
                                start_new_session=True)
        if not wait:
            return proc, t0, result_path, log
        return self.finish(name, proc, t0, result_path, log)

    def finish(self, name, proc, t0, result_path, log) -> dict:
        _pid, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        log.close()
        total = time.perf_counter() - t0
        if proc.returncode != 0 or not result_path.exists():
            tail = (self.out / f"{name}.log").read_text(errors="replace")[-2500:]
            res = {"error": f"exit status {proc.returncode}", "log_tail": tail}
        else:
            res = json.loads(result_path.read_text())
        res["process_wall_s"] = total
        res["process_peak_rss_mib"] = usage.ru_maxrss / 1024  # the child and what it waited for
        say(f"  {name}: " + (res.get("error") or f"{res.get('wall_s', 0):.1f} s timed, {total:.1f} s in all"))
        return res


def child_env(name: str, python: str, args) -> dict:
    """Environment of one configuration's process, beyond the common settings.

    docqa configurations get OMP_WAIT_POLICY=PASSIVE, which docqa sets for itself when
    the `worker` package is imported before torch (its CLI and worker do that; a
    benchmark child may import torch first, so it is set here). The reference pipeline
    runs with the OpenMP default, as its users run it.
    """
    env = {} if python == args.ref_python else {"OMP_WAIT_POLICY": "PASSIVE"}
    if name.startswith("ort-"):
        env["PYTHONPATH"] = str(REPO)  # the side venv sees docqa's source tree
    return env


def say(msg: str) -> None:
    print(msg, flush=True)


def run_threads(runner: Runner, args) -> dict:
    """Per-forward time of one batch: 1 process x T threads alone, 2 processes x T threads
    at once (oversubscribed: 2T threads on T cores; OpenMP threads sleeping or spinning
    while they wait), and 2 processes x T/2 threads.

    Each setup runs --rounds times (interleaved); the round with the most windows/s is kept.
    """
    cores = args.threads
    barrier = str(runner.out / "threads.barrier")
    # (label, processes, torch threads each, OMP_WAIT_POLICY). docqa sets PASSIVE itself
    # (worker/__init__.py); ACTIVE (spinning) is what a plain torch program gets.
    setups = [("one-process", 1, cores, "PASSIVE"), ("two-processes", 2, cores, "PASSIVE"),
              ("two-processes-spinning", 2, cores, "ACTIVE")]
    if cores >= 2:
        setups.append(("two-processes-split", 2, max(1, cores // 2), "PASSIVE"))
    out: dict = {}
    for rnd in range(args.rounds):
        for label, n_proc, threads, policy in setups:
            for f in runner.out.glob("threads.barrier*"):
                f.unlink()
            running = []
            for k in range(n_proc):
                extra = {"threads": threads, "index": k, "barrier": barrier, "rows": args.thread_rows,
                         "repeats": args.thread_repeats}
                running.append(runner.child(f"threads-{label}-{k}.r{rnd + 1}", "threads", sys.executable, extra,
                                            env_extra={"OMP_WAIT_POLICY": policy}, wait=False))
            deadline = time.time() + 600
            while time.time() < deadline:
                if all(Path(f"{barrier}.ready{k}").exists() for k in range(n_proc)):
                    break
                if any(p.poll() is not None for p, *_ in running):
                    break
                time.sleep(0.05)
            Path(f"{barrier}.go").touch()
            results = [runner.finish(f"threads-{label}-{k}.r{rnd + 1}", *r) for k, r in enumerate(running)]
            errors = [r["error"] for r in results if "error" in r]
            if errors:
                out.setdefault(label, {"error": errors[0]})
                continue
            wall = max(r["wall_s"] for r in results)
            row = {
                "processes": n_proc, "threads_each": threads, "omp_wait_policy": policy, "rows": results[0]["rows"],
                "width": results[0]["width"], "median_forward_s": [r["median_forward_s"] for r in results],
                "cpu_util": [r["cpu_util"] for r in results],
                "windows_per_s": sum(r["windows"] for r in results) / wall,
            }
            prev = out.get(label)
            if prev is None or "error" in prev or row["windows_per_s"] > prev["windows_per_s"]:
                row["rounds_windows_per_s"] = (prev or {}).get("rounds_windows_per_s", []) + [row["windows_per_s"]]
                out[label] = row
            else:
                prev["rounds_windows_per_s"].append(row["windows_per_s"])
    return out


def best_round(results: list[dict]) -> dict:
    """The round with the least wall time, with every round's timing kept alongside."""
    ok = [r for r in results if "error" not in r and "wall_s" in r]
    if not ok:
        return results[-1] if results else {"error": "not run"}
    best = dict(min(ok, key=lambda r: r["wall_s"]))
    best["rounds"] = [{k: r.get(k) for k in ("wall_s", "cpu_util", "pressure", "error")} for r in results]
    answers = [r.get("answers") for r in ok]
    best["same_answers_every_round"] = all(a == answers[0] for a in answers)
    return best


# -- reporting ---------------------------------------------------------------------------------
def same_answers(a: dict | None, b: dict | None) -> tuple[int, int, list]:
    """(equal, compared, examples of differences): answer text, start and end."""
    if not a or not b:
        return 0, 0, []
    keys = sorted(set(a) | set(b), key=lambda k: tuple(int(x) for x in k.split(":")))
    equal, diffs = 0, []
    for k in keys:
        x, y = a.get(k), b.get(k)
        if x is not None and y is not None and list(x[:3]) == list(y[:3]):
            equal += 1
        elif len(diffs) < 5:
            diffs.append({"key": k, "a": x, "b": y})
    return equal, len(keys), diffs


def summarize(res: dict, args) -> dict:
    rows = {}
    engine_windows = (res.get("engine") or {}).get("windows")
    for name in ("pipeline-bs1", "pipeline-bs8", "engine", "raw", "e2e", "int8", "raw-int8", "bf16", "raw-bf16",
                 "e2e-bf16", "ort-fp32", "ort-int8"):
        r = res.get(name)
        if not r or "error" in r or "wall_s" not in r:
            if r:
                rows[name] = {"error": r.get("error", "no timing")}
            continue
        windows = r.get("windows") or engine_windows
        rss = r.get("worker_peak_rss_mib") or r.get("peak_rss_mib") or r.get("process_peak_rss_mib")
        rows[name] = {
            "wall_s": r["wall_s"], "windows": windows, "items": r["items"],
            "windows_per_s": windows / r["wall_s"] if windows else None,
            "answers_per_s": r["items"] / r["wall_s"], "peak_rss_mib": rss,
            "forward_calls": r.get("forward_calls"), "forward_share": (r.get("forward_s") / r["wall_s"])
            if r.get("forward_s") else None,
            "cpu_util": r.get("cpu_util"), "round_walls": [x.get("wall_s") for x in r.get("rounds", [])],
            "contended": r.get("cpu_util") is not None and r["cpu_util"] < CONTENDED_UTIL,
        }
    base = rows.get("pipeline-bs1", {}).get("windows_per_s")
    ceiling = rows.get("raw", {}).get("windows_per_s")
    roof = res.get("roofline") or {}
    for name, row in rows.items():
        # Achieved matmul speed: the workload's FLOPs over the row's wall time, against the
        # machine's GEMM speed at the row's precision (int8 rows have no such ceiling here).
        precision = "bfloat16" if "bf16" in name else ("float32" if "int8" not in name else None)
        peak = (roof.get("gemm_gflops") or {}).get(precision) if precision else None
        if roof.get("workload_gflop") and row.get("wall_s") and row.get("windows") == roof.get("windows"):
            row["gflops"] = roof["workload_gflop"] / row["wall_s"]
            row["share_of_gemm_peak"] = row["gflops"] / peak if peak else None
    for row in rows.values():
        wps = row.get("windows_per_s")
        if wps:
            row["vs_pipeline_bs1"] = wps / base if base else None
            row["vs_raw"] = wps / ceiling if ceiling else None

    checks = {}
    ref = (res.get("pipeline-bs1") or {}).get("answers")
    eng = (res.get("engine") or {}).get("answers")
    for label, a, b in (
        ("engine == pipeline-bs1", eng, ref),
        ("engine == pipeline-bs8", eng, (res.get("pipeline-bs8") or {}).get("answers")),
        ("pipeline-bs8 == pipeline-bs1", (res.get("pipeline-bs8") or {}).get("answers"), ref),
        ("int8 == engine (float32)", (res.get("int8") or {}).get("answers"), eng),
        ("int8 == pipeline-bs1", (res.get("int8") or {}).get("answers"), ref),
        ("bf16 == engine (float32)", (res.get("bf16") or {}).get("answers"), eng),
        ("bf16 == pipeline-bs1", (res.get("bf16") or {}).get("answers"), ref),
        ("e2e-bf16 (PostgreSQL) == bf16", (res.get("e2e-bf16") or {}).get("answers"),
         (res.get("bf16") or {}).get("answers")),
        ("ort-fp32 == pipeline-bs1", (res.get("ort-fp32") or {}).get("answers"), ref),
        ("ort-int8 == engine (float32)", (res.get("ort-int8") or {}).get("answers"), eng),
        ("e2e (PostgreSQL) == engine", (res.get("e2e") or {}).get("answers"), eng),
        ("rerun (SQLite) == engine", (res.get("rerun") or {}).get("answers"), eng),
    ):
        if a is not None and b is not None:
            eq, n, diffs = same_answers(a, b)
            checks[label] = {"equal": eq, "compared": n, "differences": diffs}

    targets = {}

    def ratio(x, y):
        return x / y if x and y else None

    targets["engine_vs_pipeline_bs1"] = ratio(rows.get("engine", {}).get("windows_per_s"), base)
    targets["e2e_vs_engine"] = ratio(rows.get("e2e", {}).get("windows_per_s"), rows.get("engine", {}).get("windows_per_s"))
    targets["int8_vs_pipeline_bs1"] = ratio(rows.get("int8", {}).get("windows_per_s"), base)
    targets["bf16_vs_pipeline_bs1"] = ratio(rows.get("bf16", {}).get("windows_per_s"), base)
    targets["e2e_bf16_vs_bf16"] = ratio(rows.get("e2e-bf16", {}).get("windows_per_s"),
                                        rows.get("bf16", {}).get("windows_per_s"))
    rr = res.get("rerun") or {}
    if rr.get("runs") and len(rr["runs"]) == 2 and "error" not in rr:
        targets["rerun_pct_of_first"] = 100 * rr["runs"][1]["wall_s"] / rr["runs"][0]["wall_s"]
    operands = {"engine_vs_pipeline_bs1": ("engine", "pipeline-bs1"), "e2e_vs_engine": ("e2e", "engine"),
                "int8_vs_pipeline_bs1": ("int8", "pipeline-bs1"), "bf16_vs_pipeline_bs1": ("bf16", "pipeline-bs1"),
                "e2e_bf16_vs_bf16": ("e2e-bf16", "bf16"),
                "rerun_pct_of_first": ()}
    verdict = {}
    for k, v in targets.items():
        goal = TARGETS[k]
        contended = [n for n in operands[k] if rows.get(n, {}).get("contended")]
        if v is None:
            verdict[k] = {"value": None, "target": goal, "met": None}
        else:
            met = v <= goal if k == "rerun_pct_of_first" else v >= goal
            verdict[k] = {"value": v, "target": goal, "met": met, "contended": contended}
    return {"rows": rows, "checks": checks, "targets": verdict}


def fmt(x, spec=".2f", none="—"):
    return none if x is None else format(x, spec)


def markdown(report: dict) -> str:
    s = report["summary"]
    res = report["results"]
    lines = [f"Workload: {report['workload']['documents']} documents, {report['workload']['items']} (document, question) "
             f"pairs, {report['workload'].get('windows', '?')} windows, {report['workload']['chars']:,} characters "
             f"(workload {report['workload']['digest']}); torch threads {report['settings']['threads']}, "
             f"batch_tokens {report['settings']['batch_tokens']}, device {report['settings']['device']}, "
             f"{report['settings']['rounds']} round(s).", "",
             "| configuration | wall s (best) | windows/s | answers/s | peak RSS MiB | forwards | cpu util | "
             "x pipeline bs1 | x raw forward | GFLOP/s (share of GEMM peak) | wall s, every round |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for name, row in s["rows"].items():
        if "error" in row:
            lines.append(f"| {name} | failed: {row['error']} | | | | | | | | | |")
            continue
        walls = ", ".join(fmt(w, ".1f") for w in row.get("round_walls") or [])
        lines.append(
            f"| {name} | {fmt(row['wall_s'], '.1f')} | {fmt(row['windows_per_s'])} | {fmt(row['answers_per_s'], '.3f')} | "
            f"{fmt(row['peak_rss_mib'], '.0f')} | {row.get('forward_calls') or '—'} | {fmt(row.get('cpu_util'))}"
            f"{' (contended)' if row.get('contended') else ''} | "
            f"{fmt(row.get('vs_pipeline_bs1'))} | {fmt(row.get('vs_raw'))} | {fmt(row.get('gflops'), '.0f')}"
            f"{' (' + format(row['share_of_gemm_peak'], '.0%') + ')' if row.get('share_of_gemm_peak') else ''} | "
            f"{walls} |")
    roof = res.get("roofline")
    if roof and "error" not in roof:
        base = (s["rows"].get("pipeline-bs1") or {}).get("windows_per_s")
        lines += ["", f"Roofline: the workload is {roof['workload_gflop']:,.0f} GFLOP ({roof['windows']} windows, "
                  f"{roof['real_tokens']:,} tokens, unpadded). Best matmul speed on the model's own shapes "
                  f"({', '.join('x'.join(map(str, sh)) for sh in roof['shapes'])}):", ""]
        for precision, gf in roof["gemm_gflops"].items():
            cap = roof["ceiling_windows_per_s"][precision]
            lines.append(f"- {precision}: {gf:,.0f} GFLOP/s -> at most {cap:.2f} windows/s if every FLOP ran at "
                         f"that speed{f' = {cap / base:.2f}x pipeline bs1' if base else ''}")
    elif roof:
        lines += ["", f"Roofline failed: {roof['error']}"]
    lines += ["", "Targets:", ""]
    for k, v in s["targets"].items():
        mark = "n/a" if v["met"] is None else ("met" if v["met"] else "NOT met")
        op = "<=" if k == "rerun_pct_of_first" else ">="
        warn = (f" — UNRELIABLE: {', '.join(v['contended'])} ran contended (cpu util < {CONTENDED_UTIL}); "
                "run again, with more --rounds") if v.get("contended") else ""
        lines.append(f"- {k}: {fmt(v['value'])} (target {op} {v['target']}): {mark}{warn}")
    lines += ["", "Answer equality ((doc, question) pairs with identical answer text, start, end):", ""]
    for k, v in s["checks"].items():
        lines.append(f"- {k}: {v['equal']}/{v['compared']}")
    rr = res.get("rerun")
    if rr:
        lines += ["", "Re-run (docqa run, SQLite):", ""]
        if "error" in rr:
            lines.append(f"- failed: {rr['error']}")
        for k, run in enumerate(rr.get("runs", [])):
            lines.append(f"- run {k + 1}: {run['wall_s']:.2f} s wall (exit {run['rc']}, in-command "
                         f"{fmt(run.get('reported_s'), '.1f')} s, peak RSS {run['peak_rss_mib']:.0f} MiB): "
                         f"{run.get('summary', '')[:200]}")
    e2e = res.get("e2e")
    if e2e and "error" not in e2e:
        lines += ["", f"E2E: submit command {e2e['submit']['wall_s']:.2f} s; worker ready (model load + warm-up job) "
                  f"{e2e.get('worker_ready_s', 0):.1f} s before; job counts {e2e.get('job_counts')}; "
                  f"worker processes peak RSS {e2e.get('worker_rss_mib')} MiB."]
    elif e2e:
        lines += ["", f"E2E failed: {e2e['error']}"]
    prod = res.get("producer")
    if prod and "error" not in prod:
        lines += ["", "Producer and store:", ""]
        t = prod.get("tokenize", {})
        if "error" in t:
            lines.append(f"- tokenize: failed: {t['error']}")
        elif t:
            lines.append(f"- tokenize (one batched call, {t['documents']} docs, {t['tokens']:,} tokens): "
                         f"{t['tokens_per_s']:,.0f} tokens/s; windows built: {t['windows_built_per_s']:,.0f} windows/s; "
                         f"tokenize+window {t['tokenize_and_window_tokens_per_s']:,.0f} tokens/s; the pipeline's way "
                         f"(re-tokenize the document per question) takes {t['per_question_retokenize_s']:.3f} s vs "
                         f"{t['tokenize_s'] + t['window_s']:.3f} s")
        sub = prod.get("submit", {})
        if "error" in sub:
            lines.append(f"- submit: failed: {sub['error']}")
        elif sub:
            lines.append(f"- docqa submit, {sub['jobs']} jobs / {sub['documents']} docs, no worker: command "
                         f"{sub['cli_wall_s']:.2f} s = {sub['cli_jobs_per_s']:.0f} jobs/s (exit {sub['cli_rc']}); "
                         f"submit() in process {sub['in_process_s']:.2f} s = {fmt(sub['in_process_jobs_per_s'], '.0f')} "
                         f"jobs/s in {sub['messages']} messages; re-submit (all exist) {sub['resubmit_s']:.2f} s")
        w = prod.get("writes", {})
        if "error" in w:
            lines.append(f"- writes: failed: {w['error']}")
        elif w:
            lines.append(f"- Repository.complete to PostgreSQL (a transaction per job): {w['jobs']} jobs x "
                         f"{w['answers_per_job']} answer in {w['wall_s']:.2f} s = {w['rows_per_s']:.0f} answer rows/s")
            many = w.get("many")
            if many:
                lines.append(f"- Repository.complete_many to PostgreSQL ({many['batch']} jobs a transaction, as the "
                             f"worker writes): {many['jobs']} jobs in {many['wall_s']:.2f} s = "
                             f"{many['rows_per_s']:.0f} answer rows/s")
    ov = res.get("overhead")
    if ov and "error" not in ov:
        lines += ["", f"Engine CPU side with a zero-cost model (tokenize, windows, batching, span decoding, merging): "
                  f"{ov['windows_per_s']:.0f} windows/s ({ov['windows']} windows in {ov['wall_s']:.3f} s) — the most "
                  f"a GPU engine can deliver per process however fast the forward is."]
    th = res.get("threads")
    if th:
        lines += ["", "Threads (same batch, per-forward median seconds):", ""]
        for label, v in th.items():
            if "error" in v:
                lines.append(f"- {label}: failed: {v['error']}")
                continue
            lines.append(f"- {label}: {v['processes']} process(es) x {v['threads_each']} threads "
                         f"(OMP_WAIT_POLICY {v.get('omp_wait_policy', '?')}), batch "
                         f"{v['rows']}x{v['width']}: per forward {', '.join(f'{x:.3f}' for x in v['median_forward_s'])}"
                         f" s (cpu util {', '.join(f'{x:.2f}' for x in v['cpu_util'])}); all processes together "
                         f"{v['windows_per_s']:.2f} windows/s (rounds: "
                         f"{', '.join(f'{x:.2f}' for x in v.get('rounds_windows_per_s', []))})")
    sw = res.get("sweep")
    if sw and "sweep" in sw:
        lines += ["", "Batch budget sweep (raw forward):", ""]
        for r in sw["sweep"]:
            lines.append(f"- batch_tokens {r['batch_tokens']}: {r['forward_calls']} forwards, "
                         f"{r['windows_per_s']:.2f} windows/s (cpu util {r['cpu_util']:.2f})")
    return "\n".join(lines) + "\n"


# -- main ------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--docs", type=int, default=None, help="documents (default 6; --quick 2)")
    ap.add_argument("--questions", type=int, default=None, help="questions per document (default 2; --quick 1)")
    ap.add_argument("--quick", action="store_true", help="tiny workload, fewer repeats: checks that everything runs")
    ap.add_argument("--only", nargs="+", choices=ALL + OPTIONAL, help="run only these configurations")
    ap.add_argument("--skip", nargs="+", choices=ALL + OPTIONAL, default=[], help="leave these out")
    ap.add_argument("--sweep", action="store_true", help="also run the batch-budget sweep")
    ap.add_argument("--alternatives", action="store_true",
                    help="also run the ONNX Runtime backends (ort-fp32, ort-int8); needs --ort-python")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the compute configurations (default 2; --quick 1)")
    ap.add_argument("--ort-python", type=Path, default=DEFAULT_ORT_PYTHON,
                    help=f"python of a venv with onnxruntime + onnx that also sees the project's packages "
                         f"(default {DEFAULT_ORT_PYTHON})")
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="model folder (built if missing)")
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="docqa token budget per forward (default: docqa's own, 1536 on CPU, 131072 on GPU)")
    ap.add_argument("--threads", type=int, default=usable_cores(), help="torch threads (default: usable cores)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: engine, raw, e2e and pipeline run there")
    ap.add_argument("--dtype", default="float32", help="docqa dtype: float32 (default), bfloat16, float16 (GPU)")
    ap.add_argument("--chunk", type=int, default=64, help="items per Engine.run call (the worker's batch, default 64)")
    ap.add_argument("--ref-python", default=DEFAULT_REF_PYTHON, help="python of the transformers 5.2.0 venv")
    ap.add_argument("--pg-host", default="127.0.0.1")
    ap.add_argument("--pg-port", type=int, default=5432)
    ap.add_argument("--pg-user", default="postgres")
    ap.add_argument("--pg-database", default="docqa_bench", help="dropped and created again (default docqa_bench)")
    ap.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="flushed (default db 14)")
    ap.add_argument("--out", type=Path, help="result folder (default bench-out/results/<time>)")
    args = ap.parse_args(argv)

    n_docs = args.docs if args.docs is not None else (2 if args.quick else 6)
    n_q = args.questions if args.questions is not None else (1 if args.quick else 2)
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick else 2)
    args.thread_rows = 2 if args.quick else 4
    args.thread_repeats = 3 if args.quick else 8
    selected = list(args.only) if args.only else [c for c in ALL if c not in args.skip]
    if args.sweep and "sweep" not in selected:
        selected.append("sweep")
    if args.alternatives:
        selected += [n for n in ("ort-fp32", "ort-int8") if n not in selected]
    gpu = args.device.startswith("cuda")
    if gpu:
        for name in ("int8", "raw-int8", "bf16", "raw-bf16", "threads", "roofline", "ort-fp32", "ort-int8"):
            if name in selected:
                selected.remove(name)
                say(f"{name}: skipped on {args.device} (a CPU measurement)")

    from docqa.worker.hardware import CPU_BATCH_TOKENS, GPU_BATCH_TOKENS, cpu_has_bf16

    # The engine's own test: rows are skipped exactly where Engine(dtype="bfloat16") refuses.
    if not gpu and not cpu_has_bf16():
        for name in ("bf16", "raw-bf16", "e2e-bf16"):
            if name in selected:
                selected.remove(name)
                say(f"{name}: skipped (this CPU has no AVX512-BF16/AMX; bfloat16 would be emulated, slower than float32)")

    if args.batch_tokens is None:
        args.batch_tokens = GPU_BATCH_TOKENS if gpu else CPU_BATCH_TOKENS

    out = args.out or REPO / "bench-out" / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    if not (args.model / "config.json").exists():
        say(f"building the benchmark model in {args.model} ...")
        subprocess.run([sys.executable, str(HERE / "build_full_model.py"), "--out", str(args.model)], check=True)

    docs = corpus.select_documents(n_docs, n_q)
    spec = {
        "model": str(args.model), "threads": args.threads, "batch_tokens": args.batch_tokens, "chunk": args.chunk,
        "rounds": args.rounds,
        "device": args.device, "dtype": args.dtype,
        "pg_host": args.pg_host, "pg_port": args.pg_port, "pg_user": args.pg_user, "pg_database": args.pg_database,
        "redis_url": args.redis_url, "workdir": str(out),
        "submit_questions": 5 if args.quick else 25, "producer_repeats": 2 if args.quick else 3,
        "sweep_budgets": [384, 1536, 3072, 8192, 16384], "sweep_windows": 16 if args.quick else 32,
        "documents": [{"name": d.name, "title": d.title, "text": d.text, "questions": list(d.questions)} for d in docs],
    }
    workload = {"documents": len(docs), "items": sum(len(d.questions) for d in docs),
                "chars": sum(len(d.text) for d in docs), "digest": corpus.workload_digest(docs),
                "names": [d.name for d in docs]}
    say(f"workload {workload['digest']}: {workload['documents']} documents, {workload['items']} questions, "
        f"{workload['chars']:,} chars; configurations: {', '.join(selected)}; results in {out}")

    runner = Runner(args, out, spec)
    plan = {
        "pipeline-bs1": ("pipeline", args.ref_python, {"batch_size": 1}),
        "pipeline-bs8": ("pipeline", args.ref_python, {"batch_size": 8}),
        "engine": ("engine", sys.executable, {}),
        "raw": ("raw", sys.executable, {}),
        "e2e": ("e2e", sys.executable, {}),
        "int8": ("engine", sys.executable, {"quantize": "int8"}),
        "raw-int8": ("raw", sys.executable, {"quantize": "int8"}),
        "bf16": ("engine", sys.executable, {"dtype": "bfloat16"}),
        "raw-bf16": ("raw", sys.executable, {"dtype": "bfloat16"}),
        "e2e-bf16": ("e2e", sys.executable, {"dtype": "bfloat16"}),
        "rerun": ("rerun", sys.executable, {}),
        "producer": ("producer", sys.executable, {}),
        "sweep": ("sweep", sys.executable, {}),
        "overhead": ("overhead", sys.executable, {}),
        "roofline": ("roofline", sys.executable, {}),
        "ort-fp32": ("ort", str(args.ort_python), {}),
        "ort-int8": ("ort", str(args.ort_python), {"quantize": "int8"}),
    }
    res: dict = {}
    if any(n.startswith("ort-") for n in selected):
        say(f"[{time.perf_counter() - started:6.0f} s] ort-export (once, cached)")
        res["ort-export"] = runner.child("ort-export", "ort-export", str(args.ort_python), {},
                                         env_extra=child_env("ort-export", str(args.ort_python), args))
        if "error" in res["ort-export"]:
            for n in ("ort-fp32", "ort-int8"):
                if n in selected:
                    selected.remove(n)
                    res[n] = {"error": "ONNX export failed: " + res["ort-export"]["error"]}

    rounded = [n for n in ROUNDED if n in selected]
    once = [n for n in selected if n not in ROUNDED]
    rounds: dict[str, list] = {n: [] for n in rounded}
    for k in range(args.rounds):
        order = rounded[k % len(rounded):] + rounded[: k % len(rounded)] if rounded else []
        for name in order:
            say(f"[{time.perf_counter() - started:6.0f} s] round {k + 1}/{args.rounds}: {name}")
            config, python, extra = plan[name]
            r = runner.child(f"{name}.r{k + 1}", config, python, extra, env_extra=child_env(name, python, args))
            rounds[name].append(r)
    for name, got in rounds.items():
        res[name] = best_round(got)
    for name in once:
        say(f"[{time.perf_counter() - started:6.0f} s] {name}")
        if name == "threads":
            res["threads"] = run_threads(runner, args)
            continue
        config, python, extra = plan[name]
        res[name] = runner.child(name, config, python, extra, env_extra=child_env(name, python, args))
    for name in ("raw", "engine"):
        if (res.get(name) or {}).get("windows"):
            workload["windows"] = res[name]["windows"]
            break

    report = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(), "versions": versions(args), "workload": workload,
        "settings": {"threads": args.threads, "batch_tokens": args.batch_tokens, "device": args.device,
                     "dtype": args.dtype, "chunk": args.chunk, "model": str(args.model), "rounds": args.rounds},
        "results": res, "total_s": time.perf_counter() - started,
    }
    report["summary"] = summarize(res, args)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    md = markdown(report)
    (out / "results.md").write_text(md)
    say("")
    say(md)
    say(f"total {report['total_s']:.0f} s; {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
