"""Where a model comes from, and why it cannot be loaded: see docqa.core.loading (shared
with the producer, which loads the model's tokenizer without torch)."""

from docqa.core.loading import (  # noqa: F401
    ModelLoadError,
    _not_loadable,
    check_model_available,
    hub_offline,
    hub_unreachable,
    locate_model,
    looks_like_path,
)
