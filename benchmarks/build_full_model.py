"""Build a full-size DistilBERT question-answering model for benchmarks (random weights).

    . .venv/bin/activate
    python benchmarks/build_full_model.py            # -> bench-out/full-distilbert-qa/

Model weights cannot be downloaded here, so the benchmarks use a model with the exact
shape of `distilbert-base-cased-distilled-squad` (6 layers, dim 768, 12 heads, FFN 3072,
vocabulary 28,996, 512 positions, learned position embeddings, GELU): its compute per
window equals the real model's, only its answers are meaningless. The weights are
random (fixed seed); the QA head is then rescaled so start/end logits spread over
several units (std TARGET_LOGIT_STD over a window's tokens), so answers are decided by
clear margins rather than float noise, as in the real fine-tuned model.

The tokenizer is a real cased WordPiece vocabulary of 28,996 tokens, trained on the
benchmark prose (all of the Python documentation sources from `python3.11-doc`, see
benchmarks/corpus.py). The `tokenizers` Rust WordPiece trainer is not deterministic
(it numbers the "##" alphabet in hash-map order and breaks count ties by those
numbers), so the merge loop runs in Python with ties broken by the pair's strings
(tests/fixtures/wordpiece.py, shared with the tests' tiny model); normalizer and
pre-tokenizer are the `tokenizers` Bert ones (cased, accents kept), so words are split
exactly as BERT does. Special tokens and the pair template follow BERT:
`[CLS] question [SEP] context [SEP]`, token types 0/1.

The folder (outside git: /bench-out/ is ignored) loads with AutoTokenizer /
AutoModelForQuestionAnswering in transformers 5.2.0 and 5.3+, and runs in 5.2.0's
`pipeline("question-answering")`. A `docqa-bench.json` stamp records how it was built;
the script does nothing when the stamp matches (use --force to rebuild).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The WordPiece trainer lives with the tests' fixture builder, which must not depend on
# benchmarks/ (the tests and CI never need it).
sys.path.insert(0, str(REPO / "tests" / "fixtures"))

import corpus  # noqa: E402
import wordpiece  # noqa: E402

DEFAULT_OUT = REPO / "bench-out" / "full-distilbert-qa"

SEED = 1_310_2025
VOCAB_SIZE = 28_996  # distilbert-base-cased
# distilbert-base-cased's architecture.
CONFIG = dict(
    vocab_size=VOCAB_SIZE,
    max_position_embeddings=512,
    sinusoidal_pos_embds=False,
    n_layers=6,
    n_heads=12,
    dim=768,
    hidden_dim=3072,
    dropout=0.1,
    attention_dropout=0.1,
    qa_dropout=0.1,
    activation="gelu",
    initializer_range=0.02,
    pad_token_id=0,
    tie_weights_=True,
)
TARGET_LOGIT_STD = 4.0
BUILD_VERSION = 1  # bump when the recipe changes: the stamp then forces a rebuild


# -- tokenizer ----------------------------------------------------------------------------
def make_tokenizer(vocab: list[str]):
    """A transformers fast tokenizer (BERT cased, WordPiece) over `vocab` (id = index)."""
    return wordpiece.fast_tokenizer({t: i for i, t in enumerate(vocab)})


def check_tokenizer(tok, vocab: list[str], samples: list[str]) -> None:
    """The wrapped tokenizer must split exactly like the `tokenizers` BERT pipeline over the
    vocab (ids and offsets, special tokens aside) and frame a pair as BERT does."""
    raw = wordpiece.bert_tokenizer({t: i for i, t in enumerate(vocab)})
    assert tok.vocab_size == len(vocab) == VOCAB_SIZE, (tok.vocab_size, len(vocab))
    assert tok.is_fast and tok.padding_side == "right"
    for text in samples:
        a = raw.encode(text, add_special_tokens=False)
        b = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        assert a.ids == b["input_ids"], text[:80]
        assert [tuple(o) for o in a.offsets] == [tuple(o) for o in b["offset_mapping"]], text[:80]
    pair = tok("Who?", "It is.")
    assert tok.convert_ids_to_tokens(pair["input_ids"])[0] == "[CLS]"
    # [CLS] question [SEP] context [SEP]; how many pieces each side has depends on the
    # vocabulary, which depends on the corpus package's version.
    q, c = (len(tok(t, add_special_tokens=False)["input_ids"]) for t in ("Who?", "It is."))
    assert pair.sequence_ids() == [None] + [0] * q + [None] + [1] * c + [None], pair.sequence_ids()


# -- model --------------------------------------------------------------------------------
def make_model(tok, probes: list[str]):
    import torch
    from transformers import DistilBertConfig, DistilBertForQuestionAnswering

    torch.manual_seed(SEED)
    model = DistilBertForQuestionAnswering(DistilBertConfig(**CONFIG)).eval()
    enc = tok(["What is it used for?"] * len(probes), probes, truncation="only_second", max_length=384,
              padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.distilbert(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0]
        logits = model.qa_outputs(hidden)
        mask = enc["attention_mask"].bool()
        std = torch.stack([logits[..., k][mask].std() for k in range(2)])
        scale = TARGET_LOGIT_STD / std
        model.qa_outputs.weight.mul_(scale[:, None])
        model.qa_outputs.bias.mul_(scale)
    return model


def separation(model, tok, probes: list[str]) -> tuple[float, float]:
    """(min, median) ratio of best to second-best span score on probe windows."""
    import numpy as np
    import torch

    ratios = []
    for ctx in probes:
        enc = tok("How does it work?", ctx, truncation="only_second", max_length=384, return_tensors="pt")
        with torch.no_grad():
            out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        ok = np.array([s == 1 for s in enc.sequence_ids(0)])
        p = []
        for logits in (out.start_logits[0], out.end_logits[0]):
            x = np.where(ok, logits.numpy().astype(np.float64), -1e4)
            e = np.exp(x - x.max())
            p.append(e / e.sum())
        scores = np.tril(np.triu(np.outer(p[0], p[1])), 14).ravel()
        top = np.sort(scores)[-2:]
        ratios.append(top[1] / top[0])
    return float(np.min(ratios)), float(np.median(ratios))


def folder_digest(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if f.name == "docqa-bench.json":
            continue
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def recipe() -> dict:
    return {"build_version": BUILD_VERSION, "seed": SEED, "vocab_size": VOCAB_SIZE, "config": CONFIG,
            "target_logit_std": TARGET_LOGIT_STD}


def is_current(out: Path) -> bool:
    stamp = out / "docqa-bench.json"
    if not stamp.exists():
        return False
    try:
        return json.loads(stamp.read_text())["recipe"] == json.loads(json.dumps(recipe()))
    except (ValueError, KeyError):
        return False


def build(out: Path, *, force: bool = False, log=print) -> Path:
    if not force and is_current(out):
        log(f"{out} is up to date (use --force to rebuild)")
        return out
    import torch

    random.seed(SEED)
    torch.manual_seed(SEED)
    t0 = time.perf_counter()
    lines = corpus.training_text()
    counts = wordpiece.count_words(lines)
    log(f"training text: {len(lines)} paragraphs, {sum(len(x) for x in lines):,} chars, "
        f"{len(counts):,} distinct words ({time.perf_counter() - t0:.1f} s)")
    vocab = wordpiece.train_wordpiece(counts, VOCAB_SIZE)
    if len(vocab) < VOCAB_SIZE:
        raise SystemExit(f"the prose only supports {len(vocab)} WordPiece tokens, fewer than {VOCAB_SIZE}")
    log(f"WordPiece vocabulary: {len(vocab)} tokens ({time.perf_counter() - t0:.1f} s)")
    tok = make_tokenizer(vocab)
    rng = random.Random(SEED)
    samples = rng.sample(lines, 300) + ["naïve café — “quoted” 北京 emoji 😀 stays unknown"]
    check_tokenizer(tok, vocab, samples)

    docs = corpus.select_documents(8, 1)
    probes = [d.text[i : i + 1500] for d in docs for i in (0, len(d.text) // 2)]
    model = make_model(tok, probes)
    lo, mid = separation(model, tok, probes)
    log(f"model built; best/second span score ratio on {len(probes)} probes: min {lo:.2f}, median {mid:.2f} "
        f"({time.perf_counter() - t0:.1f} s)")

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # Earlier calls left truncation/padding state on the backend; don't save it.
    tok.backend_tokenizer.no_truncation()
    tok.backend_tokenizer.no_padding()
    tok.save_pretrained(out)
    model.save_pretrained(out, safe_serialization=True)
    n_params = sum(p.numel() for p in model.parameters())
    (out / "docqa-bench.json").write_text(json.dumps({
        "recipe": recipe(),
        "parameters": n_params,
        "sha256": folder_digest(out),
        "note": "random weights with distilbert-base-cased's shape; built by benchmarks/build_full_model.py",
    }, indent=1))
    log(f"wrote {out}: {n_params:,} parameters, "
        f"{sum(f.stat().st_size for f in out.iterdir()) / 2**20:.0f} MiB ({time.perf_counter() - t0:.1f} s)")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    ap.add_argument("--force", action="store_true", help="rebuild even when the folder is current")
    args = ap.parse_args(argv)
    build(args.out, force=args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
