"""The QA engine: a model loaded once, windows of many questions run in shared batches.

`Engine` has a cheap constructor and an idempotent `warm_up()` that loads tokenizer and
model (`from_pretrained`: hub id or local folder, optional revision). `run()` takes
any number of (document, question, parameters) items and returns, for each, its
answers or the reason it could not be answered; one bad item never fails the others.

Stages: tokenize (documents once, batched; questions once) -> windows (slices of the
document tokens) -> length-sorted batches under a token budget -> forward (inference
mode, one device, one dtype; no tokenization in this loop) -> per-window spans ->
merge across windows.
"""

from __future__ import annotations

from docqa.core.errors import UsageError, first_line

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from docqa.core.answer import Answer
from docqa.core.labels import model_label
from docqa.core.params import AnswerParams
from docqa.core.tokenizer import PairTemplate, QATokenizer, TokenizerError, load_tokenizer, wrap_tokenizer
from docqa.core.windows import (
    DocumentTokens,
    WindowError,
    WindowPlan,
    plan_windows,
    tokenize_documents,
)
from docqa.worker.batching import bucket_rows, bucket_width, plan_batches
from docqa.worker.device_spans import DeviceCandidates
from docqa.worker.hardware import (
    CPU_BATCH_TOKENS,
    GPU_BATCH_TOKENS,
    TRIM_SECONDS,
    HeapTrimmer,
    PinnedBuffers,
    apply_fast,
    quantize_int8,
    resolve_device,
    resolve_dtype,
)
from docqa.worker.loading import ModelLoadError, _not_loadable, locate_model
from docqa.worker.spans import WindowLayout, merge_answers, window_candidates

log = logging.getLogger(__name__)

DEFAULT_PARAMS = AnswerParams()

# Engine(compile=...): "off" runs the model eagerly; the others are torch.compile modes
# ("reduce-overhead" adds CUDA graphs on a GPU). Compiling takes tens of seconds per new
# shape on its first batches: pair it with pad_buckets so a run sees few shapes.
COMPILE_MODES = ("off", "default", "reduce-overhead")


class ItemError(UsageError):
    """One (document, question) item cannot be answered; the message says why."""


@dataclass(frozen=True)
class QAItem:
    """One question about one document. `tokens` may carry a tokenization made earlier
    (by the producer), and `plan` the windows fixed at submit."""

    text: str
    question: str
    params: AnswerParams = DEFAULT_PARAMS
    tokens: DocumentTokens | None = None
    plan: WindowPlan | None = None
    # Only these windows (start, end: indexes into the job's windows, end exclusive): a part
    # of a split job. Its result then holds the windows' candidates (`QAResult.windows`)
    # for the merge that runs once all parts are done, not answers.
    window_range: tuple[int, int] | None = None


@dataclass
class QAResult:
    """Answers (best first) or the error that kept the item from being answered."""

    answers: list[Answer] = field(default_factory=list)
    error: str | None = None
    n_windows: int = 0
    # A part's windows, for `merge_answers`: (layout, candidates, null score, start logits, end logits).
    windows: list | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class _InFlight:
    """A batch whose forward was launched: what collecting its results needs."""

    batch: list[int]  # window indexes, in row order
    padded: int  # tokens in the batch, padding included
    # CUDA: events (begin, done) around the forward and the copies back; the results are on
    # the host once `done` has passed. Elsewhere: the forward's seconds (results ready).
    timing: tuple | float
    host: tuple | None  # numpy span path: start and end logits [rows, width], on the host once ready
    groups: list | None  # device span path: [(rows, candidate tensors, CLS start, CLS end)], host copies


def _to_host(tensor):
    """A copy of `tensor` on the host: started asynchronously into page-locked memory from a
    CUDA device (ready once the batch's event has passed; a new buffer each time, since the
    windows' logits are kept until their answers are merged), the tensor itself on the CPU."""
    if tensor.device.type != "cuda":
        return tensor
    import torch

    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host


def _windows_allowing_empty(n_doc: int, n_question: int, params: AnswerParams, n_special: int) -> list[tuple[int, int]]:
    """Windows when the question or the document has no tokens (Engine.run(allow_empty=True)).

    An empty document is one window holding no context tokens (if the question fits).
    An empty question leaves max_seq_len - n_special tokens of context per window; that is
    plan_windows' budget for a one-token question with one special token fewer.
    """
    if n_doc == 0:
        budget = params.max_seq_len - n_question - n_special
        if budget < 0:
            raise WindowError(
                f"the question is too long for the window: it has {n_question} tokens, and "
                f"max_seq_len {params.max_seq_len} minus {n_special} special tokens leaves less room"
            )
        return [(0, 0)]
    return plan_windows(
        n_doc, 1, max_seq_len=params.max_seq_len, doc_stride=params.doc_stride, n_special=n_special - 1
    )


def _check_options(batch_tokens, quantize: str, span_path: str, pad_buckets, compile: str) -> None:
    """ValueError for an Engine option outside its values."""
    if batch_tokens is not None and batch_tokens <= 0:
        raise ValueError(f"batch_tokens must be positive (got {batch_tokens})")
    if quantize not in ("none", "int8"):
        raise ValueError(f"quantize must be 'none' or 'int8' (got {quantize!r})")
    if span_path not in ("auto", "numpy", "device"):
        raise ValueError(f"span_path must be 'auto', 'numpy' or 'device' (got {span_path!r})")
    if pad_buckets not in (True, False, "auto"):
        raise ValueError(f"pad_buckets must be True, False or 'auto' (got {pad_buckets!r})")
    if compile not in COMPILE_MODES:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)} (got {compile!r})")


def _merged(item: QAItem, doc: DocumentTokens, wins: list) -> list[Answer]:
    """The item's answers from its windows' candidates."""
    offsets, word_ids = doc.offsets, doc.word_ids
    if len(doc) == 0:  # allow_empty: one (0, 0) row, so the window's range reads 0..0
        offsets, word_ids = np.zeros((1, 2), dtype=np.int64), np.full(1, -1, dtype=np.int64)
    return merge_answers(item.text, wins, offsets, word_ids, item.params)


class Engine:
    """Batched extractive QA with one model. Construct cheaply; `warm_up()` loads."""

    def __init__(
        self,
        model: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_tokens: int | None = None,
        quantize: str = "none",
        fast: bool = False,
        max_batch_windows: int | None = None,
        trim_seconds: float = TRIM_SECONDS,
        span_path: str = "auto",
        pad_buckets: bool | str = "auto",
        compile: str = "off",
        overlap: bool = True,
        reference_spans: bool = False,
    ) -> None:
        _check_options(batch_tokens, quantize, span_path, pad_buckets, compile)
        self.model_id = model
        self.revision = revision
        self.device_request = device
        self.dtype_request = dtype
        self.batch_tokens_request = batch_tokens
        self.quantize = quantize
        # fast=True: the fastest mode of the device picked at warm_up (an explicit dtype or
        # quantize wins); fast_note is then the one line that says what was chosen.
        self.fast = fast
        self.fast_note: str | None = None
        self.max_batch_windows = max_batch_windows  # windows per forward at most (None: budget only)
        self.span_path_request = span_path
        # Context-first models (XLNet): transformers' pipeline let any token of a window start or
        # end a span, mapping question tokens onto the document's characters (offsets such as
        # 54:0, or past its end). The drop-in reproduces that (True); answers that are stored
        # with provenance come from the context tokens only (False), so each is a document span.
        self.reference_spans = reference_spans
        self.pad_buckets_request = pad_buckets
        self.compile_mode = compile
        # Pipeline batches one deep (build and launch the next before decoding this one); off
        # only to measure what the overlap is worth (benchmarks/gpu/check.py).
        self.overlap = overlap
        self.compile_error: str | None = None  # why torch.compile failed (the model then runs eager)
        self._init_unloaded()
        self._trimmer = HeapTrimmer(trim_seconds)
        self.forward_calls = 0  # forwards run so far (a batch is one call)
        self.windows_run = 0
        self.documents_tokenized = 0  # documents this engine tokenized (not given tokens)
        self.plans_used = 0  # windows taken from plans fixed at submit
        self.plans_refused = 0  # plans that disagreed with this engine's windows (its own used)
        # Called after each forward with (windows, real tokens, padded tokens, seconds of the
        # forward and the copy of its results: on CUDA by the device's clock, so time the batch
        # waited behind the one before is not counted): the worker's metrics. None: nothing.
        self.on_forward: Callable[[int, int, int, float], None] | None = None

    def _init_unloaded(self) -> None:
        """The state `warm_up` (or `from_loaded`) fills in, empty."""
        self._eager_model = None  # the model before torch.compile, while the compiled one is used
        self._tokenizer = None
        self._model = None
        self._qat: QATokenizer | None = None  # the tokenizer under docqa's contract (its pair templates)
        self._feeds_types = False  # whether the model takes token_type_ids
        self._device = None
        self._dtype = None
        self._buffers: PinnedBuffers | None = None  # host-to-device copies (pinned on CUDA)

    @classmethod
    def from_settings(cls, settings) -> "Engine":
        """The engine a `Settings` describes (model, revision, device, dtype, budget, ...)."""
        return cls(
            settings.model,
            revision=settings.revision,
            device=settings.device,
            dtype=settings.dtype,
            batch_tokens=settings.batch_tokens,
            quantize=settings.quantize,
            fast=settings.fast,
            trim_seconds=settings.trim_seconds,
            span_path=settings.span_path,
            pad_buckets=settings.pad_buckets,
            compile=settings.compile,
        )

    @classmethod
    def from_loaded(
        cls,
        model,
        tokenizer,
        *,
        model_id: str | None = None,
        revision: str | None = None,
        batch_tokens: int | None = None,
        max_batch_windows: int | None = None,
        span_path: str = "auto",
        reference_spans: bool = False,
    ) -> "Engine":
        """An engine around a model and tokenizer the caller has already loaded (e.g. for
        `docqa.pipeline(model=<PreTrainedModel>, tokenizer=<tokenizer>)`).

        They are used as they are: on the model's device, in its dtype, in its current
        train/eval mode, with no copy and no cast; `warm_up()` then does nothing. The
        tokenizer must be a fast one that joins pairs (ModelLoadError otherwise, as in
        `warm_up`); its padding side says which text comes first, as in transformers'
        pipeline. `model_id` names the model in labels (default: its `name_or_path`).
        """
        try:
            qat = wrap_tokenizer(tokenizer)
        except TokenizerError as exc:
            raise ModelLoadError(str(exc)) from None
        device = str(model.device)
        dtype = model.dtype
        name = model_id or getattr(model, "name_or_path", None) or type(model).__name__
        engine = cls(
            name,
            revision=revision,
            device=device,
            dtype=str(dtype).removeprefix("torch."),
            batch_tokens=batch_tokens,
            max_batch_windows=max_batch_windows,
            span_path=span_path,
            reference_spans=reference_spans,
        )
        engine._use_tokenizer(qat, model)
        engine._buffers = PinnedBuffers(device)
        engine._device = device
        engine._dtype = dtype
        engine._model = model
        return engine

    @property
    def trims(self) -> int:
        """Times freed memory was given back to the OS so far (CPU only)."""
        return self._trimmer.trims

    # -- loading -----------------------------------------------------------------
    @property
    def model_label(self) -> str:
        """'model', 'model@revision', plus how it was computed when that is not float32:
        '+int8' when quantized, '+bfloat16' / '+float16' at half precision (known once the
        engine is warm, as 'auto' picks by device). Stored with every answer."""
        return model_label(self.model_id, self.revision, self.precision)

    @property
    def precision(self) -> str:
        """'int8' when quantized, else the dtype's name ('float32', 'bfloat16', 'float16'),
        or the dtype asked for ('auto' included) before the engine is warm."""
        if self.quantize == "int8":
            return "int8"
        return str(self._dtype).removeprefix("torch.") if self._dtype is not None else self.dtype_request

    @property
    def batch_tokens(self) -> int:
        """The token budget of one forward: as asked, else by device (known once warm)."""
        if self.batch_tokens_request is not None:
            return self.batch_tokens_request
        device = self._device or self.device_request
        return GPU_BATCH_TOKENS if str(device).startswith("cuda") else CPU_BATCH_TOKENS

    @property
    def tokenizer(self):
        self.warm_up()
        return self._tokenizer

    @property
    def model(self):
        self.warm_up()
        return self._model

    @property
    def tokenizer_key(self) -> str:
        """sha256 of this engine's tokenizer definition: stored tokens and plans made under
        the same key are this tokenizer's."""
        self.warm_up()
        return self._qat.key

    @property
    def device(self) -> str:
        self.warm_up()
        return self._device

    def warm_up(self) -> "Engine":
        """Load tokenizer and model once; later calls do nothing."""
        if self._model is not None:
            return self
        # In seconds, with the reason: a missing path, a folder without a model, an unreachable
        # hub (a cached model then loads from the cache) instead of the hub client's retries.
        local_only = locate_model(self.model_id, self.revision)
        import torch
        from transformers import AutoModelForQuestionAnswering
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load progress bar is noise in worker logs

        device = resolve_device(self.device_request)
        if self.fast and self.fast_note is None:
            self.dtype_request, self.quantize, self.fast_note = apply_fast(self.dtype_request, self.quantize, device)
        dtype = resolve_dtype(self.dtype_request, device)
        try:
            qat = load_tokenizer(self.model_id, self.revision, local_only=local_only, compare_class=True)
            model = AutoModelForQuestionAnswering.from_pretrained(
                self.model_id, revision=self.revision, dtype=torch.float32, local_files_only=local_only
            )
        except TokenizerError as exc:
            raise ModelLoadError(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise ModelLoadError(_not_loadable(self.model_id, self.model_label, exc)) from None
        self._use_tokenizer(qat, model)
        model.eval()
        if self.quantize == "int8":
            if device != "cpu":
                raise ModelLoadError("quantize=int8 is a CPU mode; on a GPU use dtype bfloat16/float16")
            model = quantize_int8(model)
        else:
            model = model.to(device=device, dtype=dtype)
        if device.startswith("cuda:"):
            # cuda:N (one worker per GPU): pinned buffers, CUDA graphs and compiled kernels
            # then live on that GPU, and no CUDA context is opened on GPU 0 as well.
            torch.cuda.set_device(torch.device(device))
        if self.compile_mode != "off":
            self._eager_model = model
            model = torch.compile(model, mode=None if self.compile_mode == "default" else self.compile_mode)
        self._buffers = PinnedBuffers(device)
        self._device = device
        self._dtype = dtype
        self._model = model
        return self

    def _use_tokenizer(self, qat: QATokenizer, model) -> None:
        import inspect

        self._qat, self._tokenizer = qat, qat.hf
        # Token types go to every model whose forward takes them (for models whose tokenizer
        # class left them out, RoBERTa's, they are all 0: the model's own default).
        self._feeds_types = "token_type_ids" in inspect.signature(model.forward).parameters

    def template(self, params: AnswerParams = DEFAULT_PARAMS) -> PairTemplate:
        """How this model's (question, context) pairs are joined under `params.pair_template`."""
        self.warm_up()
        return self._qat.template(params.pair_template)

    @property
    def tokenizer_note(self) -> str | None:
        """How the installed tokenizer class disagrees with the checkpoint's tokenizer.json
        (None when it agrees); docqa follows tokenizer.json."""
        self.warm_up()
        return self._qat.disagreement

    # -- answering ---------------------------------------------------------------
    def answer(self, text: str, question: str, params: AnswerParams = DEFAULT_PARAMS) -> list[Answer]:
        """Answers to one question about one document; raises ItemError if it cannot."""
        result = self.run([QAItem(text, question, params)])[0]
        if result.error is not None:
            raise ItemError(result.error)
        return result.answers

    @property
    def max_model_len(self) -> int:
        """Longest input the model takes, in tokens: its position embeddings or the
        tokenizer's limit, whichever is known and smaller (unknown: no limit)."""
        limits = [
            x
            for x in (getattr(self.model.config, "max_position_embeddings", None), self.tokenizer.model_max_length)
            if isinstance(x, int) and 0 < x < 10**9  # tokenizers say 1e30 when they do not know
        ]
        return min(limits) if limits else 10**9

    def run(self, items: Sequence[QAItem], *, allow_empty: bool = False) -> list[QAResult]:
        """Answer every item; windows of all items share forward batches.

        allow_empty=True answers a question or a document that has no tokens (e.g.
        whitespace only) the way transformers' pipeline did instead of reporting an error:
        an empty question gives windows with no question tokens; an empty document gives
        one window with no context tokens, whose only spans are at CLS ("" at 0..0).
        """
        self.warm_up()
        typed = [self.template(item.params).type_ids is not None for item in items]
        if len(set(typed)) < 2:
            return self._run(items, allow_empty)
        # Some items feed token types and others none (pair_template transformers-5.2 on ALBERT,
        # XLNet, ELECTRA): separate forwards, as no types is not all-zero types for XLNet.
        results: list = [None] * len(items)
        for flag in (True, False):
            chosen = [i for i, t in enumerate(typed) if t is flag]
            for i, res in zip(chosen, self._run([items[i] for i in chosen], allow_empty)):
                results[i] = res
        return results

    def _run(self, items: Sequence[QAItem], allow_empty: bool) -> list[QAResult]:
        results = [QAResult() for _ in items]
        doc_tokens, q_tokens = self._tokenize(items)
        windows = self._item_windows(items, doc_tokens, q_tokens, results, allow_empty)
        scored = self._score_windows(windows, items)
        per_item: dict[int, list] = {}
        for (i, layout, _ids), (cands, null, s_log, e_log) in zip(windows, scored):
            per_item.setdefault(i, []).append((layout, cands, null, s_log, e_log))
        for i, wins in per_item.items():
            item = items[i]
            if item.window_range is not None:  # a part of a split job: its windows, merged later
                results[i].windows = wins
                continue
            results[i].answers = _merged(item, doc_tokens[item.text], wins)
        return results

    def window_chars(self, texts: Sequence[DocumentTokens], question: str,
                     params: AnswerParams) -> list[list[tuple[int, int]]]:
        """Per text (given as its tokens), the (char_start, char_end) of each window a job of
        `question` runs over it, in order: what `QAItem.window_range` indexes. The question
        is tokenized once. Raises WindowError."""
        self.warm_up()
        n_question = len(tokenize_documents(self._tokenizer, [question])[0])
        item, template = QAItem("", question, params), self._qat.template(params.pair_template)
        return [[(int(tokens.offsets[s, 0]), int(tokens.offsets[e - 1, 1]))
                 for s, e in self._spans(item, tokens, n_question, template, False)] for tokens in texts]

    def _tokenize(self, items: Sequence[QAItem]) -> tuple[dict[str, DocumentTokens], dict[str, DocumentTokens]]:
        """Tokens of each distinct document (given ones kept) and question, each made once."""
        tok = self._tokenizer
        doc_tokens: dict[str, DocumentTokens] = {}
        for item in items:
            if item.tokens is not None:
                doc_tokens.setdefault(item.text, item.tokens)
        todo = list(dict.fromkeys(it.text for it in items if it.text not in doc_tokens))
        self.documents_tokenized += len(todo)
        for text, toks in zip(todo, tokenize_documents(tok, todo)):
            doc_tokens[text] = toks
        questions = list(dict.fromkeys(it.question for it in items))
        # Questions as documents are (ids, offsets, words): a context-first model's spans can
        # fall on question tokens, and map to characters through them.
        q_tokens = dict(zip(questions, tokenize_documents(tok, questions)))
        return doc_tokens, q_tokens

    def _item_windows(self, items: Sequence[QAItem], doc_tokens: dict[str, DocumentTokens],
                      q_tokens: dict[str, DocumentTokens], results: list[QAResult],
                      allow_empty: bool) -> list[tuple[int, WindowLayout, np.ndarray]]:
        """Windows of every item: (item index, layout, input ids). An item without windows
        gets its error in `results`, one with windows their count."""
        windows: list[tuple[int, WindowLayout, np.ndarray]] = []
        for i, item in enumerate(items):
            question = q_tokens[item.question]
            template = self._qat.template(item.params.pair_template)
            try:
                spans = self._spans(item, doc_tokens[item.text], len(question), template, allow_empty)
            except WindowError as exc:
                results[i].error = str(exc)
                continue
            results[i].n_windows = len(spans)
            windows += [(i, layout, ids)
                        for layout, ids in self._window_inputs(doc_tokens[item.text], question, spans, template)]
        return windows

    def _spans(self, item: QAItem, doc: DocumentTokens, n_question: int, template: PairTemplate,
               allow_empty: bool) -> list[tuple[int, int]]:
        """The item's windows as document token ranges (only its `window_range` of them for a
        part of a split job); WindowError says why it has none."""
        if not allow_empty and not item.question.strip():
            raise WindowError("the question is empty")
        if item.params.max_seq_len > self.max_model_len:
            raise WindowError(f"max_seq_len {item.params.max_seq_len} is more than this model takes "
                              f"({self.max_model_len} tokens); lower max_seq_len")
        p, n_special = item.params, template.n_special
        if allow_empty and (len(doc) == 0 or n_question == 0):
            spans = _windows_allowing_empty(len(doc), n_question, p, n_special)
        else:
            spans = plan_windows(len(doc), n_question, max_seq_len=p.max_seq_len, doc_stride=p.doc_stride,
                                 n_special=n_special)
            if item.plan is not None:
                self._count_plan(item.plan, n_question, spans)
        if item.window_range is None:
            return spans
        start, end = item.window_range
        if not 0 <= start < end <= len(spans):
            raise WindowError(f"window range {start}-{end} is outside this job's {len(spans)} windows")
        return spans[start:end]

    def _count_plan(self, plan: WindowPlan, n_question: int, spans: list[tuple[int, int]]) -> None:
        """A plan fixed at submit by the producer: the same rule must give the same windows
        here, else this engine's own windows are the reference."""
        if plan.question_tokens == n_question and plan.spans == spans:
            self.plans_used += 1
            return
        self.plans_refused += 1
        log.warning("a stored window plan disagrees with this worker's windows (%d vs %d windows); "
                    "using the worker's", len(plan.spans), len(spans))

    def _window_inputs(self, doc: DocumentTokens, question: DocumentTokens, spans,
                       template: PairTemplate) -> list[tuple[WindowLayout, np.ndarray]]:
        """Each window's layout and input ids: the template around the question and its context."""
        cls = self._tokenizer.cls_token_id
        n_q = len(question)
        # A context-first pair (XLNet) with the reference's spans: any token may start or end one,
        # so the question's words and characters travel with the layout. Without them, only its
        # context tokens may (a span from the context to the CLS at its end is no document span).
        extra = {} if template.question_first or not self.reference_spans else {
            "any_token": True,
            "question_words": tuple(question.word_ids.tolist()),
            "question_chars": tuple(map(tuple, question.offsets.tolist())),
        }
        keep_cls = cls is not None and (template.question_first or self.reference_spans)
        out = []
        for start, end in spans:
            ids = template.join(question.ids, doc.ids[start:end])
            context_offset, question_offset = template.offsets(n_q, end - start)
            cls_positions = tuple(np.flatnonzero(ids == cls).tolist()) if keep_cls else ()
            out.append((WindowLayout(seq_len=int(ids.shape[0]), context_offset=context_offset, doc_start=start,
                                     doc_end=end, cls_positions=cls_positions, question_offset=question_offset,
                                     **extra), ids))
        return out

    @property
    def span_path(self) -> str:
        """'numpy' (exact reference arithmetic on the host; the CPU default) or 'device'.

        On a GPU the spans are ranked on the device and only candidates are copied back
        (see docqa.worker.device_spans); span_path="numpy"/"device" forces the choice.
        """
        if self.span_path_request != "auto":
            return self.span_path_request
        return "device" if str(self.device).startswith("cuda") else "numpy"

    @property
    def pad_buckets(self) -> bool:
        """Whether batches are padded to a few shapes (widths to a multiple of 64 tokens,
        rows to a power of two): as asked, else on for CUDA (where CUDA graphs and
        torch.compile want few shapes) and off on CPU (padding there is only extra work)."""
        if self.pad_buckets_request != "auto":
            return bool(self.pad_buckets_request)
        return str(self._device or self.device_request).startswith("cuda")

    def _score_windows(self, windows, items) -> list[tuple[list, float, np.ndarray, np.ndarray]]:
        """Per window: (candidates best first, null score, start logits, end logits).

        Windows run in length-sorted batches under the token budget; each batch pads
        only to its longest window (with pad_buckets: to that window's bucket, and its
        rows to a power of two; padding rows hold one real token and are never read).

        With `overlap` (the default) batches are pipelined one deep: batch k+1 is built
        and its forward launched before batch k's results are decoded, and each batch's
        results come back by an asynchronous copy. On a GPU the host's work (building the
        next batch, ranking spans) then runs while the device computes; on a CPU, where a
        forward returns when it is done, the same steps run in the same order of results.
        """
        import torch

        out: list = [None] * len(windows)
        if not windows:
            return out
        lengths = [w[1].seq_len for w in windows]
        if self.pad_buckets:
            cap = self.max_model_len
            planned = [bucket_width(n, cap) for n in lengths]
        else:
            planned = lengths
        in_flight: _InFlight | None = None
        with torch.inference_mode():
            for k, batch in enumerate(plan_batches(planned, self.batch_tokens, self.max_batch_windows)):
                # Input buffers alternate between two sets: the set batch k+1 writes was last
                # read by batch k-1, which has been collected (its copies are done) by then.
                launched = self._launch(batch, k % 2, windows, items, lengths, planned)
                if not self.overlap:
                    self._collect(launched, windows, items, lengths, out)
                    continue
                if in_flight is not None:
                    self._collect(in_flight, windows, items, lengths, out)
                in_flight = launched
            if in_flight is not None:
                self._collect(in_flight, windows, items, lengths, out)
        return out

    def _launch(self, batch: list[int], parity: int, windows, items, lengths: list[int], planned: list[int]) -> _InFlight:
        """Build one batch, copy it to the device, run the forward and start copying back what
        the host needs (all asynchronous on CUDA); the batch in flight."""
        import torch

        on_device = self.span_path == "device"
        ids, mask, types, allowed = self._batch_arrays(batch, windows, items, lengths, planned, on_device)
        inputs, allowed_t = self._device_inputs(ids, mask, types, allowed, 4 * parity)
        padded = ids.shape[0] * ids.shape[1]
        cuda = str(self._device).startswith("cuda")
        started = time.perf_counter()
        begin = None
        if cuda:  # the batch's time on the device, from the device's own clock
            begin = torch.cuda.Event(enable_timing=True)
            begin.record()
        result = self._forward(inputs)
        self.forward_calls += 1
        if self._device == "cpu":
            self._trimmer.maybe_trim()
        self.windows_run += len(batch)
        if on_device:
            groups = self._candidates_on_device(result, batch, allowed_t, windows, items)
            host = None
        else:
            groups = None
            host = (_to_host(result.start_logits[: len(batch)].float()), _to_host(result.end_logits[: len(batch)].float()))
        if cuda:
            done = torch.cuda.Event(enable_timing=True)
            done.record()  # after the copies back: once it has passed, the results are on the host
            return _InFlight(batch=batch, padded=padded, timing=(begin, done), host=host, groups=groups)
        # Elsewhere the forward returned when it was done: its time is measured already.
        return _InFlight(batch=batch, padded=padded, timing=time.perf_counter() - started, host=host, groups=groups)

    def _batch_arrays(self, batch: list[int], windows, items, lengths: list[int], planned: list[int],
                      on_device: bool) -> tuple:
        """One batch's inputs on the host, [rows, width]: input ids, attention mask, token types
        (None when the batch takes none) and, on the device span path, the positions that may
        start or end a span (None otherwise)."""
        tok = self._tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        # One batch is all typed or all untyped (run() keeps them apart): the batch's first says.
        use_types = self._feeds_types and self.template(items[windows[batch[0]][0]].params).type_ids is not None
        width = max(planned[j] for j in batch)
        n_rows = (bucket_rows(len(batch), width, self.batch_tokens, self.max_batch_windows) if self.pad_buckets
                  else len(batch))
        ids = np.full((n_rows, width), pad, dtype=np.int64)
        mask = np.zeros((n_rows, width), dtype=np.int64)
        mask[len(batch):, 0] = 1  # padding rows: one token each, so no row is all masked
        types = np.zeros((n_rows, width), dtype=np.int64) if use_types else None
        allowed = np.zeros((len(batch), width), dtype=bool) if on_device else None
        for row, j in enumerate(batch):
            layout = windows[j][1]
            ids[row, : lengths[j]] = windows[j][2]
            mask[row, : lengths[j]] = 1
            if use_types:
                types[row, : lengths[j]] = self._type_row(layout, items[windows[j][0]].params)
            if on_device:
                allowed[row, : lengths[j]] = layout.allowed_mask()
        return ids, mask, types, allowed

    def _device_inputs(self, ids, mask, types, allowed, slot: int) -> tuple[dict, object]:
        """The model's inputs and the allowed positions (or None) on the device, copied through
        the buffers from `slot` on."""
        inputs = {"input_ids": self._buffers.to_device(ids, slot),
                  "attention_mask": self._buffers.to_device(mask, slot + 1)}
        if types is not None:
            inputs["token_type_ids"] = self._buffers.to_device(types, slot + 2)
        allowed_t = self._buffers.to_device(allowed, slot + 3) if allowed is not None else None
        return inputs, allowed_t

    def _collect(self, flight: _InFlight, windows, items, lengths: list[int], out: list) -> None:
        """Wait for a batch's results on the host and rank each window's spans into `out`."""
        if isinstance(flight.timing, tuple):
            begin, done = flight.timing
            done.synchronize()
            seconds = begin.elapsed_time(done) / 1e3
        else:
            seconds = flight.timing
        self._forward_done(flight.batch, lengths, flight.padded, seconds)
        if flight.groups is not None:
            fetched = [(rows, DeviceCandidates(*(t.numpy() for t in tensors)), cls_start.numpy(), cls_end.numpy())
                       for rows, tensors, cls_start, cls_end in flight.groups]
            self._unpack_device_candidates(fetched, flight.batch, windows, out)
            return
        start, end = (t.numpy() for t in flight.host)
        for row, j in enumerate(flight.batch):
            i, layout, _ = windows[j]
            s_log, e_log = start[row, : lengths[j]], end[row, : lengths[j]]
            cands, null = window_candidates(s_log, e_log, layout, items[i].params)
            out[j] = (cands, null, s_log, e_log)

    def _forward(self, inputs: dict):
        """The model on one batch; a compiled model that fails to compile (no C compiler,
        an unsupported op) is dropped for the eager one, with a warning saying why."""
        if self._eager_model is None:
            return self._model(**inputs)
        import torch

        if self.compile_mode == "reduce-overhead":
            # CUDA graphs: each forward is a new step; its outputs are read before the next one.
            torch.compiler.cudagraph_mark_step_begin()
        try:
            return self._model(**inputs)
        except Exception as exc:  # the compiler's errors have no common type
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                raise
            self.compile_error = first_line(exc, with_type=True)
            log.warning("torch.compile (mode %s) failed; the model runs uncompiled: %s", self.compile_mode,
                        self.compile_error)
            self._model, self._eager_model = self._eager_model, None
            return self._model(**inputs)

    def _forward_done(self, batch: list[int], lengths: list[int], padded: int, seconds: float) -> None:
        if self.on_forward is not None:
            real = sum(lengths[j] for j in batch)
            self.on_forward(len(batch), real, padded, seconds)

    def _candidates_on_device(self, result, batch, allowed_t, windows, items) -> list:
        """Rank spans on the device and start copying back only candidates, grouped by span
        parameters: [(rows, candidate tensors, CLS start logits, CLS end logits)], on the
        host once the batch's event has passed."""
        import torch

        from docqa.worker.device_spans import candidate_tensors

        groups: dict[tuple[int, int], list[int]] = {}
        for row, j in enumerate(batch):
            p = items[windows[j][0]].params
            groups.setdefault((p.n_candidates, p.max_answer_len), []).append(row)
        fetched = []
        for (n, max_len), rows in groups.items():
            if len(groups) == 1:  # every row (the usual case): a slice, no index to copy over
                idx = slice(0, len(rows))
            else:
                idx = torch.tensor(rows, device=allowed_t.device)
            got = candidate_tensors(
                result.start_logits[idx], result.end_logits[idx], allowed_t[idx],
                n_candidates=n, max_answer_len=max_len,
            )
            fetched.append((rows, [_to_host(t) for t in got], _to_host(result.start_logits[idx, 0].float()),
                            _to_host(result.end_logits[idx, 0].float())))
        return fetched

    def _unpack_device_candidates(self, fetched, batch, windows, out) -> None:
        """Per window of the batch: its candidates, null score and the logits they need (host)."""
        for rows, got, cls_start, cls_end in fetched:
            for r, row in enumerate(rows):
                j = batch[row]
                seq_len = windows[j][1].seq_len
                s_log = np.full(seq_len, np.nan, dtype=np.float32)
                e_log = np.full(seq_len, np.nan, dtype=np.float32)
                cands = got.window(r)
                for c, k in zip(cands, range(len(cands))):
                    s_log[c.start] = got.start_logits[r, k]
                    e_log[c.end] = got.end_logits[r, k]
                s_log[0], e_log[0] = cls_start[r], cls_end[r]  # the window's null logits
                out[j] = (cands, float(got.null_scores[r]), s_log, e_log)

    def _type_row(self, layout: WindowLayout, params: AnswerParams) -> np.ndarray:
        template = self._qat.template(params.pair_template)
        return template.type_row(layout.seq_len - template.n_special - layout.n_context, layout.n_context)
