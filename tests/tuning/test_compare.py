"""`bioselect tune evaluate`: one table over several models, equal to scoring each file on its own."""

from __future__ import annotations

import json

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
