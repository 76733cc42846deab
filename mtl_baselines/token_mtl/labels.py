"""The four label sets of the multi-granularity model, derived from a record's spans: pure functions, no I/O.

Word level (one label per token of ``Record.tokens``):

* **NER**: IOB2 tags (``O``, ``B-TYPE``, ``I-TYPE``).
* **mtCLS** (multi-token classification): 0 outside any entity, 1 the token of a single-token entity, 2 a token of a
  multi-token entity.

Sentence level:

* **bCLS**: 1 when the sentence holds any entity, else 0.
* **mCLS**: the mention count as a class, 0, 1, 2 or 3 (three or more).

Word labels go to the first subword of each word; the other subwords and the special tokens get ``IGNORE`` (-100,
which ``torch.nn.functional.cross_entropy`` skips).

    >>> tags = ["O", "B-PK", "O", "B-VALUE", "B-UNITS", "I-UNITS"]
    >>> multi_token_classes(tags), has_entity(3), mention_count_class(3)
    ([0, 1, 0, 1, 2, 2], 1, 3)
    >>> align_to_subwords([0, 1, 2], [None, 0, 1, 1, 2, None])
    [-100, 0, 1, -100, 2, -100]
"""

from __future__ import annotations

from collections.abc import Sequence

from curation.bio import bio_to_spans, spans_to_bio, word_tags  # noqa: F401 (word_tags: the baselines' name)
from curation.records import Span, token_span_to_char

IGNORE = -100
OUTSIDE, SINGLE_TOKEN, MULTI_TOKEN = 0, 1, 2
MTCLS_NAMES = ("outside", "single-token", "multi-token")
MCLS_NAMES = ("0", "1", "2", "3+")


def bio_labels(types: Sequence[str]) -> list[str]:
    """The NER label list: ``O`` then ``B-``/``I-`` for each type in sorted order (label id = list index).

    >>> bio_labels(["VALUE", "PK"])
    ['O', 'B-PK', 'I-PK', 'B-VALUE', 'I-VALUE']
    """
    return ["O"] + [f"{p}-{t}" for t in sorted(set(types)) for p in "BI"]


def label_types(labels: Sequence[str]) -> list[str]:
    """Each label's class for the per-class loss: ``"O"`` or the entity type.

    >>> label_types(['O', 'B-PK', 'I-PK'])
    ['O', 'PK', 'PK']
    """
    return [lab if lab == "O" else lab[2:] for lab in labels]


def multi_token_classes(tags: Sequence[str]) -> list[int]:
    """mtCLS class of each word: 0 outside, 1 single-token entity, 2 token of a multi-token entity.

    >>> multi_token_classes(["B-A", "B-A", "I-A", "O", "B-B"])
    [1, 2, 2, 0, 1]
    """
    out = [OUTSIDE] * len(tags)
    for start, end, _ in bio_to_spans(list(tags)):
        for i in range(start, end):
            out[i] = SINGLE_TOKEN if end - start == 1 else MULTI_TOKEN
    return out


def has_entity(n_mentions: int) -> int:
    """bCLS label: 1 when the sentence has at least one mention.

    >>> has_entity(0), has_entity(2)
    (0, 1)
    """
    return int(n_mentions > 0)


def mention_count_class(n_mentions: int) -> int:
    """mCLS label: the mention count, with 3 standing for three or more.

    >>> [mention_count_class(n) for n in (0, 1, 2, 3, 7)]
    [0, 1, 2, 3, 3]
    """
    return min(n_mentions, 3)


def align_to_subwords(word_labels: Sequence[int], word_ids: Sequence[int | None]) -> list[int]:
    """Word labels -> subword labels: the first subword of a word carries its label, all else is ``IGNORE``.

    ``word_ids`` is the fast tokenizer's ``word_ids()`` (``None`` for special tokens). Words cut off by truncation
    simply get no subword.

    >>> align_to_subwords([5, 6], [None, 0, 0, 1, None])
    [-100, 5, -100, 6, -100]
    """
    out, previous = [], None
    for w in word_ids:
        out.append(IGNORE if w is None or w == previous else word_labels[w])
        previous = w
    return out


def first_subwords(word_ids: Sequence[int | None], n_words: int) -> list[int]:
    """Position of each word's first subword, -1 for a word with no subword (truncated or tokenised to nothing).

    >>> first_subwords([None, 0, 0, 2, None], 3)
    [1, -1, 3]
    """
    out = [-1] * n_words
    for pos, w in enumerate(word_ids):
        if w is not None and out[w] < 0:
            out[w] = pos
    return out


def tags_to_spans(tags: Sequence[str], offsets: Sequence[tuple[int, int]]) -> list[Span]:
    """Predicted word tags -> character spans. A stray ``I-X`` (after ``O`` or another type) starts an entity, as in
    IOB1, so every predicted entity token ends up in some span.

    >>> tags_to_spans(["O", "I-PK", "I-PK", "B-VALUE"], [(0, 2), (3, 5), (6, 8), (9, 10)])
    [Span(start=3, end=8, label='PK'), Span(start=9, end=10, label='VALUE')]
    """
    return [token_span_to_char(list(offsets), a, b, lab) for a, b, lab in bio_to_spans(list(tags), scheme="iob1")]
