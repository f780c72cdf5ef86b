"""Finding a model before loading it: cheap checks and the one sentence for a model that
cannot be had. No torch, no numpy: `docqa run` calls this before it decides whether any
model is needed at all."""

from __future__ import annotations

import os

from docqa.core.labels import model_label


class ModelLoadError(RuntimeError):
    """The model or tokenizer could not be loaded; the message says what to do."""


def check_model_available(model: str, revision: str | None = None) -> None:
    """Fail fast, without importing torch, when `model` is neither a local model folder nor
    on the hub (or in its local cache). Raises ModelLoadError with the same advice as warm_up."""
    label = model_label(model, revision)
    if os.path.isdir(model):
        if not os.path.isfile(os.path.join(model, "config.json")):
            raise ModelLoadError(
                f"could not load the local folder {label!r}: it has no config.json, so it is not a "
                "saved model. Pass --model PATH to a folder written by save_pretrained (or set DOCQA_MODEL)."
            )
        return
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model, "config.json", revision=revision)
    except Exception as exc:  # not found, offline and not cached, bad revision, invalid id
        raise ModelLoadError(_not_loadable(model, label, exc)) from None


def _not_loadable(model: str, label: str, exc: BaseException) -> str:
    """The one sentence shown when a model can be neither found locally nor downloaded."""
    where = "local folder" if os.path.isdir(model) else "model"
    return (
        f"could not load the {where} {label!r}: it is not a local folder holding a "
        f"question-answering model, and it could not be downloaded from the Hugging Face hub "
        f"({_first_line(exc)}). Pass --model PATH to a local folder (or set DOCQA_MODEL), or "
        f"connect once so the model can be downloaded."
    )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
