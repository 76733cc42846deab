"""span <-> BIO conversion: crafted cases and hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation.bio import TagError, bio_to_spans, parse_tag, spans_to_bio
from curation.records import Span, char_span_to_tokens, join_tokens, token_span_to_char

LABELS = ["Disease", "Chemical", "cell_type"]


@st.composite
def flat_spans(draw):
    """A token count and non-overlapping token spans over it."""
    n = draw(st.integers(min_value=0, max_value=30))
    spans, pos = [], 0
    while pos < n:
        if draw(st.booleans()):
            length = draw(st.integers(min_value=1, max_value=min(5, n - pos)))
            spans.append((pos, pos + length, draw(st.sampled_from(LABELS))))
            pos += length
        else:
            pos += draw(st.integers(min_value=1, max_value=3))
    return n, spans


@st.composite
def iob2_tags(draw):
    n = draw(st.integers(min_value=0, max_value=30))
    tags = []
    for _ in range(n):
        prev = tags[-1] if tags else "O"
        options = ["O"] + [f"B-{t}" for t in LABELS] + ([f"I-{prev[2:]}"] if prev != "O" else [])
        tags.append(draw(st.sampled_from(options)))
    return tags


@given(flat_spans())
def test_spans_bio_spans_identity(case):
    n, spans = case
    assert bio_to_spans(spans_to_bio(n, spans)) == sorted(spans)


@given(iob2_tags())
def test_bio_spans_bio_identity(tags):
    assert spans_to_bio(len(tags), bio_to_spans(tags)) == tags


@given(flat_spans(), st.lists(st.text(alphabet="abcXYZ-()0", min_size=1, max_size=6), min_size=30, max_size=30))
def test_token_char_offsets_round_trip(case, words):
    n, spans = case
    text, offsets = join_tokens(words[:n])
    for s, e, lab in spans:
        char = token_span_to_char(offsets, s, e, lab)
        assert char.surface(text) == " ".join(words[s:e])
        assert char_span_to_tokens(offsets, char) == (s, e)


def test_crafted_sequences():
    assert bio_to_spans(["B-A", "I-A", "B-A", "O", "B-B", "I-B"]) == [(0, 2, "A"), (2, 3, "A"), (4, 6, "B")]
    assert bio_to_spans(["B-A", "I-B"], scheme="iob1") == [(0, 1, "A"), (1, 2, "B")]
    assert bio_to_spans(["O", "I-A", "I-A"], scheme="iob1") == [(1, 3, "A")]
    assert bio_to_spans([]) == []


@pytest.mark.parametrize("tags,index", [(["O", "I-A"], 1), (["B-A", "I-B"], 1), (["B-A", "O", "I-A"], 2)])
def test_iob2_rejects_orphan_inside(tags, index):
    with pytest.raises(TagError) as err:
        bio_to_spans(tags)
    assert err.value.index == index
    assert "continues no" in str(err.value)


@pytest.mark.parametrize("tag", ["X", "B", "B-", "b-A", "E-A", "I_A"])
def test_bad_tag(tag):
    with pytest.raises(TagError, match="is not O, B-TYPE or I-TYPE"):
        parse_tag(tag)


def test_spans_to_bio_rejects_nesting():
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_bio(5, [(0, 3, "A"), (1, 2, "B")])


def test_sorted_spans_outer_first():
    from curation.records import Record

    r = Record(id="x", text="a b c", spans=[Span(2, 3, "B"), Span(0, 5, "A"), Span(0, 1, "C")])
    assert r.sorted_spans() == [Span(0, 5, "A"), Span(0, 1, "C"), Span(2, 3, "B")]
