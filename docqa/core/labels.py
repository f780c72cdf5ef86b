"""The model label stored with every answer: which model, which revision, how computed."""

from __future__ import annotations

# Precisions that are named in the label; float32 (the reference's arithmetic) is not.
LABELLED_PRECISIONS = ("int8", "bfloat16", "float16")


def model_label(model: str, revision: str | None = None, precision: str | None = None) -> str:
    """'model', 'model@revision', plus '+int8' / '+bfloat16' / '+float16' when the answers
    were not computed in float32 (they can differ from the reference's then)."""
    label = f"{model}@{revision}" if revision else model
    return f"{label}+{precision}" if precision in LABELLED_PRECISIONS else label


def queue_for(queue: str, model: str, revision: str | None = None) -> str:
    """The broker queue of one model and revision: `<queue>.<model name>-<8 hex>`.

    Jobs wait on their model's queue until a worker serving that model takes them (a
    worker consumes only its own model's queue), instead of being taken and failed by a
    worker of another model. The hash keeps two models with the same folder name, or two
    revisions, apart; the readable part is the model id's last path component.
    """
    import hashlib
    import re

    label = model_label(model, revision)
    tail = model.rstrip("/").rsplit("/", 1)[-1] or "model"
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "-", tail)[:60]
    return f"{queue}.{readable}-{hashlib.sha1(label.encode('utf-8')).hexdigest()[:8]}"
