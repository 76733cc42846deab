"""IOB2 TSV (``token<TAB>tag``, blank line between sentences, optional ``-DOCSTART-`` lines), read and written.

Sentence text is the tokens joined by single spaces, so writing the records back reproduces the file byte for byte
(``tests/curation/test_iob.py`` checks the five flat corpora of ``../shared/data``).
"""

from __future__ import annotations

import os
from pathlib import Path

from curation.bio import TagError, bio_to_spans, spans_to_bio
from curation.io import InputError, atomic_write, read_text
from curation.records import Corpus, Record, char_span_to_tokens, join_tokens, token_span_to_char

DOCSTART = "-DOCSTART-"


def read_iob(path: str | os.PathLike, dataset: str = "", scheme: str = "iob2") -> Corpus:
    """Read an IOB2 TSV file into records with token offsets and character spans."""
    path = Path(path)
    text = read_text(path)
    records: list[Record] = []
    has_docstart = False
    doc = 0
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    stem = f"{dataset or path.parent.name}/{path.stem}"

    def flush() -> None:
        if not tokens:
            return
        try:
            token_spans = bio_to_spans(tags, scheme=scheme)
        except TagError as err:
            raise InputError(path, str(err), line=first_line + err.index) from None
        sent, offsets = join_tokens(tokens)
        doc_id = f"{stem}/doc{doc}" if has_docstart else None
        records.append(Record(
            id=f"{stem}/{len(records)}",
            text=sent,
            tokens=list(tokens),
            token_offsets=offsets,
            spans=[token_span_to_char(offsets, s, e, lab) for s, e, lab in token_spans],
            doc_id=doc_id,
            meta={"line": first_line},
        ))
        tokens.clear()
        tags.clear()

    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            flush()
            continue
        if line.split("\t")[0] == DOCSTART or line.split(" ")[0] == DOCSTART:
            flush()
            has_docstart = True
            doc += 1
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise InputError(path, f"expected 'token<TAB>tag', got {line[:60]!r}", line=n)
        if not tokens:
            first_line = n
        tokens.append(parts[0])
        tags.append(parts[1])
    flush()
    if not records:
        raise InputError(path, "no sentences found")
    return Corpus(records=records, path=str(path), format="iob", dataset=dataset or path.parent.name,
                  meta={"docstart": has_docstart})


def record_tags(record: Record) -> list[str]:
    """IOB2 tags of a record's (flat) spans over its tokens."""
    if record.tokens is None or record.token_offsets is None:
        raise ValueError(f"record {record.id} has no tokens; IOB needs a tokenised record")
    token_spans = []
    for span in record.spans:
        ts = char_span_to_tokens(record.token_offsets, span)
        if ts is None:
            why = "is discontinuous; IOB cannot encode it" if span.fragments else "does not align with tokens"
            raise ValueError(f"record {record.id}: span {span} {why}")
        token_spans.append((*ts, span.label))
    return spans_to_bio(len(record.tokens), token_spans)


def format_iob(records: list[Record], docstart: bool = False) -> str:
    """IOB2 TSV text for records; ``docstart`` writes ``-DOCSTART-\\tO`` before each new ``doc_id``."""
    out: list[str] = []
    last_doc = object()
    for r in records:
        if docstart and r.doc_id != last_doc:
            out.append(f"{DOCSTART}\tO\n\n")
            last_doc = r.doc_id
        out.extend(f"{tok}\t{tag}\n" for tok, tag in zip(r.tokens, record_tags(r)))
        out.append("\n")
    return "".join(out)


def write_iob(path: str | os.PathLike, records: list[Record], docstart: bool = False) -> None:
    text = format_iob(records, docstart=docstart)
    with atomic_write(path) as f:
        f.write(text)
