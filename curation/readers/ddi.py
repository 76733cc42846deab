"""DDI corpus 2013 XML (``document/sentence/entity/pair``): one record per ``<sentence>``.

``path`` is one XML file or a folder; a folder is searched recursively for ``*.xml`` (sorted by relative path, so
the record order is the same on every machine; folder names may contain spaces). ``meta["part"]`` of each record
is the folder of its file relative to ``path`` (``"Train/DrugBank"``, ``"Test/Test for DDI Extraction task/MedLine"``).

* ``charOffset="a-b"`` is *inclusive* in DDI, so it becomes ``Span(a, b + 1, type)``.
* A discontinuous entity ``charOffset="a-b;c-d"`` ("loop ... diuretics") becomes one span per fragment, all with
  the entity's type; ``meta["discontinuous"]`` lists those entity ids. Identical spans are stored once, so two
  entities sharing a fragment share that span; ``meta["entities"]`` maps every entity id to its span indices.
* Entity text is checked against the offsets (fragments are compared with whitespace removed, because the
  corpus writes ``"alpha-adrenergic"`` for the fragments ``"alpha-"`` + ``"adrenergic"``). When every fragment
  matches after moving all of them by one character the offsets are repaired and the entity id is listed in
  ``Corpus.meta["offsets_fixed"]`` (one entity of the real corpus, ``DDI-DrugBank.d216.s16.e2``); any other
  mismatch raises :class:`InputError`.
* Only ``ddi="true"`` pairs become relations, between the first span of each entity, labelled by ``type``; a true
  pair without a type is labelled ``"DDI"`` and listed in ``Corpus.meta["untyped_true_pairs"]``. False pairs are
  counted in ``meta["negative_pairs"]`` (per record and for the corpus).
* Sentences with an empty ``text`` (71 in the real corpus, all without entities) are kept as records, so the
  sentence counts of the corpus's documentation hold.

    corpus = read_ddi("../shared/data/re/DDI/DDICorpus/Train")
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from curation.io import InputError, read_text
from curation.records import Corpus, Record, Relation, Span

_FRAGMENT = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


def _fragments(char_offset: str) -> list[tuple[int, int]] | None:
    out = []
    for part in char_offset.split(";"):
        m = _FRAGMENT.match(part)
        if not m:
            return None
        out.append((int(m.group(1)), int(m.group(2)) + 1))
    return out


def _matches(text: str, frags: list[tuple[int, int]], surface: str) -> bool:
    if not all(0 <= a < b <= len(text) for a, b in frags):
        return False
    if len(frags) == 1:
        return text[frags[0][0] : frags[0][1]] == surface
    return "".join(text[a:b] for a, b in frags).replace(" ", "") == surface.replace(" ", "")


def _attr(path: Path, el: ET.Element, name: str, record: str | None) -> str:
    value = el.get(name)
    if value is None:
        raise InputError(path, f"<{el.tag} id={el.get('id')!r}> lacks the {name!r} attribute", record=record)
    return value


def _read_file(path: Path, part: str, records: list[Record], seen: set[str], stats: dict) -> None:
    try:
        root = ET.fromstring(read_text(path))
    except ET.ParseError as err:
        raise InputError(path, f"invalid XML: {err}", line=err.position[0]) from None
    if root.tag != "document":
        raise InputError(path, f"root element is <{root.tag}>, expected <document>")
    doc_id = _attr(path, root, "id", None)
    for sent in root.iter("sentence"):
        rid = _attr(path, sent, "id", None)
        if rid in seen:
            raise InputError(path, f"duplicate sentence id {rid!r}", record=rid)
        seen.add(rid)
        text = _attr(path, sent, "text", rid)
        spans: list[Span] = []
        index: dict[Span, int] = {}
        entities: dict[str, list[int]] = {}
        discontinuous, fixed = [], []
        for ent in sent.iter("entity"):
            eid, label = _attr(path, ent, "id", rid), _attr(path, ent, "type", rid)
            offset, surface = _attr(path, ent, "charOffset", rid), _attr(path, ent, "text", rid)
            frags = _fragments(offset)
            if frags is None:
                raise InputError(path, f"entity {eid}: charOffset {offset!r} is not 'a-b' or 'a-b;c-d'", record=rid)
            if not _matches(text, frags, surface):
                shifted = next((s for s in ([(a + d, b + d) for a, b in frags] for d in (1, -1))
                                if _matches(text, s, surface)), None)
                if shifted is None:
                    where = "; ".join(repr(text[a:b]) for a, b in frags)
                    raise InputError(path, f"entity {eid}: text {surface!r} does not match charOffset {offset!r} "
                                           f"({where}; sentence length {len(text)})", record=rid)
                frags = shifted
                fixed.append(eid)
            if len(frags) > 1:
                discontinuous.append(eid)
            entities[eid] = []
            for a, b in frags:
                span = Span(a, b, label)
                if span not in index:
                    index[span] = len(spans)
                    spans.append(span)
                entities[eid].append(index[span])
        relations, negatives = [], 0
        for pair in sent.iter("pair"):
            pid, flag = _attr(path, pair, "id", rid), _attr(path, pair, "ddi", rid).lower()
            if flag not in ("true", "false"):
                raise InputError(path, f"pair {pid}: ddi={flag!r} is not 'true' or 'false'", record=rid)
            if flag == "false":
                negatives += 1
                continue
            e1, e2 = _attr(path, pair, "e1", rid), _attr(path, pair, "e2", rid)
            for e in (e1, e2):
                if e not in entities:
                    raise InputError(path, f"pair {pid} names entity {e!r}, which the sentence lacks", record=rid)
            label = pair.get("type")
            if not label:
                label = "DDI"
                stats["untyped_true_pairs"].append(pid)
            relations.append(Relation(entities[e1][0], entities[e2][0], label))
        stats["negative_pairs"] += negatives
        stats["offsets_fixed"].extend(fixed)
        meta = {"part": part, "file": path.name, "entities": entities, "negative_pairs": negatives}
        if discontinuous:
            meta["discontinuous"] = discontinuous
        if fixed:
            meta["offsets_fixed"] = fixed
        records.append(Record(id=rid, text=text, spans=spans, doc_id=doc_id, relations=relations, meta=meta))


def read_ddi(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read one DDI XML file or every ``*.xml`` under a folder (see the module docstring for the conventions)."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.rglob("*.xml"), key=lambda p: p.relative_to(path).as_posix())
        if not files:
            raise InputError(path, "folder holds no *.xml files")
        parts = [p.parent.relative_to(path).as_posix() for p in files]
    else:
        files, parts = [path], [path.parent.name]
    records: list[Record] = []
    seen: set[str] = set()
    stats: dict = {"negative_pairs": 0, "offsets_fixed": [], "untyped_true_pairs": []}
    for file, part in zip(files, parts):
        _read_file(file, part, records, seen, stats)
    if not records:
        raise InputError(path, "no sentences found")
    return Corpus(records=records, path=str(path), format="ddi", dataset=dataset or "DDI",
                  meta={"files": len(files), **stats})
