"""ADE-Corpus-V2 (Gurulingappa et al. 2012): drug / adverse-effect / dose relations and negative sentences.

``path`` is the corpus folder (every one of ``DRUG-AE.rel``, ``DRUG-DOSE.rel`` and ``ADE-NEG.txt`` it holds is
read) or one of those files (read alone). The relation files have lines
``pmid|sentence|mention|begin|end|drug|begin|end`` (mention = adverse effect or dose); ``ADE-NEG.txt`` has lines
``pmid NEG sentence``.

* Rows are grouped by ``(pmid, sentence)``: one record per group, ``doc_id`` = pmid, id
  ``{dataset}/{pmid}/{sha1(sentence)[:12]}`` (the same whichever file or folder is read). Spans are labelled
  ``Drug``, ``AE`` and ``Dose`` (identical spans stored once); every row gives one relation, ``ADE`` (drug ->
  AE) or ``DOSE`` (drug -> dose). Sentences of ``DRUG-AE.rel`` are labelled ``["ade"]``; a sentence known only
  from ``DRUG-DOSE.rel`` (possible only when that file is read alone) gets no label.
* Mention offsets are *document* offsets (the annotated document was ``pmid\\n\\ntitle\\n\\nabstract``), so each
  mention is located inside its sentence: the sentence's document start ``S`` is the value ``begin - o`` (``o``
  an occurrence of a mention in the sentence) shared by the most mentions of the group (ties: smallest ``S``);
  a mention is placed at ``begin - S`` when its text occurs there, otherwise at its occurrence nearest to
  ``begin - S``. ``Corpus.meta`` counts both cases (``mentions_at_offset``, ``mentions_nearest``); a mention whose
  text does not occur in its sentence raises :class:`InputError`.
* Negatives: one record per distinct ``(pmid, sentence)`` with no spans and ``labels == ["no_ade"]``. Repeated
  lines are merged (``negative_duplicate_lines``); the same sentence under different pmids stays separate records
  (different documents; ``negative_texts_in_several_docs`` counts those texts). A negative ``(pmid, sentence)``
  that is also a positive group is dropped in favour of the annotated positive and counted in
  ``negative_dropped_as_positive`` (0 in the real corpus, where no sentence text is both).

In the real corpus the 6,821 drug-AE rows give 4,272 positive records: the README's 4,271 counts sentence texts,
and one title ("MR findings in methotrexate-induced CNS abnormalities.") appears under two pmids.

    corpus = read_ade("../shared/data/cls/ADE-Corpus-V2")
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from pathlib import Path

from curation.io import InputError, read_text
from curation.records import Corpus, Record, Relation, Span

FILES = {"drug-ae.rel": ("AE", "ADE"), "drug-dose.rel": ("Dose", "DOSE"), "ade-neg.txt": None}
_STATS = ("ade_relations", "dose_relations", "positive_records", "mentions_at_offset", "mentions_nearest",
          "negative_lines", "negative_records", "negative_duplicate_lines", "negative_dropped_as_positive",
          "negative_texts_in_several_docs", "texts_both_positive_and_negative")
_NEG = re.compile(r"^(\S+)\s+NEG\s+(.*)$")


def _occurrences(sentence: str, text: str) -> list[int]:
    out, pos = [], sentence.find(text)
    while pos != -1:
        out.append(pos)
        pos = sentence.find(text, pos + 1)
    return out


def _record_id(dataset: str, pmid: str, sentence: str) -> str:
    return f"{dataset}/{pmid}/{hashlib.sha1(sentence.encode('utf-8')).hexdigest()[:12]}"


def _read_relations(path: Path, label: str, rel_label: str, groups: dict) -> int:
    rows = 0
    for n, line in enumerate(read_text(path).split("\n"), 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        parts = line.split("|")
        if len(parts) < 8:
            raise InputError(path, f"expected 8 '|'-separated fields (pmid|sentence|mention|begin|end|drug|begin|end),"
                                   f" got {len(parts)}", line=n)
        pmid, sentence = parts[0], "|".join(parts[1:-6])  # a '|' inside the sentence stays in the sentence
        mention, b1, e1, drug, b2, e2 = parts[-6:]
        if not pmid or not sentence.strip():
            raise InputError(path, "empty pmid or sentence", line=n)
        try:
            begins = int(b1), int(b2)
            int(e1), int(e2)
        except ValueError:
            raise InputError(path, f"offsets {b1!r}, {e1!r}, {b2!r}, {e2!r} are not all integers", line=n) from None
        if not mention or not drug:
            raise InputError(path, "empty mention or drug", line=n)
        group = groups.setdefault((pmid, sentence), {"rows": [], "files": []})
        group["rows"].append((path, n, (drug, begins[1], "Drug"), (mention, begins[0], label), rel_label))
        if path.name not in group["files"]:
            group["files"].append(path.name)
        rows += 1
    return rows


def _place(group: dict, sentence: str, stats: Counter) -> tuple[list[Span], list[Relation], int]:
    """Locate every mention of a group in its sentence (see the module docstring) -> spans, relations, S."""
    occ: dict[str, list[int]] = {}
    for path, n, *mentions, _ in group["rows"]:
        for text, _, _ in mentions:
            if text not in occ:
                occ[text] = _occurrences(sentence, text)
                if not occ[text]:
                    raise InputError(path, f"mention {text!r} does not occur in its sentence", line=n)
    votes: Counter = Counter()
    for text, begin in {(t, b) for _, _, *ms, _ in group["rows"] for t, b, _ in ms}:
        votes.update({begin - o for o in occ[text]})
    start = min(votes, key=lambda s: (-votes[s], s))
    spans: list[Span] = []
    index: dict[Span, int] = {}
    relations = []
    for _, _, drug, other, rel_label in group["rows"]:
        ends = []
        for text, begin, label in (drug, other):
            want = begin - start
            if want in occ[text]:
                pos = want
                stats["mentions_at_offset"] += 1
            else:
                pos = min(occ[text], key=lambda o: (abs(o - want), o))
                stats["mentions_nearest"] += 1
            span = Span(pos, pos + len(text), label)
            if span not in index:
                index[span] = len(spans)
                spans.append(span)
            ends.append(index[span])
        relations.append(Relation(ends[0], ends[1], rel_label))
    return spans, relations, start


def read_ade(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read ADE-Corpus-V2 (folder or one of its three files); see the module docstring for the conventions."""
    path = Path(path)
    if path.is_dir():
        files = [path / name for name in ("DRUG-AE.rel", "DRUG-DOSE.rel", "ADE-NEG.txt") if (path / name).is_file()]
        if not files:
            raise InputError(path, "folder holds none of DRUG-AE.rel, DRUG-DOSE.rel, ADE-NEG.txt")
        name = dataset or path.name
    else:
        if path.name.lower() not in FILES:
            raise InputError(path, "an ADE-Corpus-V2 file is named DRUG-AE.rel, DRUG-DOSE.rel or ADE-NEG.txt")
        files = [path]
        name = dataset or path.parent.name
    stats: Counter = Counter(dict.fromkeys(_STATS, 0))
    groups: dict[tuple[str, str], dict] = {}
    neg_files = []
    for f in files:
        kind = FILES[f.name.lower()]
        if kind is None:
            neg_files.append(f)
        else:
            stats[f"{kind[1].lower()}_relations"] += _read_relations(f, *kind, groups)

    records: list[Record] = []
    for (pmid, sentence), group in groups.items():
        spans, relations, start = _place(group, sentence, stats)
        labels = ["ade"] if any(r[4] == "ADE" for r in group["rows"]) else []
        lines = {}
        for p, n, *_ in group["rows"]:
            lines.setdefault(p.name, []).append(n)
        records.append(Record(id=_record_id(name, pmid, sentence), text=sentence, spans=spans, doc_id=pmid,
                              relations=relations, labels=labels,
                              meta={"files": group["files"], "lines": lines, "doc_offset": start}))
    stats["positive_records"] = len(records)

    negatives: dict[tuple[str, str], Record] = {}
    texts: dict[str, set[str]] = {}
    for f in neg_files:
        for n, line in enumerate(read_text(f).split("\n"), 1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            m = _NEG.match(line)
            if not m or not m.group(2).strip():
                raise InputError(f, f"expected 'PMID NEG sentence', got {line[:60]!r}", line=n)
            pmid, sentence = m.groups()
            stats["negative_lines"] += 1
            key = (pmid, sentence)
            if key in groups:
                stats["negative_dropped_as_positive"] += 1
            elif key in negatives:
                stats["negative_duplicate_lines"] += 1
                negatives[key].meta["lines"][f.name].append(n)
            else:
                texts.setdefault(sentence, set()).add(pmid)
                negatives[key] = Record(id=_record_id(name, pmid, sentence), text=sentence, doc_id=pmid,
                                        labels=["no_ade"], meta={"files": [f.name], "lines": {f.name: [n]}})
    records.extend(negatives.values())
    stats["negative_records"] = len(negatives)
    stats["negative_texts_in_several_docs"] = sum(len(p) > 1 for p in texts.values())
    positive_texts = {s for _, s in groups}
    stats["texts_both_positive_and_negative"] = len(positive_texts & set(texts))
    if not records:
        raise InputError(path, "no sentences found")
    return Corpus(records=records, path=str(path), format="ade", dataset=name,
                  meta={"files": [f.name for f in files], **{k: stats[k] for k in sorted(stats)}})
