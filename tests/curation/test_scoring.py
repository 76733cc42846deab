"""The unified scorer: hand-computed counts on crafted records, and strict scores pinned against seqeval."""

from __future__ import annotations

import doctest
import json
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import scoring
from curation.bio import bio_to_spans
from curation.records import Record, Span, join_tokens, token_span_to_char
from curation.scoring import (
    Prediction,
    bootstrap_ci,
    gold_names,
    names_to_spans,
    normalize_mention,
    paired_bootstrap,
    parse_output,
    prediction_from_output,
    prediction_from_spans,
    prf,
    record_counts,
    score,
    summarize,
)


def ents(*pairs: tuple[str, str]) -> str:
    return json.dumps([{"entity": t, "name": n} for t, n in pairs])


def test_doctests():
    result = doctest.testmod(scoring)
    assert result.attempted > 10 and result.failed == 0


# --- zero division (seqeval's zero_division="warn" acts as 0) ---

@pytest.mark.parametrize(("counts", "expected"), [
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((0, 0, 3), (0.0, 0.0, 0.0)),  # no predictions: P = 0
    ((0, 2, 0), (0.0, 0.0, 0.0)),  # no gold: R = 0
    ((0, 2, 3), (0.0, 0.0, 0.0)),  # P + R = 0: F1 = 0
    ((2, 0, 2), (1.0, 0.5, 2 / 3)),
])
def test_prf_zero_division(counts, expected):
    assert prf(*counts) == pytest.approx(expected)


# --- the three matching modes ---

TEXT = "Breast cancer and ovarian cancer risk"
GOLD = [Span(0, 13, "Disease"), Span(18, 32, "Disease")]


def test_modes_differ_on_a_partial_mention():
    pred = prediction_from_output(TEXT, ents(("Disease", "cancer"), ("Disease", "ovarian cancer")))
    assert pred.spans == [Span(7, 13, "Disease"), Span(18, 32, "Disease")]
    assert record_counts(GOLD, pred, TEXT, "strict") == {"Disease": [1, 1, 1]}
    assert record_counts(GOLD, pred, TEXT, "relaxed") == {"Disease": [2, 0, 0]}
    assert record_counts(GOLD, pred, TEXT, "string") == {"Disease": [1, 1, 1]}


def test_type_must_match_in_every_mode():
    pred = prediction_from_spans(TEXT, [Span(0, 13, "Chemical")])
    for mode in scoring.MODES:
        assert record_counts(GOLD, pred, TEXT, mode) == {"Chemical": [0, 1, 0], "Disease": [0, 0, 2]}


def test_string_mode_is_a_multiset_match():
    text = "aspirin or aspirin with Aspirin"
    one_gold = [Span(0, 7, "Chemical")]
    two_gold = [Span(0, 7, "Chemical"), Span(11, 18, "Chemical")]
    twice = Prediction(names=[("Chemical", "aspirin"), ("Chemical", "aspirin")])
    thrice = Prediction(names=[("Chemical", "aspirin")] * 3)
    assert record_counts(one_gold, twice, text, "string") == {"Chemical": [1, 1, 0]}
    assert record_counts(two_gold, twice, text, "string") == {"Chemical": [2, 0, 0]}
    assert record_counts(two_gold, thrice, text, "string") == {"Chemical": [2, 1, 0]}
    # case-sensitive: "Aspirin" is not "aspirin"
    capital = Prediction(names=[("Chemical", "Aspirin")])
    assert record_counts(one_gold, capital, text, "string") == {"Chemical": [0, 1, 1]}


def test_string_mode_normalises_whitespace():
    text = "breast \n cancer"
    pred = prediction_from_output(text, ents(("Disease", "  breast cancer ")))
    assert pred.names == [("Disease", "breast cancer")]
    assert record_counts([Span(0, 15, "Disease")], pred, text, "string") == {"Disease": [1, 0, 0]}
    assert normalize_mention("a\t b  c") == "a b c"


def test_strict_counts_a_duplicated_span_once():
    pred = prediction_from_spans(TEXT, [Span(0, 13, "Disease"), Span(0, 13, "Disease")])
    assert record_counts(GOLD, pred, TEXT, "strict") == {"Disease": [1, 1, 1]}


# --- discontinuous spans: matched by their fragments ---

LOOP = "loop and thiazide diuretics"  # "loop ... diuretics" is one discontinuous Drug
LOOP_GOLD = [Span.from_fragments([(0, 4), (18, 27)], "Drug")]


def test_strict_needs_the_same_fragments():
    same = prediction_from_spans(LOOP, [Span.from_fragments([(18, 27), (0, 4)], "Drug")])
    outer = prediction_from_spans(LOOP, [Span(0, 27, "Drug")])  # the same start and end, but continuous
    assert record_counts(LOOP_GOLD, same, LOOP, "strict") == {"Drug": [1, 0, 0]}
    assert record_counts(LOOP_GOLD, outer, LOOP, "strict") == {"Drug": [0, 1, 1]}


def test_relaxed_does_not_count_the_gap():
    in_gap = prediction_from_spans(LOOP, [Span(5, 17, "Drug")])  # "and thiazide": inside the outer span only
    on_fragment = prediction_from_spans(LOOP, [Span(9, 27, "Drug")])  # "thiazide diuretics" shares "diuretics"
    assert record_counts(LOOP_GOLD, in_gap, LOOP, "relaxed") == {"Drug": [0, 1, 1]}
    assert record_counts(LOOP_GOLD, on_fragment, LOOP, "relaxed") == {"Drug": [1, 0, 0]}


def test_string_mode_joins_the_fragments_with_a_space():
    pred = prediction_from_output(LOOP, ents(("Drug", "loop diuretics")))
    assert pred.spans == [] and pred.unplaced == ["Drug"]  # not one piece of the text, so it is not placed
    assert gold_names(LOOP, LOOP_GOLD) == [("Drug", "loop diuretics")]
    assert record_counts(LOOP_GOLD, pred, LOOP, "string") == {"Drug": [1, 0, 0]}
    assert record_counts(LOOP_GOLD, pred, LOOP, "strict") == {"Drug": [0, 1, 1]}


def test_relaxed_is_one_to_one():
    text = "x" * 40
    long_gold = [Span(0, 20, "T")]
    two_preds = prediction_from_spans(text, [Span(0, 5, "T"), Span(10, 15, "T")])
    assert record_counts(long_gold, two_preds, text, "relaxed") == {"T": [1, 1, 0]}
    two_gold = [Span(0, 5, "T"), Span(10, 15, "T")]
    one_long = prediction_from_spans(text, [Span(0, 20, "T")])
    assert record_counts(two_gold, one_long, text, "relaxed") == {"T": [1, 0, 1]}


def test_relaxed_is_a_maximum_matching():
    # P1 overlaps G1 and G2, P2 overlaps only G1: a greedy pass taking P1 -> G1 would leave P2 unmatched.
    text = "x" * 40
    gold = [Span(0, 10, "T"), Span(12, 20, "T")]
    for order in ([Span(5, 15, "T"), Span(0, 3, "T")], [Span(0, 3, "T"), Span(5, 15, "T")]):
        assert record_counts(gold, prediction_from_spans(text, order), text, "relaxed") == {"T": [2, 0, 0]}


def _brute_force_matching(gold: list[Span], pred: list[Span]) -> int:
    """Largest one-to-one set of overlapping same-type pairs, by trying every assignment."""
    if not pred:
        return 0
    p, rest = pred[0], pred[1:]
    best = _brute_force_matching(gold, rest)  # p stays unmatched
    for i, g in enumerate(gold):
        if g.label == p.label and p.start < g.end and g.start < p.end:
            best = max(best, 1 + _brute_force_matching(gold[:i] + gold[i + 1 :], rest))
    return best


def test_relaxed_tp_is_at_least_strict_tp_and_maximum():
    rng = np.random.default_rng(0)
    text = "x" * 30
    for _ in range(200):
        spans = []
        for _ in range(2):
            starts = rng.integers(0, 25, size=rng.integers(0, 6))
            spans.append([Span(int(s), int(s + rng.integers(1, 6)), str(rng.choice(["A", "B"]))) for s in starts])
        pred = prediction_from_spans(text, spans[1])
        strict = record_counts(spans[0], pred, text, "strict")
        relaxed = record_counts(spans[0], pred, text, "relaxed")
        assert strict.keys() == relaxed.keys()
        assert sum(c[0] for c in relaxed.values()) == _brute_force_matching(spans[0], spans[1])
        for label in strict:
            assert relaxed[label][0] >= strict[label][0]
            assert sum(relaxed[label][:2]) == sum(strict[label][:2])  # predictions
            assert relaxed[label][0] + relaxed[label][2] == strict[label][0] + strict[label][2]  # gold


def test_unknown_mode():
    with pytest.raises(ValueError, match="unknown mode"):
        record_counts([], Prediction(), "", "lenient")


# --- parse failures and schema violations ---

@pytest.mark.parametrize(("output", "status"), [
    (ents(("Disease", "asthma")), "ok"),
    ("[]", "ok"),
    ("  [] \n", "ok"),
    ("asthma (Disease)", "parse_error"),
    ("```json\n[]\n```", "parse_error"),
    ('[{"entity": "Disease", "name": "asthma"}', "parse_error"),
    ("", "parse_error"),
    ('{"entity": "Disease", "name": "asthma"}', "schema_error"),  # an object, not an array
    ('[{"entity": "Disease"}]', "schema_error"),  # no name
    ('[{"type": "Disease", "name": "asthma"}]', "schema_error"),  # wrong key
    ('[{"entity": "Disease", "name": "asthma", "id": 1}]', "schema_error"),  # extra key
    ('[{"entity": "Disease", "name": ""}]', "schema_error"),  # empty mention
    ('[{"entity": "Disease", "name": 3}]', "schema_error"),
    (ents(("Gene", "BRCA1")), "schema_error"),  # type outside the label set
    ('["asthma"]', "schema_error"),
])
def test_parse_output_status(output, status):
    assert parse_output(output, ["Chemical", "Disease"])[1] == status


def test_without_labels_any_type_is_valid():
    assert parse_output(ents(("Gene", "BRCA1")))[1] == "ok"


def test_failed_outputs_predict_nothing_and_keep_their_gold():
    gold = [Record(id=str(i), text="aspirin causes asthma", spans=[Span(0, 7, "Chemical"), Span(15, 21, "Disease")])
            for i in range(5)]
    good = ents(("Chemical", "aspirin"), ("Disease", "asthma"))
    outputs = [good, "not json", ents(("Gene", "aspirin")), good]
    preds = [prediction_from_output(r.text, o, ["Chemical", "Disease"]) for r, o in zip(gold, outputs, strict=False)]
    preds.append(Prediction(status="missing"))
    result = score(gold, preds, n_bootstrap=0)
    assert result["outputs"] == {"ok": 2, "parse_error": 1, "schema_error": 1, "missing": 1,
                                 "parse_error_rate": 0.2, "schema_error_rate": 0.2, "missing_rate": 0.2,
                                 "unplaced_names": 0}
    for mode in scoring.MODES:
        micro = result[mode]["micro"]
        assert (micro["tp"], micro["fp"], micro["fn"]) == (4, 0, 6)
        assert micro["precision"] == 1.0 and micro["recall"] == pytest.approx(0.4)


def test_given_spans_are_used_for_strict_and_names_for_string():
    text = "asthma and asthma"
    pred = prediction_from_output(text, ents(("Disease", "asthma")), spans=[Span(11, 17, "Disease")])
    gold = [Span(11, 17, "Disease")]
    assert record_counts(gold, pred, text, "strict") == {"Disease": [1, 0, 0]}
    # without spans the single listing goes to the first occurrence
    placed = prediction_from_output(text, ents(("Disease", "asthma")))
    assert record_counts(gold, placed, text, "strict") == {"Disease": [0, 1, 1]}
    assert record_counts(gold, placed, text, "string") == {"Disease": [1, 0, 0]}


def test_unplaced_names_are_false_positives():
    text = "aspirin causes asthma"
    pred = prediction_from_output(text, ents(("Chemical", "ibuprofen"), ("Disease", "asthma"), ("Disease", "asthma")))
    assert pred.unplaced == ["Chemical", "Disease"]
    gold = [Span(15, 21, "Disease")]
    assert record_counts(gold, pred, text, "strict") == {"Chemical": [0, 1, 0], "Disease": [1, 1, 0]}
    assert record_counts(gold, pred, text, "relaxed") == {"Chemical": [0, 1, 0], "Disease": [1, 1, 0]}


# --- names_to_spans ---

@pytest.mark.parametrize(("text", "entities", "expected"), [
    # the k-th listing of a (type, name) takes the k-th occurrence, left to right
    ("asthma, asthma and asthma", [("D", "asthma"), ("D", "asthma")], [(0, 6), (8, 14)]),
    # more listings than occurrences: the extra listing is unplaced
    ("asthma only", [("D", "asthma"), ("D", "asthma")], [(0, 6), None]),
    ("asthma only", [("D", "cancer")], [None]),
    # different types are placed independently
    ("BRCA1 mutation", [("Gene", "BRCA1"), ("Protein", "BRCA1")], [(0, 5), (0, 5)]),
    # occurrences inside words are skipped when the name also occurs as a whole word
    ("IL-23 and IL-2", [("G", "IL-2")], [(10, 14)]),
    # ... and used when it does not
    ("cancers", [("D", "cancer")], [(0, 6)]),
    # whitespace runs match any whitespace run; case must match
    ("breast\n  cancer", [("D", "breast cancer")], [(0, 15)]),
    ("Breast cancer", [("D", "breast cancer")], [None]),
    # regex characters are literal; a name of whitespace only cannot be placed
    ("dose (mg/kg) given", [("U", "(mg/kg)"), ("U", "   ")], [(5, 12), None]),
    # order of the listings does not change where names go
    ("x and y and x", [("T", "y"), ("T", "x"), ("T", "x")], [(6, 7), (0, 1), (12, 13)]),
])
def test_names_to_spans(text, entities, expected):
    got = names_to_spans(text, entities)
    assert [None if s is None else (s.start, s.end) for s in got] == expected
    assert [s.label for s in got if s is not None] == [t for (t, _), e in zip(entities, expected, strict=True) if e]


# --- aggregation ---

def test_summarize_micro_macro_per_type():
    per_record = [{"Chemical": [1, 0, 1], "Disease": [2, 1, 0]}, {"Disease": [1, 1, 2]}, {"Gene": [0, 2, 0]}, {}]
    s = summarize(per_record)
    assert (s["micro"]["tp"], s["micro"]["fp"], s["micro"]["fn"]) == (4, 4, 3)
    assert s["micro"]["precision"] == pytest.approx(0.5)
    assert s["micro"]["recall"] == pytest.approx(4 / 7)
    assert s["micro"]["f1"] == pytest.approx(8 / 15)
    assert s["per_type"]["Chemical"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2,
                                         "tp": 1, "fp": 0, "fn": 1}
    assert s["per_type"]["Disease"]["f1"] == pytest.approx(0.6) and s["per_type"]["Disease"]["support"] == 5
    assert s["per_type"]["Gene"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "tp": 0, "fp": 2,
                                     "fn": 0}
    assert s["macro"]["f1"] == pytest.approx((2 / 3 + 0.6 + 0) / 3)
    assert s["macro"]["precision"] == pytest.approx((1 + 0.6 + 0) / 3)
    assert s["micro"]["ci"] is None


def test_per_dataset_breakdown():
    text = "aspirin causes asthma"
    gold = [Record(id="a", text=text, spans=[Span(0, 7, "Chemical")], meta={"dataset": "BC5CDR"}),
            Record(id="b", text=text, spans=[Span(15, 21, "Disease")], meta={"dataset": "NCBI-disease"}),
            Record(id="c", text=text, spans=[Span(15, 21, "Disease")], meta={"dataset": "NCBI-disease"})]
    preds = [prediction_from_spans(text, [Span(0, 7, "Chemical")]), prediction_from_spans(text, []),
             prediction_from_spans(text, [Span(15, 21, "Disease")])]
    result = score(gold, preds, n_bootstrap=50)
    assert sorted(result["per_dataset"]) == ["BC5CDR", "NCBI-disease"]
    assert result["per_dataset"]["BC5CDR"]["strict"]["micro"]["f1"] == 1.0
    assert result["per_dataset"]["NCBI-disease"]["records"] == 2
    assert result["per_dataset"]["NCBI-disease"]["strict"]["micro"]["recall"] == 0.5
    assert result["strict"]["micro"]["recall"] == pytest.approx(2 / 3)
    # explicit names override record metadata
    assert list(score(gold, preds, ["x", "x", "y"], n_bootstrap=0)["per_dataset"]) == ["x", "y"]
    with pytest.raises(ValueError, match="2 predictions"):
        score(gold, preds[:2])


# --- bootstrap ---

def _per_record(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4, n), rng.integers(0, 2, n), rng.integers(0, 2, n)


def test_bootstrap_contains_point_estimate_and_is_deterministic():
    tp, fp, fn = _per_record(300, 1)
    point = prf(tp.sum(), fp.sum(), fn.sum())
    ci = bootstrap_ci(tp, fp, fn, n_resamples=1000, seed=7)
    for k, value in zip(("precision", "recall", "f1"), point, strict=True):
        assert ci[k][0] < value < ci[k][1]
        assert ci[k][1] - ci[k][0] < 0.2
    assert bootstrap_ci(tp, fp, fn, n_resamples=1000, seed=7) == ci
    assert bootstrap_ci(tp, fp, fn, n_resamples=1000, seed=8) != ci
    assert bootstrap_ci([], [], [], 100) is None
    assert bootstrap_ci(tp, fp, fn, 0) is None


def test_bootstrap_matches_a_per_resample_loop():
    tp, fp, fn = _per_record(50, 2)
    ci = bootstrap_ci(tp, fp, fn, n_resamples=300, seed=3, level=0.9)
    idx = np.random.default_rng(3).integers(0, 50, size=(300, 50))
    stats = np.array([prf(tp[i].sum(), fp[i].sum(), fn[i].sum()) for i in idx])
    lo, hi = np.quantile(stats, [0.05, 0.95], axis=0)
    for j, k in enumerate(("precision", "recall", "f1")):
        assert ci[k] == pytest.approx([lo[j], hi[j]], abs=1e-12)


def test_score_bootstrap_is_seeded():
    tp, fp, fn = _per_record(100, 4)
    text = "x" * 20
    gold, preds = [], []
    for i in range(100):  # tp[i] matched spans, fp[i] spurious ones, fn[i] missed ones
        g = [Span(k, k + 1, "T") for k in range(tp[i] + fn[i])]
        p = [Span(k, k + 1, "T") for k in range(tp[i])] + [Span(10 + k, 11 + k, "T") for k in range(fp[i])]
        gold.append(Record(id=str(i), text=text, spans=g))
        preds.append(prediction_from_spans(text, p))
    a = score(gold, preds, n_bootstrap=200, seed=5)
    assert a["strict"]["micro"]["ci"] == bootstrap_ci(tp, fp, fn, 200, seed=5)
    b = score(gold, preds, n_bootstrap=200, seed=5, level=0.8)
    assert b["strict"]["micro"]["ci"] == bootstrap_ci(tp, fp, fn, 200, seed=5, level=0.8)
    assert a == score(gold, preds, n_bootstrap=200, seed=5)


# --- strict scores equal seqeval's strict IOB2 scores ---

LABELS = ["DIS", "CHEM", "GENE"]


@st.composite
def tag_pair(draw) -> tuple[list[list[str]], list[list[str]]]:
    """Sentences of random but valid IOB2 tags, for gold and prediction over the same tokens."""
    lengths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=6))

    def tags(n: int) -> list[str]:
        cells = draw(st.lists(st.tuples(st.sampled_from([None, *LABELS]), st.booleans()), min_size=n, max_size=n))
        out, prev = [], None
        for label, begin in cells:
            out.append("O" if label is None else f"{'I' if label == prev and not begin else 'B'}-{label}")
            prev = label
        return out

    return [tags(n) for n in lengths], [tags(n) for n in lengths]


def _records(sentences: list[list[str]]) -> list[tuple[str, list[Span]]]:
    out = []
    for tags in sentences:
        text, offsets = join_tokens([f"w{i}" for i in range(len(tags))])
        out.append((text, [token_span_to_char(offsets, s, e, lab) for s, e, lab in bio_to_spans(tags)]))
    return out


@settings(max_examples=300, deadline=None)
@given(tag_pair())
def test_strict_scores_equal_seqeval(pair):
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    y_true, y_pred = pair
    gold = [Record(id=str(i), text=t, spans=s) for i, (t, s) in enumerate(_records(y_true))]
    preds = [prediction_from_spans(t, s) for t, s in _records(y_pred)]
    result = score(gold, preds, n_bootstrap=0)["strict"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kw = {"mode": "strict", "scheme": IOB2}
        assert result["micro"]["precision"] == pytest.approx(precision_score(y_true, y_pred, **kw), abs=1e-9)
        assert result["micro"]["recall"] == pytest.approx(recall_score(y_true, y_pred, **kw), abs=1e-9)
        assert result["micro"]["f1"] == pytest.approx(f1_score(y_true, y_pred, **kw), abs=1e-9)
        if not result["per_type"]:
            return  # no entities on either side: seqeval's report has no rows and a NaN macro average
        report = classification_report(y_true, y_pred, output_dict=True, **kw)
    types = {k: v for k, v in report.items() if not k.endswith(" avg")}
    assert sorted(types) == sorted(result["per_type"])
    for label, ref in types.items():
        ours = result["per_type"][label]
        assert ours["precision"] == pytest.approx(ref["precision"], abs=1e-9)
        assert ours["recall"] == pytest.approx(ref["recall"], abs=1e-9)
        assert ours["f1"] == pytest.approx(ref["f1-score"], abs=1e-9)
        assert ours["support"] == ref["support"]
    for k in ("precision", "recall", "f1"):
        assert result["macro"][k] == pytest.approx(report["macro avg"]["f1-score" if k == "f1" else k], abs=1e-9)


def test_given_spans_fewer_than_names_count_as_unplaced():
    from curation.scoring import prediction_from_output, record_counts

    text = "aspirin and salicylate"
    out = '[{"entity": "Chemical", "name": "aspirin"}, {"entity": "Chemical", "name": "ASA"}]'
    pred = prediction_from_output(text, out, spans=[Span(0, 7, "Chemical")])
    assert pred.unplaced == ["Chemical"]
    assert record_counts([Span(0, 7, "Chemical")], pred, text, "strict") == {"Chemical": [1, 1, 0]}


def test_paired_bootstrap_matches_a_loop_over_the_same_draws():
    rng = np.random.default_rng(7)
    a = rng.integers(0, 4, size=(2, 30, 3)).tolist()  # two seeds of one system, 30 records
    b = rng.integers(0, 4, size=(3, 30, 3)).tolist()  # three of another

    def mean_f1(runs, idx):
        return sum(prf(*[sum(run[i][k] for i in idx) for k in range(3)])[2] for run in runs) / len(runs)

    everything = range(30)
    result = paired_bootstrap(a, b, n_resamples=300, seed=5)
    assert result["diff"] == pytest.approx(mean_f1(a, everything) - mean_f1(b, everything))
    draws = np.random.default_rng(5).integers(0, 30, size=(300, 30))  # one chunk: the function's own draws
    diffs = np.array([mean_f1(a, idx) - mean_f1(b, idx) for idx in draws])
    assert result["ci"] == pytest.approx(list(np.quantile(diffs, [0.025, 0.975])))
    assert result["p_le_0"] == pytest.approx(float((diffs <= 0).mean()))
    with pytest.raises(ValueError, match="same records"):
        paired_bootstrap(a, [run[:29] for run in b])
