"""The model label stored with every answer: which model, which revision, how computed."""

from __future__ import annotations

# Precisions that are named in the label; float32 (the reference's arithmetic) is not.
LABELLED_PRECISIONS = ("int8", "bfloat16", "float16")


def model_label(model: str, revision: str | None = None, precision: str | None = None) -> str:
    """'model', 'model@revision', plus '+int8' / '+bfloat16' / '+float16' when the answers
    were not computed in float32 (they can differ from the reference's then)."""
    label = f"{model}@{revision}" if revision else model
    return f"{label}+{precision}" if precision in LABELLED_PRECISIONS else label
