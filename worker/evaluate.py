"""SQuAD v1.1 evaluation: the official metric, and a runner over a dataset file.

The metric: answers are normalised (lowercase, punctuation removed, the articles
a/an/the dropped, whitespace collapsed); exact match is equality of the normalised
strings; F1 is over their whitespace tokens; each prediction takes the best score
over its gold answers; a question without a prediction scores 0. Scores are
percentages (0-100).
"""

from __future__ import annotations

from docqa.core.errors import UsageError

import json
import re
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1(prediction: str, gold: str) -> float:
    pred = normalize_answer(prediction).split()
    ref = normalize_answer(gold).split()
    common = Counter(pred) & Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred)
    recall = same / len(ref)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True)
class SquadQuestion:
    qid: str
    context: str
    question: str
    gold: tuple[str, ...]


class DatasetError(UsageError):
    """The file is not a SQuAD v1.1-format dataset; the message says where."""


def load_squad(path: str | Path) -> list[SquadQuestion]:
    """Questions of a SQuAD v1.1-format file: {"data": [{"paragraphs": [{"context", "qas"}]}]}."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{path}: not a JSON file ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise DatasetError(f'{path}: expected a SQuAD v1.1 object with a "data" list')
    out = []
    for a, article in enumerate(raw["data"]):
        for p, para in enumerate(article.get("paragraphs", [])):
            context = para.get("context")
            if not isinstance(context, str):
                raise DatasetError(f"{path}: data[{a}].paragraphs[{p}] has no context string")
            for qa in para.get("qas", []):
                try:
                    gold = tuple(ans["text"] for ans in qa["answers"])
                    out.append(SquadQuestion(qid=str(qa["id"]), context=context, question=qa["question"], gold=gold))
                except (KeyError, TypeError):
                    raise DatasetError(
                        f"{path}: data[{a}].paragraphs[{p}] has a question without id/question/answers"
                    ) from None
    return out


def score(questions: list[SquadQuestion], predictions: dict[str, str]) -> dict[str, float]:
    """{"exact_match", "f1", "total"}: the official SQuAD v1.1 figures."""
    if not questions:
        return {"exact_match": 0.0, "f1": 0.0, "total": 0}
    em = f = 0.0
    for q in questions:
        if q.qid not in predictions:
            continue
        pred = predictions[q.qid]
        em += max(exact_match(pred, g) for g in q.gold) if q.gold else 0.0
        f += max(f1(pred, g) for g in q.gold) if q.gold else 0.0
    n = len(questions)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f / n, "total": n}
