"""Instruction conversion: exact outputs on crafted records, schema validity, the real NCBI-disease test set."""

from __future__ import annotations

import json

import jsonschema
import pytest

import prompts
from curation.convert import convert_corpus, ee_output, re_output, tc_output, validate_outputs
from curation.readers import read_corpus
from curation.records import Corpus, Event, Record, Relation, Span
from tests.helpers import ASSETS, real_file


def test_ner_conversion_order_and_negatives():
    rows = convert_corpus(read_corpus(ASSETS / "tiny_ncbi.tsv"))
    assert [r["output"] for r in rows] == [
        '[{"entity": "Disease", "name": "ataxia - telangiectasia"}]',
        '[{"entity": "Disease", "name": "breast cancer"}, {"entity": "Disease", "name": "ovarian cancer"}]',
        "[]",
    ]
    assert rows[1]["spans"] == [[22, 35, "Disease"], [40, 54, "Disease"]]
    assert rows[1]["input"][22:35] == "breast cancer"
    assert {r["dataset"] for r in rows} == {"assets"}
    assert set(rows[0]) == {"id", "instruction", "input", "output", "dataset", "task", "spans"}
    assert "Disease" in rows[0]["instruction"]
    assert validate_outputs(rows, ["Disease"]) == []


def test_nested_entities_outer_first():
    rec = Record(id="g", text="IL-2 receptor alpha gene", spans=[Span(0, 4, "protein"), Span(0, 24, "DNA")])
    row = convert_corpus(Corpus([rec], dataset="GENIA"))[0]
    assert json.loads(row["output"]) == [{"entity": "DNA", "name": "IL-2 receptor alpha gene"},
                                         {"entity": "protein", "name": "IL-2"}]


def test_schema_rejects_bad_outputs():
    s = prompts.schema("ner", ["Disease"])
    jsonschema.validate([{"entity": "Disease", "name": "x"}], s)
    for bad in ([{"entity": "Gene", "name": "x"}], [{"entity": "Disease"}], [{"entity": "Disease", "name": ""}],
                {"entity": "Disease", "name": "x"}, [{"entity": "Disease", "name": "x", "extra": 1}]):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, s)
    rows = [{"id": "a", "task": "ner", "output": '[{"entity": "Gene", "name": "x"}]'},
            {"id": "b", "task": "ner", "output": "[{"}]
    assert [rid for rid, _ in validate_outputs(rows, ["Disease"])] == ["a", "b"]


def test_re_ee_tc_outputs():
    text = "Aspirin causes bleeding"
    rec = Record(id="r", text=text, spans=[Span(15, 23, "AE"), Span(0, 7, "Drug"), Span(8, 14, "Trigger")],
                 relations=[Relation(1, 0, "ADE")],
                 events=[Event("Adverse_event", 2, (("Effect", 0), ("Treatment", 1)))], labels=["ade"])
    assert json.loads(re_output(rec)) == [
        {"head": "Aspirin", "head_type": "Drug", "relation": "ADE", "tail": "bleeding", "tail_type": "AE"}]
    assert json.loads(ee_output(rec)) == [
        {"event": "Adverse_event", "trigger": "causes",
         "arguments": {"Treatment": ["Aspirin"], "Effect": ["bleeding"]}}]
    assert json.loads(tc_output(rec)) == {"label": "ade"}
    for task, labels in (("re", ["ADE"]), ("ee", ["Adverse_event"]), ("tc", ["ade", "no_ade"])):
        row = convert_corpus(Corpus([rec], dataset="ADE"), task=task, labels=labels)[0]
        assert validate_outputs([row], labels) == []
        assert row["task"] == task


@pytest.mark.real
def test_real_ncbi_test_converts_and_validates():
    rows = convert_corpus(read_corpus(real_file("ner", "NCBI-disease", "test.tsv")))
    assert len(rows) == 940
    assert validate_outputs(rows, ["Disease"]) == []
    assert sum(len(json.loads(r["output"])) for r in rows) == 960
    assert sum(r["output"] == "[]" for r in rows) == 940 - 539
    for r in rows:
        assert [e["name"] for e in json.loads(r["output"])] == [r["input"][s:e] for s, e, _ in r["spans"]]


@pytest.mark.real
@pytest.mark.parametrize("task,parts,records", [
    ("ner", ("nested_ner", "GENIA", "test.jsonlines"), 1732),
    ("ner", ("ner", "PK-relations", "dev.jsonl"), 500),
    ("re", ("ner", "PK-relations", "dev.jsonl"), 500),
    ("re", ("re", "BioRED", "Test.PubTator"), 100),
    ("re", ("re", "DDI", "DDICorpus", "Test", "Test for DDI Extraction task"), 1299),
    ("ee", ("ee", "PHEE", "test.json"), 968),
    ("tc", ("cls", "HealthAdvice", "annotations_unstructured_abstract.csv"), 934),
    ("tc", ("cls", "CausalLanguage", "pubmed_causal_language_use.csv"), 3061),
    ("tc", ("cls", "ADE-Corpus-V2"), 20960),
])
def test_real_corpora_convert_to_valid_instructions(task, parts, records):
    corpus = read_corpus(real_file(*parts))
    rows = convert_corpus(corpus, task=task)
    assert len(rows) == records
    assert validate_outputs(rows, None) == []
    assert len({r["instruction"] for r in rows}) == 1
    assert len({r["id"] for r in rows}) == records
    if task == "ner":
        assert any(r["output"] != "[]" for r in rows)
        for r in rows:
            assert [e["name"] for e in json.loads(r["output"])] == [r["input"][s:e] for s, e, _ in r["spans"]]
