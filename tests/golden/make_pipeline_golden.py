"""Generate tests/golden/pipeline_golden.json: the CALLING CONVENTIONS of the
transformers 5.2.0 ``question-answering`` pipeline (accepted call forms, return
shapes, construction- vs call-time parameters, and the exceptions raised for
bad arguments), recorded on the tiny fixture model.

This must run with the REFERENCE environment (transformers 5.2.0 is the last
release with the question-answering pipeline; the project itself uses 5.3+).
Create it once, outside the repository (never commit it):

    python3 -m venv V && V/bin/pip install torch==2.13.0 transformers==5.2.0

then, from the repository root:

    V/bin/python tests/golden/make_pipeline_golden.py

Everything below is fixed data (no randomness; one torch thread), so running the
script twice gives a byte-identical pipeline_golden.json.  It runs in a few
seconds.

pipeline_golden.json layout::

    {"transformers_version", "torch_version", "tokenizers_version",
     "numpy_version", "model": "tests/fixtures/tiny-distilbert-qa",
     "placeholders": {...},
     "cases":  [{"id", "description", "construct", "args", "kwargs",
                 "output", "exact_scores"}],
     "errors": [{"id", "description", "construct", "args", "kwargs",
                 "stage", "exception", "message", ("arg0")}]}

* A call is data: ``qa = pipeline(**construct)`` then ``qa(*args, **kwargs)``.
  In ``construct`` (and only there) these strings stand for objects:
  ``"$MODEL"``            -> the model directory (str), i.e. <repo>/tests/fixtures/tiny-distilbert-qa
  ``"$MODEL_OBJECT"``     -> AutoModelForQuestionAnswering.from_pretrained($MODEL)
  ``"$TOKENIZER_OBJECT"`` -> AutoTokenizer.from_pretrained($MODEL)
* ``output`` is exactly what the pipeline returned (bare dict, list of dicts or
  list of lists of dicts; scores as Python floats, start/end as ints).
* ``exact_scores`` is False where scores are known to move in the ~7th
  significant digit (batch_size > 1 pads the batch, padding="max_length"
  changes the sequence length); compare those with a relative tolerance of
  ~1e-5.  Elsewhere scores still move by ~1e-6 relative with the torch thread
  count (this script uses one thread), so always compare with a tolerance;
  answers, starts, ends, order and the output SHAPE must match exactly.
* ``errors[].stage`` is "construct" when ``pipeline(**construct)`` itself
  raised, "call" when the call raised.  ``exception`` is the class name,
  ``message`` is ``str(exc)``; ``arg0`` is ``exc.args[0]`` where it differs
  from ``str(exc)`` (KeyError quotes its message in str()).
* Some messages come from the Rust ``tokenizers`` library or from torch, not
  from the pipeline (marked "[tokenizers]" / "[python]" in the description);
  a reimplementation may reasonably match only the class.

Notable 5.2.0 behaviour pinned here (see the spec for the full rules):

* ``QuestionAnsweringPipeline.__call__(self, **kwargs)`` takes NO positional
  arguments: ``qa({"question":..., "context":...})``, ``qa(q, c)`` and
  ``qa([{...}, {...}])`` all raise TypeError; ``X=``/``data=`` raise
  ValueError("Unknown arguments {...}").  Only question=/context= work.
* question=list + context=str broadcasts the context; question=str +
  context=list is an error.  A list of length 1 returns the bare single result.
* Unknown keyword arguments (including ``topk``, which is NOT an alias) are
  silently ignored, at construction and at call time.
* A single result is a dict whenever exactly one answer survives, even with
  top_k > 1 (whitespace-only context -> {"score": 0.0, "answer": "", 0, 0}).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForQuestionAnswering, AutoTokenizer, pipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL_REL = "tests/fixtures/tiny-distilbert-qa"
MODEL_DIR = REPO / MODEL_REL
OUT_PATH = Path(__file__).resolve().parent / "pipeline_golden.json"

M = "$MODEL"
BASE = {"task": "question-answering", "model": M, "tokenizer": M, "device": "cpu"}

# ---------------------------------------------------------------------------
# Material
# ---------------------------------------------------------------------------

BRIDGE = (
    "The bridge over the estuary was completed in 1887 after nine years of work. "
    "It was designed by the engineer Harriet Colbourne, who insisted on using "
    "wrought iron rather than cheaper cast iron."
)
FESTIVAL = (
    "Every village in the valley holds a harvest festival at the end of September. "
    "In 2019 the winning pumpkin weighed 412 kilograms and had to be lifted onto "
    "the scales with a tractor."
)
LIBRARY = (
    "Our town library moved into the former railway station in 2004. The station "
    "clock was restored by a volunteer, Walter Brennan, who spent three winters "
    "repairing its mechanism."
)
ISLAND = (
    "The island has no cars, and visitors arrive by a small ferry that runs three "
    "times a day in summer. The school has nine pupils and one teacher, Miriam "
    "Oakley, who also runs the island's only shop."
)
CAFE = (
    "Zoë Müller opened her café in Zürich in 1998. Señor Núñez, a regular from "
    "Málaga, orders a jalapeño omelette and a crème brûlée every Thursday."
)
PARTY = (
    "The party 🎉 was a success 👍🏽! The family from Paris 🇫🇷 brought a cake 🎂 "
    "and the dog 🐕 slept under the table until midnight."
)
CJK = "北京是中国的首都。The tea house 老茶馆 in Beijing opens at six o'clock."
CASES_TEXT = "Paris paris PARIS Paris."
LONG = " ".join([
    BRIDGE, FESTIVAL,
    "Lighthouses once relied on oil lamps and clockwork mechanisms that had to be "
    "wound by hand every few hours. The keepers lived in small cottages at the foot "
    "of the tower and kept detailed logbooks of the weather, passing ships and any "
    "repairs. Most lighthouses were automated during the second half of the "
    "twentieth century.",
    "The orchestra was founded in 1946 by a group of musicians returning from the "
    "war. Its first concerts were given in a school hall with borrowed chairs and a "
    "piano that was missing two keys. Today it performs more than eighty concerts a "
    "year and tours abroad every summer.",
    "Salt was once so valuable that it was used as currency in parts of the ancient "
    "world. Caravans carried blocks of salt across the desert for weeks, exchanging "
    "them for gold, cloth and grain in distant markets.",
    LIBRARY, ISLAND,
    "The canal was dug entirely by hand between 1791 and 1799. Its twenty-nine locks "
    "lift boats a total of seventy-four metres, and a tunnel nearly three kilometres "
    "long carries it beneath the hills.",
])

SIX_Q = ["When was the bridge completed?", "How heavy was the pumpkin?",
         "Who restored the clock?", "Who is the teacher?", "Where is the café?",
         "What did the family bring?"]
SIX_C = [BRIDGE, FESTIVAL, LIBRARY, ISLAND, CAFE, PARTY]


def case(cid, description, kwargs, construct=None, args=None, exact_scores=True):
    return {"id": cid, "description": description,
            "construct": dict(BASE) if construct is None else construct,
            "args": [] if args is None else args, "kwargs": kwargs,
            "exact_scores": exact_scores}


def with_base(**kw):
    return {**BASE, **kw}


CASES = [
    case("single", "one question, one context, defaults -> bare dict",
         {"question": "When was the bridge completed?", "context": BRIDGE}),
    case("single_top_k_1", "top_k=1 explicit -> bare dict",
         {"question": "When was the bridge completed?", "context": BRIDGE, "top_k": 1}),
    case("single_top_k_3", "top_k=3 -> list of 3 dicts, best first",
         {"question": "When was the bridge completed?", "context": BRIDGE, "top_k": 3}),
    case("short_context_top_k_5", "top_k=5 on a one-word context: fewer real spans than top_k, "
         "zero-score fillers (span at [CLS] -> '' 0..0, merged by text)",
         {"question": "Where?", "context": "Paris.", "top_k": 5}),
    case("one_token_context_top_k_3", "one-token context with top_k=3 -> 2 answers ('a' and a 0.0 '' filler)",
         {"question": "Which letter?", "context": "a", "top_k": 3}),
    case("whitespace_context", "whitespace-only context (no context tokens) -> bare dict "
         "{'score': 0.0, 'start': 0, 'end': 0, 'answer': ''} even with top_k=3",
         {"question": "Anything?", "context": "   ", "top_k": 3}),
    case("whitespace_context_impossible", "whitespace-only context + handle_impossible_answer -> "
         "null answer scored 1.0 plus the 0.0 '' filler (never merged)",
         {"question": "Anything?", "context": "   ", "top_k": 3, "handle_impossible_answer": True}),
    case("lists_3", "question=list, context=list (same length 3) -> list of 3 dicts",
         {"question": ["When was the bridge completed?", "Who restored the clock?", "Who is the teacher?"],
          "context": [BRIDGE, LIBRARY, ISLAND]}),
    case("lists_3_top_k_2", "lists of 3 with top_k=2 -> list of 3 lists of 2",
         {"question": ["When was the bridge completed?", "Who restored the clock?", "Who is the teacher?"],
          "context": [BRIDGE, LIBRARY, ISLAND], "top_k": 2}),
    case("one_question_several_contexts", "one question asked of 3 contexts: the question must be "
         "repeated as a list (question=str + context=list is an error)",
         {"question": ["Who is mentioned?"] * 3, "context": [BRIDGE, LIBRARY, ISLAND]}),
    case("several_questions_one_context", "question=list, context=str -> context broadcast",
         {"question": ["When was the bridge completed?", "Who designed the bridge?", "What material was used?"],
          "context": BRIDGE}),
    case("list_len_1", "question=[q], context=[c] -> unwrapped: bare dict, not a list",
         {"question": ["Who restored the clock?"], "context": [LIBRARY]}),
    case("list_len_1_top_k_3", "question=[q], context=c with top_k=3 -> flat list of 3 (not nested)",
         {"question": ["Who restored the clock?"], "context": LIBRARY, "top_k": 3}),
    case("impossible_top_k_1", "handle_impossible_answer=True, top_k=1: null answer only wins if its "
         "score is the highest",
         {"question": "Who restored the clock?", "context": LIBRARY, "handle_impossible_answer": True}),
    case("impossible_top_k_5", "handle_impossible_answer=True, top_k=5: {'answer': '', start 0, end 0} "
         "is appended with the min [CLS] start*end probability over windows and sorted in",
         {"question": "Where?", "context": "Paris.", "top_k": 5, "handle_impossible_answer": True}),
    case("max_answer_len_2", "max_answer_len=2 (tokens) with top_k=3",
         {"question": "Who designed the bridge?", "context": BRIDGE, "max_answer_len": 2, "top_k": 3}),
    case("small_windows", "max_seq_len=32, doc_stride=8 -> several windows; answers merged over windows",
         {"question": "How heavy was the pumpkin?", "context": FESTIVAL, "max_seq_len": 32,
          "doc_stride": 8, "top_k": 3}),
    case("small_windows_at_construction", "same windows as small_windows but params given to pipeline()",
         {"question": "How heavy was the pumpkin?", "context": FESTIVAL},
         construct=with_base(max_seq_len=32, doc_stride=8, top_k=3)),
    case("small_windows_default_stride", "max_seq_len=40 without doc_stride -> doc_stride "
         "defaults to min(max_seq_len // 2, 128) = 20",
         {"question": "How heavy was the pumpkin?", "context": FESTIVAL, "max_seq_len": 40, "top_k": 2}),
    case("align_to_words_false", "align_to_words=False: spans use token offsets (sub-word pieces possible)",
         {"question": "Who is the teacher?", "context": ISLAND, "align_to_words": False, "top_k": 3}),
    case("batch_size_4_call", "6 inputs, batch_size=4 at call time -> list of 6 dicts "
         "(scores differ from batch_size=1 by ~1e-7 relative: padding)",
         {"question": SIX_Q, "context": SIX_C, "batch_size": 4}, exact_scores=False),
    case("batch_size_1_same_inputs", "the same 6 inputs with the default batch_size (1)",
         {"question": SIX_Q, "context": SIX_C}),
    case("batch_size_4_construct", "batch_size=4 given to pipeline(); 6 inputs, small windows, top_k=2",
         {"question": SIX_Q, "context": SIX_C, "max_seq_len": 32, "doc_stride": 8, "top_k": 2},
         construct=with_base(batch_size=4), exact_scores=False),
    case("params_at_construction", "top_k=2, max_answer_len=4 given to pipeline(), none at call",
         {"question": "Who is the teacher?", "context": ISLAND},
         construct=with_base(top_k=2, max_answer_len=4)),
    case("call_overrides_construction", "top_k=2, max_answer_len=4 at construction; top_k=1 at the "
         "call overrides top_k, max_answer_len=4 still applies",
         {"question": "Who is the teacher?", "context": ISLAND, "top_k": 1},
         construct=with_base(top_k=2, max_answer_len=4)),
    case("long_context", "long context (several windows at the defaults 384/128), top_k=3",
         {"question": "When was the orchestra founded?", "context": LONG, "top_k": 3}),
    case("accents", "accented Latin text, top_k=2",
         {"question": "Where did Zoë open her café?", "context": CAFE, "top_k": 2}),
    case("emoji", "emoji (some map to [UNK]), top_k=3",
         {"question": "What did the family bring?", "context": PARTY, "top_k": 3}),
    case("cjk_align_false", "CJK + Latin context, align_to_words=False, top_k=2",
         {"question": "What is the capital?", "context": CJK, "align_to_words": False, "top_k": 2}),
    case("cjk_align_true", "CJK + Latin context, align_to_words=True, top_k=2",
         {"question": "What is the capital?", "context": CJK, "top_k": 2}),
    case("case_insensitive_merge", "spans whose text is equal up to case are merged: the first "
         "(highest-scoring) occurrence keeps its start/end/answer and the scores are summed; all "
         "2*top_k+10 pre-selected candidates per window take part, so the sums depend on top_k",
         {"question": "Which city?", "context": CASES_TEXT, "top_k": 3}),
    case("case_insensitive_merge_top_k_5", "same as case_insensitive_merge with top_k=5: the merged "
         "scores of the first answers are slightly larger (more candidates summed)",
         {"question": "Which city?", "context": CASES_TEXT, "top_k": 5}),
    case("padding_max_length", "padding='max_length' with max_seq_len=64 (scores move slightly)",
         {"question": "Who designed the bridge?", "context": BRIDGE, "padding": "max_length",
          "max_seq_len": 64}, exact_scores=False),
    case("max_question_len_no_effect", "max_question_len=2 is accepted but ignored by the fast-"
         "tokenizer path (same output as without it)",
         {"question": "Who designed the bridge over the estuary?", "context": BRIDGE, "max_question_len": 2}),
    case("topk_is_not_an_alias", "topk=3 (and any unknown kwarg) is silently ignored -> bare dict",
         {"question": "When was the bridge completed?", "context": BRIDGE, "topk": 3, "foo": "bar"}),
    case("model_and_tokenizer_objects", "pipeline() with model/tokenizer objects",
         {"question": "Who restored the clock?", "context": LIBRARY},
         construct={"task": "question-answering", "model": "$MODEL_OBJECT",
                    "tokenizer": "$TOKENIZER_OBJECT", "device": "cpu"}),
    case("model_str_only", "pipeline() with model path only (tokenizer from the same path), "
         "dtype='float32', device=-1",
         {"question": "Who restored the clock?", "context": LIBRARY},
         construct={"task": "question-answering", "model": M, "dtype": "float32", "device": -1}),
]

ERRORS = [
    case("positional_dict", "[python] a dict as the only positional argument",
         {}, args=[{"question": "Who restored the clock?", "context": LIBRARY}]),
    case("positional_strings", "[python] question and context as two positional strings",
         {}, args=["Who restored the clock?", LIBRARY]),
    case("positional_list_of_dicts", "[python] a list of dicts as the only positional argument",
         {}, args=[[{"question": "Who?", "context": LIBRARY}, {"question": "When?", "context": BRIDGE}]]),
    case("X_kwarg", "X= (sklearn style) is not understood",
         {"X": {"question": "Who?", "context": "Walter Brennan restored it."}}),
    case("data_kwarg", "data= is not understood",
         {"data": [{"question": "Who?", "context": "Walter Brennan restored it."}]}),
    case("missing_context", "question without context",
         {"question": "Who restored the clock?"}),
    case("no_arguments", "no arguments at all", {}),
    case("empty_question", "empty question string", {"question": "", "context": LIBRARY}),
    case("empty_context", "empty context string", {"question": "Who?", "context": ""}),
    case("empty_question_in_list", "one empty question inside a list",
         {"question": ["Who?", ""], "context": [LIBRARY, BRIDGE]}),
    case("none_question_in_list", "None inside the question list",
         {"question": ["Who?", None], "context": [LIBRARY, BRIDGE]}),
    case("none_question", "question=None", {"question": None, "context": LIBRARY}),
    case("int_question", "question of a wrong type", {"question": 42, "context": LIBRARY}),
    case("str_question_list_context", "question=str with context=list is not broadcast",
         {"question": "Who?", "context": [LIBRARY, BRIDGE]}),
    case("mismatched_lengths", "lists of different lengths",
         {"question": ["Who?", "When?", "Where?"], "context": [LIBRARY, BRIDGE]}),
    case("empty_lists", "[python] question=[], context=[] -> IndexError from the base pipeline",
         {"question": [], "context": []}),
    case("int_question_in_list", "[tokenizers-side check in transformers] a non-str question inside a list reaches the tokenizer",
         {"question": ["Who?", 42], "context": [LIBRARY, BRIDGE]}),
    case("top_k_0", "top_k < 1 at call time", {"question": "Who?", "context": LIBRARY, "top_k": 0}),
    case("top_k_0_construct", "top_k < 1 at construction time: pipeline() raises",
         {"question": "Who?", "context": LIBRARY}, construct=with_base(top_k=0)),
    case("top_k_str", "[python] top_k as a string", {"question": "Who?", "context": LIBRARY, "top_k": "3"}),
    case("max_answer_len_0", "max_answer_len < 1", {"question": "Who?", "context": LIBRARY, "max_answer_len": 0}),
    case("doc_stride_gt_max_seq_len", "doc_stride > max_seq_len (checked per input at preprocess)",
         {"question": "Who?", "context": LIBRARY, "max_seq_len": 32, "doc_stride": 64}),
    case("doc_stride_gt_max_seq_len_construct", "doc_stride > max_seq_len given to pipeline(): "
         "construction succeeds, the call raises",
         {"question": "Who?", "context": LIBRARY}, construct=with_base(max_seq_len=50, doc_stride=100)),
    case("doc_stride_eq_max_seq_len", "[tokenizers] doc_stride == max_seq_len passes the pipeline's check "
         "but the tokenizer refuses the stride",
         {"question": "Who?", "context": LIBRARY, "max_seq_len": 32, "doc_stride": 32}),
    case("question_too_long", "[tokenizers] question longer than max_seq_len (plain Exception)",
         {"question": "word " * 40, "context": LIBRARY, "max_seq_len": 32, "doc_stride": 4}),
    case("unknown_task", "unknown task name (KeyError; str() adds quotes)",
         {"question": "Who?", "context": LIBRARY},
         construct={"task": "question_answering", "model": M, "tokenizer": M, "device": "cpu"}),
    case("no_task_no_model", "pipeline() with neither task nor model",
         {"question": "Who?", "context": LIBRARY}, construct={}),
    case("no_task_offline", "pipeline(model=path) without a task, HF_HUB_OFFLINE=1 "
         "(this script sets it; online it would query the Hub instead)",
         {"question": "Who?", "context": LIBRARY}, construct={"model": M, "tokenizer": M, "device": "cpu"}),
    case("model_object_without_tokenizer", "[python] model object and no tokenizer: tokenizer cannot be "
         "inferred, the pipeline class is called without one",
         {"question": "Who?", "context": LIBRARY},
         construct={"task": "question-answering", "model": "$MODEL_OBJECT", "device": "cpu"}),
]


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------

_OBJECTS: dict = {}


def resolve(value):
    if value == "$MODEL":
        return str(MODEL_DIR)
    if value == "$MODEL_OBJECT":
        if "model" not in _OBJECTS:
            _OBJECTS["model"] = AutoModelForQuestionAnswering.from_pretrained(str(MODEL_DIR))
        return _OBJECTS["model"]
    if value == "$TOKENIZER_OBJECT":
        if "tok" not in _OBJECTS:
            _OBJECTS["tok"] = AutoTokenizer.from_pretrained(str(MODEL_DIR))
        return _OBJECTS["tok"]
    return value


_PIPES: dict = {}


def build(construct):
    key = json.dumps(construct, sort_keys=True)
    if key not in _PIPES:
        _PIPES[key] = pipeline(**{k: resolve(v) for k, v in construct.items()})
    return _PIPES[key]


def check_output(out):
    """The output must be plain JSON data: dict / list of dicts / list of lists."""
    def check_answer(a):
        assert isinstance(a, dict) and list(a) == ["score", "start", "end", "answer"], a
        assert type(a["score"]) is float and type(a["start"]) is int and type(a["end"]) is int, a
        assert type(a["answer"]) is str, a
    if isinstance(out, dict):
        check_answer(out)
    else:
        assert isinstance(out, list), type(out)
        for x in out:
            if isinstance(x, list):
                for a in x:
                    check_answer(a)
            else:
                check_answer(x)


def shape(out):
    if isinstance(out, dict):
        return "dict"
    return "[" + ",".join(shape(x) for x in out) + "]"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(OUT_PATH))
    args = ap.parse_args()

    if transformers.__version__ != "5.2.0":
        print(f"warning: expected transformers 5.2.0, running {transformers.__version__}", file=sys.stderr)
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    torch.manual_seed(0)
    torch.set_num_threads(1)

    ids = [c["id"] for c in CASES + ERRORS]
    assert len(ids) == len(set(ids)), "duplicate ids"

    cases = []
    for c in CASES:
        qa = build(c["construct"])
        out = qa(*c["args"], **c["kwargs"])
        check_output(out)
        cases.append({k: c[k] for k in ("id", "description", "construct", "args", "kwargs")}
                     | {"output": out, "exact_scores": c["exact_scores"]})

    errors = []
    for c in ERRORS:
        stage = "construct"
        try:
            qa = build(c["construct"])
            stage = "call"
            qa(*c["args"], **c["kwargs"])
        except Exception as exc:  # noqa: BLE001 - recording exactly what is raised
            rec = {k: c[k] for k in ("id", "description", "construct", "args", "kwargs")}
            rec |= {"stage": stage, "exception": type(exc).__name__, "message": str(exc)}
            if exc.args and isinstance(exc.args[0], str) and exc.args[0] != str(exc):
                rec["arg0"] = exc.args[0]
            errors.append(rec)
        else:
            raise AssertionError(f"error case {c['id']} did not raise")

    doc = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
        "numpy_version": np.__version__,
        "model": MODEL_REL,
        "placeholders": {
            "$MODEL": "the model directory as a str: <repo>/" + MODEL_REL,
            "$MODEL_OBJECT": "AutoModelForQuestionAnswering.from_pretrained($MODEL)",
            "$TOKENIZER_OBJECT": "AutoTokenizer.from_pretrained($MODEL)",
        },
        "cases": cases,
        "errors": errors,
    }
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    Path(args.out).write_text(text, encoding="utf-8")

    print(f"wrote {args.out}: {len(cases)} cases, {len(errors)} error cases, "
          f"{len(text.encode('utf-8'))} bytes")
    for c in cases:
        print(f"  {c['id']:36s} {shape(c['output'])}")
    for e in errors:
        print(f"  {e['id']:36s} {e['stage']:9s} {e['exception']}: {e['message'][:90]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
