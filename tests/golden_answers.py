"""Comparing docqa's answers with the goldens transformers 5.2.0's pipeline gave
(tests/golden/*.json, made by tests/golden/make_golden.py), shared by the engine, CLI,
worker and drop-in tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
FAMILIES = Path(__file__).resolve().parent / "fixtures" / "families"

# Families whose 5.2.0 tokenizer class fed the model other than the checkpoint's
# tokenizer.json says (XLM-R: one separator; ALBERT, XLNet, ElectraTokenizer: no token
# types): their 5.2.0 goldens are docqa's answers under pair_template transformers-5.2.
FAMILY_TEMPLATE = dict.fromkeys(("xlm-roberta", "albert", "xlnet", "electra"), "transformers-5.2")


def family_goldens(folder: str = "families") -> dict[str, dict]:
    """name -> golden document, for every family that has goldens in tests/golden/`folder`
    (families: transformers 5.2.0's; families-4.57: transformers 4.57.6's, for the families
    whose 5.2.0 answers differ from what their checkpoint says)."""
    return {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted((GOLDEN_DIR / folder).glob("*.json"))}


def stored_goldens() -> dict[str, dict]:
    """What answers stored with provenance must equal: 5.2.0's, except for a context-first
    family, whose spans 5.2.0 let fall outside the context (offsets like 54:0): there, 5.2.0's
    arithmetic with only context tokens selectable (make_golden.py --context-only)."""
    return {**family_goldens(), **family_goldens("families-context-only")}


def family_params(name: str, params: dict) -> dict:
    """A golden case's parameters as docqa takes them for family `name`."""
    template = FAMILY_TEMPLATE.get(name)
    return {**params, "pair_template": template} if template else dict(params)


def assert_reference_answers(got: list[tuple[str, int, int, float]], case: dict) -> None:
    """`got` ((text, start, end, score) best first) are the reference's answers for `case`.

    Answers with a positive score must be the reference's, in its order, scores within
    1e-4. Zero-score "filler" spans (contexts of a few tokens at a large top_k) are the
    reference's ties in np.argpartition, whose order depends on the CPU numpy dispatches
    to; docqa makes the same call, so across machines only the filler's presence may differ.
    """
    want = [(a["answer"], a["start"], a["end"], a["score"]) for a in case["answers"]]
    got_pos = [g for g in got if g[3] > 0]
    want_pos = [w for w in want if w[3] > 0]
    assert [g[:3] for g in got_pos] == [w[:3] for w in want_pos], case["id"]
    assert got[: len(got_pos)] == got_pos, "filler answers come after every scored answer"
    for (*_, score), (*_, ref) in zip(got_pos, want_pos):
        assert score == pytest.approx(ref, rel=1e-4, abs=1e-12), case["id"]
    fillers = got[len(got_pos) :]
    assert len(got) <= case["params"]["top_k"]
    assert all(score == 0.0 for *_, score in fillers)
    if len(fillers) == len(want) - len(want_pos):
        assert [g[:3] for g in fillers] == [w[:3] for w in want[len(want_pos) :]], case["id"]
    for text, start, end, _ in got:
        assert case["context"][start:end] == text
