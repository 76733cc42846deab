"""BIO tags <-> token spans: pure functions, no I/O.

    >>> bio_to_spans(["B-Disease", "I-Disease", "O", "B-Gene"])
    [(0, 2, 'Disease'), (3, 4, 'Gene')]
    >>> spans_to_bio(4, [(0, 2, "Disease"), (3, 4, "Gene")])
    ['B-Disease', 'I-Disease', 'O', 'B-Gene']
"""

from __future__ import annotations

from curation.records import Record, char_span_to_tokens

TokenSpan = tuple[int, int, str]  # [start, end) token indices, label


class TagError(ValueError):
    """A tag sequence that the scheme cannot read; ``index`` is the offending token position."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def parse_tag(tag: str, index: int = 0) -> tuple[str, str]:
    """``"B-Disease"`` -> ``("B", "Disease")``; ``"O"`` -> ``("O", "")``."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[0] in "BI" and tag[1] == "-":
        return tag[0], tag[2:]
    raise TagError(index, f"tag {tag!r} is not O, B-TYPE or I-TYPE")


def bio_to_spans(tags: list[str], scheme: str = "iob2") -> list[TokenSpan]:
    """Read entities from BIO tags.

    ``scheme="iob2"``: every entity starts with ``B-``; an ``I-`` tag that does not continue an entity of its type
    raises :class:`TagError`. ``scheme="iob1"``: such an ``I-`` tag starts a new entity (CoNLL-2003 convention).
    """
    if scheme not in ("iob1", "iob2"):
        raise ValueError(f"unknown scheme {scheme!r} (iob1 or iob2)")
    spans: list[TokenSpan] = []
    start, label = None, ""
    for i, tag in enumerate(tags):
        prefix, typ = parse_tag(tag, i)
        if prefix == "I" and start is not None and typ == label:
            continue
        if start is not None:
            spans.append((start, i, label))
            start = None
        if prefix == "B":
            start, label = i, typ
        elif prefix == "I":
            if scheme == "iob2":
                raise TagError(i, f"tag {tag!r} continues no {typ} entity (give --scheme iob1 to accept it)")
            start, label = i, typ
    if start is not None:
        spans.append((start, len(tags), label))
    return spans


def spans_to_bio(n_tokens: int, spans: list[TokenSpan]) -> list[str]:
    """Write IOB2 tags for non-overlapping token spans; overlapping spans raise ``ValueError``."""
    tags = ["O"] * n_tokens
    for start, end, label in sorted(spans):
        if not 0 <= start < end <= n_tokens:
            raise ValueError(f"span {(start, end, label)} outside 0..{n_tokens}")
        if any(t != "O" for t in tags[start:end]):
            raise ValueError(f"span {(start, end, label)} overlaps another span; BIO cannot encode nesting")
        tags[start] = f"B-{label}"
        for i in range(start + 1, end):
            tags[i] = f"I-{label}"
    return tags


def word_tags(record: Record) -> list[str]:
    """IOB2 tags of a record's tokens from its character spans.

    Raises ``ValueError`` when the record has no tokens, a span does not start and end on token edges, or spans
    overlap (BIO cannot encode nesting).

    >>> from curation.records import Span
    >>> r = Record(id="s", text="CL was 5 L/h", tokens=["CL", "was", "5", "L/h"],
    ...            token_offsets=[(0, 2), (3, 6), (7, 8), (9, 12)], spans=[Span(0, 2, "PK"), Span(7, 12, "VALUE")])
    >>> word_tags(r)
    ['B-PK', 'O', 'B-VALUE', 'I-VALUE']
    """
    if record.tokens is None or record.token_offsets is None:
        raise ValueError("the record has no tokens; token classification needs a tokenised corpus")
    token_spans = []
    for s in record.sorted_spans():
        ts = char_span_to_tokens(record.token_offsets, s)
        if ts is None:
            raise ValueError(f"span [{s.start}, {s.end}) {s.label} {s.surface(record.text)!r} does not align with "
                             "token edges")
        token_spans.append((ts[0], ts[1], s.label))
    return spans_to_bio(len(record.tokens), token_spans)
