"""Every corpus reader over the real files of ``../shared/data``, pinned to the counts of its README.

Run: ``.venv/bin/pytest tests/curation/test_real_corpora.py -q`` (a few seconds; skipped where the data is absent).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from curation.readers import detect_format, read_corpus
from curation.readers.squad import read_squad

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

pytestmark = [
    pytest.mark.real,
    pytest.mark.skipif(not DATA.is_dir(), reason=f"real corpora not found at {DATA}"),
]


def read(rel: str, fmt: str):
    """Read a corpus, checking on the way that its format is detected from the path."""
    path = DATA / rel
    assert detect_format(path) == fmt
    return read_corpus(path)


def span_labels(corpus) -> Counter:
    return Counter(s.label for r in corpus for s in r.spans)


def relation_labels(corpus) -> Counter:
    return Counter(rel.label for r in corpus for rel in r.relations)


def check_spans(corpus) -> None:
    for r in corpus:
        for s in r.spans:
            assert 0 <= s.start < s.end <= len(r.text), (r.id, s)
        for rel in r.relations:
            assert 0 <= rel.head < len(r.spans) and 0 <= rel.tail < len(r.spans), (r.id, rel)
    assert len({r.id for r in corpus}) == len(corpus)


@pytest.mark.parametrize("split, sentences, mentions", [
    ("dev", 1765, {"protein": 2466, "DNA": 1161, "cell_type": 576, "cell_line": 372, "RNA": 139}),
    ("test", 1732, {"protein": 2900, "DNA": 1132, "cell_type": 578, "cell_line": 403, "RNA": 106}),
])
def test_genia(split, sentences, mentions):
    corpus = read(f"nested_ner/GENIA/{split}.jsonlines", "genia")
    assert len(corpus) == sentences
    assert span_labels(corpus) == mentions
    check_spans(corpus)
    nested = sum(any(a.start <= b.start and b.end <= a.end and a != b for a in r.spans for b in r.spans)
                 for r in corpus)
    assert nested > 0
    assert all(r.doc_id and r.tokens and len(r.tokens) == len(r.token_offsets) for r in corpus)


@pytest.mark.parametrize("split, docs, mentions, relations", [
    ("Train", 400, 13351, 4178), ("Dev", 100, 3533, 1162), ("Test", 100, 3535, 1163),
])
def test_biored(split, docs, mentions, relations):
    corpus = read(f"re/BioRED/{split}.PubTator", "pubtator")
    assert len(corpus) == docs
    assert sum(len(r.spans) for r in corpus) == mentions
    assert sum(len(r.relations) for r in corpus) == relations
    assert sum(len(r.meta["relations"]) for r in corpus) == relations
    assert all(len(r.meta["span_ids"]) == len(r.spans) for r in corpus)
    check_spans(corpus)


@pytest.mark.parametrize("split", ["Train", "Dev", "Test"])
def test_biored_through_bioc_is_the_pubtator_reading(split, tmp_path):
    """PubTator -> records -> BioC XML -> records gives the records of PubTator -> records: every field, and in meta
    every key the PubTator reader sets but ``line`` (the record's line in the PubTator file; the BioC records carry
    their BioC ids and passages besides)."""
    from curation.readers.bioc import read_bioc, write_bioc

    pubtator = read(f"re/BioRED/{split}.PubTator", "pubtator")
    out = write_bioc(pubtator.records, tmp_path / f"{split}.xml")
    assert detect_format(out) == "bioc"
    bioc = read_bioc(out)
    assert bioc.meta == {} and len(bioc) == len(pubtator)
    for p, b in zip(pubtator, bioc):
        assert (b.id, b.text, b.spans, b.relations, b.events, b.doc_id) == (
            p.id, p.text, p.spans, p.relations, p.events, p.doc_id)
        kept = {k: v for k, v in p.meta.items() if k != "line"}
        assert {k: b.meta.get(k, []) for k in kept} == kept  # [] for a document without mentions or relations


def test_ddi():
    corpus = read("re/DDI/DDICorpus", "ddi")
    assert corpus.meta["files"] == 1017
    sentences = Counter(r.meta["part"] for r in corpus)
    docs = Counter(part for part, _ in {(r.meta["part"], r.doc_id) for r in corpus})
    extraction, ner = "Test/Test for DDI Extraction task", "Test/Test for DrugNER task"
    assert sentences == {"Train/DrugBank": 5675, "Train/MedLine": 1301, f"{extraction}/DrugBank": 973,
                         f"{extraction}/MedLine": 326, f"{ner}/DrugBank": 145, f"{ner}/MedLine": 520}
    assert docs == {"Train/DrugBank": 572, "Train/MedLine": 142, f"{extraction}/DrugBank": 158,
                    f"{extraction}/MedLine": 33, f"{ner}/DrugBank": 54, f"{ner}/MedLine": 58}
    train = relation_labels(r for r in corpus if r.meta["part"].startswith("Train/"))
    test = relation_labels(r for r in corpus if r.meta["part"].startswith(extraction))
    assert train == {"effect": 1687, "mechanism": 1319, "advise": 826, "int": 188, "DDI": 1}
    assert sum(train.values()) == 4021
    assert test == {"effect": 360, "mechanism": 302, "advise": 221, "int": 96}
    assert sum(test.values()) == 979
    assert corpus.meta["untyped_true_pairs"] == ["DDI-DrugBank.d236.s29.p0"]
    assert corpus.meta["offsets_fixed"] == ["DDI-DrugBank.d216.s16.e2"]
    assert sum(len(r.meta.get("discontinuous", [])) for r in corpus) == 49
    check_spans(corpus)


@pytest.mark.parametrize("split, sentences, events", [
    ("train", 2898, {"Adverse_event": 2710, "Potential_therapeutic_event": 296}),
    ("dev", 961, {"Adverse_event": 886, "Potential_therapeutic_event": 117}),
    ("test", 968, {"Adverse_event": 889, "Potential_therapeutic_event": 121}),
])
def test_phee(split, sentences, events):
    corpus = read(f"ee/PHEE/{split}.json", "phee")
    assert len(corpus) == sentences
    assert Counter(e.type for r in corpus for e in r.events) == events
    check_spans(corpus)
    for r in corpus:
        assert len(r.meta["event_meta"]) == len(r.events)
        for e in r.events:
            assert r.spans[e.trigger].label == "Trigger"
            assert all(r.spans[i].label == role.rsplit(".", 1)[-1] for role, i in e.arguments)


def test_covid_qa():
    path = DATA / "qa/COVID-QA/200423_covidQA.json"
    corpus = read("qa/COVID-QA/200423_covidQA.json", "squad")
    assert len(corpus) == 1380
    assert len({r.doc_id for r in corpus}) == 98
    assert corpus.meta["offsets_fixed"] == 234 and corpus.meta["offsets_unmatched"] == []
    assert all(len(r.spans) == 1 and r.question for r in corpus)
    check_spans(corpus)
    raw = read_squad(path, fix_offsets=False)
    assert raw.meta["offsets_fixed"] == 0 and len(raw.meta["offsets_unmatched"]) == 234


def test_bioasq():
    corpus = read("qa/BioASQ-factoid-squad/dev.json", "squad")
    assert len(corpus) == 1809
    assert sum(len(r.spans) for r in corpus) == 1809
    assert corpus.meta["offsets_fixed"] == 0 and corpus.meta["offsets_unmatched"] == []
    check_spans(corpus)


def test_pk_relations():
    corpus = read("ner/PK-relations/dev.jsonl", "prodigy")
    assert len(corpus) == 500
    assert sum(bool(r.spans) for r in corpus) == 265
    assert len({r.doc_id for r in corpus}) == 494
    assert span_labels(corpus) == {"PK": 394, "VALUE": 702, "UNITS": 474, "RANGE": 74, "COMPARE": 18}
    assert relation_labels(corpus) == {"RELATED": 764, "C_VAL": 571, "D_VAL": 207}
    check_spans(corpus)


@pytest.mark.parametrize("name, counts", [
    ("structured_abstract", (3575, 1482, 925)),
    ("unstructured_abstract", (890, 28, 16)),
    ("discussion", (3635, 162, 135)),
])
def test_healthadvice(name, counts):
    corpus = read(f"cls/HealthAdvice/annotations_{name}.csv", "healthadvice")
    assert len(corpus) == sum(counts)
    labels = Counter(r.labels[0] for r in corpus)
    assert labels == dict(zip(("no_advice", "weak_advice", "strong_advice"), counts))
    assert all(r.doc_id for r in corpus)


def test_causal_language():
    corpus = read("cls/CausalLanguage/pubmed_causal_language_use.csv", "causal")
    assert len(corpus) == 3061
    assert Counter(r.labels[0] for r in corpus) == {"none": 1356, "direct_causal": 494, "conditional_causal": 213,
                                                      "correlational": 998}


def test_ade():
    corpus = read("cls/ADE-Corpus-V2", "ade")
    positives = [r for r in corpus if r.labels == ["ade"]]
    negatives = [r for r in corpus if r.labels == ["no_ade"]]
    assert len(positives) + len(negatives) == len(corpus)
    assert relation_labels(corpus) == {"ADE": 6821, "DOSE": 279}
    # the README's 4,271 counts sentence texts; one title occurs under two pmids, so 4,272 (pmid, sentence) records
    assert len({r.text for r in positives}) == 4271 and len(positives) == 4272
    assert len({r.doc_id for r in positives}) == 1644
    assert corpus.meta["negative_lines"] == 16695
    assert len({r.text for r in negatives}) == 16625
    assert len(negatives) == 16695 - corpus.meta["negative_duplicate_lines"] == 16688
    assert corpus.meta["texts_both_positive_and_negative"] == 0
    assert corpus.meta["mentions_nearest"] == 0
    assert all(not r.spans for r in negatives)
    check_spans(corpus)
    for r in positives:  # every relation goes from a Drug to an AE or Dose span
        for rel in r.relations:
            assert r.spans[rel.head].label == "Drug"
            assert r.spans[rel.tail].label == {"ADE": "AE", "DOSE": "Dose"}[rel.label]


def test_ade_single_file():
    corpus = read("cls/ADE-Corpus-V2/DRUG-DOSE.rel", "ade")
    assert relation_labels(corpus) == {"DOSE": 279}
    assert all(r.labels == [] for r in corpus)
    full = {r.id: r for r in read_corpus(DATA / "cls/ADE-Corpus-V2")}
    assert all(r.id in full for r in corpus)  # ids do not depend on which file was read
