"""The one data model every corpus reader returns and every stage consumes.

A :class:`Record` is a sentence (or a document, or a QA context) with its text, optional tokens with character
offsets, and typed character spans (nested and overlapping spans are allowed). Relations, events, classification
labels and QA questions hang off the same record so one reader interface covers NER, RE, EE, TC and QA corpora.

Offsets are Python string indices into ``Record.text`` (Unicode code points): ``start`` inclusive, ``end``
exclusive.

A *discontinuous* span (brat ``T1 Drug 0 4;15 24``, a BioC annotation with several locations, a BigBio entity with
several offsets) is one :class:`Span` whose ``fragments`` are its pieces in text order; ``start`` is the first
fragment's start and ``end`` the last one's end. Its surface is the fragments joined by one space (what brat writes
in the ``.ann`` line), in files it is ``[start, end, label, [[a, b], [c, d]]]`` (a continuous span stays
``[start, end, label]``), and the scorer matches it by its fragments (``curation.scoring``).

    >>> r = Record(id="s1", text="BRCA1 causes breast cancer", spans=[Span(13, 26, "Disease")])
    >>> r.spans[0].surface(r.text)
    'breast cancer'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Span:
    """A typed character span ``text[start:end]``, or a discontinuous one made of ``fragments``.

    >>> s = Span.from_fragments([(0, 4), (18, 27)], "Drug")
    >>> s, s.surface("loop and thiazide diuretics")
    (Span(start=0, end=27, label='Drug', fragments=((0, 4), (18, 27))), 'loop diuretics')
    >>> Span.from_list([0, 4, "Drug"]) == Span(0, 4, "Drug"), s.to_list()
    (True, [0, 27, 'Drug', [[0, 4], [18, 27]]])
    """

    start: int
    end: int
    label: str
    fragments: tuple[tuple[int, int], ...] = ()  # two or more, in text order; () for a continuous span

    def __post_init__(self):
        if self.fragments:
            f = self.fragments
            ok = (len(f) >= 2 and f[0][0] == self.start and f[-1][1] == self.end
                  and all(a < b for a, b in f) and all(f[i][1] <= f[i + 1][0] for i in range(len(f) - 1)))
            if not ok:
                raise ValueError(f"fragments {[list(x) for x in f]} of span [{self.start}, {self.end}) must be two "
                                 "or more non-empty, non-overlapping pieces in text order from start to end")

    def __repr__(self) -> str:
        frags = f", fragments={self.fragments!r}" if self.fragments else ""
        return f"Span(start={self.start!r}, end={self.end!r}, label={self.label!r}{frags})"

    @classmethod
    def from_fragments(cls, fragments, label: str) -> Span:
        """A span over ``[(start, end), ...]``: continuous for one piece, discontinuous for several."""
        frags = tuple(sorted((int(a), int(b)) for a, b in fragments))
        if len(frags) == 1:
            return cls(frags[0][0], frags[0][1], label)
        return cls(frags[0][0], frags[-1][1], label, frags)

    @classmethod
    def from_list(cls, item) -> Span:
        """``[start, end, label]`` or ``[start, end, label, [[a, b], ...]]`` (a discontinuous span) -> Span;
        ``ValueError`` or ``TypeError`` for anything else."""
        if len(item) == 3:
            return cls(int(item[0]), int(item[1]), str(item[2]))
        if len(item) == 4:
            span = cls.from_fragments(item[3], str(item[2]))
            if (span.start, span.end) != (int(item[0]), int(item[1])) or not span.fragments:
                raise ValueError(f"span {list(item)}: start and end must be those of its two or more fragments")
            return span
        raise ValueError(f"span {item!r} is not [start, end, label] or [start, end, label, fragments]")

    def to_list(self) -> list:
        if self.fragments:
            return [self.start, self.end, self.label, [list(f) for f in self.fragments]]
        return [self.start, self.end, self.label]

    @property
    def pieces(self) -> tuple[tuple[int, int], ...]:
        """The character ranges the span covers: its fragments, or ``((start, end),)``."""
        return self.fragments or ((self.start, self.end),)

    def overlaps(self, other: Span) -> bool:
        """Whether the two spans share a character (a gap between fragments is not part of a span)."""
        if not (self.start < other.end and other.start < self.end):
            return False
        return any(a < d and c < b for a, b in self.pieces for c, d in other.pieces)

    def surface(self, text: str) -> str:
        if self.fragments:
            return " ".join(text[a:b] for a, b in self.fragments)
        return text[self.start : self.end]


@dataclass(frozen=True)
class Relation:
    """A typed relation between two spans of the same record (indices into ``Record.spans``)."""

    head: int
    tail: int
    label: str


@dataclass(frozen=True)
class Event:
    """An event: a type, a trigger span and ``(role, span index)`` arguments."""

    type: str
    trigger: int | None
    arguments: tuple[tuple[str, int], ...] = ()


@dataclass
class Record:
    """One unit of a corpus: a sentence for NER/RE/EE/TC, a context + question for QA."""

    id: str
    text: str
    spans: list[Span] = field(default_factory=list)
    tokens: list[str] | None = None
    token_offsets: list[tuple[int, int]] | None = None
    doc_id: str | None = None
    relations: list[Relation] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    question: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def sorted_spans(self) -> list[Span]:
        """Spans in order of appearance: by start, longer (outer) span first, then label."""
        return sorted(self.spans, key=lambda s: (s.start, -s.end, s.label))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["spans"] = [s.to_list() for s in self.spans]
        d["relations"] = [[r.head, r.tail, r.label] for r in self.relations]
        d["events"] = [{"type": e.type, "trigger": e.trigger, "arguments": [list(a) for a in e.arguments]}
                       for e in self.events]
        if self.token_offsets is not None:
            d["token_offsets"] = [list(o) for o in self.token_offsets]
        return {k: v for k, v in d.items() if v not in (None, [], {})} | {"id": self.id, "text": self.text}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Record:
        return cls(
            id=str(d["id"]),
            text=d["text"],
            spans=[Span.from_list(s) for s in d.get("spans", [])],
            tokens=d.get("tokens"),
            token_offsets=[(int(a), int(b)) for a, b in d["token_offsets"]] if d.get("token_offsets") else None,
            doc_id=d.get("doc_id"),
            relations=[Relation(int(h), int(t), str(lab)) for h, t, lab in d.get("relations", [])],
            events=[Event(e["type"], e.get("trigger"), tuple((str(r), int(i)) for r, i in e.get("arguments", [])))
                    for e in d.get("events", [])],
            labels=list(d.get("labels", [])),
            question=d.get("question"),
            meta=dict(d.get("meta", {})),
        )


@dataclass
class Corpus:
    """The records of one file plus what a writer needs to reproduce it (format, document markers)."""

    records: list[Record]
    path: str = ""
    format: str = ""
    dataset: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)

    @property
    def labels(self) -> list[str]:
        """The sorted set of span labels that occur in the corpus."""
        return sorted({s.label for r in self.records for s in r.spans})


def join_tokens(tokens: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join tokens with single spaces; return the text and each token's character offsets.

    >>> join_tokens(["IL-2", "gene"])
    ('IL-2 gene', [(0, 4), (5, 9)])
    """
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return " ".join(tokens), offsets


def token_span_to_char(offsets: list[tuple[int, int]], start: int, end: int, label: str) -> Span:
    """Token span ``[start, end)`` -> character span over the same tokens."""
    return Span(offsets[start][0], offsets[end - 1][1], label)


def char_span_to_tokens(offsets: list[tuple[int, int]], span: Span) -> tuple[int, int] | None:
    """Character span -> token span ``[start, end)``, or ``None`` when the span does not align with token edges (or
    is discontinuous)."""
    if span.fragments:
        return None
    starts = {o[0]: i for i, o in enumerate(offsets)}
    ends = {o[1]: i for i, o in enumerate(offsets)}
    if span.start in starts and span.end in ends and starts[span.start] <= ends[span.end]:
        return starts[span.start], ends[span.end] + 1
    return None
