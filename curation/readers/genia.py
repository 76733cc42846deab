"""GENIA nested NER as JSON lines (Yan et al. preprocessing): one sentence per line.

Each line is ``{"tokens": [...], "doc_id": ..., "sent_id": ..., "entity_mentions": [{"start", "end", "entity_type",
"text"}]}`` with token offsets (``end`` exclusive). The record text is the tokens joined by single spaces, so a
mention's ``text`` must equal its tokens joined the same way; nested and overlapping mentions are all kept.
Eight tokens in the real dev/test files contain a space themselves (``"HIV- 1"``); their offsets are still exact.

    corpus = read_genia("../shared/data/nested_ner/GENIA/dev.jsonlines")
"""

from __future__ import annotations

import os
from pathlib import Path

from curation.io import InputError, read_jsonl
from curation.records import Corpus, Record, join_tokens, token_span_to_char


def read_genia(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read a GENIA ``.jsonlines`` file; record id = ``sent_id``, mentions become character spans."""
    path = Path(path)
    records: list[Record] = []
    seen: set[str] = set()
    for n, obj in read_jsonl(path):
        missing = [k for k in ("tokens", "sent_id", "entity_mentions") if k not in obj]
        if missing:
            raise InputError(path, f"GENIA line lacks {', '.join(missing)}", line=n)
        rid = str(obj["sent_id"])
        tokens = obj["tokens"]
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise InputError(path, "'tokens' must be a non-empty list of non-empty strings", line=n, record=rid)
        if rid in seen:
            raise InputError(path, f"duplicate sent_id {rid!r}", line=n)
        seen.add(rid)
        text, offsets = join_tokens(tokens)
        spans = []
        for m in obj["entity_mentions"]:
            try:
                start, end, label, surface = int(m["start"]), int(m["end"]), str(m["entity_type"]), m["text"]
            except (KeyError, TypeError, ValueError):
                raise InputError(path, f"mention {m!r} needs integer start/end, entity_type and text",
                                 line=n, record=rid) from None
            if not 0 <= start < end <= len(tokens):
                raise InputError(path, f"mention tokens [{start}, {end}) fall outside the {len(tokens)} tokens",
                                 line=n, record=rid)
            joined = " ".join(tokens[start:end])
            if joined != surface:
                raise InputError(path, f"mention text {surface!r} does not match its tokens {joined!r}",
                                 line=n, record=rid)
            spans.append(token_span_to_char(offsets, start, end, label))
        records.append(Record(id=rid, text=text, spans=spans, tokens=list(tokens), token_offsets=offsets,
                              doc_id=str(obj["doc_id"]) if obj.get("doc_id") is not None else None,
                              meta={"line": n}))
    if not records:
        raise InputError(path, "no sentences found")
    return Corpus(records=records, path=str(path), format="genia", dataset=dataset or path.parent.name)
