"""Generate tests/golden/golden.json: answers of the transformers 5.2.0
``question-answering`` pipeline on the tiny fixture model.

This must run with the REFERENCE environment (transformers 5.2.0 is the last
release with the question-answering pipeline; the project itself uses 5.3+).
Create it once, outside the repository (never commit it):

    python3 -m venv V && V/bin/pip install torch==2.13.0 transformers==5.2.0

then, from the repository root:

    V/bin/python tests/golden/make_golden.py

Other model families (tests/fixtures/families, built by
tests/fixtures/build_family_models.py) get a smaller case set of 50:

    V/bin/python tests/golden/make_golden.py --family NAME        # -> tests/golden/families/NAME.json
    V/bin/python tests/golden/make_golden.py --family xlnet --context-only
                                            # -> tests/golden/families-context-only/xlnet.json

and, for the families whose 5.2.0 classes fed the model other than their checkpoint says
(xlm-roberta, albert, electra), the same cases under transformers 4.57.6 (a venv with
torch==2.13.0 transformers==4.57.6 sentencepiece protobuf):

    V457/bin/python tests/golden/make_golden.py --family NAME --out tests/golden/families-4.57/NAME.json

The cases are generated deterministically (fixed seed; contexts are built from
prose embedded below plus template sentences), so running the script twice
gives a byte-identical golden.json.  Every case is run alone through
``pipeline("question-answering", model=PATH, tokenizer=PATH, device="cpu")``
with batch_size 1 and every parameter passed explicitly.

golden.json layout::

    {"transformers_version", "torch_version", "tokenizers_version",
     "numpy_version", "model": "tests/fixtures/tiny-distilbert-qa",
     "cases": [{"id", "category", "question", "context",
                "params": {"top_k", "max_answer_len", "handle_impossible_answer",
                           "align_to_words", "max_seq_len", "doc_stride"},
                "answers": [{"answer", "score", "start", "end"}, ...],
                "n_windows", "windows", "n_context_tokens"}]}

* ``answers`` is always a list (the pipeline returns a bare dict for a single
  answer; it is normalised here), in the pipeline's order.
* ``n_windows`` is the number of overflow encodings the pipeline's own
  tokenizer call produced (question first, truncation="only_second",
  max_length=max_seq_len, stride=doc_stride, no padding).
* ``windows[i]`` = [first, last+1) of window i's context tokens, as indices
  into the context tokenized ALONE (``tok(context, add_special_tokens=False)``).
  The script asserts that each window's context tokens (ids and offsets) are
  exactly that slice of the alone-tokenization.
* ``n_context_tokens`` is the length of that alone-tokenization.
* ``category`` names the group the case was generated in (prose, long,
  small_windows, unicode, whitespace, punct_numbers, short, question_length,
  repeated, word_split_windows).

Notes on the reference's behaviour that the cases pin down:

* scores are the pipeline's float32 probabilities as Python floats (sums of
  them where several spans give the same text, compared case-insensitively).
  They move by ~1e-6 relative with the torch thread count (this script uses
  one thread), so compare scores with a tolerance; the ordering of positive
  scores is never that close (smallest relative gap printed at the end).
* very short contexts with top_k 5 get zero-score filler answers: spans
  starting at [CLS] (their character span falls back to the token offsets,
  even with align_to_words=True, e.g. "Par" out of "Paris.") and "" at 0..0;
  which zero-score spans appear depends on numpy's argpartition tie order.
* handle_impossible_answer=True appends {"answer": "", "start": 0, "end": 0}
  scored with the smallest [CLS] start*end probability over all windows; it
  is never merged with a zero-score "" filler, so both can appear.
* with align_to_words=True an answer can still start or end inside a word
  when a window edge cuts that word (the word is only as wide as its tokens
  inside that window); see the word_split_windows cases.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import tokenizers  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoTokenizer, pipeline  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
MODEL_REL = "tests/fixtures/tiny-distilbert-qa"
MODEL_DIR = REPO / MODEL_REL
OUT_PATH = Path(__file__).resolve().parent / "golden.json"
SEED = 1234567

DEFAULT_PARAMS = {
    "top_k": 1,
    "max_answer_len": 15,
    "handle_impossible_answer": False,
    "align_to_words": True,
    "max_seq_len": 384,
    "doc_stride": 128,
}

# ---------------------------------------------------------------------------
# Material
# ---------------------------------------------------------------------------

PARAGRAPHS = [
    "The bridge over the estuary was completed in 1887 after nine years of work. "
    "It was designed by the engineer Harriet Colbourne, who insisted on using "
    "wrought iron rather than the cheaper cast iron favoured by the railway "
    "company. When a violent storm destroyed a similar bridge further north two "
    "years later, her decision was widely praised, and she went on to design "
    "more than forty bridges across the country.",
    "Every village in the valley holds a harvest festival at the end of "
    "September. The largest takes place in Ashbury, where farmers compete to "
    "grow the heaviest pumpkin and the longest runner bean. In 2019 the winning "
    "pumpkin weighed 412 kilograms and had to be lifted onto the scales with a "
    "tractor. The prize, a silver cup first awarded in 1923, is kept in the "
    "window of the post office for the rest of the year.",
    "Lighthouses once relied on oil lamps and clockwork mechanisms that had to "
    "be wound by hand every few hours. The keepers lived in small cottages at "
    "the foot of the tower and kept detailed logbooks of the weather, passing "
    "ships and any repairs. Most lighthouses were automated during the second "
    "half of the twentieth century, and many of the cottages are now rented to "
    "holidaymakers who enjoy the isolation.",
    "The orchestra was founded in 1946 by a group of musicians returning from "
    "the war. Its first concerts were given in a school hall with borrowed "
    "chairs and a piano that was missing two keys. Today it performs more than "
    "eighty concerts a year, tours abroad every summer and runs a programme that "
    "brings music teachers to over three hundred primary schools.",
    "Salt was once so valuable that it was used as currency in parts of the "
    "ancient world. Roman soldiers were sometimes paid with an allowance to buy "
    "it, and towns that controlled salt springs or coastal salt pans grew "
    "wealthy from the trade. Caravans carried blocks of salt across the desert "
    "for weeks, exchanging them for gold, cloth and grain in distant markets.",
    "The observatory sits on a ridge two thousand metres above sea level, far "
    "from the lights of any city. Its main telescope has a mirror four metres "
    "across and is used every clear night of the year. Astronomers from eleven "
    "countries share the observing time, and the data they collect is published "
    "openly after a period of twelve months.",
    "Our town library moved into the former railway station in 2004. The "
    "waiting room became the children's section, the ticket office now holds "
    "the local history archive, and the platform has been turned into a garden "
    "where readers can sit in the summer. The station clock was restored by a "
    "volunteer, Walter Brennan, who spent three winters repairing its mechanism.",
    "Beavers are among the few animals that reshape their environment on a "
    "large scale. By felling trees and building dams of branches, stones and "
    "mud, they create ponds that provide a home for fish, frogs, insects and "
    "birds. Their dams also slow the flow of water after heavy rain, which can "
    "reduce flooding in villages further downstream.",
    "The first public railway to carry passengers in steam-hauled trains opened "
    "in 1830 between two industrial cities. On the opening day a crowd of "
    "thousands lined the track, and the locomotive reached the astonishing "
    "speed of about forty-eight kilometres per hour. Within twenty years the "
    "country was covered by a network of lines more than ten thousand "
    "kilometres long.",
    "Making paper by hand begins with soaking plant fibres, such as cotton rags "
    "or mulberry bark, until they break down into a pulp. The papermaker dips a "
    "fine mesh screen into a vat of the pulp, lifts it out and shakes it gently "
    "so the fibres interlock. The wet sheet is pressed between felts to remove "
    "water and then hung up to dry, a process that can take several days.",
    "The island has no cars, and visitors arrive by a small ferry that runs "
    "three times a day in summer and twice a week in winter. About two hundred "
    "people live there all year round, most of them fishermen or sheep "
    "farmers. The school has nine pupils and one teacher, Miriam Oakley, who "
    "also runs the island's only shop on Saturday mornings.",
    "Chess arrived in Europe from Persia through the Arab world more than a "
    "thousand years ago. The early game was slower than the modern one, because "
    "the queen could move only one square diagonally. The rules that give the "
    "queen her great power were adopted in Spain and Italy around 1475, and the "
    "new, faster game quickly spread across the continent.",
    "The canal was dug entirely by hand between 1791 and 1799. Thousands of "
    "labourers, known as navigators, moved millions of tonnes of earth with "
    "spades and wheelbarrows. Its twenty-nine locks lift boats a total of "
    "seventy-four metres, and a tunnel nearly three kilometres long carries it "
    "beneath the hills, where boatmen once pushed their barges through with "
    "their feet.",
    "A good sourdough starter needs only flour, water and patience. Mixed and "
    "left in a warm kitchen, the paste is colonised by wild yeasts and bacteria "
    "from the air and the flour itself. After about a week of daily feeding it "
    "bubbles vigorously and smells pleasantly sour, and it can then be kept "
    "alive for decades; some bakeries use starters that are over a century old.",
    "During the great frost of 1684 the river froze so thickly that a fair was "
    "held on the ice for several weeks. Traders set up stalls selling roasted "
    "meat, gingerbread and hot drinks, printers produced souvenir cards bearing "
    "the customer's name, and coaches were driven across from one bank to the "
    "other as if the river were a street.",
    "The museum's collection of clocks includes more than six hundred pieces, "
    "from simple sundials to an astronomical clock that shows the positions of "
    "the planets. The oldest working item is a tower clock mechanism made in "
    "1392 for a cathedral in the south. Every hour the galleries fill with the "
    "sound of chimes, bells and cuckoos, which visitors either love or find "
    "impossible to bear.",
]

UNICODE_PARAGRAPHS = [
    "Zoë Müller opened her café in Zürich in 1998. Señor Núñez, a regular from "
    "Málaga, orders a jalapeño omelette and a crème brûlée every Thursday; the "
    "naïve painter Bjørn Ångström sketches the façade while sipping a café "
    "au lait. Göttingen, São Paulo and Kraków are the cities on her postcards.",
    "北京是中国的首都，上海是最大的城市。The tea house 老茶馆 in 北京 opens at "
    "six. 東京と大阪は日本の都市です。学生们每天早上学习中文。",
    "The party 🎉 was a success 👍🏽! The family 👩\u200d👩\u200d👧 from Paris🇫🇷 "
    "brought cake 🎂🎂 and the dog 🐕\u200d🦺 slept. Rating: ⭐⭐⭐⭐ (4/5) 😀😃😄.",
    "The cafe\u0301 on the corner serves re\u0301sume\u0301 lunches; the "
    "man\u0303ana crowd and the Zu\u0308rich tourists come for n\u0303oquis and "
    "coffee. Combining marks: a\u0300 e\u0302 o\u0308 u\u0301.",
    "Zero\u200bwidth spaces hide in\u200bside words like in\u200bformation and "
    "co\u200doperation; the byte\ufefforder mark appears mid\ufeffword too. "
    "\ufeffThis sentence starts with a BOM and Zu\u200d\u200drich has two joiners.",
]

WHITESPACE_CONTEXTS = [
    "The   bridge\t\twas   built\n\nin    1887   by   Harriet  Colbourne .",
    "   \n\t  Leading whitespace comes first; the answer is Ashbury.   \n\n\t  ",
    "Line one.\nLine two has the number 42.\r\nLine three:\tTabbed\tvalues\there.\n\n\n",
    "Spaces\u00a0that\u00a0do\u00a0not\u00a0break and an ideographic\u3000space, a line\u2028separator "
    "and a thin\u2009space around the year 1923.",
    "Control\x07characters\x00and a replacement \ufffd char sit in this  sentence about Walter Brennan.",
    "\t\t\tIndented text about the canal, dug between 1791 and 1799.\t\t\t",
]

PUNCT_CONTEXTS = [
    "Wait... what?!? (Yes) -- [no]; {maybe}: \"quoted\" 'single' <tag/> a/b/c e.g. U.S.A. & co.; "
    "#hashtag @mention $100 50% x*y=z ~tilde^caret_under|pipe\\back `tick` ...!!! ???",
    "In 1999, 3,456.78 units were sold; pi is 3.14159; it was -42 degrees; 1e10 atoms; 0x1F; 50%; "
    "12:30; 2024-01-15; +44 20 7946 0958; version 5.2.0; ISBN 978-3-16-148410-0; 1/2 + 3/4 = 5/4.",
    "Q&A: Who? What? Where? When? Why? How?! -- The answer: Harriet (the engineer) built it in 1887.",
    "\u201cSmart quotes\u201d and \u2018single ones\u2019 \u2014 em dash \u2013 en dash \u2026 ellipsis "
    "\u00ab guillemets \u00bb \u00bfQu\u00e9? \u00a1S\u00ed! \u00a7 12 \u00b6 3 \u2022 bullet \u00b0C.",
]

SHORT_CONTEXTS = [
    "Paris.",
    "Yes",
    "42",
    "北京",
    "🎉",
    "Hi there",
    "The end.",
    "café au lait",
    "A B C",
    "Ashbury, 1887!",
    "Walter Brennan",
    "x",
]

GIVEN = ("Alice Benjamin Clara Daniel Eleanor Felix Grace Henry Isabel James Katherine Leonard "
         "Miriam Nathan Olivia Patrick Rosalind Samuel Theresa Victor Walter Yvonne Quincy Xavier").split()
FAMILY = ("Abbott Barker Carver Dalton Ellison Fletcher Garrison Hartley Ingram Jennings Kendall "
          "Lambert Mercer Norwood Oakley Preston Radcliffe Sinclair Thornton Underwood Zimmerman").split()
PLACES = ("Ashbury Brookfield Castleton Dunmore Eastwick Fairhaven Glenwood Harrowgate Ivybridge "
          "Kingsmere Marlow Northcliff Oakridge Pemberton Redcliffe Stonehaven Upton Westmoor").split()
NOUNS = ("bridge castle harbour market garden orchard village valley mountain river library museum "
         "station theatre cathedral school factory bakery workshop lighthouse windmill canal tunnel "
         "telescope compass lantern violin clock journal treaty charter map painting manuscript "
         "festival harvest expedition council society guild tower gate railway quarry").split()
VERBS = ("built discovered founded repaired painted described measured visited crossed designed "
         "opened closed explored studied recorded sold bought planted restored mapped replaced "
         "improved organised launched invented protected surveyed translated published").split()
ADJS = ("ancient modern small large narrow wide quiet busy famous forgotten northern southern golden "
        "wooden stone iron bright dark cold warm steep remote crowded elegant humble sturdy").split()
MONTHS = "January February March April May June July August September October November December".split()

QUESTIONS = [
    "Who built it?",
    "What?",
    "When was the bridge completed?",
    "Where is the festival held?",
    "How many concerts does the orchestra give each year?",
    "Why was salt valuable?",
    "Which city is the capital?",
    "What did the keepers record in their logbooks?",
    "Who restored the station clock?",
    "How long is the tunnel?",
    "What is the name of the teacher on the island?",
    "In which year did the river freeze?",
    "What does a sourdough starter need?",
    "Which material did the engineer insist on using?",
    "How heavy was the winning pumpkin in 2019?",
    "Where do the astronomers come from?",
    "What happened on the opening day?",
    "who?",
    "Name the cafe owner.",
    "Wer hat das Café in Zürich eröffnet?",
    "Which emoji 🎉 appears first?",
    "  How many locks does the canal have?  ",
    "What number is mentioned?",
    "When?",
    "Is there an answer here at all, or is this question unanswerable from the given text?",
]

LONG_QUESTION = (
    "Thinking about all the people, places, dates, bridges, canals and festivals that the passage "
    "describes, which name best answers the question of who was responsible for the most important "
    "engineering work, and in what year was that work finally completed?"
)


def gen_sentence(rng: random.Random) -> str:
    name = f"{rng.choice(GIVEN)} {rng.choice(FAMILY)}"
    place, noun, noun2 = rng.choice(PLACES), rng.choice(NOUNS), rng.choice(NOUNS)
    adj, verb, month = rng.choice(ADJS), rng.choice(VERBS), rng.choice(MONTHS)
    year, num = rng.randrange(1400, 2025), rng.randrange(2, 90000)
    kind = rng.randrange(7)
    if kind == 0:
        return f"In {year}, {name} {verb} the {adj} {noun} near {place}."
    if kind == 1:
        return f"The {noun} of {place} was {verb} by {name} in {month} {year}."
    if kind == 2:
        return f"About {num:,} people visited the {adj} {noun} in {place} every year."
    if kind == 3:
        return f"{name} later wrote that the {noun} had been \"{adj}, {rng.choice(ADJS)} and utterly unforgettable\"."
    if kind == 4:
        return f"On {rng.randrange(1, 29)} {month} {year} the {noun} cost {num}.{rng.randrange(10, 99)} pounds."
    if kind == 5:
        return f"Between {year} and {year + rng.randrange(1, 60)} the {noun} and the {noun2} of {place} were {verb} twice."
    return f"Nobody in {place} remembers who {verb} the {noun2}, although {name} claimed the credit."


def gen_prose(rng: random.Random, n_words: int, extra: list[str] | None = None) -> str:
    """Paragraphs (embedded prose, template sentences, optional extra
    paragraphs) joined with blank lines until about n_words words."""
    parts: list[str] = []
    words = 0
    pool = list(PARAGRAPHS) + list(extra or [])
    while words < n_words:
        if rng.random() < 0.45:
            para = rng.choice(pool)
        else:
            para = " ".join(gen_sentence(rng) for _ in range(rng.randrange(3, 8)))
        parts.append(para)
        words += len(para.split())
    return "\n\n".join(parts)


# ---------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------


def build_cases(tok) -> list[dict]:
    rng = random.Random(SEED)
    cases: list[dict] = []

    def add(category, question, context, **params):
        p = dict(DEFAULT_PARAMS)
        p.update(params)
        cases.append({"category": category, "question": question, "context": context, "params": p})

    def varied(i: int) -> dict:
        """Cycle deterministically through the post-processing parameters."""
        return {
            "top_k": [1, 5, 3, 1, 5, 1][i % 6],
            "max_answer_len": [15, 30, 3, 1, 15][i % 5],
            "handle_impossible_answer": [False, True, False][i % 3],
            "align_to_words": [True, True, False, True][i % 4],
        }

    # 1. ordinary short and medium prose (one or two windows)
    for i in range(30):
        if i % 3 == 0:
            ctx = rng.choice(PARAGRAPHS)
        else:
            ctx = gen_prose(rng, rng.randrange(40, 260))
        add("prose", rng.choice(QUESTIONS), ctx, **varied(i))

    # 2. long contexts: >= 3 windows at 384/128, some 5-10 windows
    targets = [420, 450, 500, 560, 620, 700, 780, 860, 950, 1050, 1150, 1300, 1500]
    for i in range(30):
        n_words = targets[i % len(targets)] + rng.randrange(0, 80)
        extra = UNICODE_PARAGRAPHS if i % 5 == 4 else None
        ctx = gen_prose(rng, n_words, extra)
        add("long", rng.choice(QUESTIONS), ctx, **varied(i + 1))

    # 3. small max_seq_len / doc_stride: many windows
    small = [(128, 32), (64, 16), (256, 100), (128, 64), (96, 0), (200, 50), (64, 30), (384, 200)]
    for i in range(16):
        msl, ds = small[i % len(small)]
        q = rng.choice(["Who built it?", "What?", "When?", "Where is the festival held?", "who?"])
        ctx = gen_prose(rng, rng.randrange(150, 700), UNICODE_PARAGRAPHS if i % 4 == 3 else None)
        add("small_windows", q, ctx, max_seq_len=msl, doc_stride=ds, **varied(i + 2))

    # 4. unicode-heavy contexts, each with align_to_words on and off
    for j, ctx in enumerate(UNICODE_PARAGRAPHS):
        for k, align in enumerate([True, False]):
            add("unicode", QUESTIONS[[18, 6, 20, 19, 22][j]], ctx,
                top_k=[1, 5][k], align_to_words=align, max_answer_len=[15, 30][k],
                handle_impossible_answer=bool(j % 2))
            add("unicode", rng.choice(QUESTIONS), ctx, top_k=3, align_to_words=align,
                max_answer_len=3, handle_impossible_answer=not bool(j % 2))

    # 5. whitespace oddities
    for j, ctx in enumerate(WHITESPACE_CONTEXTS):
        add("whitespace", rng.choice(QUESTIONS), ctx, top_k=[1, 5][j % 2],
            align_to_words=bool(j % 3), handle_impossible_answer=j % 2 == 0)
        add("whitespace", "What is the answer?", ctx, top_k=3, max_answer_len=[1, 3, 15, 30][j % 4],
            align_to_words=j % 2 == 0)

    # 6. punctuation-heavy text and numbers
    for j, ctx in enumerate(PUNCT_CONTEXTS):
        for k in range(3):
            add("punct_numbers", rng.choice(QUESTIONS), ctx, top_k=[1, 5, 3][k],
                max_answer_len=[15, 3, 1][k], align_to_words=k != 1,
                handle_impossible_answer=(j + k) % 2 == 1)

    # 7. very short contexts (1-6 tokens), top_k 5
    for j, ctx in enumerate(SHORT_CONTEXTS):
        add("short", rng.choice(QUESTIONS), ctx, top_k=5,
            handle_impossible_answer=j % 2 == 1, align_to_words=j % 3 != 2,
            max_answer_len=[15, 1, 3, 30][j % 4])

    # 8. questions of varied length, including one of ~60 tokens
    q_ctx = gen_prose(rng, 300)
    for k, q in enumerate(["What?", "who?", QUESTIONS[4], QUESTIONS[24], LONG_QUESTION]):
        add("question_length", q, q_ctx, top_k=[1, 3][k % 2], handle_impossible_answer=k % 2 == 1)
    long_ctx = gen_prose(rng, 1100)
    add("question_length", LONG_QUESTION, long_ctx, top_k=5, max_answer_len=30)
    add("question_length", LONG_QUESTION, long_ctx, top_k=1, handle_impossible_answer=True,
        align_to_words=False)
    add("question_length", LONG_QUESTION, gen_prose(rng, 500), max_seq_len=128, doc_stride=32, top_k=3)

    # 9. repeated text: identical answers in several places / letter cases
    rep_unit = "Paris is the answer. paris is the answer. PARIS is the answer! "
    add("repeated", "What is the answer?", rep_unit * 3, top_k=5)
    add("repeated", "What is the answer?", rep_unit * 3, top_k=5, align_to_words=False, max_answer_len=1)
    add("repeated", "What is the answer?", rep_unit * 60, top_k=5, handle_impossible_answer=True)
    add("repeated", "Who built it?", ("The bridge was built by Harriet Colbourne in 1887. " * 90).strip(),
        top_k=3, max_answer_len=30)
    add("repeated", "Who?", " ".join([PARAGRAPHS[0]] * 12), top_k=5, max_seq_len=128, doc_stride=64)

    # 10. small windows over heavily fragmented words: window edges fall
    # inside words, where the reference's align_to_words can only expand to
    # the part of the word that is inside the window
    frag = [UNICODE_PARAGRAPHS[0], UNICODE_PARAGRAPHS[3], PARAGRAPHS[1], PARAGRAPHS[13]]
    for j, (msl, ds) in enumerate([(48, 12), (64, 16), (80, 20), (100, 40), (56, 24), (64, 8)]):
        ctx = " ".join(frag[(j + k) % len(frag)] for k in range(3))
        add("word_split_windows", ["Who?", "What?", "When?"][j % 3], ctx, max_seq_len=msl, doc_stride=ds,
            top_k=5, max_answer_len=[15, 3, 30][j % 3], align_to_words=j != 5,
            handle_impossible_answer=j % 2 == 1)

    return cases


def build_family_cases(tok) -> list[dict]:
    """A smaller set for the other model families (tests/fixtures/families): every kind of
    input the full set has (one and many windows, Unicode, whitespace, very short
    contexts, repeated text, window edges inside words), with top_k > 1 and
    handle_impossible_answer among the parameters."""
    rng = random.Random(SEED + 1)
    cases: list[dict] = []

    def add(category, question, context, **params):
        cases.append({"category": category, "question": question, "context": context,
                      "params": {**DEFAULT_PARAMS, **params}})

    def varied(i: int) -> dict:
        return {"top_k": [1, 5, 3][i % 3], "max_answer_len": [15, 30, 3, 15][i % 4],
                "handle_impossible_answer": i % 2 == 1, "align_to_words": i % 5 != 2}

    for i in range(6):
        ctx = PARAGRAPHS[i] if i % 2 == 0 else gen_prose(rng, rng.randrange(60, 240))
        add("prose", rng.choice(QUESTIONS), ctx, **varied(i))
    for i, n_words in enumerate((430, 520, 640, 760, 900, 1100)):
        add("long", rng.choice(QUESTIONS), gen_prose(rng, n_words, UNICODE_PARAGRAPHS if i % 3 == 2 else None),
            **varied(i + 1))
    for i, (msl, ds) in enumerate([(128, 32), (64, 16), (96, 0), (200, 50), (64, 30), (256, 100)]):
        add("small_windows", ["Who built it?", "What?", "When?", "who?"][i % 4],
            gen_prose(rng, rng.randrange(150, 400), UNICODE_PARAGRAPHS if i % 2 else None),
            max_seq_len=msl, doc_stride=ds, **varied(i + 2))
    for j, ctx in enumerate(UNICODE_PARAGRAPHS):
        for k, align in enumerate([True, False]):
            add("unicode", QUESTIONS[[18, 6, 20, 19, 22][j]], ctx, top_k=[1, 5][k], align_to_words=align,
                max_answer_len=[15, 30][k], handle_impossible_answer=(j + k) % 2 == 1)
    for j, ctx in enumerate(WHITESPACE_CONTEXTS[:4]):
        add("whitespace", rng.choice(QUESTIONS), ctx, top_k=[1, 5][j % 2], align_to_words=bool(j % 3),
            handle_impossible_answer=j % 2 == 0)
    for j, ctx in enumerate(SHORT_CONTEXTS[:6]):
        add("short", rng.choice(QUESTIONS), ctx, top_k=5, handle_impossible_answer=j % 2 == 1,
            align_to_words=j % 3 != 2, max_answer_len=[15, 1, 3][j % 3])
    rep_unit = "Paris is the answer. paris is the answer. PARIS is the answer! "
    add("repeated", "What is the answer?", rep_unit * 3, top_k=5)
    add("repeated", "Who?", " ".join([PARAGRAPHS[0]] * 6), top_k=5, max_seq_len=128, doc_stride=64,
        handle_impossible_answer=True)
    frag = [UNICODE_PARAGRAPHS[0], UNICODE_PARAGRAPHS[3], PARAGRAPHS[1], PARAGRAPHS[13]]
    for j, (msl, ds) in enumerate([(48, 12), (64, 16)]):
        add("word_split_windows", ["Who?", "What?"][j], " ".join(frag[(j + k) % len(frag)] for k in range(3)),
            max_seq_len=msl, doc_stride=ds, top_k=5, handle_impossible_answer=j == 1)
    # One set of parameters over several documents and questions: what one `docqa run` or
    # `docqa submit` call asks (tests of the CLI and the workers use this category).
    batch_docs = [gen_prose(rng, 700, UNICODE_PARAGRAPHS), UNICODE_PARAGRAPHS[0], WHITESPACE_CONTEXTS[0], "Paris."]
    for question in ("Who built it?", "Where is the café?"):
        for ctx in batch_docs:
            add("batch", question, ctx, top_k=3, handle_impossible_answer=True)
    return cases


def select_partial_word_cases(qa, tok, n_wanted: int = 5) -> list[dict]:
    """Deterministically scan small-window configurations over fragmented
    words and keep the first n_wanted where the reference, with
    align_to_words=True, returns an answer that starts or ends inside a word
    (a window edge cut the word: word_to_chars only covers the tokens of the
    word that are inside that window)."""
    frag = [UNICODE_PARAGRAPHS[0], UNICODE_PARAGRAPHS[3], PARAGRAPHS[1], PARAGRAPHS[13], PARAGRAPHS[0]]
    found = []
    for msl, ds in [(48, 12), (64, 16), (80, 20), (100, 40), (56, 24), (64, 8), (72, 30), (90, 10)]:
        for q in ["Who?", "What?", "When?", "Where?", "Who built it?"]:
            for k in range(len(frag)):
                ctx = " ".join(frag[(k + i) % len(frag)] for i in range(2))
                for mal in (3, 15):
                    p = dict(DEFAULT_PARAMS, top_k=5, max_answer_len=mal, max_seq_len=msl, doc_stride=ds,
                             handle_impossible_answer=len(found) % 2 == 1)
                    case = {"category": "word_split_windows", "question": q, "context": ctx, "params": p}
                    case["answers"] = normalise(qa(question=q, context=ctx, batch_size=1, **p))
                    if partial_word_answers(tok, case):
                        found.append(case)
                        if len(found) == n_wanted:
                            return found
                        break  # next question
    return found


# ---------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------


def compute_windows(tok, question: str, context: str, max_seq_len: int, doc_stride: int):
    """Return (n_windows, windows, n_context_tokens) and assert that every
    window's context tokens are a contiguous slice of the context tokenized
    alone (same ids, same offsets)."""
    question_first = tok.padding_side == "right"  # the pipeline's rule (XLNet pads left: context first)
    ctx_seq = 1 if question_first else 0
    enc = tok(  # the call QuestionAnsweringPipeline.preprocess makes
        text=question if question_first else context,
        text_pair=context if question_first else question,
        padding="do_not_pad",
        truncation="only_second" if question_first else "only_first",
        max_length=max_seq_len,
        stride=doc_stride,
        return_token_type_ids=True,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
    )
    alone = tok(context, add_special_tokens=False, return_offsets_mapping=True)
    a_ids = list(alone["input_ids"])
    a_off = [tuple(o) for o in alone["offset_mapping"]]
    n = len(enc["input_ids"])
    windows = []
    for w in range(n):
        seq = enc.sequence_ids(w)
        idx = [i for i, s in enumerate(seq) if s == ctx_seq]
        ids = [enc["input_ids"][w][i] for i in idx]
        offs = [tuple(enc["offset_mapping"][w][i]) for i in idx]
        assert idx == list(range(idx[0], idx[0] + len(idx))), "context tokens not contiguous"
        matches = [
            j for j in range(len(a_ids) - len(ids) + 1)
            if a_off[j] == offs[0] and a_ids[j:j + len(ids)] == ids and a_off[j:j + len(ids)] == offs
        ]
        if len(matches) != 1:
            raise AssertionError(
                f"window {w} is not a unique slice of the alone-tokenization: matches={matches}\n"
                f"question={question!r}\ncontext={context!r}\nwindow ids={ids}\nwindow offsets={offs}"
            )
        windows.append([matches[0], matches[0] + len(ids)])
    # consecutive windows: overlap of doc_stride tokens (or up to the end)
    for (_s0, e0), (s1, _e1) in zip(windows, windows[1:]):
        assert s1 == e0 - doc_stride, (windows, doc_stride)
    assert windows[0][0] == 0 and windows[-1][1] == len(a_ids), windows
    return n, windows, len(a_ids)


# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------


def partial_word_answers(tok, case) -> list[dict]:
    """Non-empty answers whose start/end is not a word boundary of the context
    (words as the pre-tokenizer splits them)."""
    enc = tok(case["context"], add_special_tokens=False, return_offsets_mapping=True)
    w_start: dict[int, int] = {}
    w_end: dict[int, int] = {}
    for (s, e), w in zip(enc["offset_mapping"], enc.word_ids()):
        w_start.setdefault(w, s)
        w_end[w] = e
    starts, ends = set(w_start.values()), set(w_end.values())
    return [a for a in case["answers"] if a["answer"] and (a["start"] not in starts or a["end"] not in ends)]


def mask_context_first_like_question_first() -> None:
    """Patch 5.2.0's pipeline so that in a context-first tokenizer's windows only context
    tokens may start or end a span. 5.2.0 masked nothing for them (`p_mask = 0` for every
    token), so spans over the question or special tokens, or from the context to the CLS
    at the end, map onto the context's characters by index (offsets like 54:0). docqa
    stores only spans of the document; this is its reference: 5.2.0's arithmetic with that
    one mask changed."""
    from transformers.pipelines.question_answering import QuestionAnsweringPipeline

    original = QuestionAnsweringPipeline.preprocess

    def preprocess(self, *args, **kwargs):
        for item in original(self, *args, **kwargs):
            if self.tokenizer.padding_side == "left":
                mask = [0 if s == 0 else 1 for s in item["encoding"].sequence_ids]
                item["p_mask"] = torch.tensor(mask).unsqueeze(0)
            yield item

    QuestionAnsweringPipeline.preprocess = preprocess


def normalise(result) -> list[dict]:
    if isinstance(result, dict):
        result = [result]
    out = []
    for a in result:
        out.append({"answer": a["answer"], "score": float(a["score"]),
                    "start": int(a["start"]), "end": int(a["end"])})
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(OUT_PATH))
    ap.add_argument("--no-margins", action="store_true",
                    help="skip the diagnostic run with top_k+1 (margin report)")
    ap.add_argument("--family", metavar="NAME",
                    help="a model of tests/fixtures/families (its smaller case set), written to "
                         "tests/golden/families/NAME.json unless --out says otherwise")
    ap.add_argument("--context-only", action="store_true",
                    help="a context-first family's reference for stored answers: spans over context "
                         "tokens only (see mask_context_first_like_question_first); written to "
                         "tests/golden/families-context-only/NAME.json")
    args = ap.parse_args()
    if args.context_only:
        mask_context_first_like_question_first()
    model_rel, out = MODEL_REL, args.out
    if args.family:
        model_rel = f"tests/fixtures/families/{args.family}"
        if args.out == str(OUT_PATH):
            folder = "families-context-only" if args.context_only else "families"
            out = str(OUT_PATH.parent / folder / f"{args.family}.json")
    model_dir = REPO / model_rel

    if transformers.__version__ != "5.2.0":
        print(f"warning: expected transformers 5.2.0, running {transformers.__version__}", file=sys.stderr)
    random.seed(SEED)
    np.random.seed(SEED)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    qa = pipeline("question-answering", model=str(model_dir), tokenizer=str(model_dir), device="cpu")
    assert qa.tokenizer.is_fast
    if args.family:
        cases = build_family_cases(tok)
    else:
        assert qa.tokenizer.padding_side == "right"
        lq = len(tok(LONG_QUESTION, add_special_tokens=False)["input_ids"])
        assert 55 <= lq <= 70, lq
        cases = build_cases(tok)
        cases += select_partial_word_cases(qa, tok)
    for i, c in enumerate(cases):
        c["id"] = f"{c['category']}-{i:03d}"
    min_margin = (float("inf"), None)
    odd = []
    partial_cases = []
    for c in cases:
        p = c["params"]
        n, windows, n_ctx = compute_windows(tok, c["question"], c["context"], p["max_seq_len"], p["doc_stride"])
        res = qa(question=c["question"], context=c["context"], batch_size=1, **p)
        c["answers"] = normalise(res)
        c["n_windows"] = n
        c["windows"] = windows
        c["n_context_tokens"] = n_ctx

        if p["align_to_words"]:
            partial = partial_word_answers(tok, c)
            if partial:
                partial_cases.append((c["id"], partial))
        for a in c["answers"]:
            if a["start"] > a["end"] or a["answer"] == "" or a["score"] == 0.0 or a["answer"] != c["context"][a["start"]:a["end"]]:
                odd.append((c["id"], a))
        if not args.no_margins:
            # relative gap between consecutive positive scores, including the
            # first answer that top_k cut off
            more = normalise(qa(question=c["question"], context=c["context"], batch_size=1,
                                **{**p, "top_k": p["top_k"] + 1}))
            scores = [a["score"] for a in more if a["score"] > 0]
            for x, y in zip(scores, scores[1:]):
                gap = (x - y) / x
                if gap < min_margin[0]:
                    min_margin = (gap, c["id"])

    doc = {
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "tokenizers_version": tokenizers.__version__,
        "numpy_version": np.__version__,
        "model": model_rel,
        # Families: how 5.2.0 loaded the tokenizer and joined a pair, what the answers rest on.
        **({"tokenizer_class": type(qa.tokenizer).__name__, "padding_side": qa.tokenizer.padding_side,
            "pair": tok.convert_ids_to_tokens(tok("Q", "C")["input_ids"])} if args.family else {}),
        "cases": [
            {k: c[k] for k in ("id", "category", "question", "context", "params", "answers",
                               "n_windows", "windows", "n_context_tokens")}
            for c in cases
        ],
    }
    text = json.dumps(doc, ensure_ascii=False, indent=1) + "\n"
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(text, encoding="utf-8")

    # summary
    from collections import Counter

    print(f"wrote {out}: {len(cases)} cases, {len(text.encode('utf-8'))} bytes")
    print("by category:", dict(Counter(c["category"] for c in cases)))
    print("windows at 384/128 (>=3):", sum(1 for c in cases if c["n_windows"] >= 3
                                           and c["params"]["max_seq_len"] == 384 and c["params"]["doc_stride"] == 128))
    print("n_windows histogram:", dict(sorted(Counter(c["n_windows"] for c in cases).items())))
    for key in ("top_k", "max_answer_len", "handle_impossible_answer", "align_to_words"):
        print(f"{key}:", dict(sorted(Counter(c["params"][key] for c in cases).items())))
    print("(max_seq_len, doc_stride):", dict(sorted(Counter((c["params"]["max_seq_len"], c["params"]["doc_stride"]) for c in cases).items())))
    if not args.no_margins:
        print(f"smallest relative gap between consecutive positive scores: {min_margin[0]:.3g} ({min_margin[1]})")
    print(f"odd answers (start>end, empty, zero score, or text != context[start:end]): {len(odd)}")
    for cid, a in odd:
        print("  ", cid, json.dumps(a, ensure_ascii=False))
    print(f"cases with align_to_words=True answers that start or end inside a word: {len(partial_cases)}")
    for cid, answers in partial_cases:
        print("  ", cid, json.dumps(answers, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
