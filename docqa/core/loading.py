"""Finding a model before loading it: cheap checks and the one sentence for a model that
cannot be had. No torch, no numpy: `docqa run` calls this before it decides whether any
model is needed at all.

A model is a local folder or a Hugging Face hub id. Which problem stops it is said plainly:
a path that does not exist, a folder that holds no model, a hub that cannot be reached (a
short probe, instead of the hub client's retries of half a minute and more), or a hub id the
hub does not have. A hub model already in the local cache loads from there, without asking
the hub, when the hub cannot be reached.
"""

from __future__ import annotations

from docqa.core.errors import DocqaError, first_line

import functools
import os
import threading

from docqa.core.labels import model_label


class ModelLoadError(DocqaError, RuntimeError):
    """The model or tokenizer could not be loaded; the message says what to do."""


# How long the hub may take to answer the reachability probe, seconds.
HUB_PROBE_SECONDS = 3.0
# Files of which a saved model holds at least one (safetensors, or torch's pickles; sharded or not).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# The way out, at the end of every message.
_ADVICE = "pass --model PATH to a folder written by save_pretrained, or a hub id such as org/name (or set DOCQA_MODEL)"


def looks_like_path(model: str) -> bool:
    """Whether `model` is written as a file-system path rather than a hub id ('org/name' or 'name')."""
    return (
        os.path.isabs(model)
        or model.startswith(("./", "../", "~", ".\\", "..\\"))
        or model in (".", "..")
        or "\\" in model
        or model.endswith("/")
        or model.count("/") > 1
    )


def hub_offline() -> bool:
    """Whether the hub must not be asked (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE set)."""
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(flag in ("1", "true", "yes", "on") for flag in flags)


@functools.lru_cache(maxsize=4)
def hub_unreachable(endpoint: str | None = None, timeout: float = HUB_PROBE_SECONDS) -> str | None:
    """None when the hub answers an HTTP request within `timeout` seconds; else why not.

    One request, no retries, through the hub client's own HTTP session (its proxies and
    headers); run in a thread so a resolver that hangs cannot hold the caller longer.
    Remembered for the life of the process (a model is loaded once).
    """
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    url = endpoint or constants.ENDPOINT
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            get_session().head(url, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 (DNS failure, refused, timeout, TLS: all mean unreachable)
            outcome.append(first_line(exc))
        else:
            outcome.append(None)

    thread = threading.Thread(target=probe, name="docqa-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 1.0)
    if not outcome:
        return f"no answer within {timeout + 1.0:.0f} s"
    return outcome[0]


def _in_cache(model: str, revision: str | None) -> bool:
    """Whether the hub model's config.json is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(model, "config.json", revision=revision), str)
    except Exception:  # noqa: BLE001 (an id the hub client refuses, HFValidationError: not cached)
        return False


def locate_model(model: str, revision: str | None = None) -> bool:
    """Check that `model` can be had, fast; True when it must be loaded from local files only
    (a hub model in the local cache while the hub cannot be reached or must not be asked).

    Raises ModelLoadError saying which: the path does not exist, the folder holds no model,
    the hub cannot be reached and the model is not cached, or offline and not cached.
    """
    label = model_label(model, revision)
    if os.path.isdir(model):
        _check_model_folder(model, label)
        return False
    if os.path.exists(model):
        raise ModelLoadError(f"could not load the model {label!r}: it is a file, not a model folder: {_ADVICE}")
    if looks_like_path(model):
        raise ModelLoadError(
            f"could not load the model {label!r}: there is no such folder ({os.path.abspath(model)} does not exist): "
            f"{_ADVICE}"
        )
    from huggingface_hub import constants

    cached = _in_cache(model, revision)
    if hub_offline():
        if cached:
            return True
        raise ModelLoadError(
            f"could not load the model {label!r}: it is not a local folder, and it is not in the local Hugging Face "
            f"cache ({constants.HF_HUB_CACHE}) while HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE forbid asking the hub. "
            f"Unset those and connect once to download it, or {_ADVICE}"
        )
    reason = hub_unreachable(constants.ENDPOINT)
    if reason is None:
        return False
    if cached:
        return True  # the hub cannot be reached, but the cache has the model: load it from there
    raise ModelLoadError(
        f"could not load the model {label!r}: it is not a local folder, the Hugging Face hub at {constants.ENDPOINT} "
        f"cannot be reached ({reason}), and the model is not in the local cache ({constants.HF_HUB_CACHE}). Connect "
        f"once so it can be downloaded (it then loads offline), set HF_ENDPOINT to a reachable mirror, or {_ADVICE}"
    )


def _check_model_folder(path: str, label: str) -> None:
    """ModelLoadError unless the folder holds a config.json and weights."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise ModelLoadError(
            f"could not load the local folder {label!r}: it holds no model (no config.json, so it is not a "
            f"saved model): {_ADVICE}"
        )
    names = set(os.listdir(path))
    if not names & set(WEIGHT_FILES) and not any(n.endswith(".safetensors") for n in names):
        raise ModelLoadError(
            f"could not load the local folder {label!r}: it holds no model weights (a config.json, but no "
            f"{' or '.join(WEIGHT_FILES[::2])}): {_ADVICE}"
        )


def check_model_available(model: str, revision: str | None = None) -> None:
    """Fail fast, without importing torch, when `model` is neither a local model folder nor
    on the hub (or in its local cache). Raises ModelLoadError with the same advice as warm_up."""
    label = model_label(model, revision)
    if locate_model(model, revision) or os.path.isdir(model):
        return
    from huggingface_hub import hf_hub_download

    try:
        hf_hub_download(model, "config.json", revision=revision)
    except Exception as exc:  # noqa: BLE001 (not found, bad revision, invalid id)
        raise ModelLoadError(_not_loadable(model, label, exc)) from None


def _not_loadable(model: str, label: str, exc: BaseException) -> str:
    """The one sentence shown when a model can be neither found locally nor downloaded."""
    where = "local folder" if os.path.isdir(model) else "model"
    return (
        f"could not load the {where} {label!r}: it is not a local folder holding a "
        f"question-answering model, and it could not be downloaded from the Hugging Face hub "
        f"({first_line(exc)}). Pass --model PATH to a local folder (or set DOCQA_MODEL), or "
        f"connect once so the model can be downloaded."
    )

