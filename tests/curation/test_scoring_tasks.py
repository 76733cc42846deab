"""RE, EE and TC in the unified scorer: hand-counted cases, scikit-learn for TC, a naive reimplementation for RE and
EE on generated cases, `bioselect evaluate` / `tune evaluate` on converted assets, and real corpora."""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.convert import convert_corpus
from curation.evaluate import main as evaluate_main
from curation.readers import read_corpus
from curation.scoring import Answer, answer_from_record, format_markdown, parse_answer, prf, score_answers
from tests.helpers import ASSETS, real_file
from tuning.compare import main as compare_main

READERS = ASSETS / "readers"


def re_answer(*triples, status="ok") -> Answer:
    return Answer("re", tuple(triples), status)


def micro(block: dict) -> tuple[int, int, int]:
    m = block["micro"]
    return m["tp"], m["fp"], m["fn"]


# --- hand-counted cases -------------------------------------------------------------------------------------------

def test_re_hand_counts():
    a_eff_w = ("aspirin", "Drug", "effect", "warfarin", "Drug")
    a_adv_h = ("aspirin", "Drug", "advise", "heparin", "Drug")
    li = ("lithium", "Drug", "effect", "diuretics", "Group")
    gold = [re_answer(a_eff_w, a_adv_h), re_answer(li), re_answer(("x", "Drug", "DDI", "y", "Drug")), re_answer()]
    pred = [
        # the effect pair right; the advise pair with a wrong head type (strict hit, typed miss); a reversed pair
        re_answer(a_eff_w, ("aspirin", "Group", "advise", "heparin", "Drug"),
                  ("warfarin", "Drug", "effect", "aspirin", "Drug")),
        re_answer(li, li),  # listed twice: one hit, one false positive
        re_answer(status="parse_error"),  # the DDI pair is missed
        re_answer(),  # an empty gold answered with []: an exact match
    ]
    r = score_answers("re", gold, pred, n_bootstrap=0)
    # strict: effect tp 2 (aspirin-warfarin, lithium) fp 2 (reversed, duplicate); advise tp 1; DDI fn 1
    assert micro(r["strict"]) == (3, 2, 1)
    assert {k: (v["tp"], v["fp"], v["fn"]) for k, v in r["strict"]["per_type"].items()} == {
        "DDI": (0, 0, 1), "advise": (1, 0, 0), "effect": (2, 2, 0)}
    assert r["strict"]["micro"]["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert r["strict"]["macro"]["f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    # typed: the advise pair becomes a false positive and a false negative
    assert micro(r["typed"]) == (2, 3, 2)
    assert r["typed"]["per_type"]["advise"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1,
                                                "tp": 0, "fp": 1, "fn": 1}
    assert r["exact_match"] == {"value": 0.25, "correct": 1, "records": 4, "ci": None}
    assert r["outputs"] == {"ok": 3, "parse_error": 1, "schema_error": 0, "missing": 0, "parse_error_rate": 0.25,
                            "schema_error_rate": 0.0, "missing_rate": 0.0}
    assert r["task"] == "re" and r["records"] == 4 and list(r["per_dataset"]) == [""]


def test_re_parse_normalises_mentions_and_checks_relation_types():
    out = '[{"head": " loop\\n diuretics", "relation": "effect", "tail": "lithium"}]'
    assert parse_answer("re", out, ["effect"]).items == (("loop diuretics", None, "effect", "lithium", None),)
    assert parse_answer("re", out, ["DDI"]).status == "schema_error"
    assert parse_answer("re", '[{"head": "a", "tail": "b"}]').status == "schema_error"  # no relation
    assert parse_answer("re", "```json\n[]\n```").status == "parse_error"


def ee(event: str, trigger: str, **args: list[str]) -> dict:
    return {"event": event, "trigger": trigger, "arguments": {k.replace("__", "."): v for k, v in args.items()}}


def test_ee_hand_counts():
    g1 = [ee("AE", "caused", Effect=["rash"], Treatment__Drug=["aspirin"]),
          ee("PTE", "treated", Treatment__Drug=["aspirin"], Treatment__Disorder=["fever"])]
    p1 = [ee("AE", " caused ", Effect=["rash"], Drug=["aspirin"]),  # a wrong role
          ee("AE", "treated", Treatment__Drug=["aspirin"])]  # the right trigger with the wrong type
    gold = [parse_answer("ee", json.dumps(g1)), parse_answer("ee", "[]")]
    pred = [parse_answer("ee", json.dumps(p1), ["AE", "PTE"]), parse_answer("ee", "[]", ["AE", "PTE"])]
    r = score_answers("ee", gold, pred, n_bootstrap=0)
    # triggers: both strings found; only 'caused' with its type
    assert micro(r["trigger_identification"]) == (2, 0, 0)
    assert list(r["trigger_identification"]["per_type"]) == ["*"]
    assert r["trigger_identification"]["macro"]["f1"] == r["trigger_identification"]["micro"]["f1"] == 1.0
    assert micro(r["trigger_classification"]) == (1, 1, 1)
    assert {k: (v["tp"], v["fp"], v["fn"]) for k, v in r["trigger_classification"]["per_type"].items()} == {
        "AE": (1, 1, 0), "PTE": (0, 0, 1)}
    # arguments, role ignored: (AE, caused, rash), (AE, caused, aspirin) found; (AE, treated, aspirin) is not a PTE
    # argument; both PTE arguments missed
    assert micro(r["argument_identification"]) == (2, 1, 2)
    # with roles: only (AE, caused, Effect, rash)
    assert micro(r["argument_classification"]) == (1, 2, 3)
    assert r["argument_classification"]["per_type"]["AE"]["f1"] == pytest.approx(prf(1, 2, 1)[2])
    assert r["exact_match"]["correct"] == 1  # the empty record
    md = format_markdown(r, "toy")
    assert "| trigger_classification | 50.00 | 50.00 | 50.00 | 33.33 | 1 | 1 | 1 |" in md
    assert "Exact match: 50.00, 1 of 2 records." in md
    assert "| AE | 1 | 50.00 | 100.00 | 66.67 | 80.00 | 40.00 |" in md


def test_tc_hand_counts_and_failures():
    gold = [Answer("tc", (x,)) for x in ("ade", "ade", "no_ade", "no_ade")]
    pred = [Answer("tc", ("ade",)), Answer("tc", ("no_ade",)), Answer("tc", ("no_ade",)),
            Answer("tc", status="schema_error")]
    r = score_answers("tc", gold, pred, n_bootstrap=0)
    # ade: tp 1, fn 1; no_ade: tp 1, fp 1, fn 1 (the failed answer is a miss only)
    assert {k: (v["tp"], v["fp"], v["fn"]) for k, v in r["label"]["per_type"].items()} == {
        "ade": (1, 0, 1), "no_ade": (1, 1, 1)}
    assert r["accuracy"]["value"] == 0.5 and r["label"]["micro"]["recall"] == 0.5
    assert r["label"]["micro"]["precision"] == pytest.approx(2 / 3)


def test_answers_from_records_equal_the_converted_answers():
    """The corpus path and the instruction path give the same gold items (DDI, PHEE, HealthAdvice assets)."""
    for path, task in [(READERS / "ddi", "re"), (READERS / "phee.json", "ee"), (READERS / "healthadvice.csv", "tc"),
                       (READERS / "ade", "re"), (READERS / "tiny.PubTator", "re")]:
        corpus = read_corpus(path)
        rows = convert_corpus(corpus, task=task)
        assert any(row["output"] not in ("[]",) for row in rows)
        for rec, row in zip(corpus.records, rows, strict=True):
            a, b = answer_from_record(task, rec), parse_answer(task, row["output"])
            assert b.status == "ok" and Counter(a.items) == Counter(b.items), (path, rec.id)  # order is free


def test_tc_refuses_a_gold_record_without_exactly_one_label():
    from curation.records import Record

    with pytest.raises(ValueError, match="exactly one gold label per record; this record has 2 \\(a, b\\)"):
        answer_from_record("tc", Record(id="r", text="t", labels=["a", "b"]))


# --- TC against scikit-learn --------------------------------------------------------------------------------------

LABELS = ["a", "b", "c", "d"]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(LABELS), st.one_of(st.none(), st.sampled_from(LABELS))),
                min_size=1, max_size=30))
def test_tc_matches_sklearn(pairs):
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    gold = [Answer("tc", (g,)) for g, _ in pairs]
    pred = [Answer("tc", (p,)) if p is not None else Answer("tc", status="parse_error") for _, p in pairs]
    r = score_answers("tc", gold, pred, n_bootstrap=0)
    y_true = [g for g, _ in pairs]
    y_pred = [p if p is not None else "<failed>" for _, p in pairs]  # a failed answer predicts no label
    labels = sorted(set(y_true) | {p for _, p in pairs if p is not None})
    assert r["accuracy"]["value"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert r["label"]["macro"]["f1"] == pytest.approx(
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    p, rec, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert sorted(r["label"]["per_type"]) == labels
    for i, label in enumerate(labels):
        t = r["label"]["per_type"][label]
        assert (t["precision"], t["recall"], t["f1"], t["support"]) == pytest.approx((p[i], rec[i], f[i], support[i]))
    if all(p is not None for _, p in pairs):  # every answer valid: micro P = R = F1 = accuracy
        assert r["label"]["micro"]["f1"] == pytest.approx(r["accuracy"]["value"])


# --- RE and EE against a naive reimplementation -------------------------------------------------------------------

def naive_counts(gold_units: list[list[tuple]], pred_units: list[list[tuple]]) -> dict[str, list[int]]:
    """Per-type [tp, fp, fn] by crossing off: each predicted unit removes one equal gold unit of its record if one is
    left (a true positive), else is a false positive; gold units left over are false negatives. A unit is
    (type, key)."""
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for g, p in zip(gold_units, pred_units, strict=True):
        left = list(g)
        for unit in p:
            if unit in left:
                left.remove(unit)
                totals[unit[0]][0] += 1
            else:
                totals[unit[0]][1] += 1
        for unit in left:
            totals[unit[0]][2] += 1
    return dict(totals)


def naive_units(task: str, mode: str, answer: Answer) -> list[tuple]:
    units = []
    if task == "re":
        for h, ht, rel, t, tt in answer.items:
            units.append((rel, h, rel, t) if mode == "strict" else (rel, h, ht, rel, t, tt))
        return units
    for etype, trigger, args in answer.items:
        if mode == "trigger_identification":
            units.append(("*", trigger))
        elif mode == "trigger_classification":
            units.append((etype, etype, trigger))
        else:
            for role, m in args:
                units.append((etype, etype, trigger, m) if mode == "argument_identification"
                             else (etype, etype, trigger, role, m))
    return units


def naive_f1(totals: dict[str, list[int]]) -> tuple[float, float]:
    tp, fp, fn = (sum(v[k] for v in totals.values()) for k in range(3))
    micro_f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
    per = [2 * v[0] / (2 * v[0] + v[1] + v[2]) if v[0] else 0.0 for v in totals.values()]
    return micro_f1, (sum(per) / len(per) if per else 0.0)


MENTION = st.sampled_from(["aspirin", "warfarin", "rash", "fever"])
TYPE = st.sampled_from(["Drug", "AE"])
TRIPLE = st.tuples(MENTION, st.one_of(st.none(), TYPE), st.sampled_from(["ADE", "DDI"]), MENTION, TYPE)
EVENT = st.tuples(st.sampled_from(["AE", "PTE"]), st.sampled_from(["caused", "after"]),
                  st.lists(st.tuples(st.sampled_from(["Drug", "Effect"]), MENTION), max_size=3).map(
                      lambda args: tuple(sorted(args))))


def answers(task: str, item) -> st.SearchStrategy:
    items = st.lists(item, max_size=4).map(tuple)
    return st.one_of(items.map(lambda x: Answer(task, x)), st.just(Answer(task, status="schema_error")))


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_re_and_ee_match_a_naive_count(data):
    task = data.draw(st.sampled_from(["re", "ee"]))
    item = TRIPLE if task == "re" else EVENT
    n = data.draw(st.integers(1, 6))
    gold = [Answer(task, data.draw(st.lists(item, max_size=4).map(tuple))) for _ in range(n)]
    pred = [data.draw(answers(task, item)) for _ in range(n)]
    r = score_answers(task, gold, pred, n_bootstrap=0)
    modes = ("strict", "typed") if task == "re" else (
        "trigger_identification", "trigger_classification", "argument_identification", "argument_classification")
    for mode in modes:
        totals = naive_counts([naive_units(task, mode, g) for g in gold], [naive_units(task, mode, p) for p in pred])
        assert {k: [v["tp"], v["fp"], v["fn"]] for k, v in r[mode]["per_type"].items()} == dict(sorted(totals.items()))
        micro_f1, macro_f1 = naive_f1(totals)
        assert r[mode]["micro"]["f1"] == pytest.approx(micro_f1)
        assert r[mode]["macro"]["f1"] == pytest.approx(macro_f1)
    exact = sum(p.status == "ok" and sorted(p.items, key=repr) == sorted(g.items, key=repr)
                for g, p in zip(gold, pred, strict=True))
    assert r["exact_match"]["correct"] == exact


def test_intervals_contain_the_point_estimates():
    rng = random.Random(0)
    pool = [("aspirin", "Drug", "ADE", "rash", "AE"), ("warfarin", "Drug", "ADE", "fever", "AE"),
            ("aspirin", "Drug", "DDI", "warfarin", "Drug")]
    gold = [re_answer(*rng.sample(pool, rng.randint(0, 3))) for _ in range(60)]
    pred = [re_answer(*[t for t in g.items if rng.random() < 0.7], *rng.sample(pool, rng.randint(0, 1)))
            for g in gold]
    r = score_answers("re", gold, pred, datasets=["a", "b"] * 30, n_bootstrap=300, seed=1)
    for block in (r, *r["per_dataset"].values()):
        for mode in ("strict", "typed"):
            m = block[mode]["micro"]
            for k in ("precision", "recall", "f1"):
                assert m["ci"][k][0] <= m[k] <= m["ci"][k][1]
        em = block["exact_match"]
        assert em["ci"][0] <= em["value"] <= em["ci"][1] and em["ci"][0] < em["ci"][1]
    assert r["bootstrap"] == {"resamples": 300, "seed": 1, "level": 0.95}
    assert sum(d["records"] for d in r["per_dataset"].values()) == 60


# --- bioselect evaluate and tune evaluate -------------------------------------------------------------------------

def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def evaluate(tmp_path: Path, gold: Path, pred: Path, *extra: str, name: str = "eval") -> dict:
    out = tmp_path / f"{name}.json"
    assert evaluate_main(["--gold", str(gold), "--pred", str(pred), "--output", str(out), "--bootstrap", "50",
                          *extra]) == 0
    return json.loads(out.read_text())


def test_evaluate_re_from_instruction_jsonl_and_from_the_corpus(tmp_path, capsys):
    rows = convert_corpus(read_corpus(READERS / "ddi"), task="re")
    gold = write_rows(tmp_path / "gold.jsonl", rows)
    # record 0 (two relations: Loop -effect-> lithium, thiazide diuretics -DDI-> lithium) keeps only the second,
    # with the types left out; record 1 (none) answers []; record 2 (aspirin -advise-> warfarin) is not JSON
    pred_rows = [{"id": rows[0]["id"], "output": json.dumps(
                     [{"head": "thiazide  diuretics", "relation": "DDI", "tail": "lithium"}])},
                 {"id": rows[1]["id"], "output": "[]"},
                 {"id": rows[2]["id"], "output": "aspirin advise warfarin"}]
    pred = write_rows(tmp_path / "pred.jsonl", pred_rows)
    report = evaluate(tmp_path, gold, pred)
    out = capsys.readouterr().out
    assert report["task"] == "re" and report["pred_format"] == "predictions"
    assert report["labels"] == {"DDI": ["DDI", "advise", "effect"]}
    assert micro(report["strict"]) == (1, 0, 2) and micro(report["typed"]) == (0, 1, 3)
    assert report["exact_match"]["correct"] == 1  # the record without relations
    assert report["outputs"]["parse_error"] == 1
    assert set(report) >= {"records", "outputs", "per_dataset", "bootstrap", "name", "gold", "pred", "provenance"}
    assert (tmp_path / "eval.md").read_text() == out and "| DDI | 1 | 100.00 | 100.00 | 100.00 | 0.00 |" in out
    # the corpus read by its reader with --task re: the same gold, so the same scores
    corpus = evaluate(tmp_path, READERS / "ddi", pred, "--task", "re", name="corpus")
    for key in ("strict", "typed", "exact_match", "outputs", "labels"):
        assert corpus[key] == report[key], key


def test_evaluate_ee_and_tc_gold_against_themselves(tmp_path):
    for path, task, modes in [(READERS / "phee.json", "ee", ("trigger_identification", "argument_classification")),
                              (READERS / "healthadvice.csv", "tc", ("label",))]:
        gold = write_rows(tmp_path / f"{task}.jsonl", convert_corpus(read_corpus(path), task=task))
        report = evaluate(tmp_path, gold, gold, name=task)
        assert report["task"] == task and report["pred_format"] == "predictions"
        for mode in modes:
            assert report[mode]["micro"]["f1"] == 1.0 and report[mode]["micro"]["tp"] > 0
        rate = "accuracy" if task == "tc" else "exact_match"
        assert report[rate]["value"] == 1.0


def test_task_detection(tmp_path):
    rows = convert_corpus(read_corpus(READERS / "healthadvice.csv"), task="tc")
    # no task field: the schema every gold answer fits decides
    gold = write_rows(tmp_path / "gold.jsonl", [{k: v for k, v in r.items() if k != "task"} for r in rows])
    pred = write_rows(tmp_path / "pred.jsonl", [{"id": r["id"], "output": '{"label": "no_advice"}'} for r in rows])
    report = evaluate(tmp_path, gold, pred)
    assert report["task"] == "tc" and report["accuracy"]["correct"] == 1
    assert report["labels"] == {"readers": ["no_advice", "strong_advice", "weak_advice"]}  # the folder name
    # a span file of predictions carries its labels
    spans = write_rows(tmp_path / "spans.jsonl", [{"id": r["id"], "text": r["input"], "labels": ["weak_advice"]}
                                                  for r in rows])
    report = evaluate(tmp_path, gold, spans, name="spans")
    assert report["pred_format"] == "records" and report["accuracy"]["correct"] == 1
    # a corpus gold scores the task the predictions name; --labels replaces the label sets
    tagged = write_rows(tmp_path / "tagged.jsonl", [{"id": r["id"], "output": r["output"], "task": "tc"}
                                                    for r in rows])
    report = evaluate(tmp_path, READERS / "healthadvice.csv", tagged, "--labels", "no_advice", "weak_advice",
                      name="corpus")
    assert report["task"] == "tc" and report["outputs"]["schema_error"] == 1  # strong_advice is not allowed


def test_tune_evaluate_compares_re_models(tmp_path, capsys):
    rows = convert_corpus(read_corpus(READERS / "ddi"), task="re")
    gold = write_rows(tmp_path / "gold.jsonl", rows)
    half = write_rows(tmp_path / "half.jsonl", [{"id": r["id"], "output": "[]" if i == 0 else r["output"]}
                                               for i, r in enumerate(rows)])
    out = tmp_path / "cmp.json"
    assert compare_main(["--gold", str(gold), "--pred", f"gold={gold}", f"half={half}", "--output", str(out),
                         "--bootstrap", "50"]) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["rows"]] == ["gold", "half"]
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| strict P | strict R | strict F1 (95% CI) | strict macro F1 | typed F1 | exact match (95% CI) |" in table
    for row in report["rows"]:
        single = evaluate(tmp_path, gold, gold if row["model"] == "gold" else half, name=f"single_{row['model']}")
        assert row["f1"] == single["strict"]["micro"]["f1"] and row["typed_f1"] == single["typed"]["micro"]["f1"]
        assert row["exact_match"] == single["exact_match"]["value"]
    assert report["rows"][1]["r"] == pytest.approx(1 / 3)  # two of the three relations were in record 0


# --- real corpora ---------------------------------------------------------------------------------------------------

@pytest.mark.real
def test_ddi_test_set_gold_as_predictions_and_a_perturbed_copy(tmp_path):
    folder = real_file("re", "DDI", "DDICorpus", "Test", "Test for DDI Extraction task")
    rows = convert_corpus(read_corpus(folder, format="ddi"), task="re")
    n = sum(len(json.loads(r["output"])) for r in rows)
    assert n > 900  # the DDI extraction test set has 979 true pairs
    gold = write_rows(tmp_path / "gold.jsonl", rows)
    report = evaluate(tmp_path, gold, gold)
    for mode in ("strict", "typed"):
        assert report[mode]["micro"]["f1"] == 1.0 and report[mode]["micro"]["tp"] == n
    assert report["exact_match"]["value"] == 1.0
    # drop the last triple of the first 100 records that have one: recall (n - 100) / n, precision 1
    dropped, perturbed = 0, []
    for r in rows:
        out = json.loads(r["output"])
        if out and dropped < 100:
            out, dropped = out[:-1], dropped + 1
        perturbed.append({"id": r["id"], "output": json.dumps(out)})
    pred = write_rows(tmp_path / "perturbed.jsonl", perturbed)
    report = evaluate(tmp_path, gold, pred, name="perturbed")
    assert dropped == 100
    for mode in ("strict", "typed"):
        assert micro(report[mode]) == (n - 100, 0, 100)
        assert report[mode]["micro"]["recall"] == pytest.approx((n - 100) / n)
        assert report[mode]["micro"]["precision"] == 1.0
    assert report["exact_match"]["correct"] == len(rows) - 100
    # the corpus itself as gold (--task re) gives the same numbers
    corpus = evaluate(tmp_path, folder, pred, "--task", "re", "--format-gold", "ddi", name="corpus")
    assert micro(corpus["strict"]) == (n - 100, 0, 100) and corpus["exact_match"] == report["exact_match"]


@pytest.mark.real
def test_phee_dev_gold_as_predictions(tmp_path):
    path = real_file("ee", "PHEE", "dev.json")
    rows = convert_corpus(read_corpus(path), task="ee")
    gold = write_rows(tmp_path / "gold.jsonl", rows)
    report = evaluate(tmp_path, gold, gold)
    for mode in ("trigger_identification", "trigger_classification", "argument_identification",
                 "argument_classification"):
        assert report[mode]["micro"]["f1"] == 1.0, mode
    n_events = sum(len(json.loads(r["output"])) for r in rows)
    assert report["trigger_classification"]["micro"]["tp"] == n_events > 0
    assert report["exact_match"]["value"] == 1.0
