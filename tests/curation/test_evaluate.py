"""`bioselect evaluate`: every prediction format on tiny assets, clean failures on bad input, and a real-corpus check
against seqeval."""

from __future__ import annotations

import json
import random
import time
import warnings
from pathlib import Path

import pytest

from curation.cli import main as cli_main
from curation.evaluate import main
from curation.readers.iob import read_iob

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "scoring"
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def evaluate(tmp_path: Path, pred: Path | str, gold: Path | str = ASSETS / "gold.tsv", *extra: str,
             bootstrap: int = 100) -> dict:
    out = tmp_path / "out" / "eval.json"
    rc = main(["--gold", str(gold), "--pred", str(pred), "--output", str(out), "--bootstrap", str(bootstrap), *extra])
    assert rc == 0
    return json.loads(out.read_text())


def micro(report: dict, mode: str) -> tuple[int, int, int]:
    m = report[mode]["micro"]
    return m["tp"], m["fp"], m["fn"]


def test_generated_predictions(tmp_path, capsys):
    report = evaluate(tmp_path, ASSETS / "pred.jsonl", ASSETS / "gold.tsv", "--name", "toy", "--allow-missing")
    # hand counts: record 0 places 'asthma' twice and cannot place a third listing; record 1 lists 'cancer' (inside
    # 'Breast cancer') and 'ovarian cancer'; record 2 is not JSON; record 3 uses a type outside the label set;
    # record 4 has no prediction.
    assert micro(report, "strict") == (4, 2, 6)
    assert micro(report, "relaxed") == (5, 1, 5)
    assert micro(report, "string") == (4, 2, 6)
    assert report["strict"]["micro"]["f1"] == pytest.approx(0.5)
    assert report["relaxed"]["micro"]["f1"] == pytest.approx(0.625)
    assert report["strict"]["per_type"]["Chemical"]["f1"] == pytest.approx(0.4)
    assert report["strict"]["per_type"]["Disease"]["f1"] == pytest.approx(6 / 11)
    assert report["strict"]["macro"]["f1"] == pytest.approx((0.4 + 6 / 11) / 2)
    assert report["outputs"] == {"ok": 2, "parse_error": 1, "schema_error": 1, "missing": 1,
                                 "parse_error_rate": 0.2, "schema_error_rate": 0.2, "missing_rate": 0.2,
                                 "unplaced_names": 1}
    assert report["pred_format"] == "predictions" and report["name"] == "toy"
    assert report["labels"] == {"scoring": ["Chemical", "Disease"]}
    prov = report["provenance"]
    assert prov["config"]["bootstrap"] == 100 and len(prov["inputs"]) == 2
    md = (tmp_path / "out" / "eval.md").read_text()
    captured = capsys.readouterr()
    assert md == captured.out
    assert captured.err == (f"warning: {ASSETS / 'pred.jsonl'}: 1 of 5 gold records have no prediction; scored as "
                            "empty answers (--allow-missing)\n")
    assert "| strict | 66.67 (" in md and "| Disease | 6 | 60.00 | 50.00 | 54.55 | 72.73 | 54.55 |" in md


def test_missing_predictions_are_an_error_unless_allowed(tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["--gold", str(ASSETS / "gold.tsv"), "--pred", str(ASSETS / "pred.jsonl"), "--output", str(out)]) == 2
    assert capsys.readouterr().err == (f"error: {ASSETS / 'pred.jsonl'}: 1 of 5 gold records have no prediction "
                                       "(first 'scoring/gold/4'); --allow-missing scores them as empty answers\n")
    assert not out.exists() and not out.with_suffix(".md").exists()


def test_iob_and_span_file_predictions_agree_with_hand_counts(tmp_path):
    iob = evaluate(tmp_path, ASSETS / "pred.tsv")
    spans = evaluate(tmp_path, ASSETS / "pred_spans.jsonl")
    assert iob["pred_format"] == "iob" and spans["pred_format"] == "records"
    for mode in ("strict", "relaxed", "string"):
        assert iob[mode] == spans[mode]
    assert micro(iob, "strict") == (6, 3, 4)
    assert micro(iob, "relaxed") == (8, 1, 2)
    assert iob["strict"]["micro"]["f1"] == pytest.approx(12 / 19)
    assert iob["strict"]["per_type"]["Chemical"] == {"precision": 0.75, "recall": 0.75, "f1": 0.75, "support": 4,
                                                     "tp": 3, "fp": 1, "fn": 1}
    assert iob["outputs"]["missing"] == 0


def test_iob1_scheme_reads_a_stray_i_tag_as_a_new_entity(tmp_path):
    pred = _write(tmp_path / "pred.tsv", (ASSETS / "pred.tsv").read_text().replace("I-Chemical", "I-Gene"))
    report = evaluate(tmp_path, pred, ASSETS / "gold.tsv", "--scheme", "iob1")
    # 'Cisplatin' is now a Chemical of its own (a hit) and 'nephrotoxicity' a spurious Gene
    assert micro(report, "strict") == (7, 3, 3)
    assert report["strict"]["per_type"]["Gene"]["fp"] == 1


def test_instruction_gold_uses_each_datasets_labels(tmp_path, capsys):
    report = evaluate(tmp_path, ASSETS / "pred_instruction.jsonl", ASSETS / "gold_instruction.jsonl")
    # 'Chemical' is a BC5CDR type, so the NCBI-disease answer that uses it violates that dataset's schema
    assert report["labels"] == {"BC5CDR": ["Chemical", "Disease"], "NCBI-disease": ["Disease"]}
    assert report["outputs"]["schema_error"] == 1
    assert report["per_dataset"]["BC5CDR"]["strict"]["micro"]["f1"] == 1.0
    assert report["per_dataset"]["NCBI-disease"]["strict"]["micro"]["fn"] == 1
    assert micro(report, "strict") == (2, 0, 1)
    assert "| NCBI-disease | 2 |" in capsys.readouterr().out
    # --labels widens the schema for every dataset
    report = evaluate(tmp_path, ASSETS / "pred_instruction.jsonl", ASSETS / "gold_instruction.jsonl",
                      "--labels", "Chemical", "Disease")
    assert report["outputs"]["schema_error"] == 0 and micro(report, "strict") == (2, 1, 1)


def test_gold_against_itself_is_perfect(tmp_path):
    for gold, pred in [(ASSETS / "gold.tsv", ASSETS / "gold.tsv"),
                       (ASSETS / "gold_instruction.jsonl", ASSETS / "gold_instruction.jsonl")]:
        report = evaluate(tmp_path, pred, gold)
        for mode in ("strict", "relaxed", "string"):
            assert report[mode]["micro"]["f1"] == 1.0
    # every resample of gold.tsv holds an entity (4 of 5 sentences have one), so the interval is a point; the
    # 3-record instruction file can resample to its entity-free record only, whose F1 is 0 by convention
    assert evaluate(tmp_path, ASSETS / "gold.tsv")["strict"]["micro"]["ci"]["f1"] == [1.0, 1.0]


def test_the_bioselect_command_dispatches(tmp_path, capsys):
    out = tmp_path / "e.json"
    rc = cli_main(["evaluate", "--gold", str(ASSETS / "gold.tsv"), "--pred", str(ASSETS / "pred.tsv"),
                   "--output", str(out), "--bootstrap", "0"])
    assert rc == 0 and out.exists() and out.with_suffix(".md").exists()
    assert json.loads(out.read_text())["strict"]["micro"]["ci"] is None


# --- bad input: one line on stderr, exit code 2, nothing written ---

def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(("name", "make", "message", "extra"), [
    ("malformed.jsonl", lambda: '{"id": "scoring/gold/0", "output": "[]"}\n{"id": "scoring/gold/1", "output": \n',
     "malformed.jsonl:2: invalid JSON", []),
    ("unknown.jsonl", lambda: '{"id": "scoring/gold/0", "output": "[]"}\n{"id": "nope", "output": "[]"}\n',
     "unknown.jsonl:2: 1 prediction id(s) not in the gold file, first 'nope'", []),
    ("dup.jsonl", lambda: '{"id": "scoring/gold/0", "output": "[]"}\n{"id": "scoring/gold/0", "output": "[]"}\n',
     "dup.jsonl:2: duplicate id 'scoring/gold/0'", []),
    ("nooutput.jsonl", lambda: '{"id": "scoring/gold/0", "prediction": "[]"}\n',
     "nooutput.jsonl:1: a prediction needs 'id' and 'output'", ["--format-pred", "predictions"]),
    ("notrecord.jsonl", lambda: '{"id": "scoring/gold/0", "prediction": "[]"}\n',
     "notrecord.jsonl:1: not a record: it has no 'text' (a records line has id, text and spans; a generator's answer "
     "line has id and output)", []),
    ("listoutput.jsonl", lambda: '{"id": "scoring/gold/0", "output": []}\n', "must be the generated text", []),
    ("badspans.jsonl", lambda: '{"id": "scoring/gold/0", "output": "[]", "spans": [[0, 99, "Chemical"]]}\n',
     "outside the gold text", []),
    ("spans.jsonl", lambda: '{"id": "scoring/gold/0", "text": "Aspirin induced", "spans": []}\n',
     "text differs from the gold record's text", []),
    ("bad.tsv", lambda: "".join(_lines(ASSETS / "pred.tsv")).replace("I-Chemical", "I-Gene"),
     "bad.tsv:19: tag 'I-Gene' continues no Gene entity", []),
    ("short.tsv", lambda: "".join(_lines(ASSETS / "pred.tsv")[:-5]), "4 sentences but the gold file has 5", []),
    ("mismatch.tsv", lambda: "".join(_lines(ASSETS / "pred.tsv")).replace("ovarian", "ovary"),
     "mismatch.tsv:10 (record scoring/gold/1): sentence 2 differs from gold sentence 2 at token 4: 'ovary' vs "
     "'ovarian'", []),
    ("empty.jsonl", lambda: "\n", "file is empty", []),
])
def test_bad_predictions_exit_2_and_write_nothing(tmp_path, capsys, name, make, message, extra):
    pred = _write(tmp_path / name, make())
    out_dir = tmp_path / "out"
    rc = main(["--gold", str(ASSETS / "gold.tsv"), "--pred", str(pred), "--output", str(out_dir / "eval.json"),
               *extra])
    captured = capsys.readouterr()
    assert rc == 2
    assert captured.out == ""
    assert captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert message in captured.err
    assert not out_dir.exists() or not any(out_dir.iterdir())


@pytest.mark.parametrize(("args", "message"), [
    (["--scheme", "bioes"], "--scheme: must be iob1 or iob2"),
    (["--format-pred", "genia"], "--format-pred: must be one of"),
    (["--bootstrap", "-1"], "--bootstrap: must be >= 0"),
])
def test_bad_options_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "eval.json"
    argv = ["--gold", str(ASSETS / "gold.tsv"), "--pred", str(ASSETS / "pred.tsv"), "--output", str(out), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_output_must_be_json(tmp_path, capsys):
    out = tmp_path / "eval.md"
    assert main(["--gold", str(ASSETS / "gold.tsv"), "--pred", str(ASSETS / "pred.tsv"), "--output", str(out)]) == 2
    assert "must end in .json" in capsys.readouterr().err and not out.exists()


def test_iob_predictions_need_a_tokenised_gold(tmp_path, capsys):
    gold = _write(tmp_path / "gold.jsonl", '{"id": "a", "text": "Aspirin", "spans": [[0, 7, "Chemical"]]}\n')
    pred = _write(tmp_path / "pred.tsv", "Aspirin\tB-Chemical\n")
    assert main(["--gold", str(gold), "--pred", str(pred), "--output", str(tmp_path / "e.json")]) == 2
    assert "IOB predictions need a tokenised gold file" in capsys.readouterr().err


# --- real corpora: the command's strict scores equal seqeval's on corrupted copies of two test sets ---

def _read_tags(path: Path) -> list[list[str]]:
    sentences, tags = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if tags:
                sentences.append(tags)
            tags = []
        elif not line.startswith("-DOCSTART-"):
            tags.append(line.split("\t")[1])
    if tags:
        sentences.append(tags)
    return sentences


def corrupt(gold: Path, out: Path, seed: int, change_types: bool) -> None:
    """Write a valid IOB2 copy of ``gold`` with dropped, shifted, retyped and spurious entities."""
    rng = random.Random(seed)
    corpus = read_iob(gold)
    labels = corpus.labels
    lines = []
    for r in corpus.records:
        n = len(r.tokens)
        tags = ["O"] * n
        spans = []
        for s in r.spans:
            start = next(i for i, o in enumerate(r.token_offsets) if o[0] == s.start)
            end = next(i for i, o in enumerate(r.token_offsets) if o[1] == s.end) + 1
            spans.append([start, end, s.label])
        kept = []
        for start, end, label in spans:
            u = rng.random()
            if u < 0.1:
                continue  # drop
            if u < 0.2:  # shift a boundary by one token
                start, end = [(start - 1, end), (start + 1, end), (start, end + 1), (start, end - 1)][rng.randrange(4)]
            elif u < 0.3 and change_types:
                label = rng.choice([x for x in labels if x != label])
            kept.append([max(0, start), min(n, end), label])
        if rng.random() < 0.15:  # a spurious one- or two-token entity
            start = rng.randrange(n)
            kept.append([start, min(n, start + rng.randint(1, 2)), rng.choice(labels)])
        for start, end, label in kept:  # keep flat: a span only goes where all its tokens are still O
            if start < end and all(t == "O" for t in tags[start:end]):
                tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
        lines.extend(f"{tok}\t{tag}\n" for tok, tag in zip(r.tokens, tags, strict=True))
        lines.append("\n")
    out.write_text("".join(lines), encoding="utf-8")


@pytest.mark.real
@pytest.mark.parametrize(("corpus", "change_types"), [("NCBI-disease", False), ("BC5CDR", True)])
def test_real_corpora_match_seqeval(tmp_path, capsys, corpus, change_types):
    gold = DATA / "ner" / corpus / "test.tsv"
    if not gold.is_file():
        pytest.skip(f"real corpus {gold} not found (../shared/data is absent)")
    from seqeval.metrics import classification_report, f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    pred = tmp_path / corpus / "test.tsv"  # same folder name, so the dataset name matches
    pred.parent.mkdir()
    corrupt(gold, pred, seed=13, change_types=change_types)
    start = time.perf_counter()
    report = evaluate(tmp_path, pred, gold, bootstrap=1000)
    elapsed = time.perf_counter() - start
    y_true, y_pred = _read_tags(gold), _read_tags(pred)
    kw = {"mode": "strict", "scheme": IOB2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = (precision_score(y_true, y_pred, **kw), recall_score(y_true, y_pred, **kw),
                    f1_score(y_true, y_pred, **kw))
        per_type = classification_report(y_true, y_pred, output_dict=True, **kw)
    strict = report["strict"]
    assert [strict["micro"][k] for k in ("precision", "recall", "f1")] == pytest.approx(expected, abs=1e-9)
    assert 0.6 < strict["micro"]["f1"] < 0.95  # the corruption is neither empty nor total
    types = {k: v for k, v in per_type.items() if not k.endswith(" avg")}
    assert sorted(types) == sorted(strict["per_type"])
    for label, ref in types.items():
        assert strict["per_type"][label]["f1"] == pytest.approx(ref["f1-score"], abs=1e-9)
        assert strict["per_type"][label]["support"] == ref["support"]
    assert report["relaxed"]["micro"]["tp"] >= strict["micro"]["tp"]
    ci = strict["micro"]["ci"]["f1"]
    assert ci[0] < strict["micro"]["f1"] < ci[1]
    with capsys.disabled():
        print(f"\n{corpus}: evaluate ran in {elapsed:.2f}s over {report['records']} sentences")
