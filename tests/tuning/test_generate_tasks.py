"""`bioselect tune generate` on RE, EE and TC records: each task's grammar accepts the converter's gold answers byte
for byte and nothing outside the label sets or the input's words, the mention terminal stays linear in the input's
length, and a tiny random model under the constraint writes only schema-valid answers that `bioselect evaluate`
scores."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pytest

import prompts
from curation.convert import convert_corpus
from curation.evaluate import main as evaluate
from curation.io import write_jsonl
from curation.readers import read_corpus
from curation.readers.iob import read_iob
from curation.scoring import parse_answer, parse_output
from tests.helpers import ASSETS, offline_model, real_file
from tuning.constrained import (
    answer_grammars,
    ee_grammar,
    mention_candidates,
    ner_grammar,
    re_grammar,
    tc_grammar,
)
from tuning.generate import main
from tuning.generation import Generated, prediction_row

# converted project-written assets of every RE, EE and TC reader
ASSET_FILES = {"re": ["readers/ddi", "readers/tiny.PubTator", "readers/pk.jsonl"],
               "ee": ["readers/phee.json", "readers/brat"],
               "tc": ["readers/healthadvice.csv", "readers/causal.csv", "readers/ade"]}
# texts of the grammar tests: quotes, backslashes, tabs, DEL, non-ASCII, punctuation runs; whitespace escaped in JSON
# (\t, \n, \u000b, \f, \r, \u001c) after pieces that end with the escape's last letter
TRICKY = ['IL-2 say "hi"  C:\\p\tx \x7f Na+/K+ naïve', "cat\tdog in\nab\x0bif\x0cbar\rx\x1cabc"]


def converted(task: str) -> list[dict]:
    rows = []
    for asset in ASSET_FILES[task]:
        # a dataset per asset: the scorer takes one label set per dataset (two assets sit in one folder)
        for row in convert_corpus(read_corpus(ASSETS / asset), task, dataset=Path(asset).name):
            rows.append({**row, "id": f"{asset}/{row['id']}"})  # readers number records per file
    return rows


def labels_of(row: dict) -> list[str]:
    return prompts.instruction_labels(row["task"], row["instruction"])


@pytest.fixture(scope="module")
def tokenizer():
    folder = offline_model("smollm2-135m")
    if folder is None:
        pytest.skip("SmolLM2 tokenizer not found under ~/.cache/offline-models/smollm2-135m (run `make models`)")
    from tuning.generation import load_tokenizer

    return load_tokenizer(str(folder))


@pytest.fixture(scope="module")
def ll_tok(tokenizer):
    pytest.importorskip("llguidance", reason="llguidance is not installed: pip install 'bioselect[constrained]'")
    from tuning.constrained import ll_tokenizer

    return ll_tokenizer(tokenizer, len(tokenizer), [tokenizer.eos_token_id])


class Acceptor:
    """One compiled grammar; ``accepts(answer)`` says whether the whole answer string is a complete answer."""

    def __init__(self, ll_tok, tokenizer, grammar: str):
        import llguidance

        self.tokenizer = tokenizer
        self.m = llguidance.LLMatcher(ll_tok, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
        assert not self.m.is_error(), self.m.get_error()

    def accepts(self, answer: str) -> bool:
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        n = self.m.try_consume_tokens(ids)
        ok = n == len(ids) and self.m.is_accepting()
        self.m.reset()
        return ok


# ---- grammars against the converter's answers ------------------------------------------------------------------

@pytest.mark.parametrize("task", ["re", "ee", "tc"])
def test_grammars_accept_every_gold_answer_of_the_assets(tokenizer, ll_tok, task):
    rows = converted(task)
    assert rows and any(r["output"] not in ("[]",) for r in rows)
    free = answer_grammars(tokenizer, [r["input"] for r in rows], [labels_of(r) for r in rows], [task] * len(rows))
    # the same with the gold's own entity types / roles as the restricting lists
    gold = [json.loads(r["output"]) for r in rows]
    entity_types = sorted({x[k] for g in gold if task == "re" for x in g for k in ("head_type", "tail_type")})
    roles = sorted({role for g in gold if task == "ee" for e in g for role in e["arguments"]})
    listed = answer_grammars(tokenizer, [r["input"] for r in rows], [labels_of(r) for r in rows], [task] * len(rows),
                             entity_types or None, roles or None)
    for row, g1, g2 in zip(rows, free, listed, strict=True):
        assert Acceptor(ll_tok, tokenizer, g1).accepts(row["output"]), (row["id"], row["output"])
        assert Acceptor(ll_tok, tokenizer, g2).accepts(row["output"]), (row["id"], row["output"])


RE_TEXT = "Loop and thiazide diuretics may increase lithium levels."


def re_answer(**kw) -> str:
    item = {"head": "Loop", "head_type": "group", "relation": "effect", "tail": "lithium", "tail_type": "drug"}
    return json.dumps([{**item, **kw}], ensure_ascii=False)


def test_re_grammar_rejects_what_the_training_format_and_label_sets_exclude(tokenizer, ll_tok):
    listed = Acceptor(ll_tok, tokenizer, re_grammar(RE_TEXT, ["advise", "effect"], ["drug", "group"]))
    free = Acceptor(ll_tok, tokenizer, re_grammar(RE_TEXT, ["advise", "effect"]))
    for a in (listed, free):
        assert a.accepts(re_answer()) and a.accepts("[]")
        assert a.accepts(re_answer(head="thiazide diuretics", tail="lithium levels."))
        for wrong in (re_answer(relation="mechanism"),  # relation type outside the label set
                      re_answer(head="aspirin"),  # not in the input
                      re_answer(head="oop"),  # inside a word
                      re_answer(tail="lithium "), re_answer(head=" Loop"),  # outer whitespace
                      re_answer(head="Loop  and"),  # whitespace the text does not have
                      re_answer(head=""),
                      re_answer(head_type="drug type"),  # not a word
                      json.dumps([{"head": "Loop", "relation": "effect", "tail": "lithium"}]),  # keys left out
                      json.dumps([{"relation": "effect", "head": "Loop", "head_type": "group", "tail": "lithium",
                                   "tail_type": "drug"}]),  # key order
                      re_answer().replace(", ", ","),  # separators
                      re_answer()[:-1]):  # unclosed
            assert not a.accepts(wrong), wrong
    assert free.accepts(re_answer(head_type="brand")) and not listed.accepts(re_answer(head_type="brand"))


EE_TEXT = "Lithium may cause tremor in patients with bipolar disorder."


def ee_answer(event="Adverse_event", trigger="cause", arguments=None) -> str:
    arguments = {"Treatment": ["Lithium"], "Effect": ["tremor"]} if arguments is None else arguments
    return json.dumps([{"event": event, "trigger": trigger, "arguments": arguments}], ensure_ascii=False)


def test_ee_grammar_rejects_what_the_training_format_and_label_sets_exclude(tokenizer, ll_tok):
    events = ["Adverse_event", "Potential_therapeutic_event"]
    listed = Acceptor(ll_tok, tokenizer, ee_grammar(EE_TEXT, events, ["Treatment", "Effect", "Subject"]))
    free = Acceptor(ll_tok, tokenizer, ee_grammar(EE_TEXT, events))
    for a in (listed, free):
        assert a.accepts(ee_answer()) and a.accepts("[]") and a.accepts(ee_answer(arguments={}))
        assert a.accepts(ee_answer(arguments={"Subject": ["patients with bipolar disorder", "patients"]}))
        for wrong in (ee_answer(event="Death"),  # event type outside the label set
                      ee_answer(trigger="causes"),  # not in the input
                      ee_answer(trigger="caus"),  # inside a word
                      ee_answer(arguments={"Effect": []}),  # a role without mentions
                      ee_answer(arguments={"Effect": ["tremor "]}),  # outer whitespace
                      ee_answer(arguments={"Effect": ["rash"]}),
                      ee_answer(arguments={"Treatment Drug": ["Lithium"]}),  # a role that is not a word
                      json.dumps([{"event": "Adverse_event", "trigger": "cause"}]),  # no arguments
                      json.dumps([{"trigger": "cause", "event": "Adverse_event", "arguments": {}}]),  # key order
                      ee_answer().replace(": ", ":")):
            assert not a.accepts(wrong), wrong
    speculated = ee_answer(arguments={"Speculated": ["may"]})
    assert free.accepts(speculated) and not listed.accepts(speculated)


def test_tc_grammar_is_one_label_of_the_set(tokenizer, ll_tok):
    a = Acceptor(ll_tok, tokenizer, tc_grammar(["ade", "no_ade"]))
    assert a.accepts('{"label": "ade"}') and a.accepts('{"label": "no_ade"}')
    for wrong in ('{"label": "maybe"}', '{"label": "ad"}', '{"label": ["ade", "no_ade"]}',
                  '{"label": "ade", "label": "no_ade"}', '{"label":"ade"}', '["ade"]', "[]"):
        assert not a.accepts(wrong), wrong


MENTION_SLOTS = {  # a grammar and an answer with one mention m in it, per task
    "ner": (lambda t: ner_grammar(t, ["Gene"]), lambda m: [{"entity": "Gene", "name": m}]),
    "re": (lambda t: re_grammar(t, ["R"], ["Gene"]),
           lambda m: [{"head": m, "head_type": "Gene", "relation": "R", "tail": "x", "tail_type": "Gene"}]),
    "ee": (lambda t: ee_grammar(t, ["E"], ["Theme"]), lambda m: [{"event": "E", "trigger": "x",
                                                                   "arguments": {"Theme": [m]}}]),
}


@pytest.mark.parametrize("text", TRICKY, ids=["quotes", "escaped-whitespace"])
@pytest.mark.parametrize("task", sorted(MENTION_SLOTS))
def test_mentions_are_exactly_the_runs_of_the_input(tokenizer, ll_tok, task, text):
    """Every run of pieces is admitted, JSON-escaped (quotes, backslashes, tabs, DEL, non-ASCII), and every other
    substring of the text is not (inside a word, outer whitespace, a lone whitespace gap, the empty string)."""
    build, wrap = MENTION_SLOTS[task]
    a = Acceptor(ll_tok, tokenizer, build(text))
    candidates = set(mention_candidates(text))
    # an independent enumeration: substrings that do not cut a \w run and have no outer whitespace
    runs = {text[i:j] for i in range(len(text)) for j in range(i + 1, len(text) + 1)
            if not text[i].isspace() and not text[j - 1].isspace()
            and not (i > 0 and re.match(r"\w\w", text[i - 1:i + 1]))
            and not (j < len(text) and re.match(r"\w\w", text[j - 1:j + 1]))}
    assert candidates == runs
    others = {text[i:j] for i in range(len(text)) for j in range(i, len(text) + 1)} - runs
    for m in sorted(runs):
        assert a.accepts(json.dumps(wrap(m), ensure_ascii=False)), m
    for m in sorted(others):
        assert not a.accepts(json.dumps(wrap(m), ensure_ascii=False)), m


def test_untokenizable_characters_split_the_runs(tokenizer, ll_tok):
    text = "x \U00040000y z"
    a = Acceptor(ll_tok, tokenizer, answer_grammars(tokenizer, [text], [["Gene"]])[0])
    for m in ("x", "y", "y z", "z"):
        assert a.accepts(json.dumps([{"entity": "Gene", "name": m}])), m
    for m in ("x \U00040000y", "\U00040000y"):
        assert not a.accepts(json.dumps([{"entity": "Gene", "name": m}], ensure_ascii=False)), m


def test_mention_grammar_grows_linearly_with_the_input():
    """A structural check, not a timing: 8 times the words give about 8 times the bytes (the list of every run, the
    grammar's former NAME, grows with the square)."""
    rng = random.Random(0)
    words = ["BRCA1", "breast", "cancer", "IL-2R", "(", ")", ",", ".", 'say "hi"', "C:\\p", "naïve", "β-catenin"]
    text = " ".join(rng.choice(words) for _ in range(400))
    short = " ".join(text.split(" ")[:50])
    for build in (lambda t: ner_grammar(t, ["Gene"]), lambda t: re_grammar(t, ["R"]), lambda t: ee_grammar(t, ["E"])):
        small, large = len(build(short).encode()), len(build(text).encode())
        ratio = (large - len(build("a").encode())) / (small - len(build("a").encode()))
        assert 7 < ratio < 9, ratio
    n_small, n_large = len(mention_candidates(short, max_pieces=32)), len(mention_candidates(text, max_pieces=32))
    assert n_large / n_small > 10  # the explicit list, even capped at 32 pieces


def test_prediction_rows_of_every_task():
    rec = {"id": "r", "task": "re", "input": RE_TEXT}
    ok = prediction_row(rec, Generated(re_answer(), 30, "stop"), ["effect"])
    assert (ok["task"], ok["status"], ok["spans"], ok["unplaced"]) == ("re", "ok", [], 0)
    assert prediction_row(rec, Generated(re_answer(relation="int"), 30, "stop"), ["effect"])["status"] == \
        "schema_error"
    assert prediction_row(rec, Generated(re_answer(tail="aspirin"), 30, "stop"), ["effect"])["unplaced"] == 1
    ee = {"id": "e", "task": "ee", "input": EE_TEXT}
    assert prediction_row(ee, Generated(ee_answer(arguments={"Effect": ["rash", "tremor"]}), 9, "stop"),
                          ["Adverse_event"])["unplaced"] == 1
    assert prediction_row(ee, Generated('[{"event": "Adverse_event"', 9, "length"), None)["status"] == "parse_error"
    tc = {"id": "t", "task": "tc", "input": "x"}
    assert prediction_row(tc, Generated('{"label": "ade"}', 5, "stop"), ["ade"])["status"] == "ok"
    assert prediction_row(tc, Generated('{"label": "ad', 5, "length"), ["ade"])["status"] == "parse_error"


# ---- the command on a tiny random model -----------------------------------------------------------------------------

def assert_valid_answers(rows: list[dict], preds: list[dict], entity_types=None, roles=None) -> None:
    assert [p["id"] for p in preds] == [r["id"] for r in rows]
    for row, pred in zip(rows, preds, strict=True):
        task, labels = row["task"], labels_of(row)
        assert pred["task"] == task and pred["status"] == "ok", pred
        if task == "ner":
            entities, status = parse_output(pred["output"], labels)
            mentions = [name for _, name in entities]
        else:
            assert parse_answer(task, pred["output"], labels).status == "ok", pred["output"]
            obj = json.loads(pred["output"])
            mentions = []
            if task == "re":
                mentions = [x[k] for x in obj for k in ("head", "tail")]
                assert not entity_types or {x[k] for x in obj for k in ("head_type", "tail_type")} <= set(entity_types)
            elif task == "ee":
                mentions = [e["trigger"] for e in obj] + [m for e in obj for ms in e["arguments"].values() for m in ms]
                assert not roles or {r for e in obj for r in e["arguments"]} <= set(roles)
        assert all(m and m in row["input"] and m == m.strip() for m in mentions), (mentions, row["input"])
        assert pred["unplaced"] == 0 or task == "ner"


@pytest.mark.parametrize("task,extra", [("re", []), ("re", ["--entity-types", "drug", "group", "PK"]),
                                        ("ee", []), ("ee", ["--roles", "Treatment", "Effect", "Theme", "Cause"]),
                                        ("tc", [])])
def test_constrained_generation_of_every_task_is_valid_and_scored(tmp_path, capsys, tiny_model, ll_tok, task,
                                                                  extra):
    rows = converted(task)
    src, out = tmp_path / "in.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(src, rows)
    assert main(["--model", str(tiny_model), "--input", str(src), "--output", str(out), "--batch-size", "4",
                 "--max-new-tokens", "40", *extra]) == 0
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    given = extra[1:] or None
    options = {"entity_types": given if task == "re" else None, "roles": given if task == "ee" else None}
    assert_valid_answers(rows, preds, **options)
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest["tasks"] == {task: len(rows)} and manifest["counts"]["ok"] == len(rows)
    assert manifest["entity_types"] == options["entity_types"] and manifest["roles"] == options["roles"]
    capsys.readouterr()
    # the scorer reads the predictions as they are, against the input as gold
    report = tmp_path / "eval.json"
    assert evaluate(["--gold", str(src), "--pred", str(out), "--output", str(report), "--bootstrap", "0"]) == 0
    result = json.loads(report.read_text())
    assert result["task"] == task and result["outputs"]["ok"] == len(rows) and result["records"] == len(rows)


def test_one_file_mixing_every_task(tmp_path, tiny_model, ll_tok, capsys):
    ner = convert_corpus(read_iob(ASSETS / "tiny_ncbi.tsv"), "ner")
    rows = [*ner, *converted("re")[:3], *converted("ee")[:2], *converted("tc")[:3]]
    src, out = tmp_path / "in.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(src, rows)
    assert main(["--model", str(tiny_model), "--input", str(src), "--output", str(out), "--batch-size", "5",
                 "--max-new-tokens", "32"]) == 0
    assert_valid_answers(rows, [json.loads(line) for line in out.read_text().splitlines()])
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest["tasks"] == {"ee": 2, "ner": len(ner), "re": 3, "tc": 3}
    assert f"ok {len(rows)}, parse errors 0, schema errors 0" in capsys.readouterr().out


def test_unconstrained_generation_reports_failures_per_task(tmp_path, tiny_model, capsys):
    rows = [*converted("re")[:2], *converted("ee")[:2], *converted("tc")[:2]]
    src, out = tmp_path / "in.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(src, rows)
    assert main(["--model", str(tiny_model), "--input", str(src), "--output", str(out), "--unconstrained",
                 "--max-new-tokens", "8"]) == 0
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    for row, pred in zip(rows, preds, strict=True):  # a random model's 8 tokens are never a valid answer
        assert pred["task"] == row["task"]
        assert pred["status"] == parse_answer(row["task"], pred["output"], labels_of(row)).status != "ok"
    counts = json.loads(Path(f"{out}.manifest.json").read_text())["counts"]
    assert counts["parse_error"] + counts["schema_error"] == len(rows) and counts["ok"] == 0
    for task in ("re", "ee", "tc"):
        by_task = counts["by_task"][task]
        assert by_task == {s: sum(p["task"] == task and p["status"] == s for p in preds)
                           for s in ("ok", "parse_error", "schema_error")} and sum(by_task.values()) == 2


@pytest.mark.parametrize("case", ["no_labels", "labels_over_two_tasks", "unknown_task"])
def test_bad_task_input_exits_2_before_loading_anything(tmp_path, capsys, case):
    rows = converted("re")
    if case == "no_labels":
        rows[1] = {**rows[1], "instruction": "Find the relations."}
        extra, expected = [], "give --labels"
    elif case == "labels_over_two_tasks":
        rows = [*convert_corpus(read_iob(ASSETS / "tiny_ncbi.tsv"), "ner")[:1], *rows]
        extra, expected = ["--labels", "Disease"], "mixes tasks"
    else:
        rows[1] = {**rows[1], "task": "qa"}
        extra, expected = [], "unknown task 'qa'"
    src = tmp_path / "in.jsonl"
    write_jsonl(src, rows)
    rc = main(["--model", str(tmp_path / "nowhere"), "--input", str(src), "--output", str(tmp_path / "o" / "p.jsonl"),
               *extra])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"error: {src}:2 ") and expected in err[0], err
    assert not (tmp_path / "o").exists()


# ---- real corpora ---------------------------------------------------------------------------------------------------

def aligned(text: str, mention: str) -> bool:
    """Whether ``mention`` occurs in ``text`` without cutting a word (independent of the grammar's pieces)."""
    for m in re.finditer(re.escape(mention), text):
        i, j = m.span()
        if not (i > 0 and re.match(r"\w\w", text[i - 1:i + 1])) and not (j < len(text)
                                                                          and re.match(r"\w\w", text[j - 1:j + 1])):
            return True
    return False


def gold_mentions(task: str, output: str) -> list[str]:
    obj = json.loads(output)
    if task == "re":
        return [x[k] for x in obj for k in ("head", "tail")]
    if task == "ee":
        return [e["trigger"] for e in obj] + [m for e in obj for ms in e["arguments"].values() for m in ms]
    return []


@pytest.mark.real
@pytest.mark.parametrize("task,parts,n", [
    ("re", ("re", "DDI", "DDICorpus", "Test", "Test for DDI Extraction task"), None),
    ("re", ("re", "BioRED", "Test.PubTator"), None),
    ("ee", ("ee", "PHEE", "test.json"), None),
    ("tc", ("cls", "HealthAdvice", "annotations_unstructured_abstract.csv"), 300)], ids=["DDI", "BioRED", "PHEE",
                                                                                        "HealthAdvice"])
def test_real_gold_answers_are_accepted_by_their_records_grammars(tokenizer, ll_tok, task, parts, n):
    """Every converted gold answer (of the first ``n`` records with one; all when None) is accepted by its record's
    grammar, except those with a mention that begins or ends inside a word of the input (no run of the input's
    words; found by an independent check, and few: at most 5% of the records' distinct mentions; BioRED's variants
    inside words, "rtL180M" named "L180M", are such), which are rejected."""
    rows = convert_corpus(read_corpus(real_file(*parts)), task)
    rows = [r for r in rows if r["output"] != "[]"][:n]
    grammars = answer_grammars(tokenizer, [r["input"] for r in rows], [labels_of(r) for r in rows],
                               [task] * len(rows))
    mentions = cut = 0
    for row, grammar in zip(rows, grammars, strict=True):
        distinct = set(gold_mentions(task, row["output"]))
        inside = [m for m in distinct if not aligned(row["input"], m)]
        mentions += len(distinct)
        cut += len(inside)
        assert Acceptor(ll_tok, tokenizer, grammar).accepts(row["output"]) == (not inside), (row["id"], inside)
    print(task, n, "distinct mentions", mentions, "inside a word", cut)
    assert cut <= 0.05 * mentions, (cut, mentions)
