"""The engine's host time per window, the forward left out: what a GPU worker's CPU must do
for every window (building batches, ranking spans, merging answers) however fast the GPU.

    . .venv/bin/activate
    python benchmarks/build_full_model.py      # once
    python benchmarks/host_cost.py             # 20 corpus documents x 2 questions, best of 7

The model's forward is replaced by random logits of the right shape, so what is timed is
the engine around it, with documents tokenized beforehand (as the producer's plans give a
worker). Both span paths: "numpy" (the CPU default: every window's logits ranked on the
host) and "device" (the GPU default: spans ranked by torch where the logits are; here on
the CPU, so this row also holds the ranking a GPU would do). Compare rows of one run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(HERE.parent / "bench-out" / "full-distilbert-qa"),
                        help="model folder (benchmarks/build_full_model.py)")
    parser.add_argument("--docs", type=int, default=20, help="corpus documents (2 questions each)")
    parser.add_argument("--rounds", type=int, default=7, help="timed runs per span path (the best counts)")
    args = parser.parse_args(argv)

    import torch
    from corpus import select_documents

    from docqa.core.params import AnswerParams
    from docqa.core.windows import tokenize_documents
    from docqa.worker.engine import Engine, QAItem

    class Logits:
        def __init__(self, start, end) -> None:
            self.start_logits, self.end_logits = start, end

    docs = select_documents(args.docs, 2)
    for span_path in ("numpy", "device"):
        engine = Engine(args.model, device="cpu", span_path=span_path, batch_tokens=8192).warm_up()
        tokens = tokenize_documents(engine.tokenizer, [d.text for d in docs])
        items = [QAItem(d.text, q, AnswerParams(), tokens=t) for d, t in zip(docs, tokens) for q in d.questions]
        gen = torch.Generator().manual_seed(0)
        engine._forward = lambda inputs: Logits(torch.randn(inputs["input_ids"].shape, generator=gen),
                                                torch.randn(inputs["input_ids"].shape, generator=gen))
        engine.run(items[:4])
        best, windows = float("inf"), 0
        for _ in range(args.rounds):
            before = engine.windows_run
            started = time.perf_counter()
            engine.run(items)
            windows = engine.windows_run - before
            best = min(best, time.perf_counter() - started)
        print(f"span path {span_path}: {windows} windows, best {best * 1e3:.1f} ms: "
              f"{best * 1e3 / windows:.4f} ms per window on the host (at most {windows / best:,.0f} windows/s "
              "per worker process, whatever the device)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
