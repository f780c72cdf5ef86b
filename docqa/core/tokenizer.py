"""The tokenizer contract: one loader and one pair template per model, shared by the
producer, the worker, the drop-in pipeline and `ask`.

A model's answers depend on how its tokenizer cuts text (ids, character offsets, words)
and on how a (question, context) pair is joined (special tokens, token type ids, which
text comes first). Both are pinned to the checkpoint's own files, so the installed
transformers release cannot change them:

* text -> tokens: the checkpoint's tokenizer.json, loaded as it is (the generic fast
  tokenizer over the Rust `tokenizers` definition), never a tokenizer class's rebuild of
  it. A checkpoint without tokenizer.json is loaded through its class (and said so).
* the pair: the template and token type ids the checkpoint's tokenizer.json
  post-processor writes (`pair_template="checkpoint"`, the default: what transformers 4.x
  fed these models, and what they were fine-tuned on). `"transformers-5.2"` feeds what
  transformers 5.2.0's tokenizer classes fed instead, where they differ: XLM-RoBERTa pairs
  joined `<s> q </s> c </s>` (the checkpoint: `<s> q </s></s> c </s>`; 5.0-5.2 only), and
  no token type ids for ALBERT, XLNet and checkpoints that name ElectraTokenizer (their
  5.x classes leave token_type_ids out of the model's inputs).
* the order: question first, unless the tokenizer pads on the left (XLNet), which puts
  the context first, as transformers' pipeline did (`padding_side` from
  tokenizer_config.json, else the tokenizer class's own).

`load_tokenizer` is the one place a model's tokenizer is loaded; with `compare_class`
it also loads the installed class and reports, in one sentence, any way it would join
or cut text differently from the checkpoint's file (`QATokenizer.disagreement`).
"""

from __future__ import annotations

from docqa.core.errors import DocqaError

import json
import logging
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

PAIR_TEMPLATES = ("checkpoint", "transformers-5.2")

# Where transformers 5.2.0's tokenizer classes fed a model other than what the checkpoint's
# tokenizer.json says, by the class the checkpoint names. Found by loading each family's
# checkpoint layout with transformers 4.57.6, 5.0.0-5.4.0 and later releases and comparing
# the pair encodings with tokenizer.json's (README, "Model families"):
# - XLM-RoBERTa: one separator between question and context, `<s> q </s> c </s>`, in
#   5.0.0-5.2.0 (4.x and 5.3.0 onwards: the checkpoint's `<s> q </s></s> c </s>`);
# - no token type ids: the 5.x ALBERT and XLNet classes leave token_type_ids out of the
#   model's inputs, and 5.2.0 loaded a checkpoint naming ElectraTokenizer through the
#   generic class, which has none either.
FIVE_TWO_MIDDLE = {"XLMRobertaTokenizer": 1, "XLMRobertaTokenizerFast": 1}
FIVE_TWO_NO_TYPES = frozenset({"AlbertTokenizer", "AlbertTokenizerFast", "XLNetTokenizer", "XLNetTokenizerFast",
                               "ElectraTokenizer", "ElectraTokenizerFast"})

# A text that exercises normalization and offsets (case, accents, combining marks, CJK,
# emoji, odd spaces): the installed class and tokenizer.json must cut it the same way.
PROBE_TEXT = "Ada Lovelace wrote in 1843 \u2014 caf\u00e9 cafe\u0301 \u00c9COLE \u4e2d\u6587 \U0001f600 a\u00a0b\tc  d."


class TokenizerError(DocqaError, ValueError):
    """The model's tokenizer cannot be used for question answering; the message says why."""


@dataclass(frozen=True)
class PairTemplate:
    """How a (question, context) pair is laid out as model input.

    question_first: [prefix] question [middle] context [suffix]; otherwise (XLNet)
    [prefix] context [middle] question [suffix]. type_ids: token type of the prefix, the
    first text, the middle, the second text and the suffix (None: the tokenizer gives none).
    """

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    type_ids: tuple[int, int, int, int, int] | None
    question_first: bool = True

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def offsets(self, n_question: int, n_context: int) -> tuple[int, int]:
        """(position of the first context token, position of the first question token)."""
        if self.question_first:
            return len(self.prefix) + n_question + len(self.middle), len(self.prefix)
        return len(self.prefix), len(self.prefix) + n_context + len(self.middle)

    def join(self, question: np.ndarray, context: np.ndarray) -> np.ndarray:
        first, second = (question, context) if self.question_first else (context, question)
        return np.concatenate([np.asarray(self.prefix, dtype=np.int64), first,
                               np.asarray(self.middle, dtype=np.int64), second,
                               np.asarray(self.suffix, dtype=np.int64)])

    def type_row(self, n_question: int, n_context: int) -> np.ndarray:
        """Token type ids of one window (requires type_ids)."""
        if self.type_ids is None:
            raise ValueError("this pair template has no token type ids")
        pre, first, mid, second, suf = self.type_ids
        n_first, n_second = (n_question, n_context) if self.question_first else (n_context, n_question)
        return np.concatenate([np.full(len(self.prefix), pre), np.full(n_first, first), np.full(len(self.middle), mid),
                               np.full(n_second, second), np.full(len(self.suffix), suf)]).astype(np.int64)

    def describe(self, tokenizer) -> str:
        """The template in tokens, e.g. `<s> Q </s></s> C </s>`."""
        def part(ids):
            return "".join(tokenizer.convert_ids_to_tokens(list(ids)))

        first, second = ("Q", "C") if self.question_first else ("C", "Q")
        return " ".join(p for p in (part(self.prefix), first, part(self.middle), second, part(self.suffix)) if p)


def learn_template(tokenizer, question_first: bool | None = None) -> PairTemplate:
    """The pair template `tokenizer` writes, learnt by encoding a two-text pair.

    question_first: None takes the tokenizer's own rule (right padding: question first).
    """
    if question_first is None:
        question_first = getattr(tokenizer, "padding_side", "right") != "left"
    enc = tokenizer("a", "b", return_token_type_ids=True)
    ids, seq = enc["input_ids"], enc.sequence_ids()
    a = [i for i, s in enumerate(seq) if s == 0]
    b = [i for i, s in enumerate(seq) if s == 1]
    if not a or not b or a[-1] >= b[0]:
        raise TokenizerError(f"tokenizer {type(tokenizer).__name__} does not join two texts into one input "
                             "(no pair template): it cannot be used for extractive question answering")
    type_ids = None
    tt = enc.get("token_type_ids")
    if tt is not None:
        pre = tt[0] if a[0] > 0 else tt[a[0]]
        mid = tt[a[-1] + 1] if b[0] > a[-1] + 1 else tt[a[-1]]
        suf = tt[b[-1] + 1] if b[-1] + 1 < len(ids) else tt[b[-1]]
        type_ids = (pre, tt[a[0]], mid, tt[b[0]], suf)
    return PairTemplate(prefix=tuple(ids[: a[0]]), middle=tuple(ids[a[-1] + 1 : b[0]]), suffix=tuple(ids[b[-1] + 1 :]),
                        type_ids=type_ids, question_first=question_first)


@dataclass
class QATokenizer:
    """A model's tokenizer as docqa uses it: the fast tokenizer (`hf`), the key of its
    definition, and its pair template per `pair_template` name."""

    hf: Any  # the transformers fast tokenizer
    templates: dict[str, PairTemplate]
    source: str  # "tokenizer.json" or "class" (no tokenizer.json: the class built it)
    class_name: str | None = None
    disagreement: str | None = None  # how the installed class differs from tokenizer.json
    _key: str | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        from docqa.core.windows import tokenizer_key

        if self._key is None:
            self._key = tokenizer_key(self.hf)
        return self._key

    @property
    def question_first(self) -> bool:
        return self.templates["checkpoint"].question_first

    def template(self, name: str = "checkpoint") -> PairTemplate:
        try:
            return self.templates[name]
        except KeyError:
            raise TokenizerError(f"unknown pair_template {name!r} (one of: {', '.join(PAIR_TEMPLATES)})") from None


def wrap_tokenizer(tokenizer, class_name: str | None = None, source: str = "class") -> QATokenizer:
    """A tokenizer object already loaded (the drop-in's `tokenizer=` argument) under the
    contract: its own template, its own padding side."""
    from docqa.core.windows import WindowError, require_fast

    loaded = getattr(tokenizer, "_docqa_tokenizer", None)
    if isinstance(loaded, QATokenizer) and loaded.hf is tokenizer:  # made by load_tokenizer
        return loaded
    try:
        require_fast(tokenizer)
    except WindowError as exc:
        raise TokenizerError(str(exc)) from None
    name = class_name or type(tokenizer).__name__
    base = learn_template(tokenizer)
    return QATokenizer(hf=tokenizer, templates=_templates(base, name), source=source, class_name=name)


def _templates(base: PairTemplate, class_name: str | None) -> dict[str, PairTemplate]:
    five_two = base
    n_mid = FIVE_TWO_MIDDLE.get(class_name or "")
    if n_mid is not None and len(base.middle) > n_mid:
        five_two = replace(five_two, middle=base.middle[:n_mid])
    if class_name in FIVE_TWO_NO_TYPES:
        five_two = replace(five_two, type_ids=None)
    return {"checkpoint": base, "transformers-5.2": five_two}


def _file(model: str, name: str, hub: dict) -> str | None:
    """The local path of the checkpoint's file `name` (downloaded if need be), or None."""
    from transformers.utils import cached_file

    try:
        return cached_file(model, name, revision=hub["revision"], local_files_only=hub["local_files_only"],
                           token=hub["token"], _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
    except Exception:  # a missing optional file, in whatever way the hub client says it
        return None


def _read_json(model: str, name: str, hub: dict) -> dict:
    path = _file(model, name, hub)
    if not path:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _class_name(tok_config: dict, model_config: dict) -> str | None:
    name = tok_config.get("tokenizer_class")
    if isinstance(name, str) and name:
        return name
    model_type = model_config.get("model_type")
    if not isinstance(model_type, str):
        return None
    try:
        from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING_NAMES
    except ImportError:
        return None
    names = TOKENIZER_MAPPING_NAMES.get(model_type)
    if isinstance(names, (tuple, list)):
        names = next((n for n in reversed(names) if n), None)
    return names if isinstance(names, str) else None


def _padding_side(tok_config: dict, class_name: str | None) -> str:
    side = tok_config.get("padding_side")
    if side in ("left", "right"):
        return side
    if class_name:
        try:
            from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

            cls = tokenizer_class_from_name(class_name)
        except Exception:  # an unknown or remote class: the default
            cls = None
        if cls is not None and getattr(cls, "padding_side", None) in ("left", "right"):
            return cls.padding_side
    return "right"


def load_tokenizer(model: str, revision: str | None = None, *, local_only: bool = False,
                   compare_class: bool = False, token=None) -> QATokenizer:
    """The tokenizer of `model` (hub id or folder) under the contract.

    Raises TokenizerError (not fast, no pair template) or whatever transformers raises when
    the files cannot be had (OSError, ValueError). compare_class=True also loads the
    installed tokenizer class and records how it differs (`disagreement`), with a warning.
    """
    logging.getLogger("transformers.tokenization_utils_base").setLevel(logging.ERROR)
    from transformers import PreTrainedTokenizerFast

    hub = {"revision": revision, "local_files_only": local_only, "token": token}
    tok_config = _read_json(model, "tokenizer_config.json", hub)
    class_name = _class_name(tok_config, _read_json(model, "config.json", hub))
    if _file(model, "tokenizer.json", hub):
        hf = PreTrainedTokenizerFast.from_pretrained(model, padding_side=_padding_side(tok_config, class_name), **hub)
        source = "tokenizer.json"
    else:
        from transformers import AutoTokenizer

        hf = AutoTokenizer.from_pretrained(model, **hub)
        source = "class"
        log.warning("%s has no tokenizer.json: its tokenizer is built by the installed %s class, so its answers "
                    "may change with the transformers release", model, type(hf).__name__)
    qat = wrap_tokenizer(hf, class_name=class_name, source=source)
    hf._docqa_tokenizer = qat  # the drop-in hands the object on: wrap_tokenizer finds this again
    if compare_class and source == "tokenizer.json":
        qat.disagreement = class_disagreement(qat, model, hub)
        if qat.disagreement:
            log.warning("%s: %s", model, qat.disagreement)
    return qat


def class_disagreement(qat: QATokenizer, model: str, hub: dict) -> str | None:
    """One sentence on how the installed tokenizer class would join or cut text differently
    from the checkpoint's tokenizer.json (None: it agrees, or it cannot be loaded)."""
    import transformers
    from transformers import AutoTokenizer

    try:
        cls_tok = AutoTokenizer.from_pretrained(model, **hub)
        theirs = learn_template(cls_tok, qat.question_first)
    except Exception:  # a class that cannot load here has nothing to compare
        return None
    ours, where = qat.template("checkpoint"), f"transformers {transformers.__version__}'s {type(cls_tok).__name__}"
    if (theirs.prefix, theirs.middle, theirs.suffix) != (ours.prefix, ours.middle, ours.suffix):
        return (f"{where} joins a pair as {theirs.describe(cls_tok)}, the checkpoint's tokenizer.json as "
                f"{ours.describe(qat.hf)}; docqa uses the checkpoint's (pair_template=checkpoint; "
                "pair_template=transformers-5.2 gives what transformers 5.2.0 joined)")
    a = qat.hf(PROBE_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    b = cls_tok(PROBE_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    if a["input_ids"] != b["input_ids"] or [tuple(o) for o in a["offset_mapping"]] != [tuple(o) for o in b["offset_mapping"]]:
        return (f"{where} cuts text differently from the checkpoint's tokenizer.json (ids or character offsets "
                "differ); docqa uses tokenizer.json")
    if theirs.type_ids is not None and ours.type_ids is not None and theirs.type_ids != ours.type_ids:
        return (f"{where} gives token type ids {theirs.type_ids}, tokenizer.json {ours.type_ids}; docqa uses "
                "tokenizer.json's")
    return None
