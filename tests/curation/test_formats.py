"""brat, BioC and BigBio: the readers on tiny project-written files, round trips through the writers, bad input, and
the one representation of discontinuous spans (``Span.fragments``) in records, instruction JSON and files.

Assets (``tests/assets/readers/{brat,bioc,bigbio}``) hold nested, crossing and discontinuous entities, a relation,
nested events, normalisations and multi-byte characters before entities (``ï``, ``é``, ``β``).
"""

from __future__ import annotations

import doctest
import json

import pytest

from curation import records as records_module
from curation.records import Record, Span
from tests.helpers import ASSETS

READERS = ASSETS / "readers"


def test_records_doctests():
    result = doctest.testmod(records_module)
    assert result.attempted >= 5 and result.failed == 0


# --- discontinuous spans -----------------------------------------------------------------------------------------


def test_discontinuous_span_surface_list_and_order():
    text = "loop and thiazide diuretics"
    span = Span.from_fragments([(18, 27), (0, 4)], "Drug")  # fragments in any order, kept in text order
    assert (span.start, span.end, span.fragments) == (0, 27, ((0, 4), (18, 27)))
    assert span.surface(text) == "loop diuretics"
    assert span.pieces == ((0, 4), (18, 27)) and Span(0, 4, "Drug").pieces == ((0, 4),)
    assert Span.from_list(span.to_list()) == span and span.to_list() == [0, 27, "Drug", [[0, 4], [18, 27]]]
    assert Span.from_fragments([(0, 4)], "Drug") == Span(0, 4, "Drug")  # one piece is a continuous span
    assert span != Span(0, 27, "Drug")  # same outer offsets, different span
    assert span.overlaps(Span(20, 22, "X")) and not span.overlaps(Span(5, 17, "X"))


@pytest.mark.parametrize("bad", [
    [0, 27, "Drug", [[0, 4]]],  # one fragment
    [0, 27, "Drug", [[0, 4], [3, 27]]],  # overlapping fragments
    [0, 30, "Drug", [[0, 4], [18, 27]]],  # end is not the last fragment's end
    [0, 27],
])
def test_span_lists_that_are_not_spans(bad):
    with pytest.raises((ValueError, TypeError)):
        Span.from_list(bad)


def test_record_dict_round_trip_keeps_fragments():
    rec = Record(id="r", text="loop and thiazide diuretics",
                 spans=[Span.from_fragments([(0, 4), (18, 27)], "Drug"), Span(9, 27, "Drug")])
    d = rec.to_dict()
    assert d["spans"] == [[0, 27, "Drug", [[0, 4], [18, 27]]], [9, 27, "Drug"]]
    assert Record.from_dict(json.loads(json.dumps(d))) == rec


def test_instruction_json_names_a_discontinuous_entity_by_its_joined_fragments():
    from curation.convert import convert_corpus
    from curation.records import Corpus

    rec = Record(id="r", text="loop and thiazide diuretics",
                 spans=[Span.from_fragments([(0, 4), (18, 27)], "Drug"), Span(9, 27, "Drug")])
    row = convert_corpus(Corpus([rec], dataset="t"), task="ner")[0]
    assert json.loads(row["output"]) == [{"entity": "Drug", "name": "loop diuretics"},
                                         {"entity": "Drug", "name": "thiazide diuretics"}]
    assert row["spans"] == [[0, 27, "Drug", [[0, 4], [18, 27]]], [9, 27, "Drug"]]


def test_iob_refuses_a_discontinuous_span():
    from curation.readers.iob import record_tags

    rec = Record(id="r", text="loop and diuretics", tokens=["loop", "and", "diuretics"],
                 token_offsets=[(0, 4), (5, 8), (9, 18)], spans=[Span.from_fragments([(0, 4), (9, 18)], "Drug")])
    with pytest.raises(ValueError, match="discontinuous"):
        record_tags(rec)


# --- brat --------------------------------------------------------------------------------------------------------


def _at(text: str, surface: str) -> tuple[int, int]:
    start = text.index(surface)
    return start, start + len(surface)


def test_brat_folder_maps_every_annotation_kind():
    from curation.readers.brat import read_brat

    corpus = read_brat(READERS / "brat")
    assert corpus.format == "brat" and [r.id for r in corpus] == ["doc1", "sub/doc2"]
    doc = corpus.records[0]
    text = (READERS / "brat" / "doc1.txt").read_text(encoding="utf-8")
    assert doc.text == text
    by_id = dict(zip(doc.meta["annotation_ids"], doc.spans))
    # code points, not bytes: "ï" before "β" and "β" itself take two bytes each in UTF-8
    assert by_id["T3"] == Span(*_at(text, "β-thalassaemia"), "Disease") == Span(23, 37, "Disease")
    assert text.encode("utf-8").index("β".encode()) == 24
    assert by_id["T2"] == Span(*_at(text, "T-cells"), "Cell_type")  # nested in T1
    assert by_id["T4"] == Span(*_at(text, "thalassaemia cohort"), "Population")  # crosses T3
    loop = by_id["T5"]
    assert loop.fragments == (_at(text, "Loop"), _at(text, "diuretics")) and loop.surface(text) == "Loop diuretics"
    assert loop.overlaps(by_id["T6"])  # "thiazide diuretics" shares the second fragment
    ids = doc.meta["annotation_ids"]
    [rel] = doc.relations
    assert (ids[rel.head], ids[rel.tail], rel.label) == ("T10", "T3", "Associated_with")
    expression, regulation = doc.events
    assert (ids[expression.trigger], [(r, ids[i]) for r, i in expression.arguments]) == ("T9", [("Theme", "T8")])
    # an event as argument points at its trigger span; which event it was stays in meta
    assert [(r, ids[i]) for r, i in regulation.arguments] == [("Theme", "T9"), ("Cause", "T6")]
    assert doc.meta["event_args"][1] == [["Theme", "E1"], ["Cause", "T6"]]
    assert doc.meta["normalizations"][0] == {"id": "N1", "type": "Reference", "target": "T8", "db": "HGNC",
                                             "db_id": "6001", "text": "IL2"}
    assert doc.meta["attributes"] == [{"id": "A1", "type": "Speculation", "target": "E2", "value": None},
                                      {"id": "A2", "type": "Confidence", "target": "E1", "value": "High"}]
    assert doc.meta["notes"][0]["target"] == "T5"
    assert corpus.records[1].meta["equivalences"] == [{"type": "Equiv", "ids": ["T1", "T2"]}]


def test_brat_one_pair_by_either_file():
    from curation.readers.brat import read_brat

    folder = read_brat(READERS / "brat").records[0]
    assert read_brat(READERS / "brat" / "doc1.ann").records == [folder]
    assert read_brat(READERS / "brat" / "doc1.txt").records == [folder]


def test_brat_round_trip_is_byte_identical(tmp_path):
    from curation.readers.brat import read_brat, write_brat

    corpus = read_brat(READERS / "brat")
    written = write_brat(corpus.records, tmp_path)
    for name in ("doc1", "sub/doc2"):
        for suffix in (".txt", ".ann"):
            assert (tmp_path / f"{name}{suffix}").read_bytes() == (READERS / "brat" / f"{name}{suffix}").read_bytes()
    assert tmp_path / "annotation.conf" in written
    conf = (tmp_path / "annotation.conf").read_text()
    assert "Negative_regulation\tCause*:<ENTITY>|<EVENT>, Theme*:<ENTITY>|<EVENT>" in conf
    assert "Confidence\tArg:<ANY>, Value:High" in conf and "<OVL-TYPE>:<ANY>" in conf
    assert read_brat(tmp_path).records == corpus.records


@pytest.mark.parametrize(("ann", "line", "message"), [
    ("T1\tGene 0 4\tNaïv\nT2\tGene 100 200\tx\n", 2, "fragment [100, 200) is empty or leaves the text"),
    ("T1\tGene 0 5\tNaive\n", 1, "T1 quotes 'Naive' but the text at 0 5 is 'Naïve'"),
    ("T1\tGene 0 5\tNaïve\nX1\tGene T1\n", 2, "unknown annotation kind 'X'"),
    ("T1\tGene 0 5\tNaïve\nR1\tRel Arg1:T1 Arg2:T9\n", 2, "R1 argument Arg2 names T9, which is no text-bound"),
    ("T1\tGene 0 5\tNaïve\nT1\tGene 0 5\tNaïve\n", 2, "id T1 is used twice (first on line 1)"),
    ("T1\tGene 0 5;3 8\tNaïve T-c\n", 1, "overlap"),
    ("T1\tGene 0 5\tNaïve\nE1\tExpr:T2 Theme:T1\n", 2, "E1: trigger T2 is no text-bound annotation"),
    ("T1\tGene 0 5\tNaïve\nN1\tReference T7 HGNC:1\tx\n", 2, "N1 names T7, which no annotation"),
    ("T1\tGene zero 5\tNaïve\n", 1, "offsets 'zero 5' are not 'START END'"),
])
def test_brat_bad_input_names_file_and_line(tmp_path, ann, line, message):
    from curation.io import InputError
    from curation.readers.brat import read_brat

    (tmp_path / "d.txt").write_text("Naïve T-cells\n", encoding="utf-8")
    (tmp_path / "d.ann").write_text(ann, encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_brat(tmp_path)
    assert err.value.path == str(tmp_path / "d.ann") and err.value.line == line
    assert message in err.value.message


def test_brat_ann_without_txt(tmp_path):
    from curation.io import InputError
    from curation.readers.brat import read_brat

    (tmp_path / "d.ann").write_text("T1\tGene 0 4\tNaïv\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"d\.ann: no d\.txt beside it"):
        read_brat(tmp_path)


def test_brat_writer_numbers_ids_of_other_formats_and_moves_their_targets(tmp_path):
    from curation.readers.bigbio import read_bigbio
    from curation.readers.brat import read_brat, write_brat

    records = read_bigbio(READERS / "bigbio" / "tiny.jsonl").records
    write_brat(records, tmp_path)
    again = read_brat(tmp_path)
    assert [r.id for r in again] == ["doc1", "sub/doc2"]
    for before, after in zip(records, again.records):
        assert (after.text, after.spans, after.relations, after.events) == (
            before.text, before.spans, before.relations, before.events)
    doc2 = (tmp_path / "sub" / "doc2.ann").read_text()
    assert "N1\tReference T1 MESH:D001241\tAspirin" in doc2 and "*\tCoreference T1 T2" in doc2
    doc1 = again.records[0]
    # the nested event argument survives: the bigbio event id became E1, named by E2
    assert doc1.meta["event_args"] == [[["Theme", "T7"]], [["Theme", "E1"], ["Cause", "T6"]]]


def test_brat_writer_file_names():
    from curation.readers.brat import file_names

    assert file_names(["a/b", "../../etc/passwd", "x:y", "x;y", "A", "a"]) == [
        "a/b", "etc/passwd", "x_y", "x_y_2", "A", "a_2"]


# --- BioC --------------------------------------------------------------------------------------------------------


def test_bioc_xml_maps_passages_locations_relations_and_events():
    from curation.readers.bioc import read_bioc

    corpus = read_bioc(READERS / "bioc" / "tiny.xml")
    assert corpus.format == "bioc" and [r.id for r in corpus] == ["d1", "d2"] and corpus.meta == {}
    d1, d2 = corpus.records
    title = "Café-au-lait spots in NF1 patients"
    assert d1.text.startswith(title + " Loop and thiazide") and d1.meta["title_length"] == len(title)
    ids = d1.meta["annotation_ids"]
    by_id = dict(zip(ids, d1.spans))
    assert by_id["A1"] == Span(*_at(d1.text, "NF1"), "Disease") == Span(22, 25, "Disease")  # after "é"
    assert by_id["A6"] == Span(*_at(d1.text, "β-catenin"), "Gene")
    assert by_id["A3"].fragments == (_at(d1.text, "Loop"), _at(d1.text, "diuretics"))
    assert d1.meta["span_ids"][ids.index("A6")] == "1499"  # the identifier infon, as the PubTator reader keeps ids
    assert d1.meta["span_infons"][ids.index("A3")] == {"note": "written apart"}
    cause, association = d1.relations
    assert (ids[cause.head], ids[cause.tail], cause.label) == ("A8", "A1", "Cause")
    # a concept relation (no nodes, entity1/entity2 infons) links the first mention of each concept
    assert (ids[association.head], ids[association.tail]) == ("A1", "A6")
    assert d1.meta["relations"][1] == {"type": "Association", "id1": "MESH:D009456", "id2": "1499", "novelty": "Novel"}
    assert d1.meta["relation_infons"] == [{"confidence": "high"}, {}]
    expression, regulation = d1.events
    assert ids[expression.trigger] == "A7" and [(r, ids[i]) for r, i in regulation.arguments] == [
        ("Theme", "A7"), ("Cause", "A4")]
    assert d1.meta["event_args"][1] == [["Theme", "E0"], ["Cause", "A4"]]
    assert d1.meta["infons"] == {"journal": "Tiny J"}
    # sentences placed at their offsets; annotations and relations inside sentences are read
    assert d2.text == "Aspirin and ASA are one drug. Ibuprofen is another."
    assert [s.surface(d2.text) for s in d2.spans] == ["Aspirin", "ASA", "Ibuprofen"]
    assert d2.relations[0].label == "Equivalent"


def test_bioc_json_collection_and_json_lines_read_like_the_xml(tmp_path):
    from curation.readers.bioc import read_bioc

    xml = read_bioc(READERS / "bioc" / "tiny.xml").records
    assert read_bioc(READERS / "bioc" / "tiny.json").records == xml
    docs = json.loads((READERS / "bioc" / "tiny.json").read_text(encoding="utf-8"))["documents"]
    lines = tmp_path / "docs.jsonl"
    lines.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    assert read_bioc(lines).records == xml


def test_bioc_byte_offsets_are_converted_and_listed():
    from curation.readers.bioc import read_bioc

    in_bytes = read_bioc(READERS / "bioc" / "tiny_bytes.xml")
    assert in_bytes.records == read_bioc(READERS / "bioc" / "tiny.xml").records
    assert in_bytes.meta == {"byte_offsets": ["d1"]}  # d2 is ASCII: bytes and code points agree


def _annotations(path):
    """(id, infons, locations, text) of every annotation and (id, infons, nodes) of every relation, per document."""
    import bioc

    with open(path, "rb") as f:
        collection = bioc.biocxml.load(f)
    out = {}
    for doc in collection.documents:
        anns = [a for p in doc.passages for a in p.annotations] + [
            a for p in doc.passages for s in p.sentences for a in s.annotations] + list(doc.annotations)
        rels = [r for p in doc.passages for r in p.relations] + [
            r for p in doc.passages for s in p.sentences for r in s.relations] + list(doc.relations)
        out[doc.id] = (sorted((a.id, sorted(a.infons.items()), [(x.offset, x.length) for x in a.locations], a.text)
                              for a in anns),
                       sorted((r.id, sorted(r.infons.items()), [(n.refid, n.role) for n in r.nodes]) for r in rels),
                       sorted(doc.infons.items()))
    return out


def test_bioc_round_trip_reproduces_the_annotations(tmp_path):
    from curation.readers.bioc import read_bioc, write_bioc

    corpus = read_bioc(READERS / "bioc" / "tiny.xml")
    out = write_bioc(corpus.records, tmp_path / "again.xml")
    assert read_bioc(out).records == corpus.records
    assert _annotations(out) == _annotations(READERS / "bioc" / "tiny.xml")


def test_brat_through_bioc_keeps_spans_relations_events_and_ids(tmp_path):
    from curation.readers.bioc import read_bioc, write_bioc
    from curation.readers.brat import read_brat

    brat = read_brat(READERS / "brat").records
    bioc = read_bioc(write_bioc(brat, tmp_path / "brat.xml")).records
    for a, b in zip(brat, bioc):
        assert (a.id, a.text, a.spans, a.relations, a.events) == (b.id, b.text, b.spans, b.relations, b.events)
        for key in ("annotation_ids", "relation_ids", "relation_args", "event_ids", "event_args"):
            assert a.meta.get(key) == b.meta.get(key), key


@pytest.mark.parametrize(("old", "new", "marker", "message"), [
    ('<location offset="22" length="3"/>', '<location offset="30" length="9"/>', '<location offset="30"',
     "location [30, 39) of annotation 'A1' is empty or past its passage [0, 34)"),
    ("<text>NF1</text>", "<text>NF2</text>", '<annotation id="A1">',
     "annotation 'A1' text 'NF2' does not match the text at its location"),
    ('<node refid="A8" role="Gene"/>', '<node refid="A88" role="Gene"/>', '<relation id="R0">',
     "relation 'R0' names 'A88', which no annotation"),
    ('<annotation id="A2">', '<annotation id="A1">', '<annotation id="A1">#2', "annotation id 'A1' is used twice"),
    ('<location offset="22" length="3"/>', '<location offset="x" length="3"/>', '<location offset="x"',
     "<location> offset 'x' is not a number"),
    ("<text>NF1</text>", "<text>NF1</txt>", "</txt>", "not well-formed XML"),
])
def test_bioc_bad_input_names_file_and_line(tmp_path, old, new, marker, message):
    from curation.io import InputError
    from curation.readers.bioc import read_bioc

    text = (READERS / "bioc" / "tiny.xml").read_text(encoding="utf-8")
    assert text.count(old) == 1
    bad = tmp_path / "bad.xml"
    bad.write_text(text.replace(old, new), encoding="utf-8")
    marker, _, nth = marker.partition("#")
    line = [n for n, s in enumerate(bad.read_text(encoding="utf-8").splitlines(), 1) if marker in s][int(nth or 1) - 1]
    with pytest.raises(InputError) as err:
        read_bioc(bad)
    assert (err.value.path, err.value.line) == (str(bad), line) and message in err.value.message


def test_bioc_json_bad_location_names_the_line_of_the_annotation(tmp_path):
    from curation.io import InputError
    from curation.readers.bioc import read_bioc

    text = (READERS / "bioc" / "tiny.json").read_text(encoding="utf-8")
    collection = json.loads(text)
    collection["documents"][1]["passages"][0]["sentences"][1]["annotations"][0]["locations"][0]["offset"] = 3
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(collection, indent=1, ensure_ascii=False), encoding="utf-8")
    line = next(n for n, s in enumerate(bad.read_text().splitlines(), 1) if '"id": "B2"' in s)
    with pytest.raises(InputError) as err:
        read_bioc(bad)
    assert err.value.line == line and "past its sentence [30, 51)" in err.value.message


# --- BigBio ------------------------------------------------------------------------------------------------------


def _bigbio_rows() -> list[dict]:
    return [json.loads(line) for line in (READERS / "bigbio" / "tiny.jsonl").read_text(encoding="utf-8").splitlines()]


def _surfaces(record: Record) -> tuple:
    s = [(x.surface(record.text), x.label, x.pieces) for x in record.spans]
    rels = sorted((s[r.head][0], s[r.tail][0], r.label) for r in record.relations)
    events = sorted((e.type, s[e.trigger][0], tuple(sorted((role, s[i][0]) for role, i in e.arguments)))
                    for e in record.events)
    return sorted(s), rels, events


def test_bigbio_jsonl_reads_the_same_annotations_as_brat():
    from curation.readers.bigbio import read_bigbio
    from curation.readers.brat import read_brat

    corpus = read_bigbio(READERS / "bigbio" / "tiny.jsonl")
    assert corpus.format == "bigbio" and corpus.meta == {"entities_without_offsets": 1}
    brat = read_brat(READERS / "brat")
    for a, b in zip(corpus.records, brat.records):
        assert a.id == b.id and _surfaces(a) == _surfaces(b)
    doc1, doc2 = corpus.records
    # the title and abstract passages joined by a space where the brat text has a newline: same offsets
    assert doc1.text == brat.records[0].text.rstrip("\n").replace("\n", " ")
    assert doc1.meta["normalizations"] == [{"target": "e3", "db": "MeSH", "db_id": "D017086"},
                                           {"target": "e8", "db": "HGNC", "db_id": "6001"}]
    assert doc1.meta["event_args"][1] == [["Theme", "ev1"], ["Cause", "e6"]]
    assert doc2.meta["equivalences"] == [{"type": "Coreference", "id": "c1", "ids": ["e1", "e2"]}]


def test_bigbio_parquet_and_a_loaded_dataset_read_like_the_jsonl(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.readers import read_corpus
    from curation.readers.bigbio import read_bigbio

    jsonl = read_bigbio(READERS / "bigbio" / "tiny.jsonl").records
    pq.write_table(pa.Table.from_pylist(_bigbio_rows()), tmp_path / "test.parquet")
    assert read_corpus(tmp_path / "test.parquet").records == jsonl  # detected by its suffix
    assert read_bigbio(datasets.Dataset.from_list(_bigbio_rows())).records == jsonl


@pytest.mark.parametrize(("edit", "message"), [
    (lambda r: r["entities"][0].update(text=["Naive T-cells"]), "entity 'e1': text ['Naive T-cells'] does not match"),
    (lambda r: r["relations"][0].update(arg2_id="e99"), "relation 'r1' names 'e99', which is no entity or event"),
    (lambda r: r["entities"][0].update(offsets=[[0, 500]]), "entity 'e1': offsets [0, 500) are empty or outside"),
    (lambda r: r.pop("events"), "not a bigbio_kb document: lacks events"),
])
def test_bigbio_bad_input_names_file_and_line(tmp_path, edit, message):
    from curation.io import InputError
    from curation.readers.bigbio import read_bigbio

    rows = _bigbio_rows()
    edit(rows[0])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(InputError) as err:
        read_bigbio(bad)
    assert (err.value.path, err.value.line) == (str(bad), 1) and message in err.value.message


def test_bigbio_dataset_dict_asks_for_a_split():
    import datasets

    from curation.io import InputError
    from curation.readers.bigbio import read_bigbio

    with pytest.raises(InputError, match="pass one split"):
        read_bigbio(datasets.DatasetDict({"test": datasets.Dataset.from_list(_bigbio_rows())}))


# --- detection ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "fmt"), [
    ("brat", "brat"), ("brat/doc1.ann", "brat"), ("brat/doc1.txt", "brat"), ("bioc/tiny.xml", "bioc"),
    ("bioc/tiny.json", "bioc"), ("bigbio/tiny.jsonl", "bigbio"), ("ddi", "ddi"),
])
def test_detect_new_formats(path, fmt):
    from curation.readers import detect_format

    assert detect_format(READERS / path) == fmt
