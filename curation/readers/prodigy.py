"""Prodigy JSON lines with spans and relations (PKPDAI PK-relations): one sentence per line.

A line is ``{"text", "tokens": [{"text", "start", "end", "ws", ...}], "spans": [{"start", "end", "token_start",
"token_end", "label"}], "relations": [{"head_span", "child_span", "label"}], "metadata": {"pmid", "pmc", ...},
"sentence_hash", "answer"}``. Span offsets are characters (``end`` exclusive); Prodigy's ``token_end`` is
inclusive and is not needed. Tokens and their offsets come from the token list. Each relation's ``head_span``
and ``child_span`` are matched to the record's spans by ``(start, end, label)``; the relation is
``Relation(head, child, label)``. Identical spans are stored once. ``doc_id`` is the metadata ``pmid`` (else
``pmc``); the record id is ``{dataset}/{file stem}/{line index}`` and ``meta`` keeps ``sentence_hash``,
``answer`` and the metadata.

    corpus = read_prodigy("../shared/data/ner/PK-relations/dev.jsonl")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from curation.io import InputError, read_jsonl
from curation.records import Corpus, Record, Relation, Span


def _span(obj: Any, text: str, fail) -> Span:
    try:
        span = Span(int(obj["start"]), int(obj["end"]), str(obj["label"]))
    except (KeyError, TypeError, ValueError):
        raise fail(f"span {str(obj)[:80]} needs integer 'start', 'end' and a 'label'") from None
    if not 0 <= span.start < span.end <= len(text):
        raise fail(f"span [{span.start}, {span.end}) {span.label} falls outside the text (length {len(text)})")
    return span


def read_prodigy(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read Prodigy span/relation JSON lines into records with tokens, spans and relations."""
    path = Path(path)
    name = dataset or path.parent.name
    records: list[Record] = []
    for n, obj in read_jsonl(path):
        rid = f"{name}/{path.stem}/{len(records)}"

        def fail(message: str, n=n, rid=rid) -> InputError:
            return InputError(path, message, line=n, record=rid)

        text = obj.get("text")
        if not isinstance(text, str) or not text:
            raise fail("'text' must be a non-empty string")
        tokens, offsets = None, None
        if obj.get("tokens"):
            tokens, offsets = [], []
            for tok in obj["tokens"]:
                try:
                    t, a, b = str(tok["text"]), int(tok["start"]), int(tok["end"])
                except (KeyError, TypeError, ValueError):
                    raise fail(f"token {str(tok)[:80]} needs 'text', 'start' and 'end'") from None
                if text[a:b] != t or not 0 <= a < b <= len(text):
                    raise fail(f"token {t!r} does not match the text at [{a}, {b}): {text[a:b]!r}")
                tokens.append(t)
                offsets.append((a, b))
        spans: list[Span] = []
        index: dict[Span, int] = {}
        for s in obj.get("spans") or []:
            span = _span(s, text, fail)
            if span not in index:
                index[span] = len(spans)
                spans.append(span)
        relations = []
        for r in obj.get("relations") or []:
            if not isinstance(r, dict) or "label" not in r:
                raise fail(f"relation {str(r)[:80]} needs 'head_span', 'child_span' and 'label'")
            ends = []
            for key in ("head_span", "child_span"):
                span = _span(r.get(key), text, fail)
                if span not in index:
                    raise fail(f"relation {r['label']}: {key} [{span.start}, {span.end}) {span.label} is not one of "
                               "the line's spans")
                ends.append(index[span])
            relations.append(Relation(ends[0], ends[1], str(r["label"])))
        metadata = obj.get("metadata") or {}
        doc = metadata.get("pmid") or metadata.get("pmc")
        meta = {"metadata": metadata, "line": n}
        for key in ("sentence_hash", "answer"):
            if key in obj:
                meta[key] = obj[key]
        records.append(Record(id=rid, text=text, spans=spans, tokens=tokens, token_offsets=offsets,
                              doc_id=str(doc) if doc is not None else None, relations=relations, meta=meta))
    if not records:
        raise InputError(path, "no lines found")
    return Corpus(records=records, path=str(path), format="prodigy", dataset=name)
