"""Scores of the clinical QA baseline, pure functions over plain data.

Spans: SQuAD v1.1 exact match and token F1 after SQuAD's answer normalisation (lower case, punctuation and the
articles a/an/the removed, whitespace collapsed), each the maximum over a question's gold answers, averaged over
questions. Categories (multi-label): subset accuracy (the predicted label set equals the gold set) and F1 per
category weighted by its gold support (scikit-learn's ``average="weighted"``), plus micro and macro F1.

    >>> span_scores({"q1": "the aspirin"}, {"q1": ["Aspirin", "ASA"]})
    {'exact_match': 1.0, 'f1': 1.0, 'n': 1}
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower case, no punctuation, no articles, single spaces.

    >>> normalize_answer("The  BRCA-1 gene.")
    'brca1 gene'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals a normalised gold answer, else 0.0.

    >>> exact_match("renal failure", ["Renal failure.", "kidney failure"]), exact_match("renal", ["renal failure"])
    (1.0, 0.0)
    """
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """SQuAD token F1 of the prediction against its best-matching gold answer.

    >>> round(token_f1("acute renal failure", ["renal failure"]), 4)   # P 2/3, R 1
    0.8
    """
    pred = normalize_answer(prediction).split()
    return max((_f1(pred, normalize_answer(g).split()) for g in golds), default=0.0)


def span_scores(predictions: Mapping[str, str], golds: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """Mean exact match and token F1 (fractions) over the questions of ``golds``; a question without a prediction
    scores 0.

    >>> span_scores({"a": "x y", "b": "z"}, {"a": ["x"], "b": ["w"]})
    {'exact_match': 0.0, 'f1': 0.3333333333333333, 'n': 2}
    """
    n = len(golds)
    if not n:
        return {"exact_match": 0.0, "f1": 0.0, "n": 0}
    em = sum(exact_match(predictions.get(q, ""), g) for q, g in golds.items())
    f1 = sum(token_f1(predictions.get(q, ""), g) for q, g in golds.items())
    return {"exact_match": em / n, "f1": f1 / n, "n": n}


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def category_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]], labels: Sequence[str]
                    ) -> dict[str, Any]:
    """Multi-label scores of predicted category sets against gold sets (parallel lists, one set per question).

    ``accuracy`` is subset accuracy; ``weighted_f1`` averages the per-label F1 weighted by gold support (labels
    without gold support weigh 0, as in scikit-learn); ``macro_f1`` averages over ``labels``; ``micro_f1`` pools
    the counts. Single-label data gives the usual accuracy and weighted F1.

    >>> s = category_scores([["gene"], ["gene", "disease"], ["chemical"]], [["gene"], ["gene"], ["gene"]],
    ...                     ["chemical", "disease", "gene"])
    >>> round(s["accuracy"], 4), round(s["weighted_f1"], 4), s["per_label"]["gene"]["f1"]
    (0.3333, 0.4, 0.8)
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold label sets but {len(pred)} predicted ones")
    n = len(gold)
    per_label, total_support, weighted, macro = {}, 0, 0.0, 0.0
    tp_all = fp_all = fn_all = 0
    for lab in labels:
        tp = sum(lab in g and lab in p for g, p in zip(gold, pred))
        fp = sum(lab not in g and lab in p for g, p in zip(gold, pred))
        fn = sum(lab in g and lab not in p for g, p in zip(gold, pred))
        p, r, f = _prf(tp, fp, fn)
        support = tp + fn
        per_label[lab] = {"precision": p, "recall": r, "f1": f, "support": support}
        total_support += support
        weighted += f * support
        macro += f
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
    return {
        "accuracy": sum(set(g) == set(p) for g, p in zip(gold, pred)) / n if n else 0.0,
        "weighted_f1": weighted / total_support if total_support else 0.0,
        "macro_f1": macro / len(labels) if labels else 0.0,
        "micro_f1": _prf(tp_all, fp_all, fn_all)[2],
        "per_label": per_label,
        "n": n,
    }
