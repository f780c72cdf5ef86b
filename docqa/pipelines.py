"""`pipeline("question-answering", ...)`: a drop-in for transformers 5.2.0's removed pipeline.

    from docqa import pipeline            # was: from transformers import pipeline
    qa = pipeline("question-answering", model="distilbert/distilbert-base-cased-distilled-squad")
    qa(question="Who?", context="...")    # {"score": float, "start": int, "end": int, "answer": str}

The answers come from docqa's engine (`docqa.worker.engine.Engine`), which reproduces the
5.2.0 arithmetic (windows, masked softmax, span selection with the same numpy calls, word
alignment, case-insensitive merge); this module reproduces the calling conventions.

Call forms (keywords only, as in 5.2.0):
  * question=str, context=str                -> one result R
  * question=[q1..qn], context=[c1..cn]       -> [R1..Rn]; lengths must match
  * question=[q1..qn], context=str            -> [R1..Rn], the context shared
  * a list of length 1 ([q], [c] or [q], c)   -> R, not [R]
A result R is the answer dict when exactly one answer survives (whatever top_k is), else
the list of answer dicts, best first (so top_k > 1 with several inputs gives a list of
lists). An answer dict is {"score": float, "start": int, "end": int, "answer": str} in
that key order; start/end are Python str offsets into the context (end exclusive), the
score a probability within one window (merged answers add up; not renormalised).

Parameters (to `pipeline()` or at the call; a call's value wins for that call only):
top_k=1, max_answer_len=15 (tokens), handle_impossible_answer=False, align_to_words=True,
max_seq_len=min(tokenizer.model_max_length, 384), doc_stride=min(max_seq_len // 2, 128),
batch_size=1 (windows per forward pass; answers do not depend on it), plus padding,
max_question_len and num_workers, accepted and without effect here (see below). Other
keyword arguments are ignored silently, as 5.2.0 did (e.g. `topk=3`).

Errors reproduced exactly (class and message): "Unknown arguments {...}", "Arguments can't
be understood", "Questions and contexts don't have the same lengths", "`question`/`context`
cannot be None/empty", "top_k parameter should be >= 1 (got N)", "max_answer_len parameter
should be >= 1 (got N)", "`doc_stride` (D) is larger than `max_seq_len` (M)", the invalid
PaddingStrategy ValueError, the batch_size ValueError, and pipeline()'s unknown-task
KeyError and RuntimeErrors (no task and no model; task inference offline or via the Hub;
tokenizer without model).

Accidental low-level errors of 5.2.0 keep their class but say what is wrong and how to fix it:
  * positional arguments: TypeError "...__call__() takes 1 positional argument but N were
    given" followed by the fix (question=..., context=...);
  * question=[] and context=[]: IndexError naming the empty lists;
  * a question that is not a str: ValueError (5.2.0: the tokenizer's "text input must be of
    type `str` ..."); a context that is not a str: TypeError (5.2.0: "'int' object is not
    iterable");
  * top_k / max_answer_len / max_seq_len / doc_stride of a wrong type: TypeError naming the
    parameter (5.2.0: "'<' not supported ...", numpy's "Partition index must be integer", ...);
    a float top_k >= 1 is a TypeError in both; an integral float max_answer_len (3.0) is
    accepted, a fractional one (2.5) is a TypeError here (5.2.0 silently used floor);
  * negative doc_stride: OverflowError naming doc_stride (5.2.0: "can't convert negative int
    to unsigned");
  * doc_stride > max_seq_len - (special tokens of one sequence): ValueError starting with the
    tokenizer's "tokenizer stride set to ..." and saying what to change;
  * a question too long for max_seq_len: plain Exception starting with the tokenizer's
    "Truncation error: Sequence to truncate too short ..." plus the numbers;
  * model object without tokenizer: TypeError "...__init__() missing 1 required positional
    argument: 'tokenizer'" plus the fix.

Deliberately different from 5.2.0:
  * doc_stride not smaller than a window's context room when a context needs several
    windows: ValueError (5.2.0: a Rust panic, pyo3 PanicException, a BaseException that
    `except Exception` does not catch);
  * windows longer than the model takes (max_seq_len above its limit and an input that long):
    RuntimeError naming the numbers (5.2.0: torch's "The size of tensor a ... must match");
    max_seq_len above the limit with inputs that fit is accepted, as in 5.2.0;
  * max_seq_len < 1: ValueError (5.2.0 ignored 0, meaning no truncation);
  * a tokenizer that cannot be loaded raises its own error (5.2.0 swallowed it and then
    failed with the missing-tokenizer TypeError);
  * fast (Rust) tokenizers only: a slow tokenizer is a ValueError (5.2.0 had a slow-tokenizer
    path); `use_fast=False` still loads the fast tokenizer, with a warning. max_question_len
    (slow path only) is ignored, as with any fast tokenizer in 5.2.0. A left-padding
    tokenizer (XLNet) puts the context first, as 5.2.0 did;
  * a tokenizer given by name is loaded under docqa's tokenizer contract (the checkpoint's
    tokenizer.json and pair template: docqa.core.tokenizer), not by the installed class;
    `pair_template="transformers-5.2"` (at construction or per call) feeds what 5.2.0's
    classes fed where they differ (XLM-RoBERTa, ALBERT, XLNet, ElectraTokenizer checkpoints);
  * padding="max_length" is validated but windows are padded only to the longest window of
    their batch: answers are the same, scores can move in the ~7th significant digit (as
    they do in 5.2.0 between batch sizes). num_workers has no effect;
  * devices: CPU and CUDA only (other accelerators: ValueError). device=None takes cuda:0
    when CUDA is available, else the CPU, as 5.2.0 did;
  * dtype="auto" loads the checkpoint's dtype (as 5.2.0); a model object is used as it is.

Importing this module imports neither torch nor transformers; building a pipeline does.
The module is `docqa.pipelines` (like `transformers.pipelines`), so that the package
attribute `docqa.pipeline` is always the function.
"""

from __future__ import annotations

import logging
import numbers
import threading
from typing import Any

log = logging.getLogger(__name__)

TASK = "question-answering"
DEFAULT_MODEL = "distilbert/distilbert-base-cased-distilled-squad"
DEFAULT_REVISION = "564e9b5"

# The task names transformers 5.2.0's pipeline() knew (its KeyError lists them, with
# 'translation_XX_to_YY'); docqa provides only TASK.
_TASKS_52 = (
    "any-to-any", "audio-classification", "automatic-speech-recognition", "depth-estimation",
    "document-question-answering", "feature-extraction", "fill-mask", "image-classification",
    "image-feature-extraction", "image-segmentation", "image-text-to-text", "image-to-image",
    "keypoint-matching", "mask-generation", "ner", "object-detection", "question-answering",
    "sentiment-analysis", "table-question-answering", "text-classification", "text-generation",
    "text-to-audio", "text-to-speech", "token-classification", "video-classification",
    "visual-question-answering", "vqa", "zero-shot-audio-classification", "zero-shot-classification",
    "zero-shot-image-classification", "zero-shot-object-detection",
)  # fmt: skip

_PADDING = ("longest", "max_length", "do_not_pad")
_PRE_KEYS = ("padding", "doc_stride", "max_question_len", "max_seq_len")


# -- validation: the one place parameters are checked -------------------------------------
def _sanitize_parameters(**kwargs: Any) -> tuple[dict, dict]:
    """(preprocess, postprocess) parameters from keyword arguments, as 5.2.0 split them.

    None means "not given" (the default, or the construction-time value, applies); keys
    that are not parameters are ignored. top_k and max_answer_len are checked here, so a
    bad value fails at pipeline() or at the call that passes it; the window parameters are
    checked at the call (`_window_settings`), once construction and call values are merged.
    """
    pre = {k: kwargs[k] for k in _PRE_KEYS if kwargs.get(k) is not None}
    post: dict[str, Any] = {}
    for key, floats in (("top_k", False), ("max_answer_len", True)):
        if kwargs.get(key) is not None:
            post[key] = _at_least_one(kwargs[key], key, floats=floats)
    for key in ("handle_impossible_answer", "align_to_words"):
        if kwargs.get(key) is not None:
            post[key] = bool(kwargs[key])  # 5.2.0 tested truthiness
    if kwargs.get("pair_template") is not None:  # docqa's own parameter: see docqa.core.tokenizer
        post["pair_template"] = _pair_template(kwargs["pair_template"])
    return pre, post


def _at_least_one(value: Any, name: str, *, floats: bool) -> int:
    """top_k / max_answer_len: a number below 1 is 5.2.0's ValueError; then `_whole`."""
    if isinstance(value, numbers.Real) and value < 1:
        raise ValueError(f"{name} parameter should be >= 1 (got {value})")
    return _whole(value, name, floats=floats)


def _pair_template(template: Any) -> str:
    from docqa.core.tokenizer import PAIR_TEMPLATES

    if template not in PAIR_TEMPLATES:
        raise ValueError(f"pair_template must be one of {', '.join(PAIR_TEMPLATES)} (got {template!r})")
    return template


def _whole(value: Any, name: str, *, floats: bool) -> int:
    """`value` as an int: ints and bools (True is 1) always, integral floats if `floats`."""
    if isinstance(value, numbers.Integral):
        return int(value)
    if floats and isinstance(value, float) and value.is_integer():
        return int(value)
    raise TypeError(f"{name} must be an int (got {type(value).__name__} {value!r})")


def _window_settings(pre: dict, tokenizer) -> tuple[int, int]:
    """(max_seq_len, doc_stride) for a call, defaults filled in, checked in 5.2.0's order."""
    max_seq_len = pre.get("max_seq_len")
    if max_seq_len is None:
        max_seq_len = min(tokenizer.model_max_length, 384)
    max_seq_len = _whole(max_seq_len, "max_seq_len", floats=False)
    doc_stride = pre.get("doc_stride")
    if doc_stride is None:
        doc_stride = min(max_seq_len // 2, 128)
    doc_stride = _whole(doc_stride, "doc_stride", floats=False)
    if doc_stride > max_seq_len:
        raise ValueError(f"`doc_stride` ({doc_stride}) is larger than `max_seq_len` ({max_seq_len})")
    if doc_stride < 0:
        raise OverflowError(f"doc_stride must be 0 or more (got {doc_stride})")
    if max_seq_len < 1:
        raise ValueError(f"max_seq_len must be at least 1 token (got {max_seq_len})")
    padding = pre.get("padding")
    if padding is not None and not isinstance(padding, bool) and getattr(padding, "value", padding) not in _PADDING:
        raise ValueError(f"{padding} is not a valid PaddingStrategy, please select one of {list(_PADDING)}")
    single = tokenizer.num_special_tokens_to_add(pair=False)
    if doc_stride > max_seq_len - single:
        raise ValueError(
            f"tokenizer stride set to {doc_stride}, which is greater than or equal to its effective max "
            f"length of {max_seq_len - single} (= {max_seq_len} original max length - {single} added "
            f"special tokens): doc_stride must be at most max_seq_len - {single}"
        )
    return max_seq_len, doc_stride


def _batch_size(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"batch_size should be a positive integer value, but got batch_size={value}")
    return value


def _examples(kwargs: dict) -> list[tuple[Any, str]]:
    """(question, context) pairs from the call's keyword arguments, as 5.2.0's argument
    handler built them, with its errors; the question's type is checked later (at
    tokenization in 5.2.0, after the parameters)."""
    if "question" not in kwargs or "context" not in kwargs:
        raise ValueError(f"Unknown arguments {kwargs}")
    question, context = kwargs["question"], kwargs["context"]
    if isinstance(question, list) and isinstance(context, str):
        pairs = [(q, context) for q in question]
    elif isinstance(question, list) and isinstance(context, list):
        if len(question) != len(context):
            raise ValueError("Questions and contexts don't have the same lengths")
        pairs = list(zip(question, context))
    elif isinstance(question, str) and isinstance(context, str):
        pairs = [(question, context)]
    else:
        raise ValueError("Arguments can't be understood")
    for i, (q, c) in enumerate(pairs):
        for name, value in (("question", q), ("context", c)):
            if value is None:
                raise ValueError(f"`{name}` cannot be None")
            if isinstance(value, str) and len(value) == 0:
                raise ValueError(f"`{name}` cannot be empty")
        if not isinstance(c, str):
            raise TypeError(f"`context` must be a str (got {type(c).__name__} at position {i})")
    if not pairs:
        raise IndexError("question=[] and context=[] hold no input: pass at least one question and context")
    return pairs


# -- the pipeline -------------------------------------------------------------------------
class QuestionAnsweringPipeline:
    """Extractive QA over a (model, tokenizer) pair, called like transformers 5.2.0's class.

    `QuestionAnsweringPipeline(model, tokenizer, task="", device=None, binary_output=False,
    **kwargs)` with a loaded model and fast tokenizer; kwargs: batch_size, num_workers and
    the QA parameters (see the module docstring); anything else is ignored. The model is
    moved to `device` (None: cuda:0 if available, else CPU; -1: where the model is; a
    negative int: CPU; an int n >= 0: cuda:n; a str or torch.device as given).
    """

    def __init__(self, model, tokenizer, task: str = "", device=None, binary_output: bool = False, **kwargs: Any) -> None:
        import torch

        from docqa.worker.engine import Engine
        from docqa.worker.loading import ModelLoadError

        for key in ("args_parser", "torch_dtype", "dtype", "feature_extractor", "image_processor", "processor"):
            kwargs.pop(key, None)
        self.task = task
        self.model = model
        self.tokenizer = tokenizer
        self.binary_output = binary_output
        self.device = _place(model, device, torch)
        if not type(model).__name__.endswith("ForQuestionAnswering"):
            log.error("The model '%s' is not a question-answering model; its outputs may lack start/end logits", type(model).__name__)
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} is not a fast tokenizer: docqa's pipeline needs the "
                "character offsets only fast (Rust) tokenizers give; load it with AutoTokenizer.from_pretrained(...)"
            )
        try:
            self._engine = Engine.from_loaded(model, tokenizer, span_path="numpy", reference_spans=True)
        except ModelLoadError as exc:
            raise ValueError(str(exc)) from None
        self._lock = threading.Lock()
        self.call_count = 0
        self._batch_size = kwargs.pop("batch_size", None)
        self._num_workers = kwargs.pop("num_workers", None)
        self._preprocess_params, self._postprocess_params = _sanitize_parameters(**kwargs)

    @property
    def dtype(self):
        """The model's torch dtype."""
        return getattr(self.model, "dtype", None)

    @property
    def torch_dtype(self):
        """Deprecated name of `dtype`."""
        return self.dtype

    def __repr__(self) -> str:
        info = {"model": type(self.model).__name__, "dtype": str(self.dtype).split(".")[-1], "device": self.device.type}
        return f"{type(self).__name__}: {info}"

    def __call__(self, *args: Any, **kwargs: Any):
        """Answer question(s) about context(s); keyword arguments only (see the module
        docstring for the call forms, the return shapes and the parameters)."""
        if args:
            raise TypeError(
                f"{type(self).__name__}.__call__() takes 1 positional argument but {len(args) + 1} were given; "
                "pass the inputs as keywords: qa(question=..., context=...) (or lists of questions and "
                "contexts for several inputs)"
            )
        pairs = _examples(kwargs)
        batch_size = kwargs.get("batch_size")
        if batch_size is None:
            batch_size = 1 if self._batch_size is None else self._batch_size
        pre, post = _sanitize_parameters(**kwargs)
        pre = {**self._preprocess_params, **pre}
        post = {**self._postprocess_params, **post}
        batch_size = _batch_size(batch_size)
        max_seq_len, doc_stride = _window_settings(pre, self.tokenizer)
        self.call_count += 1
        results = self._answer(pairs, max_seq_len, doc_stride, post, batch_size)
        return results[0] if len(results) == 1 else results

    def predict(self, X):
        """scikit-learn style alias of calling the pipeline with X positionally (a TypeError, as in 5.2.0)."""
        return self(X)

    def transform(self, X):
        """scikit-learn style alias of calling the pipeline with X positionally (a TypeError, as in 5.2.0)."""
        return self(X)

    def _answer(self, pairs, max_seq_len: int, doc_stride: int, post: dict, batch_size: int) -> list:
        """One result per (question, context) pair: a dict or a list of dicts (see module doc)."""
        from docqa.core.params import AnswerParams
        from docqa.worker.engine import QAItem

        docs, q_len = _token_counts(self.tokenizer, pairs)
        limit = self._engine.max_model_len
        pair_template = post.get("pair_template", "checkpoint")
        specials = self._engine.template(AnswerParams(pair_template=pair_template)).n_special
        # Above the limit but with an input that fits, one window either way: same answers.
        window = min(max_seq_len, limit)
        items = []
        for i, (question, context) in enumerate(pairs):  # 5.2.0's order: input by input
            _check_question(question, i)
            _check_fit(q_len[question], len(docs[context]), max_seq_len, doc_stride, specials, limit)
            params = _answer_params(window, doc_stride, post, pair_template)
            items.append(QAItem(context, question, params, tokens=docs[context]))
        return _answer_dicts(self._run(items, batch_size, window))

    def _run(self, items: list, batch_size: int, window: int) -> list:
        """The engine's results for `items`, batch_size windows per forward pass."""
        engine = self._engine
        with self._lock:
            engine.max_batch_windows = batch_size
            engine.batch_tokens_request = batch_size * max(1, window)
            return engine.run(items, allow_empty=True)


def _token_counts(tok, pairs) -> tuple[dict, dict]:
    """(context -> its tokens, question -> its number of tokens); each distinct text once."""
    from docqa.core.windows import tokenize_documents

    texts = list(dict.fromkeys(c for _, c in pairs))
    docs = dict(zip(texts, tokenize_documents(tok, texts)))
    questions = list(dict.fromkeys(q for q, _ in pairs if isinstance(q, str)))
    q_ids = tok(questions, add_special_tokens=False)["input_ids"] if questions else []
    return docs, dict(zip(questions, map(len, q_ids)))


def _check_question(question: Any, i: int) -> None:
    if not isinstance(question, str):
        raise ValueError(
            f"`question` must be a str (got {type(question).__name__} at position {i}): pass "
            "question=str or question=[str, ...]"
        )


def _check_fit(n_q: int, n_doc: int, max_seq_len: int, doc_stride: int, specials: int, limit: int) -> None:
    """An input of n_q question and n_doc context tokens fits windows of max_seq_len tokens."""
    room = max_seq_len - n_q - specials  # context tokens per window
    if room <= 0 and n_doc > room:
        raise Exception(  # noqa: TRY002 - the class 5.2.0 raised (from the tokenizer)
            "Truncation error: Sequence to truncate too short to respect the provided max_length "
            f"(the question has {n_q} tokens; with max_seq_len {max_seq_len} and {specials} special "
            "tokens no room is left for the context: shorten the question or raise max_seq_len)"
        )
    if n_doc > room and doc_stride >= room:
        raise ValueError(
            f"doc_stride ({doc_stride}) must be smaller than the context tokens of a window ({room} = "
            f"max_seq_len {max_seq_len} - question {n_q} tokens - {specials} special tokens) when a "
            "context needs several windows; lower doc_stride or raise max_seq_len"
        )
    longest = min(n_q + n_doc + specials, max_seq_len)
    if longest > limit:
        raise RuntimeError(
            f"a window of {longest} tokens is more than this model takes ({limit} tokens): "
            f"lower max_seq_len (now {max_seq_len}) to at most {limit}"
        )


def _answer_params(window: int, doc_stride: int, post: dict, pair_template: str):
    """AnswerParams for one input."""
    from docqa.core.params import AnswerParams

    # Checked before, as 5.2.0 checked them; model_construct keeps AnswerParams' own
    # (stricter, pydantic) validators from raising other errors for accepted values.
    return AnswerParams.model_construct(
        max_seq_len=window,
        doc_stride=doc_stride,
        top_k=post.get("top_k", 1),
        max_answer_len=post.get("max_answer_len", 15),
        handle_impossible_answer=post.get("handle_impossible_answer", False),
        align_to_words=post.get("align_to_words", True),
        merge_by_text=True,
        pair_template=pair_template,
    )


def _answer_dicts(results) -> list:
    """5.2.0's result for each engine result: the answer dict if there is one, else the list."""
    out = []
    for i, res in enumerate(results):
        if res.error is not None:  # not expected: every input was checked before
            raise ValueError(f"input {i} cannot be answered: {res.error}")
        answers = [
            {"score": float(a.score), "start": int(a.char_start), "end": int(a.char_end), "answer": a.text}
            for a in res.answers
        ]
        out.append(answers[0] if len(answers) == 1 else answers)
    return out


def _place(model, device, torch):
    """The torch.device 5.2.0 chose for `device`, with the model moved there (unless it was
    placed by accelerate's device_map)."""
    device_map = getattr(model, "hf_device_map", None)
    if device_map is not None and device is not None:
        raise ValueError(
            "The model has been loaded with `accelerate` and therefore cannot be moved to a specific device. "
            "Please discard the `device` argument when creating your pipeline object."
        )
    if device is None:
        device = next(iter(device_map.values())) if device_map is not None else 0
    if isinstance(device, int) and not isinstance(device, bool) and device == -1 and model.device is not None:
        device = model.device
    if isinstance(device, torch.device):
        place = device
    elif isinstance(device, str):
        place = torch.device(device)
    elif device < 0:
        place = torch.device("cpu")
    elif torch.cuda.is_available():
        place = torch.device(f"cuda:{device}")
    else:
        place = torch.device("cpu")
    if place.type not in ("cpu", "cuda"):
        raise ValueError(f"device {str(place)!r}: docqa's pipeline runs on the CPU or a CUDA GPU")
    if device_map is None and model.device != place:
        model.to(place)
    return place


# -- the factory --------------------------------------------------------------------------
def _check_task(task: Any) -> None:
    """Accept "question-answering"; raise 5.2.0's KeyError for names it did not know, and a
    KeyError naming the one task docqa provides for the other names it knew."""
    if task == TASK:
        return
    if isinstance(task, str) and task.startswith("translation"):
        parts = task.split("_")
        if not (len(parts) == 4 and parts[0] == "translation" and parts[2] == "to"):
            raise KeyError(f"Invalid translation task {task}, use 'translation_XX_to_YY' format")
    elif task not in _TASKS_52:
        raise KeyError(f"Unknown task {task}, available tasks are {sorted(_TASKS_52) + ['translation_XX_to_YY']}")
    raise KeyError(
        f"Unsupported task {task}: docqa's pipeline() provides only {TASK!r} (use transformers.pipeline for other tasks)"
    )


def _task_from_hub(model: str, token) -> str:
    """The model's task by its Hub pipeline_tag, with 5.2.0's errors."""
    from huggingface_hub import is_offline_mode, model_info

    if is_offline_mode():
        raise RuntimeError("You cannot infer task automatically within `pipeline` when using offline mode")
    try:
        info = model_info(model, token=token)
    except Exception as exc:
        raise RuntimeError(f"Instantiating a pipeline without a task set raised an error: {exc}") from exc
    if not info.pipeline_tag:
        raise RuntimeError(
            f"The model {model} does not seem to have a correct `pipeline_tag` set to infer the task automatically"
        )
    library = getattr(info, "library_name", "transformers")
    if library not in {"transformers", "timm"}:
        raise RuntimeError(f"This model is meant to be used with {library} not with transformers")
    return info.pipeline_tag


def _model_and_task(task: Any, model: Any, tokenizer: Any, token) -> tuple[Any, Any]:
    """(model, task): a path-like model as its str, the task inferred when None, then checked."""
    if task is None and model is None:
        raise RuntimeError(
            "Impossible to instantiate a pipeline without either a task or a model being specified. "
            "Please provide a task class or a model"
        )
    if model is None and tokenizer is not None:
        raise RuntimeError(
            "Impossible to instantiate a pipeline with tokenizer specified but not the model as the provided tokenizer"
            " may not be compatible with the default model. Please provide a PreTrainedModel class or a"
            " path/identifier to a pretrained model when providing tokenizer."
        )
    if model is not None and not isinstance(model, str) and hasattr(model, "__fspath__"):
        model = str(model.__fspath__())
    if task is None:
        task = _inferred_task(model, token)
    _check_task(task)
    return model, task


def _inferred_task(model: Any, token) -> str:
    if not isinstance(model, str):
        raise RuntimeError(
            "Inferring the task automatically requires to check the hub with a model_id defined as a `str`. "
            f"{model} is not a valid model_id."
        )
    return _task_from_hub(model, token)


def _checked_pipeline_class(pipeline_class: Any) -> type[QuestionAnsweringPipeline]:
    if pipeline_class is None:
        return QuestionAnsweringPipeline
    if not (isinstance(pipeline_class, type) and issubclass(pipeline_class, QuestionAnsweringPipeline)):
        raise TypeError(f"pipeline_class must be a subclass of docqa's QuestionAnsweringPipeline (got {pipeline_class!r})")
    return pipeline_class


def _default_model(revision: str | None) -> tuple[str, str]:
    """5.2.0's default model and revision (unless one was given), with its warning."""
    model, revision = DEFAULT_MODEL, revision if revision is not None else DEFAULT_REVISION
    log.warning(
        "No model was supplied, defaulted to %s and revision %s.\n"
        "Using a pipeline without specifying a model name and revision in production is not recommended.",
        model, revision,
    )  # fmt: skip
    return model, revision


def _model_kwargs(model_kwargs: dict, device_map: Any, dtype: Any, torch_dtype: Any, torch) -> dict:
    """model_kwargs with device_map and dtype added, refusing both forms of either."""
    if device_map is not None:
        if "device_map" in model_kwargs:
            raise ValueError(
                'You cannot use both `pipeline(... device_map=..., model_kwargs={"device_map":...})` as those'
                " arguments might conflict, use only one.)"
            )
        model_kwargs["device_map"] = device_map
    dtype = _dtype(dtype, torch_dtype, model_kwargs, torch)
    if dtype is not None:
        model_kwargs["dtype"] = dtype
    return model_kwargs


def _dtype(dtype: Any, torch_dtype: Any, model_kwargs: dict, torch) -> Any:
    """The dtype to load with (None: model_kwargs holds it or none was asked); a name as a torch.dtype."""
    if torch_dtype is not None and dtype == "auto":
        dtype = torch_dtype
    if "torch_dtype" in model_kwargs or "dtype" in model_kwargs:
        if dtype != "auto":
            raise ValueError(
                'You cannot use both `pipeline(... dtype=..., model_kwargs={"dtype":...})` as those'
                " arguments might conflict, use only one.)"
            )
        return None
    if isinstance(dtype, str) and dtype != "auto" and hasattr(torch, dtype):
        return getattr(torch, dtype)
    return dtype


def _tokenizer_source(tokenizer: Any, model_name: str | None, config: Any, pipeline_class: type) -> Any:
    """The tokenizer as given, else the model's or the config's name; a TypeError if none."""
    if tokenizer is None:
        tokenizer = model_name if model_name is not None else config if isinstance(config, str) else None
    if tokenizer is None:
        raise TypeError(
            f"{pipeline_class.__name__}.__init__() missing 1 required positional argument: 'tokenizer' "
            "(a model object does not say which tokenizer it needs: pass tokenizer=<tokenizer or its path>)"
        )
    return tokenizer


def _load_tokenizer(auto_tokenizer, tokenizer: str | tuple, use_fast: bool, hub_kwargs: dict, model_kwargs: dict):
    """The fast tokenizer named by `tokenizer`: an identifier or an (identifier, kwargs) tuple."""
    if isinstance(tokenizer, tuple):
        identifier, tok_kwargs = tokenizer[0], dict(tokenizer[1])
        use_fast = tok_kwargs.pop("use_fast", use_fast)
    else:
        identifier = tokenizer
        tok_kwargs = {k: v for k, v in model_kwargs.items() if k not in ("dtype", "torch_dtype", "device_map")}
    if not use_fast:
        log.warning("use_fast=False: docqa's pipeline needs a fast tokenizer; loading the fast one")
    if tok_kwargs:  # loader options only the tokenizer class knows: the class, as asked
        return auto_tokenizer.from_pretrained(identifier, use_fast=True, **hub_kwargs, **tok_kwargs)
    # docqa's tokenizer contract: the checkpoint's tokenizer.json and pair template
    from docqa.core.tokenizer import load_tokenizer

    revision, local_only, token = hub_kwargs["revision"], hub_kwargs["local_files_only"], hub_kwargs["token"]
    return load_tokenizer(identifier, revision, local_only=local_only, compare_class=True, token=token).hf


def pipeline(
    task: str | None = None,
    model: Any = None,
    config: Any = None,
    tokenizer: Any = None,
    feature_extractor: Any = None,
    image_processor: Any = None,
    processor: Any = None,
    revision: str | None = None,
    use_fast: bool = True,
    token: str | bool | None = None,
    device: Any = None,
    device_map: Any = None,
    dtype: Any = "auto",
    trust_remote_code: bool | None = None,
    model_kwargs: dict[str, Any] | None = None,
    pipeline_class: Any = None,
    **kwargs: Any,
) -> QuestionAnsweringPipeline:
    """A question-answering pipeline, built as transformers 5.2.0's `pipeline()` built one.

    task: "question-answering" (None: inferred from the Hub's pipeline_tag for a str model).
    model: hub id or local folder (loaded with AutoModelForQuestionAnswering), a loaded model
        object (used as is), a path-like, or None (5.2.0's default model and revision).
    tokenizer: hub id / folder, (id, kwargs) tuple, a loaded fast tokenizer, or None (taken
        from `model` when it is a str, else from `config` when that is a str).
    config: hub id / folder or config object for loading `model`.
    revision, token, trust_remote_code, model_kwargs, device_map, dtype ("auto": the
        checkpoint's; a name like "float16"; a torch.dtype; `torch_dtype=` also accepted):
        as in transformers, for loading.
    device: see QuestionAnsweringPipeline. feature_extractor, image_processor, processor:
        accepted and unused (QA needs none). pipeline_class: a QuestionAnsweringPipeline
        subclass, or None.
    kwargs: batch_size, num_workers, binary_output and the QA parameters; others ignored.
    """
    model_kwargs = dict(model_kwargs or {})
    kwargs.pop("code_revision", None)
    kwargs.pop("_commit_hash", None)
    model, task = _model_and_task(task, model, tokenizer, token)
    pipeline_class = _checked_pipeline_class(pipeline_class)
    if model is None:
        model, revision = _default_model(revision)

    import torch
    from transformers import AutoConfig, AutoModelForQuestionAnswering, AutoTokenizer

    hub_kwargs: dict[str, Any] = {"revision": revision, "token": token, "trust_remote_code": trust_remote_code}
    hub_kwargs["local_files_only"] = kwargs.get("local_files_only", False)
    model_kwargs = _model_kwargs(model_kwargs, device_map, dtype, kwargs.pop("torch_dtype", None), torch)
    model_name = model if isinstance(model, str) else None
    if model_name is not None:
        if isinstance(config, str):
            config = AutoConfig.from_pretrained(config, **hub_kwargs)
        model = AutoModelForQuestionAnswering.from_pretrained(model, config=config, **hub_kwargs, **model_kwargs)
    tokenizer = _tokenizer_source(tokenizer, model_name, config, pipeline_class)
    if isinstance(tokenizer, (str, tuple)):
        tokenizer = _load_tokenizer(AutoTokenizer, tokenizer, use_fast, hub_kwargs, model_kwargs)
    return pipeline_class(model=model, tokenizer=tokenizer, task=task, device=device, **kwargs)
