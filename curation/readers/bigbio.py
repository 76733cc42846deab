"""BigBio ``bigbio_kb`` documents (the schema of the Hugging Face BigBio collection) from local JSON lines or Parquet
files, or from a ``datasets.Dataset`` already loaded; one record per document.

    corpus = read_bigbio("corpora/bc5cdr_bigbio_kb/test.jsonl")       # or a .parquet file
    corpus = read_bigbio(datasets.load_dataset(..., name="bc5cdr_bigbio_kb", split="test"))  # a loaded split

A row is ``{"id", "document_id", "passages", "entities", "events", "coreferences", "relations"}``; offsets are
``[start, end)`` code points into the document. A record's ``id`` and ``doc_id`` are ``document_id`` (``id`` when it
is empty), its ``text`` the passages placed at their offsets with spaces between them.

* An entity is a :class:`Span` labelled by its ``type``; several offsets give one discontinuous span
  (``Span.fragments``). Its ``text`` must match: one string per offset, or one string that is the fragments joined
  by a space (or by nothing). ``normalized`` ``[{"db_name", "db_id"}]`` goes to ``meta["normalizations"]`` as
  ``{"target": entity id, "db", "db_id"}``. Entities without offsets (document-level) cannot be spans; they are
  counted in ``Corpus.meta["entities_without_offsets"]``.
* An event is an :class:`Event`; its trigger is a span labelled with the event type (annotation id
  ``EVENT_ID.trigger``) and an argument naming another event points at that event's trigger (the ``[role, ref_id]``
  pairs as written are in ``meta["event_args"]``).
* A relation is a :class:`Relation` from ``arg1_id`` to ``arg2_id``; its ``normalized`` entries join
  ``meta["normalizations"]`` with the relation id as target.
* Coreferences go to ``meta["equivalences"]`` as ``{"type": "Coreference", "id", "ids"}`` (brat writes them as
  ``*`` lines).
* ``meta`` also has ``annotation_ids`` (parallel to spans), ``relation_ids``, ``event_ids`` (parallel to relations and
  events, as the brat and BioC readers have them) and ``passages`` (``[offset, length, {"type", "id"}]``, as the
  BioC reader has them, so the BioC writer keeps the passages).

Bad input raises :class:`InputError` naming the file and line (JSON lines) or row (Parquet, a dataset): an offset
outside the text, text that does not match it, passages that disagree where they overlap, an argument naming an id
the document does not have, a row that is not ``bigbio_kb``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from curation.io import InputError, read_jsonl
from curation.records import Corpus, Event, Record, Relation, Span

KB_KEYS = ("id", "document_id", "passages", "entities", "events", "coreferences", "relations")


class _Problem(Exception):
    pass


def _text(passages: list[dict]) -> tuple[str, list]:
    """The document text and the ``passages`` meta."""
    chars: list[str | None] = []
    meta = []
    for p in passages:
        texts, offsets = list(p.get("text") or []), [list(o) for o in p.get("offsets") or []]
        if len(texts) != len(offsets):
            raise _Problem(f"passage {p.get('id')!r} has {len(texts)} texts but {len(offsets)} offsets")
        for piece, (start, end) in zip(texts, offsets):
            if not 0 <= start <= end or end - start != len(piece):
                raise _Problem(f"passage {p.get('id')!r}: offsets [{start}, {end}) do not fit its text of "
                               f"{len(piece)} characters")
            chars.extend([None] * (end - len(chars)))
            for i, ch in enumerate(piece, start):
                if chars[i] is not None and chars[i] != ch:
                    raise _Problem(f"passage {p.get('id')!r} disagrees at offset {i} with a passage before it")
                chars[i] = ch
            meta.append([start, end - start, {"type": p.get("type") or "", "id": str(p.get("id") or "")}])
    return "".join(" " if c is None else c for c in chars), meta


def _span(text: str, obj: dict, label: str, what: str) -> Span | None:
    offsets = [tuple(int(x) for x in o) for o in obj.get("offsets") or []]
    if not offsets:
        return None
    for a, b in offsets:
        if not 0 <= a < b <= len(text):
            raise _Problem(f"{what}: offsets [{a}, {b}) are empty or outside the text ({len(text)} characters)")
    try:
        span = Span.from_fragments(offsets, label)
    except ValueError:
        raise _Problem(f"{what}: offsets {[list(o) for o in offsets]} overlap") from None
    texts = list(obj.get("text") or [])
    pieces = [text[a:b] for a, b in sorted(offsets)]
    given = [text[a:b] for a, b in offsets]
    if texts and texts != given and (len(texts) != 1 or texts[0] not in (" ".join(pieces), "".join(pieces))):
        raise _Problem(f"{what}: text {texts!r} does not match the text at its offsets {given!r}")
    return span


def _document(row: dict) -> tuple[Record, int]:
    missing = [k for k in KB_KEYS if k not in row]
    if missing:
        raise _Problem(f"not a bigbio_kb document: lacks {', '.join(missing)}")
    text, passages = _text(row["passages"] or [])
    spans: list[Span] = []
    index: dict[str, int] = {}
    ann_ids: list[str] = []
    norms: list[dict] = []
    unlocated = 0
    for ent in row["entities"] or []:
        eid = str(ent["id"])
        if eid in index:
            raise _Problem(f"entity id {eid!r} is used twice")
        span = _span(text, ent, str(ent["type"]), f"entity {eid!r}")
        if span is None:
            unlocated += 1
            continue
        index[eid] = len(spans)
        spans.append(span)
        ann_ids.append(eid)
        norms += [{"target": eid, "db": str(n["db_name"]), "db_id": str(n["db_id"])} for n in ent.get("normalized")
                  or []]
    trigger_of: dict[str, int] = {}
    for ev in row["events"] or []:
        evid = str(ev["id"])
        span = _span(text, ev.get("trigger") or {}, str(ev["type"]), f"trigger of event {evid!r}")
        if span is None:
            raise _Problem(f"event {evid!r} has no trigger offsets")
        trigger_of[evid] = len(spans)
        spans.append(span)
        ann_ids.append(f"{evid}.trigger")

    def span_of(ref: Any, what: str) -> int:
        ref = str(ref)
        if ref in index:
            return index[ref]
        if ref in trigger_of:
            return trigger_of[ref]
        raise _Problem(f"{what} names {ref!r}, which is no entity or event of the document")

    events, event_ids, event_args = [], [], []
    for ev in row["events"] or []:
        evid = str(ev["id"])
        args = [[str(a["role"]), str(a["ref_id"])] for a in ev.get("arguments") or []]
        events.append(Event(str(ev["type"]), trigger_of[evid],
                            tuple((role, span_of(ref, f"event {evid!r}")) for role, ref in args)))
        event_ids.append(evid)
        event_args.append(args)
    relations, relation_ids = [], []
    for rel in row["relations"] or []:
        rid = str(rel["id"])
        relations.append(Relation(span_of(rel["arg1_id"], f"relation {rid!r}"),
                                  span_of(rel["arg2_id"], f"relation {rid!r}"), str(rel["type"])))
        relation_ids.append(rid)
        norms += [{"target": rid, "db": str(n["db_name"]), "db_id": str(n["db_id"])} for n in rel.get("normalized")
                  or []]
    corefs = [{"type": "Coreference", "id": str(c["id"]), "ids": [str(i) for i in c["entity_ids"]]}
              for c in row["coreferences"] or []]
    for c in corefs:
        for i in c["ids"]:
            if i not in index:
                raise _Problem(f"coreference {c['id']!r} names {i!r}, which is no entity of the document with offsets")
    doc_id = str(row["document_id"] or row["id"])
    meta = {"annotation_ids": ann_ids, "relation_ids": relation_ids, "event_ids": event_ids,
            "event_args": event_args if any(event_args) else [], "normalizations": norms, "equivalences": corefs,
            "passages": passages}
    return Record(id=doc_id, text=text, spans=spans, doc_id=doc_id, relations=relations, events=events,
                  meta={k: v for k, v in meta.items() if v}), unlocated


def _rows(source: Any) -> tuple[str, Iterable[tuple[int, dict]], str]:
    """``(name for messages, (line or row number, row) pairs, "line" | "row")``."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.suffix == ".parquet":
            if not path.is_file():
                raise InputError(path, "no such file")
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                rows = pq.read_table(path).to_pylist()
            except (pa.ArrowException, OSError) as err:
                raise InputError(path, f"cannot read as Parquet: {str(err).splitlines()[0]}") from None
            return str(path), enumerate(rows, 1), "row"
        return str(path), read_jsonl(path), "line"
    try:
        from datasets import Dataset, DatasetDict
    except ImportError:  # pragma: no cover - datasets is a dependency
        Dataset = DatasetDict = ()  # noqa: N806
    if isinstance(source, DatasetDict):
        raise InputError("dataset", f"a DatasetDict with splits {sorted(source)}; pass one split, e.g. ds['test']")
    if isinstance(source, Dataset):
        name = source.info.dataset_name or source.info.config_name or "dataset"
        return name, enumerate(source, 1), "row"
    raise InputError(str(source)[:60], "not a bigbio_kb file (.jsonl, .parquet) or a datasets.Dataset")


def read_bigbio(source: str | os.PathLike | Any, dataset: str = "") -> Corpus:
    """Read ``bigbio_kb`` documents (a ``.jsonl``/``.parquet`` file or a ``datasets.Dataset``) into records."""
    name, rows, unit = _rows(source)
    records, seen, unlocated = [], set(), 0
    for n, row in rows:
        where = {"line": n} if unit == "line" else {}
        prefix = f"row {n}: " if unit == "row" else ""
        try:
            record, k = _document(row)
        except _Problem as problem:
            raise InputError(name, prefix + str(problem), **where, record=str(row.get("document_id") or "") or None
                             ) from None
        except (KeyError, TypeError, ValueError) as err:
            raise InputError(name, f"{prefix}not a bigbio_kb document ({type(err).__name__}: {err})",
                             **where) from None
        if record.id in seen:
            raise InputError(name, f"{prefix}duplicate document_id {record.id!r}", **where)
        seen.add(record.id)
        records.append(record)
        unlocated += k
    if not records:
        raise InputError(name, "no documents found")
    default = Path(name).parent.name if isinstance(source, (str, os.PathLike)) else name
    return Corpus(records=records, path=name, format="bigbio", dataset=dataset or default,
                  meta={"entities_without_offsets": unlocated} if unlocated else {})
