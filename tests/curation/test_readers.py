"""Corpus readers on tiny project-written files (``tests/assets/readers/``) and on broken input built in tmp_path.

Run: ``.venv/bin/pytest tests/curation/test_readers.py -q``
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest

from curation.io import InputError
from curation.readers import detect_format, read_corpus
from curation.readers.ade import read_ade
from curation.readers.cls_csv import read_causal, read_healthadvice
from curation.readers.ddi import read_ddi
from curation.readers.genia import read_genia
from curation.readers.phee import read_phee
from curation.readers.prodigy import read_prodigy
from curation.readers.pubtator import read_pubtator
from curation.readers.squad import read_squad
from curation.records import Event, Relation, Span

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "readers"


@contextlib.contextmanager
def raises_at(path, line: int | None, match: str):
    """``pytest.raises(InputError)`` whose message matches ``match`` and opens with ``path:line`` (or ``path``)."""
    with pytest.raises(InputError, match=match) as info:
        yield info
    where = f"{path}:{line}" if line is not None else str(path)
    assert re.match(re.escape(where) + "[: ]", str(info.value)), str(info.value)


# --------------------------------------------------------------------------------------------------- good input


@pytest.mark.parametrize("name, fmt", [
    ("genia.jsonlines", "genia"), ("tiny.PubTator", "pubtator"), ("ddi", "ddi"), ("phee.json", "phee"),
    ("covid_squad.json", "squad"), ("pk.jsonl", "prodigy"), ("healthadvice.csv", "healthadvice"),
    ("causal.csv", "causal"), ("ade", "ade"), ("ade/DRUG-AE.rel", "ade"), ("ade/ADE-NEG.txt", "ade"),
])
def test_detect_format(name, fmt):
    assert detect_format(ASSETS / name) == fmt
    assert read_corpus(ASSETS / name).format == fmt


def test_detect_format_reads_a_first_line_longer_than_64_kib(tmp_path):
    row = {"id": "a", "instruction": "Find diseases.", "input": "gout " * 20_000, "output": "[]", "spans": []}
    path = tmp_path / "long.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps(row | {"id": "b"}) + "\n")
    assert len(path.read_text().splitlines()[0]) > 1 << 16
    assert detect_format(path) == "instruction"
    assert [r.id for r in read_corpus(path).records] == ["a", "b"]


def test_genia_nested():
    corpus = read_genia(ASSETS / "genia.jsonlines")
    first, second = corpus.records
    assert first.id == "MEDLINE:1-0" and first.doc_id == "MEDLINE:1"
    assert first.text == "IL-2 gene expression in T cells ."
    assert first.tokens == ["IL-2", "gene", "expression", "in", "T", "cells", "."]
    assert first.token_offsets == [(0, 4), (5, 9), (10, 20), (21, 23), (24, 25), (26, 31), (32, 33)]
    assert first.spans == [Span(0, 9, "DNA"), Span(0, 4, "protein"), Span(24, 31, "cell_type")]
    assert [s.surface(first.text) for s in first.spans] == ["IL-2 gene", "IL-2", "T cells"]
    assert second.spans == [] and second.text == "No entities here ."


def test_pubtator_concept_relations():
    doc, title_only = read_pubtator(ASSETS / "tiny.PubTator").records
    assert doc.id == doc.doc_id == "111"
    assert doc.text == "Aspirin reduces fever. Aspirin and ibuprofen inhibit COX-1 and COX-2."
    assert doc.spans == [Span(0, 7, "ChemicalEntity"), Span(16, 21, "DiseaseOrPhenotypicFeature"),
                         Span(23, 30, "ChemicalEntity"), Span(35, 44, "ChemicalEntity"),
                         Span(53, 68, "GeneOrGeneProduct")]
    assert doc.meta["span_ids"] == ["D001241", "D005334", "D001241", "D007052", "5742,5743"]
    # concept relations -> first mention of each concept; 5743 is one id of the multi-id mention "COX-1 and COX-2"
    assert doc.relations == [Relation(0, 1, "Negative_Correlation"), Relation(3, 4, "Bind")]
    assert doc.meta["relations"] == [
        {"type": "Negative_Correlation", "id1": "D001241", "id2": "D005334", "novelty": "Novel"},
        {"type": "Bind", "id1": "D007052", "id2": "5743", "novelty": "No"},
    ]
    assert title_only.text == "Fever in children." and title_only.spans == [Span(0, 5, "DiseaseOrPhenotypicFeature")]


def test_ddi_folder_discontinuous_and_pairs():
    corpus = read_ddi(ASSETS / "ddi")
    assert [r.id for r in corpus] == ["DDI-DrugBank.d1.s0", "DDI-DrugBank.d1.s1", "DDI-MedLine.d9.s0"]
    s0, empty, medline = corpus.records
    assert s0.doc_id == "DDI-DrugBank.d1" and s0.meta["part"] == "Train set/DrugBank"
    # "Loop ... diuretics" (charOffset 0-3;18-26, inclusive ends) -> two fragment spans of the same type
    assert s0.spans == [Span(0, 4, "group"), Span(18, 27, "group"), Span(9, 27, "group"), Span(41, 48, "drug")]
    assert s0.meta["discontinuous"] == ["DDI-DrugBank.d1.s0.e0"]
    assert s0.meta["entities"] == {"DDI-DrugBank.d1.s0.e0": [0, 1], "DDI-DrugBank.d1.s0.e1": [2],
                                   "DDI-DrugBank.d1.s0.e2": [3]}
    assert s0.relations == [Relation(0, 3, "effect"), Relation(2, 3, "DDI")]
    assert s0.meta["negative_pairs"] == 1
    assert empty.text == "" and empty.spans == []
    # charOffset 4-10 names " aspiri"; the entity text sits one character later and is repaired
    assert medline.spans == [Span(5, 12, "drug"), Span(18, 26, "drug")]
    assert medline.relations == [Relation(0, 1, "advise")]
    assert corpus.meta == {"files": 2, "negative_pairs": 1, "offsets_fixed": ["DDI-MedLine.d9.s0.e0"],
                           "untyped_true_pairs": ["DDI-DrugBank.d1.s0.p2"]}
    single = read_ddi(ASSETS / "ddi" / "Train set" / "MedLine" / "123.xml")
    assert [r.id for r in single] == ["DDI-MedLine.d9.s0"] and single.records[0].meta["part"] == "MedLine"


def test_phee_events():
    first, second = read_phee(ASSETS / "phee.json").records
    assert first.id == "1000_1" and first.doc_id == "1000"
    assert first.spans == [Span(18, 27, "Trigger"), Span(0, 17, "Subject"), Span(2, 13, "Age"), Span(14, 17, "Gender"),
                           Span(46, 73, "Treatment"), Span(46, 57, "Drug"), Span(62, 73, "Drug"),
                           Span(58, 61, "Combination"), Span(28, 32, "Effect")]
    # the combination's drugs are the treatment's drugs: stored once, named by both roles
    assert first.events == [Event("Adverse_event", 0, (
        ("Subject", 1), ("Subject.Age", 2), ("Subject.Gender", 3), ("Treatment", 4), ("Treatment.Drug", 5),
        ("Treatment.Drug", 6), ("Treatment.Combination", 7), ("Treatment.Combination.Drug", 5),
        ("Treatment.Combination.Drug", 6), ("Effect", 8)))]
    assert first.meta["event_meta"] == [{"event_id": "E1",
                                         "combinations": [{"event_id": "E2", "trigger": [7], "drugs": [5, 6]}]}]
    assert second.spans == [Span(12, 17, "Trigger"), Span(0, 7, "Treatment"), Span(0, 7, "Drug"),
                            Span(18, 24, "Effect"), Span(70, 84, "Effect"), Span(28, 58, "Subject"),
                            Span(42, 58, "Disorder"), Span(8, 11, "Speculated"), Span(63, 69, "Severity")]
    assert second.events[0].arguments == (
        ("Treatment", 1), ("Treatment.Drug", 2), ("Effect", 3), ("Effect", 4), ("Subject", 5),
        ("Subject.Disorder", 6), ("Speculated", 7), ("Severity", 8))
    assert second.meta["event_meta"] == [{"event_id": "E1", "Speculated": True, "Severity": "High",
                                          "discontinuous": [["Effect", [3, 4]]]}]


def test_squad_off_by_one_answers():
    corpus = read_squad(ASSETS / "covid_squad.json")
    ok, shifted, lost = corpus.records
    assert ok.question == "How does it spread?" and ok.doc_id == "7"
    assert ok.spans == [Span(21, 29, "answer")]
    # " Masks reduce" has answer_start 31 (the "M"); its text starts with the space at 30
    assert shifted.spans == [Span(30, 43, "answer")] and shifted.meta["offsets_fixed"] == [[31, 30]]
    assert lost.spans == [] and lost.meta["unmatched_answers"] == [{"text": "vaccines", "answer_start": 4}]
    assert corpus.meta["offsets_fixed"] == 1 and corpus.meta["offsets_unmatched"] == ["3"]
    raw = read_squad(ASSETS / "covid_squad.json", fix_offsets=False)
    assert raw.meta["offsets_fixed"] == 0 and raw.meta["offsets_unmatched"] == ["2", "3"]
    assert raw.records[1].spans == []


def test_prodigy_spans_and_relations():
    first, second = read_prodigy(ASSETS / "pk.jsonl").records
    assert first.id == "readers/pk/0" and first.doc_id == "555"
    assert first.tokens == ["The", "clearance", "was", "5", "L/h", "."]
    assert first.token_offsets == [(0, 3), (4, 13), (14, 17), (18, 19), (20, 23), (23, 24)]
    assert first.spans == [Span(4, 13, "PK"), Span(18, 19, "VALUE"), Span(20, 23, "UNITS")]
    assert first.relations == [Relation(2, 1, "RELATED"), Relation(0, 1, "C_VAL")]
    assert first.meta["sentence_hash"] == "h1"
    assert second.spans == [] and second.doc_id == "777"  # pmid is null: the pmc id stands in


def test_healthadvice_and_causal():
    advice = read_healthadvice(ASSETS / "healthadvice.csv")
    assert [r.labels for r in advice] == [["no_advice"], ["strong_advice"], ["weak_advice"]]
    assert advice.records[0].text == "Cells were counted, then sorted."
    assert advice.records[0].meta == {"design": "RCT", "line": 2,
                                      "original_sentence": "Cells were counted, then sorted. "}
    assert [r.doc_id for r in advice] == ["11", "11", "12"]
    assert [r.meta["line"] for r in advice] == [2, 3, 5]  # row 2 spans lines 3-4
    causal = read_causal(ASSETS / "causal.csv")
    assert [r.labels[0] for r in causal] == ["direct_causal", "correlational", "conditional_causal", "none"]
    assert causal.records[1].text == "Obesity is associated with diabetes."
    assert causal.records[2].text == "If treated, pain may decrease."


def test_ade_folder():
    corpus = read_ade(ASSETS / "ade")
    pos_a, pos_b, neg_300, neg_400, neg_500 = corpus.records
    # aspirin occurs at 6 and 40; the AE row's document offset (90) with the sentence start 50 picks 40
    assert pos_a.text == "After aspirin 100 mg she had urticaria; aspirin was stopped."
    assert pos_a.spans == [Span(40, 47, "Drug"), Span(29, 38, "AE"), Span(6, 13, "Drug"), Span(14, 20, "Dose")]
    assert pos_a.relations == [Relation(0, 1, "ADE"), Relation(2, 3, "DOSE")]
    assert pos_a.labels == ["ade"] and pos_a.doc_id == "100" and pos_a.meta["doc_offset"] == 50
    assert pos_b.spans == [Span(21, 27, "Drug"), Span(0, 6, "AE")] and pos_b.relations == [Relation(0, 1, "ADE")]
    assert [r.labels for r in (neg_300, neg_400, neg_500)] == [["no_ade"]] * 3
    assert all(not r.spans for r in (neg_300, neg_400, neg_500))
    assert neg_300.meta["lines"] == {"ADE-NEG.txt": [1, 2]}
    assert neg_300.text == neg_400.text and neg_300.id != neg_400.id
    assert {k: corpus.meta[k] for k in ("ade_relations", "dose_relations", "negative_lines", "negative_records",
                                        "negative_duplicate_lines", "negative_dropped_as_positive",
                                        "negative_texts_in_several_docs", "texts_both_positive_and_negative")} == {
        "ade_relations": 2, "dose_relations": 1, "negative_lines": 5, "negative_records": 3,
        "negative_duplicate_lines": 1, "negative_dropped_as_positive": 1, "negative_texts_in_several_docs": 1,
        "texts_both_positive_and_negative": 1}


def test_ade_single_files():
    dose = read_ade(ASSETS / "ade" / "DRUG-DOSE.rel")
    assert [r.id for r in dose] == [read_ade(ASSETS / "ade").records[0].id]
    assert dose.records[0].spans == [Span(6, 13, "Drug"), Span(14, 20, "Dose")]
    assert dose.records[0].labels == []
    neg = read_ade(ASSETS / "ade" / "ADE-NEG.txt")
    assert len(neg) == 4 and all(r.labels == ["no_ade"] for r in neg)


# ---------------------------------------------------------------------------------------------------- bad input


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def jsonl(*rows) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GENIA_OK = {"tokens": ["IL-2", "gene"], "doc_id": "d", "sent_id": "d-0",
            "entity_mentions": [{"start": 0, "end": 1, "entity_type": "protein", "text": "IL-2"}]}


def phee_line(**trigger) -> dict:
    return {"id": "1_1", "context": "Rash occurred.", "annotations": [{"events": [
        {"event_id": "E1", "event_type": "Adverse_event",
         "Trigger": {"text": [["occurred"]], "start": [[5]], **trigger},
         "Effect": {"text": [["Rash"]], "start": [[0]]}}]}]}


def prodigy_line(end: int = 3) -> dict:
    return {"text": "CL 5", "tokens": [{"text": "CL", "start": 0, "end": 2}, {"text": "5", "start": 3, "end": 4}],
            "spans": [{"start": 0, "end": 2, "label": "PK"}, {"start": 3, "end": end, "label": "VALUE"}],
            "relations": [], "metadata": {"pmid": 1}}


@pytest.mark.parametrize("reader, name, good", [
    (read_genia, "g.jsonlines", GENIA_OK), (read_phee, "p.json", phee_line()),
    (read_prodigy, "k.jsonl", prodigy_line(4)),
])
def test_invalid_json_line(tmp_path, reader, name, good):
    reader(write(tmp_path, "ok_" + name, jsonl(good)))  # the same line, well-formed, is read
    path = write(tmp_path, name, jsonl(good, '{"tokens": ["a",'))
    with raises_at(path, 2, "invalid JSON"):
        reader(path)


def test_squad_invalid_json_names_the_line(tmp_path):
    path = write(tmp_path, "q.json", '{"data": [\n  {"paragraphs": []},\n  oops\n]}\n')
    with raises_at(path, 3, "invalid JSON"):
        read_squad(path)


def test_span_past_the_end(tmp_path):
    path = write(tmp_path, "k.jsonl", jsonl(prodigy_line(4), prodigy_line(9)))
    with raises_at(path, 2, r"span \[3, 9\) VALUE falls outside the text \(length 4\)"):
        read_prodigy(path)
    path = write(tmp_path, "g.jsonlines", jsonl({**GENIA_OK, "entity_mentions": [
        {"start": 1, "end": 3, "entity_type": "DNA", "text": "gene x"}]}))
    with raises_at(path, 1, "fall outside the 2 tokens"):
        read_genia(path)
    path = write(tmp_path, "p.PubTator", "1|t|Short.\n1\t3\t40\tort. and more\tDisease\tD1\n")
    with raises_at(path, 2, "falls outside the document"):
        read_pubtator(path)
    path = write(tmp_path, "p.json", jsonl({**phee_line(), "context": "Rash occ"}))
    with raises_at(path, 1, "falls outside the context"):
        read_phee(path)


def test_mismatched_mention_text(tmp_path):
    path = write(tmp_path, "g.jsonlines", jsonl(GENIA_OK, {**GENIA_OK, "sent_id": "d-1", "entity_mentions": [
        {"start": 0, "end": 2, "entity_type": "DNA", "text": "IL-2 genes"}]}))
    with raises_at(path, 2, "'IL-2 genes' does not match its tokens 'IL-2 gene'"):
        read_genia(path)
    path = write(tmp_path, "p.PubTator", "1|t|Aspirin helps.\n1|a|It works.\n1\t0\t7\tAspirin\tChemical\tD1\n"
                                         "1\t8\t13\thelpz\tChemical\tD2\n")
    with raises_at(path, 4, "'helpz' does not match the text at \\[8, 13\\): 'helps'"):
        read_pubtator(path)
    bad = phee_line()
    bad["annotations"][0]["events"][0]["Effect"]["start"] = [[1]]
    path = write(tmp_path, "p.json", jsonl(phee_line(), {**bad, "id": "1_2"}))
    with raises_at(path, 2, "'Rash' does not match the context"):
        read_phee(path)
    assert "(record 1_2)" in str(pytest.raises(InputError, read_phee, path).value)
    path = write(tmp_path, "d.xml", '<?xml version="1.0"?>\n<document id="D1">'
                                    '<sentence id="D1.s0" text="Give aspirin.">'
                                    '<entity id="D1.s0.e0" charOffset="0-3" type="drug" text="aspirin"/>'
                                    "</sentence></document>\n")
    with raises_at(path, None, r"\(record D1.s0\): entity D1.s0.e0: text 'aspirin' does not match"):
        read_ddi(path)
    path = write(tmp_path, "ade/DRUG-AE.rel", "1|Rash after aspirin.|Rash|0|4|aspirin|11|18\n"
                                              "1|Rash after aspirin.|Itch|0|4|aspirin|11|18\n")
    with raises_at(path, 2, "mention 'Itch' does not occur in its sentence"):
        read_ade(path)
    line = prodigy_line(4)
    line["relations"] = [{"head_span": {"start": 0, "end": 2, "label": "PK"},
                          "child_span": {"start": 0, "end": 4, "label": "VALUE"}, "label": "C_VAL"}]
    path = write(tmp_path, "k.jsonl", jsonl(line))
    with raises_at(path, 1, "child_span \\[0, 4\\) VALUE is not one of the line's spans"):
        read_prodigy(path)


def test_pubtator_unknown_concept_and_stray_lines(tmp_path):
    path = write(tmp_path, "p.PubTator", "1|t|Aspirin helps.\n1\t0\t7\tAspirin\tChemical\tD1\n1\tBind\tD1\tD9\tNo\n")
    with raises_at(path, 3, "names concept 'D9'"):
        read_pubtator(path)
    path = write(tmp_path, "q.PubTator", "1|t|Aspirin helps.\n1\t0\tseven\tAspirin\n")
    with raises_at(path, 2, "expected a mention line"):
        read_pubtator(path)


def test_ddi_invalid_xml_and_missing_entity(tmp_path):
    path = write(tmp_path, "d.xml", '<?xml version="1.0"?>\n<document id="D1">\n<sentence id="s" text="a">\n'
                                    "</document>\n")
    with raises_at(path, 4, "invalid XML"):
        read_ddi(path)
    path = write(tmp_path, "e.xml", '<document id="D1">'
                                    '<sentence id="D1.s0" text="Give aspirin.">'
                                    '<pair id="D1.s0.p0" e1="D1.s0.e0" e2="D1.s0.e1" ddi="true"/>'
                                    "</sentence></document>")
    with raises_at(path, None, "pair D1.s0.p0 names entity 'D1.s0.e0'"):
        read_ddi(path)


def test_csv_unknown_label_and_columns(tmp_path):
    path = write(tmp_path, "a.csv", 'label,pmid,sentence\n0,1,"Two\nlines."\n7,2,Bad label.\n')
    with raises_at(path, 4, "label '7' is not one of 0, 1, 2"):
        read_healthadvice(path)
    path = write(tmp_path, "c.csv", "sentence,label\nOne.,0\nTwo.,0,extra\n")
    with raises_at(path, 3, "expected 2 columns"):
        read_causal(path)
    path = write(tmp_path, "d.csv", "text,label\nOne.,0\n")
    with raises_at(path, 1, "lacks the column"):
        read_causal(path)


def test_duplicate_ids(tmp_path):
    path = write(tmp_path, "g.jsonlines", jsonl(GENIA_OK, GENIA_OK))
    with raises_at(path, 2, "duplicate sent_id 'd-0'"):
        read_genia(path)


BAD_BYTES_FILES = [
    (read_genia, "g.jsonlines"), (read_pubtator, "p.PubTator"), (read_phee, "p.json"), (read_squad, "q.json"),
    (read_prodigy, "k.jsonl"), (read_healthadvice, "h.csv"), (read_causal, "c.csv"), (read_ade, "DRUG-AE.rel"),
    (read_ade, "ADE-NEG.txt"), (read_ddi, "d.xml"),
]


@pytest.mark.parametrize("reader, name", BAD_BYTES_FILES)
def test_non_utf8(tmp_path, reader, name):
    path = write(tmp_path, name, b"first line\nsecond \xff line\n")
    with raises_at(path, 2, "not UTF-8"):
        reader(path)


@pytest.mark.parametrize("reader, name", BAD_BYTES_FILES)
def test_empty_file(tmp_path, reader, name):
    path = write(tmp_path, name, "\n")
    with raises_at(path, None, "file is empty"):
        reader(path)


def test_ade_folder_without_files_and_unknown_name(tmp_path):
    with raises_at(tmp_path, None, "holds none of"):
        read_ade(tmp_path)
    path = write(tmp_path, "other.rel", "1|a|b|0|1|c|0|1\n")
    with raises_at(path, None, "is named DRUG-AE.rel"):
        read_ade(path)


def test_phee_unknown_field_is_not_dropped(tmp_path):
    line = phee_line()
    line["annotations"][0]["events"][0]["Effect"]["Extra"] = ["not", "an", "argument"]
    path = write(tmp_path, "p.json", jsonl(line))
    with raises_at(path, 1, "argument 'Effect' has an unknown field 'Extra'"):
        read_phee(path)
