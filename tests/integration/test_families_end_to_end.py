"""Every model family through the command line and through real workers: the answers of
transformers 5.2.0 (tests/golden/families; for the context-first XLNet, 5.2.0's with only
context tokens selectable, tests/golden/families-context-only), as the engine gives them
(tests/worker/test_families.py).

The goldens' "batch" cases share one set of parameters over four documents and two
questions: one `docqa run` (embedded) or one `docqa submit` to a worker per family.
"""

from __future__ import annotations

import json
import os

import pytest
from golden_answers import FAMILIES, FAMILY_TEMPLATE, assert_reference_answers, stored_goldens
from support import docqa, open_repo, wait_for

pytestmark = pytest.mark.slow

GOLDENS = stored_goldens()  # XLNet: its spans inside the context (tests/golden/families-context-only)


def batch_cases(name: str) -> list[dict]:
    return [c for c in GOLDENS[name]["cases"] if c["category"] == "batch"]


def write_batch(name: str, folder) -> tuple[list[str], list[str]]:
    """The family's batch documents as files (bytes as they are) and its CLI arguments."""
    cases = batch_cases(name)
    params = cases[0]["params"]
    assert all(c["params"] == params for c in cases)
    folder.mkdir(parents=True)
    paths = []
    for i, context in enumerate(dict.fromkeys(c["context"] for c in cases)):
        path = folder / f"doc{i}.txt"
        path.write_bytes(context.encode("utf-8"))
        paths.append(str(path))
    args = ["--model", str(FAMILIES / name), "--top-k", str(params["top_k"]),
            "--handle-impossible-answer" if params["handle_impossible_answer"] else "--no-handle-impossible-answer"]
    if name in FAMILY_TEMPLATE:
        args += ["--pair-template", FAMILY_TEMPLATE[name]]
    for question in dict.fromkeys(c["question"] for c in cases):
        args += ["-q", question]
    return paths, args


def stored_answers(env: dict, database_url: str) -> list[dict]:
    out = docqa(["results", "--all-ranks", "--format", "jsonl", "--database-url", database_url], env)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def check_results(name: str, paths: list[str], rows: list[dict]) -> None:
    got: dict[tuple[str, str], list] = {}
    for r in rows:
        if r["document_source"] in paths:  # the store may hold other families' documents
            got.setdefault((r["document_source"], r["question"]), []).append(r)
    by_text = {open(p, "rb").read().decode("utf-8"): p for p in paths}
    cases = batch_cases(name)
    assert len(got) == len(cases), sorted(got)
    for case in cases:
        rows = sorted(got[(by_text[case["context"]], case["question"])], key=lambda r: r["rank"])
        assert_reference_answers([(r["text"], r["char_start"], r["char_end"], r["score"]) for r in rows], case)


@pytest.mark.parametrize("name", sorted(GOLDENS))
def test_docqa_run_gives_the_5_2_answers(name, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DOCQA_DEVICE": "cpu"}
    paths, args = write_batch(name, tmp_path / "docs")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    run = docqa(["run", *paths, *args, "--database-url", url], env)
    assert run.returncode == 0, run.stderr
    check_results(name, paths, stored_answers(env, url))


@pytest.mark.services
def test_workers_of_every_family_give_the_5_2_answers(distributed_env, workers, tmp_path):
    """One real worker per family, all at once on one broker and one store; each family's
    jobs reach its own model's queue and come back with 5.2.0's answers."""
    env = distributed_env
    batches = {}
    for name in sorted(GOLDENS):
        batches[name] = write_batch(name, tmp_path / name)
        workers.start(1, extra=["--model", str(FAMILIES / name)])
    for paths, args in batches.values():
        submitted = docqa(["submit", *paths, *args], env)
        assert submitted.returncode == 0, submitted.stderr
    repo = open_repo(env["DOCQA_DATABASE_URL"])
    total = sum(len(batch_cases(name)) for name in batches)
    wait_for(lambda: repo.counts()["done"] == total, timeout=300, what=f"{total} jobs done", logs=workers.logs)
    assert repo.counts()["failed"] == 0
    rows = stored_answers(env, env["DOCQA_DATABASE_URL"])
    for name, (paths, _args) in batches.items():
        check_results(name, paths, rows)
