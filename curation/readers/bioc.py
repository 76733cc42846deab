"""BioC XML and BioC JSON (read with the ``bioc`` package): one record per BioC document; and the BioC XML writer.

    corpus = read_bioc("corpora/CDR.BioC.xml")       # also a BioC JSON collection, or JSON lines of documents
    write_bioc(corpus.records, "runs/review/cdr.xml")

A record's ``id`` and ``doc_id`` are the document's id, its ``text`` the passages placed at their offsets (a passage
made of sentences: the sentences at theirs), the gaps between them filled with spaces, so the offsets of the file
are offsets into ``text``: PubTator's title and abstract at ``len(title) + 1`` give ``title + " " + abstract``, as
the PubTator reader does.

* An annotation (in a passage, a sentence or the document) is a :class:`Span` labelled by its ``type`` infon; several
  locations give one discontinuous span (``Span.fragments``). Every location must lie inside its passage (sentence,
  document), and the annotation's text, when given, must be the span's surface (the fragments joined by one space;
  for several locations the fragments joined without a space, or all the text they cover, are accepted too).
* A relation with two nodes naming annotations is a :class:`Relation` from the first to the second, labelled by its
  ``type`` infon. A relation without nodes whose infons name two concepts (``entity1``, ``entity2``: how BioRED and
  PubTator ship relations) links the first mention of each concept, as in the PubTator reader. A relation with a
  node whose role is ``trigger`` is an :class:`Event` (the trigger's span, the other nodes as ``(role, span)``
  arguments; a node naming another event points at its trigger). Other relations (one node, three or more) are kept
  as they are in ``meta["other_relations"]``.
* ``meta``, keys present only when not empty: ``annotation_ids`` parallel to ``spans``; ``span_ids``, the
  ``identifier`` infon of each annotation (``""`` where none), and ``relations``, parallel to ``relations``
  (``{"type", "id1", "id2", "novelty"}`` for a concept relation, ``{"type"}`` for others), exactly as the PubTator
  reader has them; ``title_length`` when the first passage is a ``title`` at offset 0; ``relation_ids``,
  ``relation_args`` (``[[role, refid], [role, refid]]``, ``[]`` for a concept relation), ``event_ids`` and
  ``event_args`` (``[[role, refid], ...]``), as the brat reader has them; the remaining infons: ``infons`` (the
  document's), ``passages`` (``[offset, length, infons]``), ``span_infons`` and ``relation_infons`` (parallel lists
  without ``type``, ``identifier``, ``entity1``, ``entity2``, ``novel``), ``event_infons``.

**Offsets are Unicode code points.** Some BioC files count UTF-8 bytes instead (the C++ BioC library does). A
document whose annotations do not match their text when counted in code points, but all match when counted in UTF-8
bytes, is read in bytes and converted to code points; its id is listed in ``Corpus.meta["byte_offsets"]``. Files
whose annotations carry no text cannot be told apart and are read as code points. The writer always writes code
points.

Bad input raises :class:`InputError` naming the file and the line of the offending element (for BioC JSON, the line
of its ``"id"``): a location outside its passage, text that does not match, a node naming no annotation, an id used
twice, a file the ``bioc`` package cannot parse.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from pathlib import Path
from typing import Any

from curation.io import InputError, atomic_write
from curation.readers.pubtator import first_mentions
from curation.records import Corpus, Event, Record, Relation, Span

_PUBTATOR_KEYS = {"entity1": "id1", "entity2": "id2", "novel": "novelty"}


class _Problem(Exception):
    """A problem in one document; ``where`` locates the element for the line number: ``(tag, id, location index)``,
    and for an id used twice ``(tag, id, None, 2)``, its second element."""

    def __init__(self, message: str, where: tuple = ("document", None, None)):
        super().__init__(message)
        self.message, self.where = message, where


def _load(path: Path) -> tuple[str, list]:
    """``("xml" | "json" | "jsonl", documents)`` parsed by the ``bioc`` package."""
    import bioc
    from bioc import biocjson

    with open(path, "rb") as f:
        head = f.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    if head.startswith("<"):
        from lxml import etree

        try:
            with open(path, "rb") as f:
                return "xml", bioc.biocxml.load(f).documents
        except etree.XMLSyntaxError as err:
            raise InputError(path, f"not well-formed XML: {err.msg}", line=err.lineno) from None
        except (KeyError, ValueError, TypeError, AttributeError) as err:
            line, what = _xml_structure_problem(path)
            raise InputError(path, what or f"not BioC XML ({type(err).__name__}: {err})", line=line) from None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(path, f"not UTF-8 (byte at offset {err.start})") from None
    try:
        obj = json.loads(text)
        if isinstance(obj, dict) and "documents" in obj:
            return "json", biocjson.loads(text).documents
        if isinstance(obj, dict) and "passages" in obj:  # one document alone
            return "json", [biocjson.fromJSON(obj, "BioCDocument")]
        raise InputError(path, "not a BioC JSON collection (an object with 'documents') or document")
    except json.JSONDecodeError as err:
        if err.msg != "Extra data":  # JSON lines: one document per line
            raise InputError(path, f"invalid JSON: {err.msg} (column {err.colno})", line=err.lineno) from None
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(path, f"not a BioC JSON collection: lacks or mistypes {err}") from None
    docs = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            docs.append(biocjson.fromJSON(json.loads(line), "BioCDocument"))
        except json.JSONDecodeError as err:
            raise InputError(path, f"invalid JSON: {err.msg} (column {err.colno})", line=n) from None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise InputError(path, f"not a BioC JSON document: lacks or mistypes {err}", line=n) from None
    return "jsonl", docs


def _xml_structure_problem(path: Path) -> tuple[int | None, str | None]:
    """The first element that the ``bioc`` decoder cannot read (a missing attribute, an offset that is no number)."""
    from lxml import etree

    required = {"annotation": ("id",), "location": ("offset", "length"), "node": ("refid", "role"), "infon": ("key",)}
    for el in etree.parse(str(path)).getroot().iter():
        for attr in required.get(el.tag, ()):
            if el.get(attr) is None:
                return el.sourceline, f"<{el.tag}> lacks the {attr!r} attribute"
        for attr in ("offset", "length") if el.tag == "location" else ():
            if not el.get(attr, "").strip().isdigit():
                return el.sourceline, f"<location> {attr} {el.get(attr)!r} is not a number"
        if el.tag in ("passage", "sentence") and not (el.findtext("offset") or "").strip().isdigit():
            return el.sourceline, f"<{el.tag}> has no <offset> number"
    return None, None


def _line(path: Path, kind: str, doc_index: int, doc_id: str, where: tuple) -> int | None:
    """The line of an element of one document, for an error message."""
    tag, eid, index, nth = (*where, 1) if len(where) == 3 else where
    if kind == "jsonl":
        return _jsonl_line(path, doc_index)
    if kind == "json":
        text = path.read_text(encoding="utf-8")
        doc = re.search(r'"id"\s*:\s*' + re.escape(json.dumps(doc_id)), text)
        pos = doc.start() if doc else 0
        if eid is not None:
            found = list(re.compile(r'"id"\s*:\s*' + re.escape(json.dumps(eid))).finditer(text, pos))[:nth]
            pos = found[-1].start() if found else pos
        return text.count("\n", 0, pos) + 1
    from lxml import etree

    docs = etree.parse(str(path)).getroot().findall("document")
    if doc_index >= len(docs):
        return None
    doc = docs[doc_index]
    if tag == "passage" and index is not None:
        passages = doc.findall("passage")
        return passages[index].sourceline if index < len(passages) else doc.sourceline
    if eid is not None:
        found = [el for el in doc.iter(tag) if el.get("id") == eid][:nth]
        if found:
            locations = found[-1].findall("location")
            if index is not None and index < len(locations):
                return locations[index].sourceline
            return found[-1].sourceline
    return doc.sourceline


def _jsonl_line(path: Path, doc_index: int) -> int:
    k = -1
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            k += bool(line.strip())
            if k == doc_index:
                return n
    return 1


def _pieces(doc) -> list[tuple[int, str, int, Any]]:
    """``(offset, text, passage index, owner)`` for every passage with text and every sentence, in file order."""
    out = []
    for p, passage in enumerate(doc.passages):
        if passage.text or not passage.sentences:
            out.append((passage.offset, passage.text or "", p, passage))
        for sentence in passage.sentences:
            out.append((sentence.offset, sentence.text or "", p, sentence))
    return out


def _assemble(doc, in_bytes: bool) -> tuple[str, Any, dict[int, tuple[int, int]]]:
    """The document text, a map from file offsets to code points (``None`` off a character boundary), and each
    passage's code point range."""
    pieces = _pieces(doc)
    if in_bytes:
        buf = b""
        for offset, text, p, _ in pieces:
            data = text.encode("utf-8")
            if offset < len(buf):
                raise _Problem(f"passage at byte {offset} overlaps the text before it", ("passage", None, p))
            buf += b" " * (offset - len(buf)) + data
        text = buf.decode("utf-8")
        cp_of = {}
        pos = 0
        for i, ch in enumerate(text):
            cp_of[pos] = i
            pos += len(ch.encode("utf-8"))
        cp_of[pos] = len(text)
        to_cp = cp_of.get
    else:
        text = ""
        for offset, piece, p, _ in pieces:
            if offset < len(text):
                raise _Problem(f"passage at offset {offset} overlaps the text before it (which ends at {len(text)})",
                               ("passage", None, p))
            text += " " * (offset - len(text)) + piece
        to_cp = lambda o: o if 0 <= o <= len(text) else None  # noqa: E731
    ranges: dict[int, tuple[int, int]] = {}
    for offset, piece, p, _ in pieces:
        start = to_cp(offset)
        end = to_cp(offset + (len(piece.encode("utf-8")) if in_bytes else len(piece)))
        lo, hi = ranges.get(p, (start, end))
        ranges[p] = (min(lo, start), max(hi, end))
    return text, to_cp, ranges


def _span(ann, text: str, to_cp, lo: int, hi: int, container: str, in_bytes: bool) -> Span:
    label = ann.infons.get("type")
    if not label:
        raise _Problem(f"annotation {ann.id!r} has no 'type' infon", ("annotation", ann.id, None))
    if not ann.locations:
        raise _Problem(f"annotation {ann.id!r} has no location", ("annotation", ann.id, None))
    frags = []
    for k, loc in enumerate(ann.locations):
        a, b = to_cp(int(loc.offset)), to_cp(int(loc.offset) + int(loc.length))
        unit = "bytes" if in_bytes else ""
        if a is None or b is None or not lo <= a < b <= hi:
            raise _Problem(f"location [{loc.offset}, {int(loc.offset) + int(loc.length)}){unit and ' (bytes)'} of "
                           f"annotation {ann.id!r} is empty or past its {container} [{lo}, {hi})",
                           ("annotation", ann.id, k))
        frags.append((a, b))
    frags.sort()
    if any(frags[i][1] > frags[i + 1][0] for i in range(len(frags) - 1)):
        raise _Problem(f"locations of annotation {ann.id!r} overlap", ("annotation", ann.id, None))
    span = Span.from_fragments(frags, label)
    if ann.text is not None and ann.text != "":
        accepted = {span.surface(text), "".join(text[a:b] for a, b in span.pieces), text[span.start:span.end]}
        if ann.text not in accepted:
            raise _Problem(f"annotation {ann.id!r} text {ann.text!r} does not match the text at its location"
                           f"{'s' if len(frags) > 1 else ''}: {span.surface(text)!r}", ("annotation", ann.id, None))
    return span


def _document(doc, in_bytes: bool) -> Record:
    text, to_cp, ranges = _assemble(doc, in_bytes)
    spans: list[Span] = []
    ann_ids: list[str] = []
    infons: list[dict] = []
    index: dict[str, int] = {}
    containers = []
    for p, passage in enumerate(doc.passages):
        lo, hi = ranges.get(p, (to_cp(passage.offset), to_cp(passage.offset)))
        containers.append((passage.annotations, lo, hi, "passage"))
        for sentence in passage.sentences:
            s_lo = to_cp(sentence.offset)
            s_hi = to_cp(sentence.offset + (len((sentence.text or "").encode()) if in_bytes else
                                            len(sentence.text or "")))
            containers.append((sentence.annotations, s_lo, s_hi, "sentence"))
    containers.append((doc.annotations, 0, len(text), "document"))
    for anns, lo, hi, container in containers:
        for ann in anns:
            if ann.id in index:
                raise _Problem(f"annotation id {ann.id!r} is used twice", ("annotation", ann.id, None, 2))
            index[ann.id] = len(spans)
            spans.append(_span(ann, text, to_cp, lo, hi, container, in_bytes))
            ann_ids.append(ann.id)
            infons.append(dict(ann.infons))
    span_ids = [str(i.get("identifier") or "") for i in infons]
    relations_raw = [rel for passage in doc.passages for rel in passage.relations]
    relations_raw += [rel for passage in doc.passages for s in passage.sentences for rel in s.relations]
    relations_raw += list(doc.relations)
    seen_rel: set[str] = set()
    for rel in relations_raw:
        if rel.id and (rel.id in seen_rel or rel.id in index):
            raise _Problem(f"relation id {rel.id!r} is used twice",
                           ("relation", rel.id, None, 2 if rel.id in seen_rel else 1))
        seen_rel.add(rel.id)
    event_rels = [rel for rel in relations_raw if sum(n.role.lower() == "trigger" for n in rel.nodes) == 1]
    is_event = {id(rel) for rel in event_rels}
    trigger_of: dict[str, int] = {}
    for rel in event_rels:
        node = next(n for n in rel.nodes if n.role.lower() == "trigger")
        if node.refid not in index:
            raise _Problem(f"event {rel.id!r} names trigger {node.refid!r}, which no annotation of the document has",
                           ("relation", rel.id, None))
        trigger_of[rel.id] = index[node.refid]

    def span_of(refid: str, rel) -> int:
        if refid in index:
            return index[refid]
        if refid in trigger_of:
            return trigger_of[refid]
        raise _Problem(f"relation {rel.id!r} names {refid!r}, which no annotation of the document has",
                       ("relation", rel.id, None))

    first = first_mentions(spans, span_ids)
    relations, rel_meta, rel_ids, rel_args, rel_infons, others = [], [], [], [], [], []
    events, event_ids, event_args, event_infons = [], [], [], []
    for rel in relations_raw:
        rtype = rel.infons.get("type")
        if id(rel) in is_event:
            if not rtype:
                raise _Problem(f"event {rel.id!r} has no 'type' infon", ("relation", rel.id, None))
            args = [[n.role, n.refid] for n in rel.nodes if n.role.lower() != "trigger"]
            events.append(Event(rtype, trigger_of[rel.id], tuple((r, span_of(i, rel)) for r, i in args)))
            event_ids.append(rel.id)
            event_args.append(args)
            event_infons.append({k: v for k, v in rel.infons.items() if k != "type"})
            continue
        concept = not rel.nodes and "entity1" in rel.infons and "entity2" in rel.infons
        if not concept and len(rel.nodes) != 2:
            others.append({"id": rel.id, "infons": dict(rel.infons), "nodes": [[n.role, n.refid] for n in rel.nodes]})
            continue
        if not rtype:
            raise _Problem(f"relation {rel.id!r} has no 'type' infon", ("relation", rel.id, None))
        rest = {k: v for k, v in rel.infons.items() if k != "type" and not (concept and k in _PUBTATOR_KEYS)}
        if concept:
            id1, id2 = rel.infons["entity1"], rel.infons["entity2"]
            for concept_id in (id1, id2):
                if concept_id not in first:
                    raise _Problem(f"relation {rel.id!r} names concept {concept_id!r}, which no annotation of the "
                                   "document has as its identifier", ("relation", rel.id, None))
            relations.append(Relation(first[id1], first[id2], rtype))
            rel_meta.append({"type": rtype, "id1": id1, "id2": id2, "novelty": rel.infons.get("novel") or ""})
            rel_args.append([])
        else:
            (r1, n1), (r2, n2) = [(n.role, n.refid) for n in rel.nodes]
            relations.append(Relation(span_of(n1, rel), span_of(n2, rel), rtype))
            rel_meta.append({"type": rtype})
            rel_args.append([[r1, n1], [r2, n2]])
        rel_ids.append(rel.id)
        rel_infons.append(rest)
    passages = [[to_cp(p.offset), ranges.get(k, (0, 0))[1] - ranges.get(k, (0, 0))[0], dict(p.infons)]
                for k, p in enumerate(doc.passages)]
    first_passage = doc.passages[0] if doc.passages else None
    title = (first_passage is not None and first_passage.offset == 0
             and first_passage.infons.get("type") == "title")
    leftover = [{k: v for k, v in i.items() if k not in ("type", "identifier")} for i in infons]
    meta = {
        "span_ids": span_ids if any(span_ids) else [],
        "relations": rel_meta if any("id1" in r for r in rel_meta) else [],
        "title_length": len(first_passage.text or "") if title else None,
        "annotation_ids": ann_ids, "relation_ids": rel_ids,
        "relation_args": rel_args if any(rel_args) else [],
        "event_ids": event_ids, "event_args": event_args,
        "infons": dict(doc.infons), "passages": passages,
        "span_infons": leftover if any(leftover) else [],
        "relation_infons": rel_infons if any(rel_infons) else [],
        "event_infons": event_infons if any(event_infons) else [],
        "other_relations": others,
    }
    return Record(id=str(doc.id), text=text, spans=spans, doc_id=str(doc.id), relations=relations, events=events,
                  meta={k: v for k, v in meta.items() if v not in (None, [], {})})


def _read_in_bytes(doc) -> Record | None:
    """The document read with its offsets counted in UTF-8 bytes, or None when its text is ASCII (bytes and code
    points agree, so that is not what went wrong) or it does not read in bytes either."""
    if all(t.isascii() for _, t, _, _ in _pieces(doc)):
        return None
    try:
        return _document(doc, in_bytes=True)
    except (_Problem, UnicodeDecodeError):
        return None


def read_bioc(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read a BioC XML or JSON file into one record per document (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "no such file")
    kind, docs = _load(path)
    records, seen, in_bytes = [], set(), []
    for k, doc in enumerate(docs):
        try:
            if not doc.id:
                raise _Problem("document has no id")
            if doc.id in seen:
                raise _Problem(f"duplicate document id {doc.id!r}")
            seen.add(doc.id)
            try:
                records.append(_document(doc, in_bytes=False))
            except _Problem:
                record = _read_in_bytes(doc)
                if record is None:
                    raise
                records.append(record)
                in_bytes.append(str(doc.id))
        except _Problem as problem:
            raise InputError(path, problem.message, line=_line(path, kind, k, str(doc.id), problem.where),
                             record=str(doc.id) or None) from None
    if not records:
        raise InputError(path, "no BioC documents found")
    meta = {"byte_offsets": in_bytes} if in_bytes else {}
    return Corpus(records=records, path=str(path), format="bioc", dataset=dataset or path.parent.name, meta=meta)


# --- writer ------------------------------------------------------------------------------------------------------


def _parallel(meta: dict, key: str, n: int) -> list | None:
    value = meta.get(key)
    return value if isinstance(value, list) and len(value) == n else None


def _passages(record: Record) -> list[tuple[int, int, dict]]:
    """``(offset, end, infons)`` of the passages to write: those the record was read with when they still fit its
    text (everything outside them is the spaces that joined them), else PubTator's title and abstract, else one
    passage holding the whole text."""
    text = record.text
    kept = record.meta.get("passages")
    if isinstance(kept, list) and kept:
        out, pos, ok = [], 0, True
        for offset, length, infons in kept:
            ok = ok and pos <= offset and offset + length <= len(text) and not text[pos:offset].strip()
            out.append((offset, offset + length, infons))
            pos = offset + length
        if ok and not text[pos:].strip():
            return out
    title = record.meta.get("title_length")
    if isinstance(title, int) and 0 < title < len(text) and text[title] == " ":
        return [(0, title, {"type": "title"}), (title + 1, len(text), {"type": "abstract"})]
    return [(0, len(text), {})]


def bioc_document(record: Record):
    """One record as a ``bioc.BioCDocument`` (code point offsets). Annotations sit in the passage that holds all
    their fragments (else in the document), relations and events in the document."""
    import bioc

    meta, n_spans = record.meta, len(record.spans)
    doc = bioc.BioCDocument()
    doc.id = record.id
    doc.infons = {str(k): str(v) for k, v in (meta.get("infons") or {}).items()}
    passages = []
    for offset, end, infons in _passages(record):
        passage = bioc.BioCPassage.of_text(record.text[offset:end], offset)
        passage.infons = {str(k): str(v) for k, v in infons.items()}
        passages.append((offset, end, passage))
        doc.add_passage(passage)
    ann_ids = _parallel(meta, "annotation_ids", n_spans)
    if ann_ids is None or len(set(map(str, ann_ids))) != n_spans:
        ann_ids = [str(i) for i in range(n_spans)]
    ann_ids = [str(a) for a in ann_ids]
    span_ids = _parallel(meta, "span_ids", n_spans)
    span_infons = _parallel(meta, "span_infons", n_spans)
    for i, span in enumerate(record.spans):
        ann = bioc.BioCAnnotation()
        ann.id = ann_ids[i]
        ann.infons = {"type": span.label}
        if span_ids and span_ids[i]:
            ann.infons["identifier"] = str(span_ids[i])
        ann.infons.update({str(k): str(v) for k, v in (span_infons[i] if span_infons else {}).items()})
        for a, b in span.pieces:
            ann.add_location(bioc.BioCLocation(a, b - a))
        ann.text = span.surface(record.text)
        home = next((p for lo, hi, p in passages if lo <= span.start and span.end <= hi), doc)
        home.add_annotation(ann)
    taken = set(ann_ids)

    def fresh(ids: list | None, n: int, prefix: str) -> list[str]:
        if ids is not None and len({str(i) for i in ids}) == n and not taken & {str(i) for i in ids}:
            out = [str(i) for i in ids]
        else:
            out, k = [], 0
            while len(out) < n:
                if f"{prefix}{k}" not in taken:
                    out.append(f"{prefix}{k}")
                k += 1
        taken.update(out)
        return out

    n_events, n_rels = len(record.events), len(record.relations)
    event_ids = fresh(_parallel(meta, "event_ids", n_events), n_events, "E")
    old_event = {str(o): w for o, w in zip(_parallel(meta, "event_ids", n_events) or [], event_ids)}
    event_args = _parallel(meta, "event_args", n_events)
    event_infons = _parallel(meta, "event_infons", n_events)
    for k, event in enumerate(record.events):
        if event.trigger is None:
            raise ValueError(f"record {record.id}: event {k} ({event.type}) has no trigger; the BioC form of an "
                             "event is a relation with a trigger node")
        rel = bioc.BioCRelation()
        rel.id = event_ids[k]
        rel.infons = {"type": event.type, **{str(a): str(b) for a, b in (event_infons[k] if event_infons else {})
                                             .items()}}
        rel.add_node(bioc.BioCNode(ann_ids[event.trigger], "trigger"))
        raw = event_args[k] if event_args else None
        for j, (role, idx) in enumerate(event.arguments):
            ref = ann_ids[idx]
            if raw and j < len(raw) and raw[j][0] == role and str(raw[j][1]) in old_event:
                ref = old_event[str(raw[j][1])]
            rel.add_node(bioc.BioCNode(ref, role))
        doc.add_relation(rel)
    rel_ids = fresh(_parallel(meta, "relation_ids", n_rels), n_rels, "R")
    rel_meta = _parallel(meta, "relations", n_rels)
    rel_args = _parallel(meta, "relation_args", n_rels)
    rel_infons = _parallel(meta, "relation_infons", n_rels)
    for k, relation in enumerate(record.relations):
        rel = bioc.BioCRelation()
        rel.id = rel_ids[k]
        rel.infons = {"type": relation.label}
        entry = rel_meta[k] if rel_meta else {}
        if "id1" in entry:  # a concept relation, as BioRED and PubTator write them: no nodes
            rel.infons.update({"entity1": str(entry["id1"]), "entity2": str(entry["id2"])})
            if entry.get("novelty"):
                rel.infons["novel"] = str(entry["novelty"])
        else:
            roles = [a[0] for a in rel_args[k]] if rel_args and len(rel_args[k]) == 2 else ["Arg1", "Arg2"]
            raw = rel_args[k] if rel_args and len(rel_args[k]) == 2 else None
            for j, (role, idx) in enumerate(zip(roles, (relation.head, relation.tail))):
                ref = ann_ids[idx]
                if raw and str(raw[j][1]) in old_event:
                    ref = old_event[str(raw[j][1])]
                rel.add_node(bioc.BioCNode(ref, role))
        rel.infons.update({str(a): str(b) for a, b in (rel_infons[k] if rel_infons else {}).items()})
        doc.add_relation(rel)
    for other in meta.get("other_relations", []):
        rel = bioc.BioCRelation()
        rel.id = str(other["id"])
        rel.infons = {str(a): str(b) for a, b in other.get("infons", {}).items()}
        for role, refid in other.get("nodes", []):
            rel.add_node(bioc.BioCNode(str(refid), str(role)))
        doc.add_relation(rel)
    return doc


def format_bioc(records: list[Record], source: str = "bioselect", date: str | None = None) -> str:
    """BioC XML text of a collection holding one document per record."""
    import bioc

    collection = bioc.BioCCollection()
    collection.source = source
    collection.date = date or _dt.date.today().isoformat()
    collection.key = "bioc.key"
    for record in records:
        collection.add_document(bioc_document(record))
    try:
        return bioc.biocxml.dumps(collection)
    except ValueError as err:  # lxml refuses characters XML cannot hold (most control characters)
        raise ValueError(f"a record's text cannot be written as XML: {err}") from None


def write_bioc(records: list[Record], path: str | os.PathLike, source: str = "bioselect",
               date: str | None = None) -> Path:
    """Write the records as one BioC XML collection, atomically; return the path."""
    text = format_bioc(records, source=source, date=date)
    with atomic_write(path) as f:
        f.write(text)
    return Path(path)
