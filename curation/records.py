"""The one data model every corpus reader returns and every stage consumes.

A :class:`Record` is a sentence (or a document, or a QA context) with its text, optional tokens with character
offsets, and typed character spans (nested and overlapping spans are allowed). Relations, events, classification
labels and QA questions hang off the same record so one reader interface covers NER, RE, EE, TC and QA corpora.

Offsets are Python string indices into ``Record.text``: ``start`` inclusive, ``end`` exclusive.

    >>> r = Record(id="s1", text="BRCA1 causes breast cancer", spans=[Span(13, 26, "Disease")])
    >>> r.spans[0].surface(r.text)
    'breast cancer'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, order=True)
class Span:
    """A typed character span ``text[start:end]``."""

    start: int
    end: int
    label: str

    def surface(self, text: str) -> str:
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
        d["spans"] = [[s.start, s.end, s.label] for s in self.spans]
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
            spans=[Span(int(s), int(e), str(lab)) for s, e, lab in d.get("spans", [])],
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
    """Character span -> token span ``[start, end)``, or ``None`` when the span does not align with token edges."""
    starts = {o[0]: i for i, o in enumerate(offsets)}
    ends = {o[1]: i for i, o in enumerate(offsets)}
    if span.start in starts and span.end in ends and starts[span.start] <= ends[span.end]:
        return starts[span.start], ends[span.end] + 1
    return None
