"""Whether anyone can answer a model's jobs: a producer refuses to queue work for a model
that neither this host can load nor a live worker serves (a mistyped --model), instead of
queueing jobs that wait forever."""

from __future__ import annotations

from docqa.core.errors import UsageError

from collections import Counter
from typing import TYPE_CHECKING

from docqa.core.labels import model_label

if TYPE_CHECKING:
    from docqa.storage.repository import Repository


class UnservedModel(UsageError):
    """No live worker serves the model and this host cannot load it; the message says what to do."""


def served_models(repo: Repository, seen_within: float) -> Counter:
    """Live workers per model label ('model' or 'model@revision')."""
    return Counter(w.model for w in repo.live_workers(seen_within=seen_within))


def describe_served(served: Counter) -> str:
    """'live workers serve: 'a' (2 workers), 'b' (1 worker)' or 'no worker is live'."""
    if not served:
        return "no worker is live"
    return "live workers serve: " + ", ".join(
        f"{label!r} ({n} worker{'s' if n != 1 else ''})" for label, n in sorted(served.items()))


def check_model_served(repo: Repository, model: str, revision: str | None, *, seen_within: float) -> None:
    """Return when a live worker serves `model` (at `revision`) or this host can load it;
    else raise UnservedModel naming the models live workers serve."""
    from docqa.core.loading import ModelLoadError, check_model_available

    label = model_label(model, revision)
    served = served_models(repo, seen_within)
    if served[label]:
        return
    try:
        check_model_available(model, revision)
    except ModelLoadError as exc:
        raise UnservedModel(
            f"no live worker serves model {label!r} ({describe_served(served)}) and this host cannot load it "
            f"({exc}). Jobs for it would wait for a worker that never comes: check --model (DOCQA_MODEL), start "
            f"'docqa worker --model {model}', or pass --no-model-check if this producer cannot see the model and "
            "its workers are on their way"
        ) from None
