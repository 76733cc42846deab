"""The unified scorer: every model in the project (generators and encoder baselines) is judged by these functions, for
the four task families NER, RE, EE and TC.

Pure functions over plain data, no I/O. For NER a record's predictions are a :class:`Prediction`, built from
generated JSON text (:func:`prediction_from_output`) or from predicted character spans (:func:`prediction_from_spans`);
:func:`score` turns gold records plus predictions into every number the project reports. RE, EE and TC answers are an
:class:`Answer` (:func:`parse_answer` for generated text, :func:`answer_from_record` for a record's relations, events
or label) and :func:`score_answers` scores them into a report of the same shape (see "Relations, events and classes"
below).

    >>> from curation.records import Record, Span
    >>> gold = [Record(id="s1", text="BRCA1 causes breast cancer", spans=[Span(13, 26, "Disease")])]
    >>> pred = [prediction_from_output(gold[0].text, '[{"entity": "Disease", "name": "cancer"}]', ["Disease"])]
    >>> result = score(gold, pred, n_bootstrap=0)
    >>> result["strict"]["micro"]["f1"], result["relaxed"]["micro"]["f1"], result["string"]["micro"]["f1"]
    (0.0, 1.0, 0.0)

Matching modes (all count per record and per entity type; a record's predictions never match another record's gold):

* ``strict``: same type and identical character offsets (seqeval's ``mode="strict"`` on IOB2 tags).
* ``relaxed``: same type and overlapping offsets (``a.start < b.end and b.start < a.end``). Matching is a *maximum
  one-to-one* matching between gold and predicted spans of a type (augmenting paths), so one gold span is never
  claimed by two predictions (nor one prediction by two gold spans) and the count does not depend on listing order.
  Every strict match is a relaxed match, so relaxed TP >= strict TP.
* ``string``: same type and same mention string, for generated lists without offsets. Strings are compared exactly
  (case-sensitive) after :func:`normalize_mention` (strip, collapse whitespace runs to one space). Matching is a
  multiset intersection per record and type: a mention listed twice counts two true positives only if the gold record
  holds two mentions with that string, otherwise the extra listing is a false positive.

Strict and relaxed matching are multiset matchings too, so a duplicated predicted span is a false positive.

Discontinuous spans (:class:`~curation.records.Span` with ``fragments``) are matched by their fragments: strict needs
the same fragments (a continuous span over the same outer offsets does not match), relaxed needs a shared character
(the gap between fragments is not part of the span), and string compares the fragments joined by one space
(:meth:`Span.surface`). A generated name is placed only where it occurs as one piece of text, so a discontinuous
gold mention can be matched by a generator in the string mode, or in strict and relaxed when the prediction line
carries the span's fragments.

Zero division follows seqeval's default (``zero_division="warn"`` acts as 0): precision is 0 when there are no
predictions, recall is 0 when there is no gold, F1 is 0 when P + R = 0. Macro scores average the per-type P, R and
F1 over the types that occur in the gold or the predictions (as seqeval and scikit-learn do).

Relations, events and classes (:data:`TASK_MODES`). Answers are compared as *multisets per record*, after
:func:`normalize_mention` on every mention string (head, tail, trigger, argument); types, relations and roles are
compared exactly. An item listed twice counts twice only if the gold holds it twice. A failed answer (``parse_error``,
``schema_error``, ``missing``) predicts nothing. The per-type key, macro average and intervals are those of NER.

* RE (per relation type): ``strict`` matches ``(head, relation, tail)``; ``typed`` also needs ``head_type`` and
  ``tail_type`` (optional in the schema; an answer without them never matches a typed gold item). Direction counts:
  ``(a, R, b)`` does not match ``(b, R, a)``, also for symmetric relation types.
* EE (per event type; ACE-style, Li et al. 2013): ``trigger_identification`` matches the trigger string alone (the
  event type is ignored, so this mode has one per-type key, ``"*"``, and its macro equals its micro);
  ``trigger_classification`` matches ``(event type, trigger)``; ``argument_identification`` matches ``(event type,
  trigger, mention)`` for every mention of every role (the role is ignored); ``argument_classification`` matches
  ``(event type, trigger, role, mention)``. An argument therefore counts only under an event with the right type and
  trigger string. A gold event without a trigger (possible from a corpus, never from the converter) has the trigger
  ``""``, which no answer can match.
* TC (per label): the ``label`` mode counts a correct answer as a true positive of the gold label and a wrong one as a
  false positive of the predicted label and a false negative of the gold label; a failed answer is a false negative
  only. Micro P = R = F1 = accuracy when every answer is valid. Macro F1 averages over the labels in the gold or the
  valid answers, as ``sklearn.metrics.f1_score(y_true, y_pred, labels=..., average="macro")`` with those labels
  does (``tests/curation/test_scoring_tasks.py`` pins it). The TC schema allows one label per answer, and a gold record
  must have exactly one (:func:`answer_from_record` refuses others, as ``bioselect data convert --task tc`` does):
  a multi-label gold would make the per-label counts depend on which gold label a single answer is set against.
* A record-level rate, with a bootstrap interval: RE and EE report ``exact_match``, the share of records whose whole
  normalised answer (typed triples; events with their sorted ``(role, mention)`` pairs) equals the gold as a multiset
  (a failed answer never matches, even when the gold is empty); TC reports ``accuracy``, the same computation.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np

from curation.records import Record, Span

MODES = ("strict", "relaxed", "string")
STATUSES = ("ok", "parse_error", "schema_error", "missing")

Name = tuple[str, str]  # (entity type, mention string)


def normalize_mention(name: str) -> str:
    """The form mention strings are compared in: stripped, whitespace runs collapsed to one space; case is kept.

    >>> normalize_mention("  breast\\n  cancer ")
    'breast cancer'
    """
    return " ".join(name.split())


@cache
def _validator(labels: tuple[str, ...] | None):
    from jsonschema import Draft202012Validator

    from prompts import schema

    return Draft202012Validator(schema("ner", list(labels) if labels else None))


def parse_output(output: str, labels: Sequence[str] | None = None) -> tuple[list[Name], str]:
    """Parse a generated entity list; return ``(entities, status)``.

    ``status`` is ``"ok"``, ``"parse_error"`` (not JSON) or ``"schema_error"`` (JSON that fails
    ``prompts.schema("ner", labels)``: not an array of ``{"entity", "name"}`` objects, extra keys, empty strings, or a
    type outside ``labels``). No repair is attempted (a Markdown code fence is a parse error). Failed outputs give no
    entities.

    >>> parse_output('[{"entity": "Disease", "name": "breast cancer"}]', ["Disease"])
    ([('Disease', 'breast cancer')], 'ok')
    >>> parse_output('[{"entity": "Gene", "name": "BRCA1"}]', ["Disease"])
    ([], 'schema_error')
    >>> parse_output('Disease: breast cancer')
    ([], 'parse_error')
    """
    try:
        obj = json.loads(output)
    except (json.JSONDecodeError, TypeError):
        return [], "parse_error"
    if not _validator(tuple(labels) if labels else None).is_valid(obj):
        return [], "schema_error"
    return [(e["entity"], e["name"]) for e in obj], "ok"


def _mention_pattern(name: str, bounded: bool) -> re.Pattern | None:
    parts = name.split()
    if not parts:
        return None
    pattern = r"\s+".join(map(re.escape, parts))
    if bounded:
        pattern = (r"(?<!\w)" if re.match(r"\w", parts[0]) else "") + pattern
        pattern += r"(?!\w)" if re.match(r"\w", parts[-1][-1]) else ""
    return re.compile(pattern)


def names_to_spans(text: str, entities: Sequence[Name]) -> list[Span | None]:
    """Place generated ``(type, name)`` entities in the text; ``None`` for a name that cannot be placed.

    The k-th listing of the same (type, name) goes to the k-th occurrence of the name in left-to-right order
    (occurrences do not overlap); a listing beyond the last occurrence, or a name absent from the text, gives
    ``None`` (a false positive when scored). Matching is case-sensitive, any whitespace run in the name matches any
    whitespace run in the text, and occurrences must not sit inside a word (a name starting or ending with a letter
    or digit cannot be preceded or followed by one); only when a name has no such occurrence are occurrences inside
    words used. Names listed under different types are placed independently.

    >>> names_to_spans("IL-23 and IL-2 bind IL-2R", [("Gene", "IL-2"), ("Gene", "IL-2"), ("Gene", "TNF")])
    [Span(start=10, end=14, label='Gene'), None, None]
    >>> names_to_spans("cancers", [("Disease", "cancer")])
    [Span(start=0, end=6, label='Disease')]
    """
    occurrences: dict[str, list[tuple[int, int]]] = {}
    seen: Counter[Name] = Counter()
    out: list[Span | None] = []
    for label, name in entities:
        key = normalize_mention(name)
        if key not in occurrences:
            found: list[tuple[int, int]] = []
            for bounded in (True, False):
                pattern = _mention_pattern(key, bounded)
                found = [m.span() for m in pattern.finditer(text)] if pattern else []
                if found:
                    break
            occurrences[key] = found
        k = seen[(label, key)]
        seen[(label, key)] += 1
        occ = occurrences[key]
        out.append(Span(occ[k][0], occ[k][1], label) if k < len(occ) else None)
    return out


@dataclass
class Prediction:
    """One record's predictions, in the two views the modes need.

    ``spans`` are placed predictions (strict, relaxed); ``names`` are ``(type, normalised mention)`` pairs (string);
    ``unplaced`` holds the types of generated names that could not be placed in the text (false positives in strict
    and relaxed); ``status`` is one of :data:`STATUSES`. ``Prediction(status="missing")`` is an absent prediction.
    """

    spans: list[Span] = field(default_factory=list)
    names: list[Name] = field(default_factory=list)
    unplaced: list[str] = field(default_factory=list)
    status: str = "ok"


def prediction_from_output(text: str, output: str, labels: Sequence[str] | None = None,
                           spans: Sequence[Span] | None = None) -> Prediction:
    """A generated answer -> :class:`Prediction`.

    ``spans`` (the model's own character spans, when it gives them) are used for strict and relaxed, and names of a
    type beyond its number of spans count as unplaced; without them the names are placed with
    :func:`names_to_spans`. An answer that fails :func:`parse_output` predicts nothing.

    >>> p = prediction_from_output("aspirin and  ASA", '[{"entity": "Chemical", "name": "ASA"}, '
    ...                            '{"entity": "Chemical", "name": "salicylate"}]')
    >>> p.spans, p.names, p.unplaced
    ([Span(start=13, end=16, label='Chemical')], [('Chemical', 'ASA'), ('Chemical', 'salicylate')], ['Chemical'])
    """
    entities, status = parse_output(output, labels)
    if status != "ok":
        return Prediction(status=status)
    names = [(label, normalize_mention(name)) for label, name in entities]
    if spans is not None:
        # a generated name the model (or its offset mapper) left without a span is still a false positive
        missing = Counter(label for label, _ in names) - Counter(s.label for s in spans)
        return Prediction(spans=list(spans), names=names, unplaced=sorted(missing.elements()))
    placed = names_to_spans(text, entities)
    return Prediction(spans=[s for s in placed if s is not None], names=names,
                      unplaced=[label for (label, _), s in zip(entities, placed, strict=True) if s is None])


def prediction_from_spans(text: str, spans: Sequence[Span]) -> Prediction:
    """Predicted character spans (encoder baselines, span files, IOB files) -> :class:`Prediction`.

    >>> prediction_from_spans("BRCA1 causes breast cancer", [Span(0, 5, "Gene")]).names
    [('Gene', 'BRCA1')]
    """
    return Prediction(spans=list(spans), names=gold_names(text, spans))


def gold_names(text: str, spans: Sequence[Span]) -> list[Name]:
    """The ``(type, normalised surface)`` pairs of spans, the gold side of the string mode.

    >>> gold_names("BRCA1 causes breast  cancer", [Span(13, 27, "Disease")])
    [('Disease', 'breast cancer')]
    """
    return [(s.label, normalize_mention(s.surface(text))) for s in spans]


def _max_overlap_matching(gold: list[Span], pred: list[Span]) -> int:
    """Size of a maximum one-to-one matching between overlapping spans (Kuhn's augmenting paths, breadth-first)."""
    adj = [[j for j, g in enumerate(gold) if p.overlaps(g)] for p in pred]
    match_of_gold: list[int | None] = [None] * len(gold)
    match_of_pred: list[int | None] = [None] * len(pred)
    for root in range(len(pred)):
        parent: dict[int, int] = {}  # gold index -> the prediction whose alternating path reached it
        frontier, free = [root], None
        while frontier and free is None:
            nxt = []
            for u in frontier:
                for g in adj[u]:
                    if g in parent:
                        continue
                    parent[g] = u
                    if match_of_gold[g] is None:
                        free = g
                        break
                    nxt.append(match_of_gold[g])
                if free is not None:
                    break
            frontier = nxt
        g = free
        while g is not None:  # flip the alternating path from the free gold span back to the root
            u = parent[g]
            g_prev = match_of_pred[u]
            match_of_gold[g], match_of_pred[u] = u, g
            g = g_prev
    return sum(m is not None for m in match_of_pred)


def record_counts(gold: Sequence[Span], pred: Prediction, text: str, mode: str) -> dict[str, list[int]]:
    """One record's ``{type: [tp, fp, fn]}`` under a matching mode.

    >>> text = "aspirin and aspirin"
    >>> gold = [Span(0, 7, "Chemical"), Span(12, 19, "Chemical")]
    >>> pred = prediction_from_output(text, '[{"entity": "Chemical", "name": "aspirin"}]')
    >>> record_counts(gold, pred, text, "strict"), record_counts(gold, pred, text, "string")
    ({'Chemical': [1, 0, 1]}, {'Chemical': [1, 0, 1]})
    >>> record_counts([Span(0, 11, "Chemical")], prediction_from_spans(text, [Span(0, 3, "Chemical"),
    ...               Span(4, 11, "Chemical")]), text, "relaxed")
    {'Chemical': [1, 1, 0]}
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    if mode == "string":
        g_by, p_by = Counter(gold_names(text, gold)), Counter(pred.names)
        for (label, _), n in g_by.items():
            counts[label][2] += n
        for (label, _), n in p_by.items():
            counts[label][1] += n
        for key in g_by.keys() & p_by.keys():
            tp = min(g_by[key], p_by[key])
            counts[key[0]][0] += tp
            counts[key[0]][1] -= tp
            counts[key[0]][2] -= tp
        return dict(counts)
    g_by_type: dict[str, list[Span]] = defaultdict(list)
    p_by_type: dict[str, list[Span]] = defaultdict(list)
    for s in gold:
        g_by_type[s.label].append(s)
    for s in pred.spans:
        p_by_type[s.label].append(s)
    for label in sorted(g_by_type.keys() | p_by_type.keys()):
        g, p = g_by_type[label], p_by_type[label]
        if mode == "strict":
            tp = sum((Counter((s.start, s.end, s.fragments) for s in g)
                      & Counter((s.start, s.end, s.fragments) for s in p)).values())
        else:
            tp = _max_overlap_matching(sorted(g), sorted(p))
        counts[label] = [tp, len(p) - tp, len(g) - tp]
    for label in pred.unplaced:
        counts[label][1] += 1
    return dict(counts)


def prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Precision, recall and F1 with seqeval's zero-division convention (0 when undefined).

    >>> prf(3, 1, 3)
    (0.75, 0.5, 0.6)
    >>> prf(0, 0, 5)
    (0.0, 0.0, 0.0)
    """
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def bootstrap_ci(tp: Sequence[float], fp: Sequence[float], fn: Sequence[float], n_resamples: int = 1000,
                 seed: int = 0, level: float = 0.95) -> dict[str, list[float]] | None:
    """Percentile bootstrap intervals of micro P, R and F1, resampling records with replacement.

    ``tp``, ``fp``, ``fn`` are per-record totals (one entry per record). The resamples are drawn with
    ``numpy.random.default_rng(seed)``, so the intervals are a function of the inputs and the seed. ``None`` when
    there are no records or no resamples.

    >>> ci = bootstrap_ci([1, 0, 2, 1], [0, 1, 0, 0], [1, 0, 0, 1], n_resamples=200, seed=0)
    >>> ci["f1"][0] <= prf(4, 1, 2)[2] <= ci["f1"][1]
    True
    """
    tp_a, fp_a, fn_a = (np.asarray(a, dtype=np.float64) for a in (tp, fp, fn))
    n = len(tp_a)
    if n == 0 or n_resamples <= 0:
        return None
    rng = np.random.default_rng(seed)
    stats = np.empty((n_resamples, 3))
    chunk = max(1, 4_000_000 // n)  # bounds the (chunk, n) index matrix to ~32 MB
    for lo in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - lo), n))
        t, f_p, f_n = tp_a[idx].sum(axis=1), fp_a[idx].sum(axis=1), fn_a[idx].sum(axis=1)
        p = np.divide(t, t + f_p, out=np.zeros_like(t), where=(t + f_p) > 0)
        r = np.divide(t, t + f_n, out=np.zeros_like(t), where=(t + f_n) > 0)
        f = np.divide(2 * p * r, p + r, out=np.zeros_like(t), where=(p + r) > 0)
        stats[lo : lo + len(t)] = np.stack([p, r, f], axis=1)
    alpha = (1 - level) / 2
    lo_q, hi_q = np.quantile(stats, [alpha, 1 - alpha], axis=0)
    return {k: [float(lo_q[i]), float(hi_q[i])] for i, k in enumerate(("precision", "recall", "f1"))}


def micro_counts(per_record: Sequence[dict[str, list[int]]]) -> list[list[int]]:
    """Each record's ``[tp, fp, fn]`` summed over its types (what micro scores and paired intervals resample).

    >>> micro_counts([{"Disease": [1, 0, 1], "Gene": [2, 1, 0]}, {}])
    [[3, 1, 1], [0, 0, 0]]
    """
    return [[sum(c[k] for c in counts.values()) for k in range(3)] for counts in per_record]


def type_counts(runs: Sequence[Sequence[dict[str, list[int]]]]) -> list[list[list[list[int]]]]:
    """Runs of per-record ``{type: [tp, fp, fn]}`` -> ``(runs, records, types, 3)`` nested lists over the sorted
    union of their types (what :func:`paired_bootstrap` resamples for a macro F1).

    >>> type_counts([[{"a": [1, 0, 0]}, {"b": [0, 1, 1]}]])
    [[[[1, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 1, 1]]]]
    """
    types = sorted({t for run in runs for rec in run for t in rec})
    return [[[list(rec.get(t, [0, 0, 0])) for t in types] for rec in run] for run in runs]


def paired_bootstrap(a: Sequence[Sequence[Sequence[Any]]], b: Sequence[Sequence[Sequence[Any]]],
                     n_resamples: int = 1000, seed: int = 0, level: float = 0.95,
                     average: str = "micro") -> dict[str, Any]:
    """Difference of micro F1 between two systems scored on the same records, with a paired percentile interval.

    ``a`` and ``b`` each hold one or more runs (e.g. one per training seed), each run a list of per-record
    ``[tp, fp, fn]`` in the same record order (:func:`micro_counts`). A side's F1 is the mean micro F1 of its runs;
    every resample draws the records once and applies the same draw to every run of both sides, so the interval
    reflects the sampling of test sentences while each sentence's difficulty cancels between the sides.
    Returns ``diff`` (mean F1 of a minus mean F1 of b), ``ci``, ``p_le_0`` (the share of resamples where a does
    not beat b) and the number of records and resamples.

    ``average="macro"``: each record holds ``[tp, fp, fn]`` per type (:func:`type_counts`, the same types on both
    sides), and a run's F1 is the mean per-type F1 over the types with a gold or predicted item in the (resampled)
    records, as :func:`summarize`'s macro F1.

    >>> same = [[[1, 0, 0], [0, 1, 1], [2, 0, 0]]]
    >>> paired_bootstrap(same, same, n_resamples=50)["ci"]
    [0.0, 0.0]
    >>> better = [[[1, 0, 0], [1, 0, 0], [2, 0, 0]]]
    >>> r = paired_bootstrap(better, same, n_resamples=200)
    >>> round(r["diff"], 4), r["ci"][1] > 0  # micro F1 1.0 (4 of 4) vs 0.75 (2 * 3 / (2 * 3 + 1 + 1))
    (0.25, True)
    """
    if average not in ("micro", "macro"):
        raise ValueError(f"average must be micro or macro, not {average!r}")
    ndim = 3 if average == "micro" else 4  # (runs, records, 3) or (runs, records, types, 3)
    runs_a, runs_b = (np.asarray(side, dtype=np.float64) for side in (a, b))
    if runs_a.ndim != ndim or runs_b.ndim != ndim or runs_a.shape[1:] != runs_b.shape[1:]:
        raise ValueError(f"both sides need runs of the same records: shapes {runs_a.shape} and {runs_b.shape}")

    def micro(counts: np.ndarray) -> np.ndarray:  # (..., 3) totals -> F1
        tp, fp, fn = counts[..., 0], counts[..., 1], counts[..., 2]
        den = 2 * tp + fp + fn
        return np.divide(2 * tp, den, out=np.zeros_like(tp), where=den > 0)

    def f1(counts: np.ndarray) -> np.ndarray:  # (..., 3) or (..., types, 3) totals -> micro or macro F1
        if average == "micro":
            return micro(counts)
        present = counts.sum(axis=-1) > 0
        n = present.sum(axis=-1)
        return np.divide((micro(counts) * present).sum(axis=-1), n, out=np.zeros(n.shape), where=n > 0)

    point = float(f1(runs_a.sum(axis=1)).mean() - f1(runs_b.sum(axis=1)).mean())
    n = runs_a.shape[1]
    out: dict[str, Any] = {"diff": point, "ci": None, "p_le_0": None, "records": n, "resamples": n_resamples}
    if n == 0 or n_resamples <= 0:
        return out
    rng = np.random.default_rng(seed)
    diffs = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // (n * (len(runs_a) + len(runs_b))))
    for lo in range(0, n_resamples, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_resamples - lo), n))
        fa = f1(runs_a[:, idx].sum(axis=2)).mean(axis=0)  # (resamples,)
        fb = f1(runs_b[:, idx].sum(axis=2)).mean(axis=0)
        diffs[lo : lo + len(fa)] = fa - fb
    alpha = (1 - level) / 2
    out["ci"] = [float(x) for x in np.quantile(diffs, [alpha, 1 - alpha])]
    out["p_le_0"] = float((diffs <= 0).mean())
    return out


def summarize(per_record: Sequence[dict[str, list[int]]], n_bootstrap: int = 0, seed: int = 0,
              level: float = 0.95) -> dict[str, Any]:
    """Per-record ``{type: [tp, fp, fn]}`` counts -> micro (with bootstrap ``ci``), macro and per-type scores.

    >>> s = summarize([{"Disease": [1, 0, 1]}, {"Disease": [0, 1, 0], "Gene": [2, 0, 0]}])
    >>> s["micro"]["f1"], s["macro"]["f1"], s["per_type"]["Disease"]["support"]
    (0.75, 0.75, 2)
    """
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    rec = np.zeros((len(per_record), 3), dtype=np.int64)
    for i, counts in enumerate(per_record):
        for label, c in counts.items():
            for k in range(3):
                totals[label][k] += c[k]
                rec[i, k] += c[k]
    tp, fp, fn = (int(x) for x in rec.sum(axis=0))
    p, r, f = prf(tp, fp, fn)
    per_type = {}
    for label in sorted(totals):
        t, f_p, f_n = totals[label]
        lp, lr, lf = prf(t, f_p, f_n)
        per_type[label] = {"precision": lp, "recall": lr, "f1": lf, "support": t + f_n, "tp": t, "fp": f_p, "fn": f_n}
    n_types = len(per_type)
    macro = {k: sum(v[k] for v in per_type.values()) / n_types if n_types else 0.0
             for k in ("precision", "recall", "f1")}
    micro = {"precision": p, "recall": r, "f1": f, "tp": tp, "fp": fp, "fn": fn,
             "ci": bootstrap_ci(rec[:, 0], rec[:, 1], rec[:, 2], n_bootstrap, seed, level)}
    return {"micro": micro, "macro": macro, "per_type": per_type}


def _status_block(statuses: Sequence[str]) -> dict[str, Any]:
    n = len(statuses)
    counts = Counter(statuses)
    out: dict[str, Any] = {s: counts.get(s, 0) for s in STATUSES}
    out |= {f"{s}_rate": (counts.get(s, 0) / n if n else 0.0) for s in STATUSES if s != "ok"}
    return out


def _status_counts(preds: Sequence[Prediction]) -> dict[str, Any]:
    out = _status_block([p.status for p in preds])
    out["unplaced_names"] = sum(len(p.unplaced) for p in preds)
    return out


def score(gold: Sequence[Record], pred: Sequence[Prediction], datasets: Sequence[str] | None = None,
          n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95, per_record: bool = False) -> dict[str, Any]:
    """Score predictions (aligned with ``gold``) in every mode, overall and per dataset.

    ``datasets`` names each record's corpus (default ``record.meta["dataset"]`` or ``""``). Returns ``records``;
    ``outputs`` (counts of each status, their rates over all gold records, and ``unplaced_names``); for each mode
    of :data:`MODES` the :func:`summarize` result (micro with bootstrap ``ci``, macro, per type); ``per_dataset``
    (the same per dataset, with its own intervals); and the ``bootstrap`` settings. The same seed is used for every
    mode and dataset so intervals are comparable. With ``per_record``, ``per_record`` holds each mode's
    :func:`micro_counts` in gold order (for paired comparisons of systems on the same records).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold records but {len(pred)} predictions")
    names = list(datasets) if datasets is not None else [r.meta.get("dataset", "") for r in gold]
    counts = {mode: [record_counts(g.spans, p, g.text, mode) for g, p in zip(gold, pred, strict=True)]
              for mode in MODES}

    def block(idx: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = {"records": len(idx), "outputs": _status_counts([pred[i] for i in idx])}
        for mode in MODES:
            out[mode] = summarize([counts[mode][i] for i in idx], n_bootstrap, seed, level)
        return out

    result = block(list(range(len(gold))))
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        by_dataset[name].append(i)
    if len(by_dataset) == 1:  # the one dataset's block is the overall block; skip recomputing its intervals
        result["per_dataset"] = {names[0]: dict(result)}
    else:
        result["per_dataset"] = {name: block(idx) for name, idx in sorted(by_dataset.items())}
    result["bootstrap"] = {"resamples": n_bootstrap, "seed": seed, "level": level}
    if per_record:
        result["per_record"] = {mode: micro_counts(counts[mode]) for mode in MODES}
    return result


# --- relations, events and classes -------------------------------------------------------------------------------

TASK_MODES: dict[str, tuple[str, ...]] = {
    "ner": MODES,
    "re": ("strict", "typed"),
    "ee": ("trigger_identification", "trigger_classification", "argument_identification", "argument_classification"),
    "tc": ("label",),
}
RATES = {"re": "exact_match", "ee": "exact_match", "tc": "accuracy"}  # the record-level rate each task reports
# each task's headline number: (mode, average) of its F1. NER and RE: strict micro F1 (the usual entity and
# relation-triple F1); EE: argument classification micro F1 (ACE-style event extraction reports it as the final
# number: an argument counts only with its role under the right event type and trigger, so it needs every part of
# the event right); TC: macro F1 over the labels (the class sets are imbalanced, e.g. HealthAdvice's 3,575/1,482/925
# rows, and micro F1 of single-label answers is accuracy, which the majority class dominates)
MAIN_METRICS: dict[str, tuple[str, str]] = {"ner": ("strict", "micro"), "re": ("strict", "micro"),
                                            "ee": ("argument_classification", "micro"), "tc": ("label", "macro")}
ANY_TYPE = "*"  # the one per-type key of a mode that ignores types (EE trigger identification)


@dataclass(frozen=True)
class Answer:
    """One record's RE, EE or TC answer, normalised (mentions through :func:`normalize_mention`).

    ``items`` are, for ``re``, ``(head, head_type, relation, tail, tail_type)`` tuples (types ``None`` when the answer
    leaves them out); for ``ee``, ``(event type, trigger, ((role, mention), ...))`` with the pairs sorted; for ``tc``,
    ``(label,)`` or ``()``. ``status`` is one of :data:`STATUSES`; a failed answer has no items.
    """

    task: str
    items: tuple = ()
    status: str = "ok"


@cache
def _task_validator(task: str, labels: tuple[str, ...] | None):
    from jsonschema import Draft202012Validator

    from prompts import schema

    return Draft202012Validator(schema(task, list(labels) if labels else None))


def main_metric_name(task: str) -> str:
    """The name of a task's headline number (:data:`MAIN_METRICS`): ``<mode>_f1`` for a micro F1,
    ``<mode>_macro_f1`` for a macro F1.

    >>> [main_metric_name(t) for t in ("ner", "re", "ee", "tc")]
    ['strict_f1', 'strict_f1', 'argument_classification_f1', 'label_macro_f1']
    """
    mode, average = MAIN_METRICS[task]
    return f"{mode}_f1" if average == "micro" else f"{mode}_{average}_f1"


def main_metric(result: dict[str, Any]) -> float:
    """The headline number of a :func:`score` or :func:`score_answers` report (its ``task``, NER when absent).

    >>> main_metric({"task": "tc", "label": {"micro": {"f1": 0.9}, "macro": {"f1": 0.5}}})
    0.5
    """
    mode, average = MAIN_METRICS[result.get("task", "ner")]
    return result[mode][average]["f1"]


def main_metric_counts(result: dict[str, Any]) -> list:
    """The per-record counts of a report's main metric (a :func:`score` or :func:`score_answers` report made with
    ``per_record=True``): ``[tp, fp, fn]`` per record for a micro F1, ``{type: [tp, fp, fn]}`` per record for a
    macro F1, as :func:`paired_main_metric` takes them.

    >>> main_metric_counts({"task": "tc", "per_record_types": {"label": [{"a": [1, 0, 0]}]}})
    [{'a': [1, 0, 0]}]
    """
    mode, average = MAIN_METRICS[result.get("task", "ner")]
    return result["per_record" if average == "micro" else "per_record_types"][mode]


def paired_main_metric(a: Sequence[list], b: Sequence[list], task: str, n_resamples: int = 1000,
                       seed: int = 0) -> dict[str, Any]:
    """:func:`paired_bootstrap` of a task's main metric between two sides of runs, each run the
    :func:`main_metric_counts` of one report on the same records; for a macro F1 the types are aligned over both
    sides first (:func:`type_counts`).

    >>> runs = [[{"a": [1, 0, 0]}, {"b": [0, 1, 0]}]], [[{"a": [1, 0, 0]}, {"b": [1, 0, 0]}]]
    >>> paired_main_metric(*runs, "tc", n_resamples=0)["diff"]  # macro F1 (1 + 0) / 2 - (1 + 1) / 2
    -0.5
    """
    average = MAIN_METRICS[task][1]
    if average == "macro":
        both = type_counts([*a, *b])
        a, b = both[:len(a)], both[len(a):]
    return paired_bootstrap(a, b, n_resamples, seed, average=average)


def answer_items(task: str, obj: Any) -> tuple:
    """The normalised items of a schema-valid RE, EE or TC answer object (:class:`Answer`).

    >>> answer_items("ee", [{"event": "ADE", "trigger": " caused", "arguments": {"Drug": ["aspirin"],
    ...                                                                          "AE": ["rash"]}}])
    (('ADE', 'caused', (('AE', 'rash'), ('Drug', 'aspirin'))),)
    """
    if task == "re":
        return tuple((normalize_mention(r["head"]), r.get("head_type"), r["relation"], normalize_mention(r["tail"]),
                      r.get("tail_type")) for r in obj)
    if task == "ee":
        return tuple((e["event"], normalize_mention(e["trigger"]),
                      tuple(sorted((role, normalize_mention(m)) for role, ms in e["arguments"].items() for m in ms)))
                     for e in obj)
    if task == "tc":
        return (obj["label"],)
    raise ValueError(f"unknown task {task!r}; one of {', '.join(RATES)} (NER answers: parse_output)")


def parse_answer(task: str, output: str, labels: Sequence[str] | None = None) -> Answer:
    """Parse a generated RE, EE or TC answer against ``prompts.schema(task, labels)`` (as :func:`parse_output` does
    for NER: ``parse_error`` when not JSON, ``schema_error`` when it fails the schema, no repair).

    >>> parse_answer("re", '[{"head": "aspirin", "relation": "ADE", "tail": "rash"}]', ["ADE"]).items
    (('aspirin', None, 'ADE', 'rash', None),)
    >>> parse_answer("tc", '{"label": "maybe"}', ["ade", "no_ade"]).status
    'schema_error'
    """
    try:
        obj = json.loads(output)
    except (json.JSONDecodeError, TypeError):
        return Answer(task, status="parse_error")
    if not _task_validator(task, tuple(labels) if labels else None).is_valid(obj):
        return Answer(task, status="schema_error")
    return Answer(task, answer_items(task, obj))


def answer_from_record(task: str, record: Record) -> Answer:
    """A record's relations (``re``), events (``ee``) or label (``tc``) as an :class:`Answer`, the same items
    :func:`parse_answer` gives for the record's converted answer (``curation.convert``). ``ValueError`` for a TC
    record without exactly one label.

    >>> from curation.records import Relation
    >>> r = Record(id="s1", text="aspirin  caused rash", spans=[Span(0, 7, "Drug"), Span(16, 20, "AE")],
    ...            relations=[Relation(0, 1, "ADE")])
    >>> answer_from_record("re", r).items
    (('aspirin', 'Drug', 'ADE', 'rash', 'AE'),)
    """
    def mention(i: int | None) -> str:
        return "" if i is None else normalize_mention(record.spans[i].surface(record.text))

    if task == "re":
        items = tuple((mention(r.head), record.spans[r.head].label, r.label, mention(r.tail),
                       record.spans[r.tail].label) for r in record.relations)
    elif task == "ee":
        items = tuple((e.type, mention(e.trigger), tuple(sorted((role, mention(i)) for role, i in e.arguments)))
                      for e in record.events)
    elif task == "tc":
        if len(record.labels) != 1:
            raise ValueError(f"TC scores exactly one gold label per record; this record has {len(record.labels)}"
                             + (f" ({', '.join(record.labels)})" if record.labels else ""))
        items = (record.labels[0],)
    else:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(RATES)}")
    return Answer(task, items)


def _keyed(task: str, mode: str, items: tuple) -> list[tuple[str, tuple]]:
    """``(per-type key, match key)`` for every countable unit of an answer under a mode."""
    if task == "re":
        if mode == "strict":
            return [(rel, (h, rel, t)) for h, _, rel, t, _ in items]
        return [(item[2], item) for item in items]
    if task == "ee":
        if mode == "trigger_identification":
            return [(ANY_TYPE, (trigger,)) for _, trigger, _ in items]
        if mode == "trigger_classification":
            return [(etype, (etype, trigger)) for etype, trigger, _ in items]
        if mode == "argument_identification":
            return [(etype, (etype, trigger, m)) for etype, trigger, args in items for _, m in args]
        return [(etype, (etype, trigger, role, m)) for etype, trigger, args in items for role, m in args]
    return [(label, (label,)) for label in items]


def answer_counts(gold: Answer, pred: Answer, mode: str) -> dict[str, list[int]]:
    """One record's ``{type: [tp, fp, fn]}`` for an RE, EE or TC answer under one of its :data:`TASK_MODES`.

    >>> g = Answer("re", (("aspirin", "Drug", "ADE", "rash", "AE"), ("aspirin", "Drug", "ADE", "fever", "AE")))
    >>> p = Answer("re", (("aspirin", None, "ADE", "rash", None), ("rash", None, "ADE", "aspirin", None)))
    >>> answer_counts(g, p, "strict"), answer_counts(g, p, "typed")
    ({'ADE': [1, 1, 1]}, {'ADE': [0, 2, 2]})
    >>> answer_counts(Answer("tc", ("ade",)), Answer("tc", ("no_ade",)), "label")
    {'ade': [0, 0, 1], 'no_ade': [0, 1, 0]}
    """
    task = gold.task
    if mode not in TASK_MODES.get(task, ()) or task == "ner":
        raise ValueError(f"unknown {task} mode {mode!r}")
    g, p = Counter(_keyed(task, mode, gold.items)), Counter(_keyed(task, mode, pred.items))
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for (label, _), n in g.items():
        counts[label][2] += n
    for (label, _), n in p.items():
        counts[label][1] += n
    for key in g.keys() & p.keys():
        tp = min(g[key], p[key])
        counts[key[0]][0] += tp
        counts[key[0]][1] -= tp
        counts[key[0]][2] -= tp
    return dict(counts)


def answer_exact(gold: Answer, pred: Answer) -> bool:
    """Whether a valid answer equals the gold as a multiset of its items (a failed answer never does).

    >>> answer_exact(Answer("re", ()), Answer("re", status="parse_error")), answer_exact(Answer("re"), Answer("re"))
    (False, True)
    """
    return pred.status == "ok" and Counter(gold.items) == Counter(pred.items)


def rate_summary(correct: Sequence[bool], n_bootstrap: int = 0, seed: int = 0,
                 level: float = 0.95) -> dict[str, Any]:
    """The share of records that are right, with a percentile bootstrap interval over records (``None`` when there
    are no records or no resamples; resamples drawn with ``numpy.random.default_rng(seed)``).

    >>> r = rate_summary([True, False, True, True], n_bootstrap=200)
    >>> r["value"], r["correct"], r["records"], r["ci"][0] <= 0.75 <= r["ci"][1]
    (0.75, 3, 4, True)
    """
    x = np.asarray(correct, dtype=np.float64)
    n = len(x)
    out: dict[str, Any] = {"value": float(x.mean()) if n else 0.0, "correct": int(x.sum()), "records": n, "ci": None}
    if n == 0 or n_bootstrap <= 0:
        return out
    rng = np.random.default_rng(seed)
    means = np.empty(n_bootstrap)
    chunk = max(1, 4_000_000 // n)
    for lo in range(0, n_bootstrap, chunk):
        idx = rng.integers(0, n, size=(min(chunk, n_bootstrap - lo), n))
        means[lo : lo + len(idx)] = x[idx].mean(axis=1)
    alpha = (1 - level) / 2
    out["ci"] = [float(v) for v in np.quantile(means, [alpha, 1 - alpha])]
    return out


def score_answers(task: str, gold: Sequence[Answer], pred: Sequence[Answer], datasets: Sequence[str] | None = None,
                  n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95,
                  per_record: bool = False) -> dict[str, Any]:
    """Score RE, EE or TC answers (aligned with ``gold``) in every mode of the task, overall and per dataset.

    The report has the shape of :func:`score`'s: ``task``, ``records``, ``outputs`` (status counts and rates), one
    :func:`summarize` block per mode of :data:`TASK_MODES` (micro with bootstrap ``ci``, macro, per type), the task's
    rate (:data:`RATES`, :func:`rate_summary`), ``per_dataset`` and ``bootstrap``; ``per_record`` adds each mode's
    :func:`micro_counts` in gold order (``per_record``) and each record's ``{type: [tp, fp, fn]}``
    (``per_record_types``, what a paired macro F1 resamples).

    >>> g = [Answer("tc", ("ade",)), Answer("tc", ("no_ade",))]
    >>> r = score_answers("tc", g, [Answer("tc", ("ade",)), Answer("tc", ("ade",))], n_bootstrap=0)
    >>> r["accuracy"]["value"], r["label"]["macro"]["f1"]
    (0.5, 0.3333333333333333)
    """
    if task not in RATES:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(RATES)} (NER: score)")
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold records but {len(pred)} predictions")
    names = list(datasets) if datasets is not None else [""] * len(gold)
    modes = TASK_MODES[task]
    counts = {mode: [answer_counts(g, p, mode) for g, p in zip(gold, pred, strict=True)] for mode in modes}
    correct = [answer_exact(g, p) for g, p in zip(gold, pred, strict=True)]

    def block(idx: list[int]) -> dict[str, Any]:
        out: dict[str, Any] = {"records": len(idx), "outputs": _status_block([pred[i].status for i in idx])}
        for mode in modes:
            out[mode] = summarize([counts[mode][i] for i in idx], n_bootstrap, seed, level)
        out[RATES[task]] = rate_summary([correct[i] for i in idx], n_bootstrap, seed, level)
        return out

    result: dict[str, Any] = {"task": task, **block(list(range(len(gold))))}
    by_dataset: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        by_dataset[name].append(i)
    if len(by_dataset) == 1:
        result["per_dataset"] = {names[0]: {k: v for k, v in result.items() if k != "task"}}
    else:
        result["per_dataset"] = {name: block(idx) for name, idx in sorted(by_dataset.items())}
    result["bootstrap"] = {"resamples": n_bootstrap, "seed": seed, "level": level}
    if per_record:
        result["per_record"] = {mode: micro_counts(counts[mode]) for mode in modes}
        result["per_record_types"] = {mode: counts[mode] for mode in modes}
    return result


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def _with_ci(micro: dict[str, Any], key: str) -> str:
    ci = micro.get("ci")
    return f"{_pct(micro[key])} ({_pct(ci[key][0])}–{_pct(ci[key][1])})" if ci else _pct(micro[key])


def format_markdown(result: dict[str, Any], title: str = "") -> str:
    """A :func:`score` or :func:`score_answers` result as Markdown: a mode x P/R/F1 table (with intervals), the
    task's rate (RE, EE, TC), per-type and per-dataset tables.

    >>> from curation.records import Record, Span
    >>> r = Record(id="s1", text="BRCA1", spans=[Span(0, 5, "Gene")])
    >>> print(format_markdown(score([r], [prediction_from_spans(r.text, r.spans)], n_bootstrap=0)).splitlines()[4])
    | strict | 100.00 | 100.00 | 100.00 | 100.00 | 1 | 0 | 0 |
    """
    if result.get("task", "ner") != "ner":
        return _format_task_markdown(result, title)
    o = result["outputs"]
    n = result["records"]
    lines = [f"## Evaluation{': ' + title if title else ''}", ""]
    level = result.get("bootstrap", {}).get("level", 0.95)
    lines += ["| mode | precision | recall | F1 | macro F1 | TP | FP | FN |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in MODES:
        m = result[mode]["micro"]
        lines.append(f"| {mode} | {_with_ci(m, 'precision')} | {_with_ci(m, 'recall')} | {_with_ci(m, 'f1')} | "
                     f"{_pct(result[mode]['macro']['f1'])} | {m['tp']} | {m['fp']} | {m['fn']} |")
    lines += ["", f"{n} records; parse failures {o['parse_error']} ({o['parse_error_rate']:.1%}), schema violations "
              f"{o['schema_error']} ({o['schema_error_rate']:.1%}), missing predictions {o['missing']} "
              f"({o['missing_rate']:.1%}), generated names not found in the text {o['unplaced_names']}."]
    if result["strict"]["micro"].get("ci"):
        b = result["bootstrap"]
        lines.append(f"Intervals: {level:.0%} percentile bootstrap over records ({b['resamples']} resamples, "
                     f"seed {b['seed']}). Scores in %.")
    lines += ["", "| type | support | strict P | strict R | strict F1 | relaxed F1 | string F1 |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for label, t in result["strict"]["per_type"].items():
        rel = result["relaxed"]["per_type"].get(label, {"f1": 0.0})
        st = result["string"]["per_type"].get(label, {"f1": 0.0})
        lines.append(f"| {label} | {t['support']} | {_pct(t['precision'])} | {_pct(t['recall'])} | {_pct(t['f1'])} | "
                     f"{_pct(rel['f1'])} | {_pct(st['f1'])} |")
    per_dataset = result.get("per_dataset", {})
    if len(per_dataset) > 1:
        lines += ["",
                  "| dataset | records | strict F1 | relaxed F1 | string F1 | parse failures | schema violations |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for name, d in per_dataset.items():
            lines.append(f"| {name or '-'} | {d['records']} | {_with_ci(d['strict']['micro'], 'f1')} | "
                         f"{_with_ci(d['relaxed']['micro'], 'f1')} | {_with_ci(d['string']['micro'], 'f1')} | "
                         f"{d['outputs']['parse_error']} | {d['outputs']['schema_error']} |")
    return "\n".join(lines) + "\n"


_TYPE_HEADER = {"re": "relation", "ee": "event type", "tc": "label"}
_RATE_TITLE = {"exact_match": "Exact match", "accuracy": "Accuracy"}


def _format_task_markdown(result: dict[str, Any], title: str) -> str:
    task = result["task"]
    modes, rate = TASK_MODES[task], RATES[task]
    o, n = result["outputs"], result["records"]
    lines = [f"## Evaluation{': ' + title if title else ''}", "", f"Task: {task}.", "",
             "| mode | precision | recall | F1 | macro F1 | TP | FP | FN |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for mode in modes:
        m = result[mode]["micro"]
        lines.append(f"| {mode} | {_with_ci(m, 'precision')} | {_with_ci(m, 'recall')} | {_with_ci(m, 'f1')} | "
                     f"{_pct(result[mode]['macro']['f1'])} | {m['tp']} | {m['fp']} | {m['fn']} |")
    r = result[rate]
    ci = f" ({_pct(r['ci'][0])}–{_pct(r['ci'][1])})" if r.get("ci") else ""
    lines += ["", f"{_RATE_TITLE[rate]}: {_pct(r['value'])}{ci}, {r['correct']} of {r['records']} records.",
              f"{n} records; parse failures {o['parse_error']} ({o['parse_error_rate']:.1%}), schema violations "
              f"{o['schema_error']} ({o['schema_error_rate']:.1%}), missing predictions {o['missing']} "
              f"({o['missing_rate']:.1%})."]
    if result[modes[0]]["micro"].get("ci"):
        b = result["bootstrap"]
        lines.append(f"Intervals: {b['level']:.0%} percentile bootstrap over records ({b['resamples']} resamples, "
                     f"seed {b['seed']}). Scores in %.")
    typed = [m for m in modes if m != "trigger_identification"]  # the one mode without per-type counts
    first, rest = typed[0], typed[1:]
    header = [_TYPE_HEADER[task], "support", f"{first} P", f"{first} R", f"{first} F1", *(f"{m} F1" for m in rest)]
    lines += ["", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    labels = sorted(set().union(*(result[m]["per_type"] for m in typed)))
    for label in labels:
        t = result[first]["per_type"].get(label, {"support": 0, "precision": 0.0, "recall": 0.0, "f1": 0.0})
        others = "".join(f" {_pct(result[m]['per_type'].get(label, {'f1': 0.0})['f1'])} |" for m in rest)
        lines.append(f"| {label} | {t['support']} | {_pct(t['precision'])} | {_pct(t['recall'])} | "
                     f"{_pct(t['f1'])} |{others}")
    per_dataset = result.get("per_dataset", {})
    if len(per_dataset) > 1:
        lines += ["", "| dataset | records | " + "".join(f"{m} F1 | " for m in modes)
                  + f"{rate.replace('_', ' ')} | parse failures | schema violations |",
                  "|---|---:|" + "---:|" * (len(modes) + 3)]
        for name, d in per_dataset.items():
            cells = "".join(f" {_with_ci(d[m]['micro'], 'f1')} |" for m in modes)
            lines.append(f"| {name or '-'} | {d['records']} |{cells} {_pct(d[rate]['value'])} | "
                         f"{d['outputs']['parse_error']} | {d['outputs']['schema_error']} |")
    return "\n".join(lines) + "\n"
