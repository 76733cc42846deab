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
