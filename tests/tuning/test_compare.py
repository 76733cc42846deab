"""`bioselect tune evaluate`: one table over several models, equal to scoring each file on its own."""

from __future__ import annotations

import json

import pytest

from curation.evaluate import main as evaluate_main
from tests.helpers import ASSETS
from tuning.compare import main as compare_main

GOLD = ASSETS / "scoring" / "gold.tsv"
PREDS = {"gen": ASSETS / "scoring" / "pred.jsonl", "iob": ASSETS / "scoring" / "pred.tsv",
         "spans": ASSETS / "scoring" / "pred_spans.jsonl"}


def test_table_rows_equal_single_evaluations(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    args = ["--gold", str(GOLD), "--pred", *[f"{k}={v}" for k, v in PREDS.items()], "--output", str(out),
            "--bootstrap", "200", "--allow-missing"]
    assert compare_main(args) == 0
    table = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["rows"]] == list(PREDS)
    assert (tmp_path / "cmp.md").read_text() == table
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for row in report["rows"]:
        single = tmp_path / f"{row['model']}.json"
        assert evaluate_main(["--gold", str(GOLD), "--pred", str(PREDS[row["model"]]), "--output", str(single),
                              "--bootstrap", "200", "--allow-missing"]) == 0
        ref = json.loads(single.read_text())
        assert row["strict_f1"] == ref["strict"]["micro"]["f1"]
        assert row["strict_f1_ci"] == ref["strict"]["micro"]["ci"]["f1"]
        assert row["relaxed_f1"] == ref["relaxed"]["micro"]["f1"]
        assert row["string_f1"] == ref["string"]["micro"]["f1"]
        assert row["parse_error_rate"] == ref["outputs"]["parse_error_rate"]
    gen = report["rows"][0]
    assert gen["parse_error_rate"] > 0 and gen["schema_error_rate"] > 0


def test_bad_specs_exit_2(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert compare_main(["--gold", str(GOLD), "--pred", "noequals", "--output", str(out)]) == 2
    assert "--pred: expected NAME=PATH" in capsys.readouterr().err
    assert compare_main(["--gold", str(GOLD), "--pred", f"a={PREDS['iob']}", f"a={PREDS['gen']}",
                         "--output", str(out)]) == 2
    assert "repeated: a" in capsys.readouterr().err
    assert compare_main(["--gold", str(GOLD), "--pred", f"a={tmp_path / 'missing.jsonl'}", "--output", str(out)]) == 2
    assert "no such file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_paired_differences_against_the_baseline(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    preds = {**PREDS, "gen-again": PREDS["gen"]}
    args = ["--gold", str(GOLD), "--pred", *[f"{k}={v}" for k, v in preds.items()], "--output", str(out),
            "--bootstrap", "300", "--allow-missing", "--baseline", "iob"]
    assert compare_main(args) == 0
    report = json.loads(out.read_text())
    f1 = {r["model"]: r["strict_f1"] for r in report["rows"]}
    paired = {p["model"]: p for p in report["paired"]}
    assert sorted(paired) == ["gen", "gen-again", "spans"]  # every model but the baseline
    for name, p in paired.items():
        assert (p["baseline"], p["metric"], p["resamples"]) == ("iob", "strict_f1", 300)
        assert p["diff"] == f1[name] - f1["iob"]  # the point difference is the two single scores' difference
        assert p["ci"][0] <= p["diff"] <= p["ci"][1]
    assert paired["gen"] == {**paired["gen-again"], "model": "gen"}  # the same draws for every model
    assert paired["gen"]["diff"] < 0 and paired["gen"]["p_le_0"] > 0.5  # the generator loses to the IOB file
    assert all("per_record" not in m for m in report["models"])
    table = capsys.readouterr().out
    assert "Paired differences against iob (strict_f1, 300 resamples of the" in table
    assert (tmp_path / "cmp.md").read_text() == table


def test_a_model_against_itself_differs_by_zero_and_tc_pairs_macro_f1(tmp_path, capsys):
    from sklearn.metrics import f1_score

    from curation.records import Record

    labels = ["advice", "none", "advice", "advice", "none", "other", "advice", "none"]
    gold = tmp_path / "tc.jsonl"
    gold.write_text("".join(json.dumps(Record(id=str(i), text=f"Sentence {i} .", labels=[y]).to_dict()) + "\n"
                            for i, y in enumerate(labels)))
    answers = {"majority": ["advice"] * 8, "mixed": ["advice", "none", "none", "advice", "other", "other", "advice",
                                                     "advice"]}
    for name, ys in answers.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"id": str(i), "output": json.dumps({"label": y})})
                                                        + "\n" for i, y in enumerate(ys)))
    out = tmp_path / "cmp.json"
    assert compare_main(["--gold", str(gold), "--pred", f"majority={tmp_path / 'majority.jsonl'}",
                         f"mixed={tmp_path / 'mixed.jsonl'}", f"self={tmp_path / 'majority.jsonl'}",
                         "--output", str(out), "--bootstrap", "200", "--task", "tc"]) == 0
    paired = {p["model"]: p for p in json.loads(out.read_text())["paired"]}
    assert paired["self"]["metric"] == "label_macro_f1"
    assert (paired["self"]["diff"], paired["self"]["ci"], paired["self"]["p_le_0"]) == (0.0, [0.0, 0.0], 1.0)

    def macro(ys):
        return f1_score(labels, ys, average="macro", labels=sorted(set(labels) | set(ys)), zero_division=0)

    assert paired["mixed"]["diff"] == pytest.approx(macro(answers["mixed"]) - macro(answers["majority"]))
    assert paired["mixed"]["diff"] > 0


def test_a_baseline_that_is_not_a_model_is_refused(tmp_path, capsys):
    out = tmp_path / "cmp.json"
    assert compare_main(["--gold", str(GOLD), "--pred", f"a={PREDS['iob']}", f"b={PREDS['gen']}",
                         "--baseline", "c", "--output", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "error: --baseline: 'c' is not a --pred name (a, b)"
    assert list(tmp_path.iterdir()) == []
