"""docqa: extractive question answering over long documents, with the answers
transformers' removed `question-answering` pipeline gave.

The Python API:

- `docqa.ask(text, questions, model=..., **answer_params)` answers in this process and
  returns one `QuestionAnswers` per question (typed `Answer`s with character offsets).
- `docqa.pipeline("question-answering", model=...)` is a drop-in for transformers 5.2.0's
  pipeline: same call forms, same `{"score", "start", "end", "answer"}` results.
- `docqa.Client(database_url=..., broker_url=...)` submits documents to the store (answered
  in process, or by workers), follows a `Submission` and reads answers with provenance.
- `Answer`, `AnswerParams`, `QuestionAnswers`, `Settings` are the types.

Names are loaded on first use, so `import docqa` stays cheap (no torch).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

__all__ = ["Answer", "AnswerParams", "Client", "QuestionAnswers", "Settings", "Submission", "__version__", "ask",
           "pipeline"]

_EXPORTS = {
    "ask": "docqa.api",
    "Client": "docqa.client",
    "Submission": "docqa.client",
    "pipeline": "docqa.pipelines",
    "Answer": "docqa.core.answer",
    "QuestionAnswers": "docqa.core.answer",
    "AnswerParams": "docqa.core.params",
    "Settings": "docqa.core.settings",
}

if TYPE_CHECKING:
    from docqa.api import ask
    from docqa.client import Client, Submission
    from docqa.core.answer import Answer, QuestionAnswers
    from docqa.core.params import AnswerParams
    from docqa.core.settings import Settings
    from docqa.pipelines import pipeline


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'docqa' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
