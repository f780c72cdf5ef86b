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

import ctypes
import ctypes.util
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from producer.windows import DocumentTokens, WindowError, plan_windows, require_fast, tokenize_documents
from worker.batching import plan_batches
from worker.messages import Answer, AnswerParams
from worker.loading import ModelLoadError, _not_loadable
from worker.spans import WindowLayout, merge_answers, window_candidates

log = logging.getLogger(__name__)

DEFAULT_PARAMS = AnswerParams()


class ItemError(ValueError):
    """One (document, question) item cannot be answered; the message says why."""


@dataclass(frozen=True)
class QAItem:
    """One question about one document. `tokens` may carry a tokenization made earlier."""

    text: str
    question: str
    params: AnswerParams = DEFAULT_PARAMS
    tokens: DocumentTokens | None = None


@dataclass
class QAResult:
    """Answers (best first) or the error that kept the item from being answered."""

    answers: list[Answer] = field(default_factory=list)
    error: str | None = None
    n_windows: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class PairTemplate:
    """How the tokenizer lays out a (question, context) pair, learnt from the tokenizer.

    For BERT-style models: prefix [CLS], middle [SEP], suffix [SEP].
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    type_ids: tuple[int, int, int, int, int] | None  # prefix, question, middle, context, suffix

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)


def learn_template(tokenizer) -> PairTemplate:
    enc = tokenizer("a", "b", return_token_type_ids=True)
    ids = enc["input_ids"]
    seq = enc.sequence_ids()
    q = [i for i, s in enumerate(seq) if s == 0]
    c = [i for i, s in enumerate(seq) if s == 1]
    if not q or not c or tokenizer.padding_side != "right":
        raise ModelLoadError(
            f"tokenizer {type(tokenizer).__name__} does not put the question first in a "
            "(question, context) pair; docqa supports question-first (right-padding) tokenizers"
        )
    type_ids = None
    tt = enc.get("token_type_ids")
    if tt is not None:
        pre = tt[0] if q[0] > 0 else tt[q[0]]
        mid = tt[q[-1] + 1] if c[0] > q[-1] + 1 else tt[q[-1]]
        suf = tt[c[-1] + 1] if c[-1] + 1 < len(ids) else tt[c[-1]]
        type_ids = (pre, tt[q[0]], mid, tt[c[0]], suf)
    return PairTemplate(
        prefix=tuple(ids[: q[0]]),
        middle=tuple(ids[q[-1] + 1 : c[0]]),
        suffix=tuple(ids[c[-1] + 1 :]),
        type_ids=type_ids,
    )


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for, but no CUDA GPU is available")
    return device


def resolve_dtype(dtype: str, device: str):
    """float32 on CPU; bfloat16 (or float16 where bf16 is unsupported) on GPU."""
    import torch

    names = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of auto, {', '.join(names)}")
    if device == "cpu" and dtype == "float16":
        # CPUs have no fast float16 matmul: it runs several times slower than float32.
        raise ModelLoadError("float16 on the CPU is several times slower than float32; use dtype float32")
    if device == "cpu" and dtype == "bfloat16" and not cpu_has_bf16():
        # Without AVX512-BF16 / AMX, bfloat16 matmuls are emulated: slower than float32.
        raise ModelLoadError(
            "bfloat16 on this CPU is slower than float32: it has no bfloat16 instructions "
            "(AVX512-BF16 or AMX); use dtype float32, or quantize int8 for a faster CPU mode"
        )
    return names[dtype]


def cpu_has_bf16() -> bool:
    """Whether this CPU runs bfloat16 matmuls natively (AVX512-BF16 or AMX-BF16)."""
    import torch

    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    probes = [probe for probe in probes if probe is not None]
    if probes:
        return any(probe() for probe in probes)
    try:  # an older or newer torch without the probes: ask the kernel
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = next((line.split(":", 1)[1].split() for line in fh if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# Token budget of one forward (windows x padded length) when none is given. On a CPU a few
# windows a batch run fastest (they stay in the caches: 4 windows of 384 tokens ran 11%
# faster in float32 and 20% in bfloat16 than 21 windows, benchmarks/run.py --sweep) and
# keep memory low; a GPU wants hundreds of windows a batch to fill its cores.
CPU_BATCH_TOKENS = 1536
GPU_BATCH_TOKENS = 131072  # 341 windows of 384 tokens: a worker batch of 64 jobs in one forward


# On a CPU, freed activation memory stays in glibc's heap and RSS creeps up over a long run
# (1.5 GiB after 60 questions where the model is 0.35 GiB). Giving it back to the OS at most
# every this many seconds cut peak RSS by ~20% with no measurable slowdown (a trim after
# every few forwards cut more but cost ~2%). DOCQA_TRIM_SECONDS overrides; 0 switches it off.
TRIM_SECONDS = 10.0


_LIBC = None  # glibc, once loaded; False where it cannot be


def malloc_trim() -> bool:
    """Return freed heap memory to the OS (glibc's malloc_trim); False where unavailable."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim  # noqa: B018 (glibc only: AttributeError elsewhere)
        except (OSError, AttributeError):
            _LIBC = False
    if not _LIBC:
        return False
    _LIBC.malloc_trim(0)
    return True


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
        max_batch_windows: int | None = None,
    ) -> None:
        if batch_tokens is not None and batch_tokens <= 0:
            raise ValueError(f"batch_tokens must be positive (got {batch_tokens})")
        if quantize not in ("none", "int8"):
            raise ValueError(f"quantize must be 'none' or 'int8' (got {quantize!r})")
        self.model_id = model
        self.revision = revision
        self.device_request = device
        self.dtype_request = dtype
        self.batch_tokens_request = batch_tokens
        self.quantize = quantize
        self.max_batch_windows = max_batch_windows  # windows per forward at most (None: budget only)
        self._tokenizer = None
        self._model = None
        self._template: PairTemplate | None = None
        self._device = None
        self._dtype = None
        self._pinned: dict[int, object] = {}  # reused pinned host buffers (CUDA only)
        self.forward_calls = 0  # forwards run so far (a batch is one call)
        self.trims = 0  # times freed memory was given back to the OS (CPU only)
        self._last_trim = time.monotonic()
        raw = os.environ.get("DOCQA_TRIM_SECONDS", "").strip()
        try:
            self.trim_seconds = float(raw) if raw else TRIM_SECONDS
        except ValueError:
            raise ValueError(f"DOCQA_TRIM_SECONDS must be a number of seconds, 0 to switch it off (got {raw!r})") from None
        self.windows_run = 0

    # -- loading -----------------------------------------------------------------
    @property
    def model_label(self) -> str:
        """'model', 'model@revision', plus how it was computed when that is not float32:
        '+int8' when quantized, '+bfloat16' / '+float16' at half precision (known once the
        engine is warm, as 'auto' picks by device). Stored with every answer."""
        label = f"{self.model_id}@{self.revision}" if self.revision else self.model_id
        precision = self.precision
        return f"{label}+{precision}" if precision in ("int8", "bfloat16", "float16") else label

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
    def device(self) -> str:
        self.warm_up()
        return self._device

    def warm_up(self) -> "Engine":
        """Load tokenizer and model once; later calls do nothing."""
        if self._model is not None:
            return self
        import torch
        from transformers import AutoModelForQuestionAnswering, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a per-load progress bar is noise in worker logs

        device = resolve_device(self.device_request)
        dtype = resolve_dtype(self.dtype_request, device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(self.model_id, revision=self.revision)
            model = AutoModelForQuestionAnswering.from_pretrained(
                self.model_id, revision=self.revision, dtype=torch.float32
            )
        except (OSError, ValueError) as exc:
            raise ModelLoadError(_not_loadable(self.model_id, self.model_label, exc)) from None
        try:
            require_fast(tokenizer)
        except WindowError as exc:
            raise ModelLoadError(str(exc)) from None
        model.eval()
        if self.quantize == "int8":
            if device != "cpu":
                raise ModelLoadError("quantize=int8 is a CPU mode; on a GPU use dtype bfloat16/float16")
            model = quantize_int8(model)
        else:
            model = model.to(device=device, dtype=dtype)
        self._template = learn_template(tokenizer)
        self._tokenizer = tokenizer
        self._device = device
        self._dtype = dtype
        self._model = model
        return self

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

    def tokenize(self, texts: Sequence[str]) -> list[DocumentTokens]:
        return tokenize_documents(self.tokenizer, list(texts))

    def run(self, items: Sequence[QAItem]) -> list[QAResult]:
        """Answer every item; windows of all items share forward batches."""
        self.warm_up()
        tok = self._tokenizer
        template = self._template
        results = [QAResult() for _ in items]

        # Tokenize each distinct document and question once.
        doc_tokens: dict[str, DocumentTokens] = {}
        for item in items:
            if item.tokens is not None:
                doc_tokens.setdefault(item.text, item.tokens)
        todo = list(dict.fromkeys(it.text for it in items if it.text not in doc_tokens))
        for text, toks in zip(todo, tokenize_documents(tok, todo)):
            doc_tokens[text] = toks
        questions = list(dict.fromkeys(it.question for it in items))
        q_ids = dict(
            zip(questions, tok(questions, add_special_tokens=False)["input_ids"] if questions else [])
        )

        # Windows of every item: (item index, layout, input ids).
        windows: list[tuple[int, WindowLayout, np.ndarray]] = []
        for i, item in enumerate(items):
            doc = doc_tokens[item.text]
            qi = q_ids[item.question]
            try:
                if not item.question.strip():
                    raise WindowError("the question is empty")
                if item.params.max_seq_len > self.max_model_len:
                    raise WindowError(
                        f"max_seq_len {item.params.max_seq_len} is more than this model takes "
                        f"({self.max_model_len} tokens); lower max_seq_len"
                    )
                spans = plan_windows(
                    len(doc),
                    len(qi),
                    max_seq_len=item.params.max_seq_len,
                    doc_stride=item.params.doc_stride,
                    n_special=template.n_special,
                )
            except WindowError as exc:
                results[i].error = str(exc)
                continue
            results[i].n_windows = len(spans)
            head = np.asarray([*template.prefix, *qi, *template.middle], dtype=np.int64)
            tail = np.asarray(template.suffix, dtype=np.int64)
            for start, end in spans:
                ids = np.concatenate([head, doc.ids[start:end], tail])
                cls = tok.cls_token_id
                cls_positions = tuple(np.flatnonzero(ids == cls).tolist()) if cls is not None else ()
                layout = WindowLayout(
                    seq_len=int(ids.shape[0]),
                    context_offset=int(head.shape[0]),
                    doc_start=start,
                    doc_end=end,
                    cls_positions=cls_positions,
                )
                windows.append((i, layout, ids))

        scored = self._score_windows(windows, items)
        per_item: dict[int, list] = {}
        for (i, layout, _ids), (cands, null, s_log, e_log) in zip(windows, scored):
            per_item.setdefault(i, []).append((layout, cands, null, s_log, e_log))
        for i, wins in per_item.items():
            item = items[i]
            doc = doc_tokens[item.text]
            results[i].answers = merge_answers(item.text, wins, doc.offsets, doc.word_ids, item.params)
        return results

    @property
    def span_path(self) -> str:
        """'numpy' (exact reference arithmetic on the host; the CPU default) or 'device'.

        On a GPU the spans are ranked on the device and only candidates are copied back
        (see worker.device_spans); DOCQA_SPAN_PATH=numpy|device overrides the choice.
        """
        forced = os.environ.get("DOCQA_SPAN_PATH")
        if forced in ("numpy", "device"):
            return forced
        return "device" if str(self.device).startswith("cuda") else "numpy"

    def _score_windows(self, windows, items) -> list[tuple[list, float, np.ndarray, np.ndarray]]:
        """Per window: (candidates best first, null score, start logits, end logits).

        Windows run in length-sorted batches under the token budget; each batch pads
        only to its longest window.
        """
        import torch

        out: list = [None] * len(windows)
        if not windows:
            return out
        tok = self._tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else 0
        lengths = [w[1].seq_len for w in windows]
        use_types = self._template.type_ids is not None and "token_type_ids" in tok.model_input_names
        on_device = self.span_path == "device"
        with torch.inference_mode():
            for batch in plan_batches(lengths, self.batch_tokens, self.max_batch_windows):
                width = max(lengths[j] for j in batch)
                ids = np.full((len(batch), width), pad, dtype=np.int64)
                mask = np.zeros((len(batch), width), dtype=np.int64)
                types = np.zeros((len(batch), width), dtype=np.int64) if use_types else None
                for row, j in enumerate(batch):
                    layout = windows[j][1]
                    ids[row, : lengths[j]] = windows[j][2]
                    mask[row, : lengths[j]] = 1
                    if use_types:
                        types[row, : lengths[j]] = self._type_row(layout)
                inputs = {"input_ids": self._to_device(ids, 0), "attention_mask": self._to_device(mask, 1)}
                if use_types:
                    inputs["token_type_ids"] = self._to_device(types, 2)
                result = self._model(**inputs)
                self.forward_calls += 1
                self._maybe_trim()
                self.windows_run += len(batch)
                if on_device:
                    self._collect_on_device(result, batch, windows, items, out)
                    continue
                start = result.start_logits.float().cpu().numpy()
                end = result.end_logits.float().cpu().numpy()
                for row, j in enumerate(batch):
                    i, layout, _ = windows[j]
                    s_log, e_log = start[row, : lengths[j]], end[row, : lengths[j]]
                    cands, null = window_candidates(s_log, e_log, layout, items[i].params)
                    out[j] = (cands, null, s_log, e_log)
        return out

    def _maybe_trim(self) -> None:
        """On the CPU, hand freed activation memory back to the OS every TRIM_SECONDS."""
        if str(self._device) != "cpu" or self.trim_seconds <= 0:
            return
        now = time.monotonic()
        if now - self._last_trim >= self.trim_seconds:
            if malloc_trim():
                self.trims += 1
            self._last_trim = now

    def _collect_on_device(self, result, batch, windows, items, out) -> None:
        """Rank spans on the device; copy back only candidates (grouped by span parameters)."""
        import torch

        from worker.device_spans import device_candidates

        width = result.start_logits.shape[1]
        allowed = np.zeros((len(batch), width), dtype=bool)
        for row, j in enumerate(batch):
            allowed[row, : windows[j][1].seq_len] = windows[j][1].allowed_mask()
        allowed_t = torch.from_numpy(allowed).to(result.start_logits.device)
        groups: dict[tuple[int, int], list[int]] = {}
        for row, j in enumerate(batch):
            p = items[windows[j][0]].params
            n = p.top_k * 2 + 10 if p.align_to_words else p.top_k
            groups.setdefault((n, p.max_answer_len), []).append(row)
        for (n, max_len), rows in groups.items():
            idx = torch.tensor(rows, device=allowed_t.device)
            got = device_candidates(
                result.start_logits[idx], result.end_logits[idx], allowed_t[idx],
                n_candidates=n, max_answer_len=max_len,
            )
            for r, row in enumerate(rows):
                j = batch[row]
                seq_len = windows[j][1].seq_len
                s_log = np.full(seq_len, np.nan, dtype=np.float32)
                e_log = np.full(seq_len, np.nan, dtype=np.float32)
                cands = got.window(r)
                for c, k in zip(cands, range(len(cands))):
                    s_log[c.start] = got.start_logits[r, k]
                    e_log[c.end] = got.end_logits[r, k]
                out[j] = (cands, float(got.null_scores[r]), s_log, e_log)

    def _to_device(self, array: np.ndarray, slot: int):
        """A host array on the model's device; on CUDA through a reused pinned buffer.

        Safe to reuse: the previous batch's outputs were copied back (a synchronising
        copy) before the next batch is written into the buffer.
        """
        import torch

        tensor = torch.from_numpy(array)
        if not str(self._device).startswith("cuda"):
            return tensor
        need = tensor.numel()
        buf = self._pinned.get(slot)
        if buf is None or buf.numel() < need:
            buf = self._pinned[slot] = torch.empty(max(need, 1 << 16), dtype=tensor.dtype).pin_memory()
        staged = buf[:need].view(tensor.shape)
        staged.copy_(tensor)
        return staged.to(self._device, non_blocking=True)

    def _type_row(self, layout: WindowLayout) -> np.ndarray:
        pre, q, mid, c, suf = self._template.type_ids
        t = self._template
        n_q = layout.context_offset - len(t.prefix) - len(t.middle)
        parts = [
            np.full(len(t.prefix), pre),
            np.full(n_q, q),
            np.full(len(t.middle), mid),
            np.full(layout.n_context, c),
            np.full(len(t.suffix), suf),
        ]
        return np.concatenate(parts)


def quantize_int8(model):
    """Dynamic int8 quantization of the Linear layers (CPU), in place: the float32 weights
    are dropped rather than kept beside the int8 copy.

    torch marks its quantized-tensor API deprecated (still working in 2.13); the warning
    is silenced here because the user asked for this mode explicitly.
    """
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
