"""brat standoff (``NAME.txt`` + ``NAME.ann``): the reader, one record per document, and the writer that puts records
or predictions back into brat for review.

    corpus = read_brat("corpora/my_lab/")                  # a folder, searched recursively, or one pair:
    corpus = read_brat("corpora/my_lab/doc1.ann")          # (doc1.txt beside it)
    write_brat(corpus.records, "runs/review/")             # NAME.txt + NAME.ann per record, and annotation.conf

A record's ``id`` and ``doc_id`` are the pair's path relative to the folder without its suffix (``"sub/doc1"``), its
``text`` the whole ``.txt`` (UTF-8; offsets are code points, a ``\\r\\n`` counts two). Documents are the ``.ann``
files; a ``.txt`` without one is not read. The ``.ann`` lines map to the record so:

* ``T1<TAB>TYPE START END[;START END]...<TAB>TEXT``: a :class:`Span` labelled TYPE; several fragments give one
  discontinuous span (``Span.fragments``). TEXT must be the span's surface: its fragments joined by one space, as
  brat writes them (a newline or tab inside a fragment may be written as a space). Event triggers are ``T`` lines
  too, so they are spans labelled with the event type.
* ``R1<TAB>TYPE ROLE1:ID ROLE2:ID``: a :class:`Relation` from the first to the second argument.
* ``E1<TAB>TYPE:TRIGGER ROLE:ID ...``: an :class:`Event` with the trigger's span and ``(role, span)`` arguments. An
  argument (of an event or a relation) that names an event points at that event's trigger span; which event it was
  is kept in ``meta``.
* ``A1<TAB>TYPE ID [VALUE]`` (also the older ``M``), ``N1<TAB>TYPE ID DB:DBID<TAB>TEXT``, ``#1<TAB>TYPE ID<TAB>TEXT``
  and ``*<TAB>TYPE ID ID ...`` (attributes, normalisations, notes, equivalences) are kept in ``meta``.

``meta`` (keys present only when not empty): ``annotation_ids`` parallel to ``spans``; ``relation_ids`` and
``relation_args`` (``[[role, id], [role, id]]`` as written) parallel to ``relations``; ``event_ids`` and
``event_args`` (``[[role, id], ...]`` as written, the trigger left out) parallel to ``events``; ``attributes``
(``{"id", "type", "target", "value"}``, ``value`` None for a binary attribute), ``normalizations`` (``{"id",
"type", "target", "db", "db_id", "text"}``), ``notes`` (``{"id", "type", "target", "text"}``) and
``equivalences`` (``{"type", "ids"}``).

Bad input raises :class:`InputError` naming the ``.ann`` file and line: offsets outside the text or not in order,
quoted text that differs from the text, an unknown annotation kind, an id used twice, an argument or target naming
an id the document does not have; an ``.ann`` without its ``.txt`` names the ``.ann`` file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from curation.io import InputError, atomic_write, read_text
from curation.records import Corpus, Event, Record, Relation, Span

KINDS = "TREAMN#*"
_OFFSETS = re.compile(r"^\d+ \d+(;\d+ \d+)*$")
_WHITESPACE = str.maketrans({"\n": " ", "\r": " ", "\t": " "})


def _pairs(path: Path) -> tuple[Path, list[tuple[str, Path, Path]]]:
    """The folder names are relative to, and ``(name, txt, ann)`` for every document, sorted by name."""
    if path.is_dir():
        anns = sorted(path.rglob("*.ann"), key=lambda p: p.relative_to(path).as_posix())
        if not anns:
            raise InputError(path, "folder holds no brat .ann files")
        root = path
    elif path.suffix in (".ann", ".txt"):
        anns, root = [path.with_suffix(".ann")], path.parent
        if not anns[0].is_file():
            raise InputError(path, f"no {anns[0].name} beside it: a brat document is a .txt and an .ann")
    else:
        raise InputError(path, "not a brat folder, .ann or .txt file")
    out = []
    for ann in anns:
        txt = ann.with_suffix(".txt")
        if not txt.is_file():
            raise InputError(ann, f"no {txt.name} beside it: the text this .ann annotates is missing")
        out.append((ann.relative_to(root).with_suffix("").as_posix(), txt, ann))
    return root, out


def _fragments(field: str, text: str, ann: Path, n: int) -> list[tuple[int, int]]:
    if not _OFFSETS.match(field):
        raise InputError(ann, f"offsets {field!r} are not 'START END' or 'START END;START END...'", line=n)
    frags = [(int(a), int(b)) for a, b in (part.split(" ") for part in field.split(";"))]
    for a, b in frags:
        if not a < b <= len(text):
            raise InputError(ann, f"fragment [{a}, {b}) is empty or leaves the text ({len(text)} characters)", line=n)
    frags.sort()
    if any(frags[i][1] > frags[i + 1][0] for i in range(len(frags) - 1)):
        raise InputError(ann, f"fragments {field!r} overlap", line=n)
    return frags


def _args(field: str, ann: Path, n: int) -> list[list[str]]:
    out = []
    for arg in field.split():
        role, sep, ref = arg.partition(":")
        if not sep or not role or not ref:
            raise InputError(ann, f"argument {arg!r} is not ROLE:ID", line=n)
        out.append([role, ref])
    return out


def _document(name: str, txt: Path, ann: Path) -> Record:
    text = read_text(txt, allow_empty=True)
    spans: list[Span] = []
    span_of: dict[str, int] = {}  # T id -> span index
    raw_events: list[tuple[int, str, str, str, list[list[str]]]] = []  # line, id, type, trigger id, args
    raw_relations: list[tuple[int, str, str, list[list[str]]]] = []
    others: list[tuple[int, str, list[str]]] = []  # A, M, N, #, * lines: line number, kind, fields
    ids: dict[str, int] = {}  # every id -> its line
    for n, line in enumerate(read_text(ann, allow_empty=True).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        aid = fields[0]
        if not aid or aid[0] not in KINDS:
            raise InputError(ann, f"unknown annotation kind {aid[:1]!r} in {line[:60]!r}: brat has T (text-bound), "
                                  "R (relation), E (event), A/M (attribute), N (normalisation), # (note) and * "
                                  "(equivalence)", line=n)
        if aid != "*":
            if aid in ids:
                raise InputError(ann, f"id {aid} is used twice (first on line {ids[aid]})", line=n)
            ids[aid] = n
        if len(fields) < 2 or not fields[1].strip():
            raise InputError(ann, f"{aid} has no annotation after its id", line=n)
        kind = aid[0]
        if kind == "T":
            label, _, offsets = fields[1].partition(" ")
            if not label or not offsets:
                raise InputError(ann, f"{aid}: expected 'TYPE START END', got {fields[1]!r}", line=n)
            span = Span.from_fragments(_fragments(offsets, text, ann, n), label)
            quoted = "\t".join(fields[2:]) if len(fields) > 2 else None
            surface = span.surface(text)
            if quoted is not None and quoted not in (surface, surface.translate(_WHITESPACE)):
                raise InputError(ann, f"{aid} quotes {quoted!r} but the text at {offsets} is {surface!r}", line=n)
            span_of[aid] = len(spans)
            spans.append(span)
        elif kind == "E":
            head, *args = fields[1].split()
            etype, sep, trigger = head.partition(":")
            if not sep or not etype or not trigger:
                raise InputError(ann, f"{aid}: expected 'TYPE:TRIGGER ROLE:ID ...', got {fields[1]!r}", line=n)
            raw_events.append((n, aid, etype, trigger, _args(" ".join(args), ann, n)))
        elif kind == "R":
            rtype, *args = fields[1].split()
            parsed = _args(" ".join(args), ann, n)
            if len(parsed) != 2:
                raise InputError(ann, f"{aid}: a relation has two arguments (ROLE:ID ROLE:ID), got {len(parsed)}",
                                 line=n)
            raw_relations.append((n, aid, rtype, parsed))
        else:
            others.append((n, aid, fields))
    # events may name events defined further down, so every id is known before arguments are resolved
    event_trigger = {aid: trigger for _, aid, _, trigger, _ in raw_events}

    def span_index(ref: str, n: int, what: str) -> int:
        if ref in span_of:
            return span_of[ref]
        if ref in event_trigger and event_trigger[ref] in span_of:
            return span_of[event_trigger[ref]]
        raise InputError(ann, f"{what} names {ref}, which is no text-bound annotation (T) or event of this document",
                         line=n)

    events, event_ids, event_args = [], [], []
    for n, aid, etype, trigger, args in raw_events:
        if trigger not in span_of:
            raise InputError(ann, f"{aid}: trigger {trigger} is no text-bound annotation (T) of this document", line=n)
        events.append(Event(etype, span_of[trigger], tuple((role, span_index(ref, n, f"{aid} argument {role}"))
                                                           for role, ref in args)))
        event_ids.append(aid)
        event_args.append(args)
    relations, relation_ids, relation_args = [], [], []
    for n, aid, rtype, args in raw_relations:
        (r1, a1), (r2, a2) = args
        relations.append(Relation(span_index(a1, n, f"{aid} argument {r1}"), span_index(a2, n, f"{aid} argument {r2}"),
                                  rtype))
        relation_ids.append(aid)
        relation_args.append(args)
    attributes, normalizations, notes, equivalences = [], [], [], []

    def target(ref: str, n: int, aid: str) -> str:
        if ref not in ids:
            raise InputError(ann, f"{aid} names {ref}, which no annotation of this document has", line=n)
        return ref

    for n, aid, fields in others:
        kind, words = aid[0], fields[1].split()
        if kind in "AM":
            if len(words) not in (2, 3):
                raise InputError(ann, f"{aid}: expected 'TYPE ID [VALUE]', got {fields[1]!r}", line=n)
            attributes.append({"id": aid, "type": words[0], "target": target(words[1], n, aid),
                               "value": words[2] if len(words) == 3 else None})
        elif kind == "N":
            if len(words) != 3 or ":" not in words[2]:
                raise InputError(ann, f"{aid}: expected 'TYPE ID DB:DBID', got {fields[1]!r}", line=n)
            db, _, db_id = words[2].partition(":")
            normalizations.append({"id": aid, "type": words[0], "target": target(words[1], n, aid), "db": db,
                                   "db_id": db_id, "text": "\t".join(fields[2:]) if len(fields) > 2 else None})
        elif kind == "#":
            if len(words) != 2:
                raise InputError(ann, f"{aid}: expected 'TYPE ID', got {fields[1]!r}", line=n)
            notes.append({"id": aid, "type": words[0], "target": target(words[1], n, aid),
                          "text": "\t".join(fields[2:])})
        else:  # "*"
            if len(words) < 3:
                raise InputError(ann, f"an equivalence needs a type and two or more ids, got {fields[1]!r}", line=n)
            equivalences.append({"type": words[0], "ids": [target(w, n, "the equivalence") for w in words[1:]]})
    meta = {"annotation_ids": list(span_of), "relation_ids": relation_ids, "relation_args": relation_args,
            "event_ids": event_ids, "event_args": event_args, "attributes": attributes,
            "normalizations": normalizations, "notes": notes, "equivalences": equivalences}
    return Record(id=name, text=text, spans=spans, doc_id=name, relations=relations, events=events,
                  meta={k: v for k, v in meta.items() if v})


def read_brat(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read a folder of brat documents (or one ``.ann``/``.txt`` pair) into one record per document."""
    path = Path(path)
    root, pairs = _pairs(path)
    records = [_document(name, txt, ann) for name, txt, ann in pairs]
    return Corpus(records=records, path=str(path), format="brat", dataset=dataset or root.name)


# --- writer ------------------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^\w.+=@-]")


def file_names(ids: list[str]) -> list[str]:
    """Relative file names (without suffix) for record ids: ``/`` keeps making folders, ``.``/``..`` parts are
    dropped, other characters outside ``[\\w.+=@-]`` become ``_``, and a name already taken gets ``_2``, ``_3``...

    >>> file_names(["NCBI-disease/test/0", "../x y", "x_y"])
    ['NCBI-disease/test/0', 'x_y', 'x_y_2']
    """
    out, taken = [], set()
    for rid in ids:
        parts = [_UNSAFE.sub("_", p) for p in re.split(r"[/\\]", rid) if p not in ("", ".", "..")]
        base = "/".join(parts).lstrip(".") or "record"
        name, k = base, 1
        while name.lower() in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name.lower())
        out.append(name)
    return out


def _keep_or_number(values: Any, n: int, prefix: str) -> list[str]:
    """The ids in ``values`` when they are ``n`` distinct brat ids of kind ``prefix``, else ``prefix1`` ...
    ``prefixN``."""
    if isinstance(values, list) and len(values) == n and len(set(values)) == n and all(
            isinstance(v, str) and re.fullmatch(re.escape(prefix) + r"\S+", v) for v in values):
        return list(values)
    return [f"{prefix}{i + 1}" for i in range(n)]


def format_ann(record: Record) -> str:
    """The ``.ann`` text of one record: T, E, R, ``*``, A, N and # lines, in that order.

    The ids in ``meta`` (``annotation_ids``, ``event_ids``, ``relation_ids``) are kept when they are brat ids of the
    right kind and one per annotation; otherwise they are numbered, and attributes, normalisations, notes and
    equivalences in ``meta`` follow their annotation to its new id. An event without a trigger has no brat form and
    raises ``ValueError``.
    """
    meta = record.meta
    t_ids = _keep_or_number(meta.get("annotation_ids"), len(record.spans), "T")
    e_ids = _keep_or_number(meta.get("event_ids"), len(record.events), "E")
    r_ids = _keep_or_number(meta.get("relation_ids"), len(record.relations), "R")
    new_id: dict[str, str] = {}
    for old, new in ((meta.get("annotation_ids"), t_ids), (meta.get("event_ids"), e_ids),
                     (meta.get("relation_ids"), r_ids)):
        if isinstance(old, list) and len(old) == len(new):
            new_id.update({str(o): w for o, w in zip(old, new)})
    lines = []
    for tid, span in zip(t_ids, record.spans):
        offsets = ";".join(f"{a} {b}" for a, b in span.pieces)
        lines.append(f"{tid}\t{span.label} {offsets}\t{span.surface(record.text).translate(_WHITESPACE)}")

    def ref(raw: list[list[str]] | None, k: int, role: str, index: int) -> str:
        # an argument written as an event id stays that event (its span is the event's trigger)
        if raw and k < len(raw) and raw[k][0] == role and raw[k][1] in new_id and new_id[raw[k][1]][0] == "E":
            return new_id[raw[k][1]]
        return t_ids[index]

    event_args = meta.get("event_args") if len(meta.get("event_args", [])) == len(record.events) else None
    for k, (eid, event) in enumerate(zip(e_ids, record.events)):
        if event.trigger is None:
            raise ValueError(f"record {record.id}: event {k} ({event.type}) has no trigger; brat events need one")
        raw = event_args[k] if event_args else None
        args = "".join(f" {role}:{ref(raw, j, role, idx)}" for j, (role, idx) in enumerate(event.arguments))
        lines.append(f"{eid}\t{event.type}:{t_ids[event.trigger]}{args}")
    rel_args = meta.get("relation_args") if len(meta.get("relation_args", [])) == len(record.relations) else None
    for k, (rid, rel) in enumerate(zip(r_ids, record.relations)):
        raw = rel_args[k] if rel_args and len(rel_args[k]) == 2 else [["Arg1", ""], ["Arg2", ""]]
        (r1, _), (r2, _) = raw
        lines.append(f"{rid}\t{rel.label} {r1}:{ref(raw, 0, r1, rel.head)} {r2}:{ref(raw, 1, r2, rel.tail)}")

    def target(old: Any, what: str) -> str:
        if str(old) not in new_id:
            raise ValueError(f"record {record.id}: {what} names {old!r}, which is none of its annotations")
        return new_id[str(old)]

    for eq in meta.get("equivalences", []):
        lines.append(f"*\t{eq['type']} " + " ".join(target(i, "an equivalence") for i in eq["ids"]))
    a_ids = _keep_or_number([a.get("id") for a in meta.get("attributes", [])], len(meta.get("attributes", [])), "A")
    for aid, att in zip(a_ids, meta.get("attributes", [])):
        value = f" {att['value']}" if att.get("value") is not None else ""
        lines.append(f"{aid}\t{att['type']} {target(att['target'], aid)}{value}")
    norms = meta.get("normalizations", [])
    n_ids = _keep_or_number([x.get("id") for x in norms], len(norms), "N")
    for nid, norm in zip(n_ids, norms):
        tid = target(norm["target"], nid)
        text = norm.get("text")
        if text is None and tid in t_ids:
            text = record.spans[t_ids.index(tid)].surface(record.text)
        lines.append(f"{nid}\t{norm.get('type') or 'Reference'} {tid} {norm['db']}:{norm['db_id']}"
                     f"\t{(text or '').translate(_WHITESPACE)}")
    notes = meta.get("notes", [])
    for hid, note in zip(_keep_or_number([x.get("id") for x in notes], len(notes), "#"), notes):
        lines.append(f"{hid}\t{note['type']} {target(note['target'], hid)}\t{note['text'].translate(_WHITESPACE)}")
    return "".join(line + "\n" for line in lines)


def annotation_conf(records: list[Record]) -> str:
    """An ``annotation.conf`` declaring every type the records use, so brat shows them without complaint: span
    labels as entities, event types with their roles (any number of each, numbered roles like ``Theme2`` under their
    base name), relation types, attributes with their values; nesting and crossing spans are allowed."""
    triggers = {r.spans[e.trigger].label for r in records for e in r.events if e.trigger is not None}
    entities = sorted({s.label for r in records for s in r.spans} - triggers)
    roles: dict[str, set[str]] = {}
    for r in records:
        for e in r.events:
            roles.setdefault(e.type, set()).update(re.sub(r"\d+$", "", role) for role, _ in e.arguments)
    relations: dict[str, tuple[str, str]] = {}
    for r in records:
        raw = r.meta.get("relation_args") if len(r.meta.get("relation_args", [])) == len(r.relations) else None
        for k, rel in enumerate(r.relations):
            pair = (raw[k][0][0], raw[k][1][0]) if raw and len(raw[k]) == 2 else ("Arg1", "Arg2")
            relations.setdefault(rel.label, pair)
    attributes: dict[str, set[str]] = {}
    for r in records:
        for att in r.meta.get("attributes", []):
            attributes.setdefault(att["type"], set()).update([att["value"]] if att.get("value") is not None else [])
    equivs = sorted({eq["type"] for r in records for eq in r.meta.get("equivalences", [])})
    lines = ["# written by bioselect data export: every type the exported records use", "[entities]", *entities,
             "[relations]", "<OVERLAP>\tArg1:<ENTITY>, Arg2:<ENTITY>, <OVL-TYPE>:<ANY>"]
    lines += [f"{t}\t{a}:<ENTITY>|<EVENT>, {b}:<ENTITY>|<EVENT>" for t, (a, b) in sorted(relations.items())]
    lines += [f"{t}\tArg1:<ENTITY>, Arg2:<ENTITY>, <REL-TYPE>:symmetric-transitive" for t in equivs]
    lines.append("[events]")
    lines += [t + ("\t" + ", ".join(f"{role}*:<ENTITY>|<EVENT>" for role in sorted(rs)) if rs else "")
              for t, rs in sorted(roles.items())]
    lines.append("[attributes]")
    lines += [f"{t}\tArg:<ANY>" + (", Value:" + "|".join(sorted(vs)) if vs else "")
              for t, vs in sorted(attributes.items())]
    return "\n".join(lines) + "\n"


def write_brat(records: list[Record], folder: str | os.PathLike) -> list[Path]:
    """Write ``NAME.txt`` + ``NAME.ann`` for every record (names from :func:`file_names`) and ``annotation.conf``
    into ``folder``; return the files written. Each file is written atomically (inside
    :func:`curation.io.together`, all of them land at the end)."""
    folder = Path(folder)
    anns = [format_ann(record) for record in records]  # a record brat cannot hold stops the run before any write
    written = []
    for name, record, ann in zip(file_names([r.id for r in records]), records, anns):
        for suffix, content in ((".txt", record.text), (".ann", ann)):
            out = folder / f"{name}{suffix}"
            with atomic_write(out) as f:
                f.write(content)
            written.append(out)
    with atomic_write(folder / "annotation.conf") as f:
        f.write(annotation_conf(records))
    written.append(folder / "annotation.conf")
    return written

