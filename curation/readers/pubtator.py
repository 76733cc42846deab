"""PubTator documents (BioRED): title/abstract lines, mention lines and relation lines, a blank line between docs.

::

    pmid|t|title
    pmid|a|abstract
    pmid<TAB>start<TAB>end<TAB>mention text<TAB>type<TAB>concept id(s)
    pmid<TAB>relation type<TAB>id1<TAB>id2<TAB>novelty

One record per document: ``text = title + " " + abstract`` (the offsets of PubTator count the abstract from
``len(title) + 1``), one span per mention line labelled by its entity type, and ``meta["span_ids"]`` parallel to
the spans with each mention's concept id field as written (``"3172,3651"`` when a mention names several concepts).

BioRED relations link *concepts* (ids), not mentions. Each relation becomes a :class:`Relation` between the first
mention (lowest offset) of each concept, a mention counting for every id of its comma-separated id list; the full
relation list ``{"type", "id1", "id2", "novelty"}`` is kept in ``meta["relations"]`` in file order, parallel to
``Record.relations``, so nothing of the concept-level annotation is lost. A relation whose two concepts have
the same first mention (a relation of a concept with itself, or two ids of one multi-id mention) is a self-loop,
``head == tail``; the real BioRED files have 10 (9 in Train, 1 in Dev).

    corpus = read_pubtator("../shared/data/re/BioRED/Dev.PubTator")
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from curation.io import InputError, read_text
from curation.records import Corpus, Record, Relation, Span

_TEXT_LINE = re.compile(r"^([^|\t]+)\|([ta])\|(.*)$")


def _concepts(id_field: str) -> list[str]:
    return [c.strip() for c in id_field.split(",") if c.strip() and c.strip() != "-"]


def first_mentions(spans: list[Span], span_ids: list[str]) -> dict[str, int]:
    """Concept id -> index of its first mention (lowest offset); a mention counts for every id of its comma-separated
    id field. Relations between concepts link these mentions (also for BioC files in PubTator's shape).

    >>> first_mentions([Span(9, 14, "Gene"), Span(0, 5, "Gene")], ["3172", "3172,3651"])
    {'3172': 1, '3651': 1}
    """
    first: dict[str, int] = {}
    for i in sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end)):
        for concept in _concepts(span_ids[i]):
            first.setdefault(concept, i)
    return first


def read_pubtator(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read a PubTator file into one record per document (see the module docstring for relations)."""
    path = Path(path)
    records: list[Record] = []
    seen: set[str] = set()
    doc: dict | None = None

    def flush() -> None:
        nonlocal doc
        if doc is None:
            return
        text, pmid = doc["text"], doc["pmid"]
        spans, span_ids = [], []
        for n, start, end, surface, label, ids in doc["mentions"]:
            if not 0 <= start < end <= len(text):
                raise InputError(path, f"mention [{start}, {end}) falls outside the document (length {len(text)})",
                                 line=n, record=pmid)
            if text[start:end] != surface:
                raise InputError(path, f"mention text {surface!r} does not match the text at [{start}, {end}): "
                                       f"{text[start:end]!r}", line=n, record=pmid)
            spans.append(Span(start, end, label))
            span_ids.append(ids)
        first = first_mentions(spans, span_ids)
        relations, rel_meta = [], []
        for n, rtype, id1, id2, novelty in doc["relations"]:
            for concept in (id1, id2):
                if concept not in first:
                    raise InputError(path, f"relation {rtype} names concept {concept!r}, which no mention of the "
                                           "document has", line=n, record=pmid)
            relations.append(Relation(first[id1], first[id2], rtype))
            rel_meta.append({"type": rtype, "id1": id1, "id2": id2, "novelty": novelty})
        records.append(Record(id=pmid, text=text, spans=spans, doc_id=pmid, relations=relations,
                              meta={"span_ids": span_ids, "relations": rel_meta, "title_length": doc["title_len"],
                                    "line": doc["line"]}))
        doc = None

    for n, line in enumerate(read_text(path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            flush()
            continue
        m = _TEXT_LINE.match(line)
        if m:
            pmid, kind, body = m.groups()
            if kind == "t":
                flush()
                if pmid in seen:
                    raise InputError(path, f"duplicate document {pmid!r}", line=n)
                seen.add(pmid)
                doc = {"pmid": pmid, "text": body, "title_len": len(body), "mentions": [], "relations": [],
                       "line": n, "has_abstract": False}
            elif doc is None or doc["pmid"] != pmid or doc["has_abstract"] or doc["mentions"] or doc["relations"]:
                raise InputError(path, f"abstract line of {pmid!r} does not follow that document's title line",
                                 line=n)
            else:
                doc["text"] += " " + body
                doc["has_abstract"] = True
            continue
        parts = line.split("\t")
        if doc is None:
            raise InputError(path, f"annotation line before any 'pmid|t|title' line: {line[:60]!r}", line=n)
        if parts[0] != doc["pmid"]:
            raise InputError(path, f"annotation of {parts[0]!r} inside document {doc['pmid']!r}", line=n)
        if len(parts) in (5, 6) and parts[1].isdigit() and parts[2].isdigit():
            ids = parts[5] if len(parts) == 6 else ""
            doc["mentions"].append((n, int(parts[1]), int(parts[2]), parts[3], parts[4], ids))
        elif len(parts) in (4, 5) and not parts[1].isdigit():
            doc["relations"].append((n, parts[1], parts[2], parts[3], parts[4] if len(parts) == 5 else ""))
        else:
            raise InputError(path, "expected a mention line 'pmid<TAB>start<TAB>end<TAB>text<TAB>type<TAB>id' or a "
                                   f"relation line 'pmid<TAB>type<TAB>id1<TAB>id2<TAB>novelty', got {line[:80]!r}",
                             line=n)
    flush()
    if not records:
        raise InputError(path, "no documents found")
    return Corpus(records=records, path=str(path), format="pubtator", dataset=dataset or path.parent.name)
