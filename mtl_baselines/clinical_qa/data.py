"""Question sets for the clinical QA baseline: the templated BioRED set, emrQA, SQuAD-style corpora, the split by
document, and the encoding of questions into overlapping encoder windows.

**Templated BioRED (emrQA-style).** emrQA was built by filling question templates with the entities of existing
annotations and taking the related annotations as answers. :func:`template_questions` does the same with BioRED:
for every concept that takes part in a relation (the *anchor*) and every template of :data:`TEMPLATES`, the
answers are the concepts related to the anchor by one of the template's relation types (BioRED relations are
undirected), every mention of them in the abstract is a gold answer span, and the question's categories are the
answer concepts' entity types mapped by :data:`CATEGORY_OF_TYPE` (several answer concepts of different types make
a multi-label question). Typed templates ("Which chemical is associated with X?") make one question per answer
category; untyped ones ("What is associated with X?") one question with every answer.

**Split.** Documents (``doc_id``: a BioRED PMID, an emrQA note, a COVID-QA article; for a SQuAD file without
document ids, the question text, so one question asked over several snippets stays in one split) are put in a
seeded order and cut at the ratios (:func:`split_documents`); questions follow their document. Caps on the number
of questions per split take a seeded sample (the cap seed is the split seed, so every variant and seed of a study
sees the same questions).

**Windows.** A question and its context become one or more encoder windows (``[CLS] question [SEP] context
[SEP]``, the context cut into windows of ``max_length`` subwords overlapping by ``stride``, as SQuAD models do).
Each training window's target is the earliest gold span lying wholly inside it, or ``[CLS]`` (position 0) when
none does; every window carries its question's multi-hot category labels.

Bad input is counted, never fatal: empty questions, questions without a usable answer, answers whose offsets do not
match the context (the SQuAD reader repairs near misses and drops the rest, counted in ``Corpus.meta``; the emrQA
reader does the same), over-long questions (cut to ``max_question_length`` subwords) and answers no window holds.

    splits = load_qa("../shared/data/re/BioRED", ratios=(0.8, 0.1, 0.1), seed=0, caps=(2000, 200, 400))
    train, stats = encode_windows(splits.train, tokenizer, splits.categories, max_length=384, stride=128)
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from curation.io import InputError, read_text
from curation.records import Corpus, Record, Span

# BioRED entity type -> answer category (the emrQA-style label the category head predicts)
CATEGORY_OF_TYPE: dict[str, str] = {
    "ChemicalEntity": "chemical",
    "DiseaseOrPhenotypicFeature": "disease",
    "GeneOrGeneProduct": "gene",
    "SequenceVariant": "variant",
    "OrganismTaxon": "organism",
    "CellLine": "cell_line",
}
CATEGORIES: tuple[str, ...] = tuple(CATEGORY_OF_TYPE.values())
# how a typed template names a category
CATEGORY_NOUN: dict[str, str] = {"chemical": "chemical", "disease": "disease", "gene": "gene",
                                 "variant": "sequence variant", "organism": "organism", "cell_line": "cell line"}
FORMATS = ("auto", "biored", "squad", "emrqa")


@dataclass(frozen=True)
class Template:
    """A question template: ``{anchor}`` is the anchor concept's first mention, ``{noun}`` (typed templates) the
    answer category's noun; ``relations`` are the BioRED relation types that answer it (empty: any type)."""

    name: str
    question: str
    relations: tuple[str, ...] = ()
    typed: bool = False


TEMPLATES: tuple[Template, ...] = (
    Template("associated", "What is associated with {anchor}?"),
    Template("associated_typed", "Which {noun} is associated with {anchor}?", typed=True),
    Template("positive", "What is positively correlated with {anchor}?", ("Positive_Correlation",)),
    Template("negative", "What is negatively correlated with {anchor}?", ("Negative_Correlation",)),
    Template("binds", "What binds to {anchor}?", ("Bind",)),
    Template("cotreatment", "What is given together with {anchor}?", ("Cotreatment", "Drug_Interaction")),
    Template("compared", "What is {anchor} compared with?", ("Comparison",)),
)


def _concepts(id_field: str) -> list[str]:
    return [c.strip() for c in id_field.split(",") if c.strip() and c.strip() != "-"]


def template_questions(doc: Record, templates: Sequence[Template] = TEMPLATES, counts: Counter | None = None
                       ) -> list[Record]:
    """The templated questions of one BioRED document (a :func:`curation.readers.pubtator.read_pubtator` record).

    Each question is a :class:`Record` with the document's text and ``doc_id``, the ``question``, every mention of
    every answer concept as a span labelled by its category, ``labels`` = the answer categories (in
    :data:`CATEGORIES` order) and ``meta`` naming the template, the anchor and the answer concepts. ``counts``
    (when given) gathers what was skipped: ``self_relations`` (a concept related to itself), ``unknown_type``
    (an entity type outside :data:`CATEGORY_OF_TYPE`), ``answer_is_anchor_mention`` (the answer's only mentions
    also name the anchor).

    >>> text = "Aspirin reduced fever and BRCA1 ."
    >>> doc = Record(id="1", doc_id="1", text=text, spans=[Span(0, 7, "ChemicalEntity"),
    ...     Span(16, 21, "DiseaseOrPhenotypicFeature"), Span(26, 31, "GeneOrGeneProduct")],
    ...     meta={"span_ids": ["C1", "D1", "G1"], "relations": [
    ...         {"type": "Negative_Correlation", "id1": "C1", "id2": "D1"},
    ...         {"type": "Association", "id1": "G1", "id2": "D1"}]})
    >>> [(q.question, q.labels) for q in template_questions(doc) if "fever" in q.question]
    [('What is associated with fever?', ['chemical', 'gene']), ('Which chemical is associated with fever?', \
['chemical']), ('Which gene is associated with fever?', ['gene']), ('What is negatively correlated with fever?', \
['chemical'])]
    """
    counts = counts if counts is not None else Counter()
    text, spans, span_ids = doc.text, doc.spans, doc.meta.get("span_ids", [""] * len(doc.spans))
    mentions: dict[str, list[int]] = {}
    for i in sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end)):
        for c in _concepts(span_ids[i]):
            mentions.setdefault(c, []).append(i)
    edges: dict[str, list[tuple[str, str]]] = {}
    for rel in doc.meta.get("relations", []):
        a, b = rel["id1"], rel["id2"]
        if a == b:
            counts["self_relations"] += 1
            continue
        if a not in mentions or b not in mentions:
            counts["relation_without_mention"] += 1
            continue
        edges.setdefault(a, []).append((b, rel["type"]))
        edges.setdefault(b, []).append((a, rel["type"]))
    category = {}
    for c, idx in mentions.items():
        label = spans[idx[0]].label
        if label in CATEGORY_OF_TYPE:
            category[c] = CATEGORY_OF_TYPE[label]
    out = []
    for anchor in sorted(edges):
        if anchor not in category:
            counts["unknown_type"] += 1
            continue
        anchor_spans = [spans[i] for i in mentions[anchor]]
        anchor_text = anchor_spans[0].surface(text)
        for t in templates:
            related = sorted({b for b, rtype in edges[anchor] if not t.relations or rtype in t.relations})
            answers: dict[str, list[Span]] = {}
            for b in related:
                if b not in category:
                    counts["unknown_type"] += 1
                    continue
                kept = [spans[i] for i in mentions[b]
                        if not any(spans[i].start < a.end and a.start < spans[i].end for a in anchor_spans)]
                if not kept:
                    counts["answer_is_anchor_mention"] += 1
                    continue
                answers[b] = kept
            groups = ([[b for b in answers if category[b] == cat] for cat in CATEGORIES] if t.typed
                      else [list(answers)])
            for group in groups:
                if not group:
                    continue
                cats = [c for c in CATEGORIES if any(category[b] == c for b in group)]
                qspans = sorted({Span(s.start, s.end, category[b]) for b in group for s in answers[b]})
                question = t.question.format(anchor=anchor_text, noun=CATEGORY_NOUN[cats[0]])
                qid = f"{doc.id}:{t.name}:{anchor}" + (f":{cats[0]}" if t.typed else "")
                out.append(Record(id=qid, text=text, spans=qspans, doc_id=doc.doc_id or doc.id, question=question,
                                  labels=cats, meta={"template": t.name, "anchor": anchor,
                                                     "anchor_text": anchor_text, "answer_concepts": group}))
                counts[f"template_{t.name}"] += 1
    return out


def split_documents(doc_ids: Iterable[str], ratios: Sequence[float], seed: int) -> dict[str, str]:
    """Each document's split (``train``, ``dev`` or ``test``): the sorted distinct ids in a seeded shuffle, cut at
    the cumulative ratios.

    >>> parts = split_documents([f"d{i}" for i in range(10)], (0.8, 0.1, 0.1), seed=0)
    >>> Counter(parts.values()) == Counter({"train": 8, "dev": 1, "test": 1})
    True
    >>> parts == split_documents([f"d{i}" for i in reversed(range(10))], (0.8, 0.1, 0.1), seed=0)
    True
    """
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must be three positive shares summing to 1, not {list(ratios)}")
    ids = sorted(set(doc_ids))
    random.Random(seed).shuffle(ids)
    cut1, cut2 = round(ratios[0] * len(ids)), round((ratios[0] + ratios[1]) * len(ids))
    return {d: "train" if k < cut1 else "dev" if k < cut2 else "test" for k, d in enumerate(ids)}


def cap_questions(records: Sequence[Record], cap: int, seed: int) -> list[Record]:
    """A seeded sample of at most ``cap`` records in their original order (``cap`` 0: all).

    >>> [r.id for r in cap_questions([Record(id=str(i), text="") for i in range(5)], 3, seed=0)]
    ['0', '3', '4']
    """
    if not cap or cap >= len(records):
        return list(records)
    keep = sorted(random.Random(seed).sample(range(len(records)), cap))
    return [records[i] for i in keep]


@dataclass
class QASplits:
    """The three question splits of one data set and how they were made."""

    dataset: str
    train: list[Record]
    dev: list[Record]
    test: list[Record]
    categories: list[str]
    how: str
    sources: list[str] = field(default_factory=list)
    counts: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------------
# emrQA


def _emrqa_context(context: Any) -> tuple[str, list[int]]:
    """emrQA's context (a list of note lines, or a string) as one text, and each line's start offset."""
    if isinstance(context, str):
        lines = context.split("\n")
        text = context
    else:
        lines = [str(x) for x in context]
        joiner = "" if all(x.endswith("\n") for x in lines[:-1]) else "\n"
        text = joiner.join(lines)
        if joiner == "":
            lines = [x.removesuffix("\n") for x in lines]
    starts, pos = [], 0
    for line in lines:
        starts.append(pos)
        pos += len(line) + 1
    return text, starts


def _token_starts(line: str) -> list[int]:
    starts, inside = [], False
    for i, ch in enumerate(line):
        if not ch.isspace() and not inside:
            starts.append(i)
        inside = not ch.isspace()
    return starts


def _emrqa_answer_start(ans: dict, text: str, line_starts: list[int], use_evidence: bool) -> int | None:
    """Character start of an emrQA answer: ``answer_start`` is ``[line (1-based), token index]`` for the answer
    text; the evidence line starts at line ``evidence_start``."""
    where = ans.get("evidence_start") if use_evidence else ans.get("answer_start")
    if isinstance(where, list) and where and not use_evidence:
        line, token = where[0], where[1] if len(where) > 1 else 0
    elif isinstance(where, list) and where:
        line, token = where[0], None
    else:
        line, token = where, None
    if isinstance(line, str) and line.strip().isdigit():
        line = int(line)
    if not isinstance(line, int) or not 1 <= line <= len(line_starts):
        return None
    base = line_starts[line - 1]
    if token is None or token == "":
        return base
    if not isinstance(token, int):
        return None
    end = line_starts[line] - 1 if line < len(line_starts) else len(text)
    tokens = _token_starts(text[base:end])
    return base + tokens[token] if 0 <= token < len(tokens) else None


def _locate_near(text: str, answer: str, start: int | None, window: int) -> tuple[int | None, bool]:
    """``(start, exact)``: the answer at ``start`` (exactly, else ignoring case), else its nearest occurrence within
    ``window`` characters (case-insensitive), else ``(None, False)``."""
    if start is not None and text[start : start + len(answer)] == answer:
        return start, True
    if start is not None and text[start : start + len(answer)].lower() == answer.lower():
        return start, False
    if start is None:
        return None, False
    low, target = text.lower(), answer.lower()
    best, pos = None, low.find(target, max(0, start - window))
    while pos != -1 and pos <= start + window:
        if best is None or abs(pos - start) < abs(best - start):
            best = pos
        pos = low.find(target, pos + 1)
    return best, False


def read_emrqa(path: str | os.PathLike, dataset: str = "", answer: str = "text", fix_window: int = 200) -> Corpus:
    """Read emrQA's JSON (``data.json`` or one of its per-challenge files) into one record per question paraphrase.

    Layout (emrQA's README): ``{"data": [{"title": challenge, "paragraphs": [{"note_id", "context": [note lines],
    "qas": [{"id", "question": [paraphrases], "answers": [{"answer_start": [line, token], "text", "evidence",
    "evidence_start": line, "answer_entity_type": "single" | "complex" | "empty"}]}]}]}]}``; lines count from 1,
    tokens (whitespace-separated, within the line) from 0. ``answer="text"`` takes the answer text as the span
    (answers with empty text, emrQA's yes/no "empty" answers, and "complex" ones whose text is a list, are skipped
    and counted); ``answer="evidence"`` takes the evidence line, as emrQA's own SQuAD conversion does.

    An answer not found at its offsets is looked for (case-insensitively) within ``fix_window`` characters and
    counted in ``meta["answers_fixed"]``; one still not found is dropped and counted in
    ``meta["answers_unmatched"]``. A question left without answers, or an empty paraphrase, is skipped and counted.
    A record's categories (``labels``, also the spans' labels) are an answer's or question's ``category`` field
    when the file has one, else the challenge title (``medication``, ``relations``, ``risk``, ...).
    """
    if answer not in ("text", "evidence"):
        raise ValueError(f"answer must be 'text' or 'evidence', not {answer!r}")
    path = Path(path)
    try:
        doc = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(path, f"invalid JSON: {err.msg} (column {err.colno})", line=err.lineno) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        raise InputError(path, "expected emrQA JSON: an object with a 'data' list")
    counts: Counter = Counter()
    records: list[Record] = []
    for gi, group in enumerate(doc["data"]):
        title = str(group.get("title", "")) if isinstance(group, dict) else ""
        paragraphs = group.get("paragraphs") if isinstance(group, dict) else None
        if not isinstance(paragraphs, list):
            raise InputError(path, f"data[{gi}] has no 'paragraphs' list")
        for pi, para in enumerate(paragraphs):
            if not isinstance(para, dict) or not isinstance(para.get("context"), (str, list)):
                raise InputError(path, f"data[{gi}].paragraphs[{pi}] has no 'context' (a list of lines or a string)")
            text, line_starts = _emrqa_context(para["context"])
            note = str(para.get("note_id", f"{title}:{pi}"))
            for qi, qa in enumerate(para.get("qas", [])):
                if not isinstance(qa, dict):
                    counts["malformed_questions"] += 1
                    continue
                spans, labels = [], []
                for ans in qa.get("answers", []):
                    counts["answers"] += 1
                    if not isinstance(ans, dict):
                        counts["answers_malformed"] += 1
                        continue
                    span_text = ans.get("evidence") if answer == "evidence" else ans.get("text")
                    if isinstance(span_text, list):
                        counts["answers_complex"] += 1
                        continue
                    if not isinstance(span_text, str) or not span_text.strip():
                        counts["answers_empty"] += 1
                        continue
                    span_text = span_text.rstrip("\n")
                    start = _emrqa_answer_start(ans, text, line_starts, answer == "evidence")
                    found, exact = _locate_near(text, span_text, start, fix_window)
                    if found is None:
                        counts["answers_unmatched"] += 1
                        continue
                    if not exact:
                        counts["answers_fixed"] += 1
                    cat = str(ans.get("category") or qa.get("category") or title or "answer")
                    spans.append(Span(found, found + len(span_text), cat))
                    labels.append(cat)
                if not spans:
                    counts["questions_without_answer"] += 1
                    continue
                questions = qa.get("question")
                questions = questions if isinstance(questions, list) else [questions]
                qid = qa.get("id")
                qid = str(qid) if isinstance(qid, (str, int)) else f"{note}:{qi}"
                for k, q in enumerate(questions):
                    if not isinstance(q, str) or not q.strip():
                        counts["empty_questions"] += 1
                        continue
                    records.append(Record(id=f"{qid}:{k}" if len(questions) > 1 else qid, text=text,
                                          spans=sorted(set(spans)), doc_id=note, question=q,
                                          labels=sorted(set(labels)), meta={"title": title}))
    if not records:
        raise InputError(path, f"no question with a usable answer found ({dict(counts)})")
    return Corpus(records=records, path=str(path), format="emrqa", dataset=dataset or path.stem,
                  meta={k: counts[k] for k in sorted(counts)})


# ---------------------------------------------------------------------------------------------------------------
# loading any supported set


def detect_qa_format(path: str | os.PathLike) -> str:
    """``biored`` (a PubTator file or a folder of them), ``emrqa`` (JSON whose contexts are line lists or whose
    paragraphs carry ``note_id``) or ``squad`` (other SQuAD-layout JSON)."""
    p = Path(path)
    if p.is_dir():
        if any(x.suffix.lower() == ".pubtator" for x in p.iterdir()):
            return "biored"
        raise InputError(p, "folder holds no .PubTator file; give a PubTator file or folder, or a QA JSON file")
    if p.suffix.lower() == ".pubtator":
        return "biored"
    if p.suffix.lower() == ".json":
        try:
            doc = json.loads(read_text(p))
        except json.JSONDecodeError as err:
            raise InputError(p, f"invalid JSON: {err.msg} (column {err.colno})", line=err.lineno) from None
        for group in doc.get("data", []) if isinstance(doc, dict) else []:
            for para in group.get("paragraphs", []) if isinstance(group, dict) else []:
                if isinstance(para, dict):
                    return "emrqa" if isinstance(para.get("context"), list) or "note_id" in para else "squad"
        raise InputError(p, "JSON without data[].paragraphs[]: neither SQuAD nor emrQA layout")
    if not p.exists():
        raise InputError(p, "no such file or folder")
    raise InputError(p, "cannot tell the format (BioRED PubTator, SQuAD JSON or emrQA JSON); give --format")


def _biored_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(x for x in path.iterdir() if x.suffix.lower() == ".pubtator")
        if not files:
            raise InputError(path, "folder holds no .PubTator file")
        return files
    return [path]


def _split_and_cap(dataset: str, records: list[Record], unit: Any, ratios: Sequence[float], seed: int,
                   caps: Sequence[int], categories: Sequence[str] | None, how: str, sources: list[str],
                   counts: dict[str, Any]) -> QASplits:
    try:
        where = split_documents((unit(r) for r in records), ratios, seed)
    except ValueError as err:
        raise InputError("--split", str(err)) from None
    parts: dict[str, list[Record]] = {"train": [], "dev": [], "test": []}
    for r in records:
        parts[where[unit(r)]].append(r)
    docs = Counter(where.values())
    counts = dict(counts) | {f"{n}_documents": docs[n] for n in parts} | {f"{n}_questions_before_cap": len(parts[n])
                                                                          for n in parts}
    for n, cap in zip(("train", "dev", "test"), caps):
        parts[n] = cap_questions(parts[n], cap, seed)
    if categories is None:
        order = {c: i for i, c in enumerate(CATEGORIES)}
        categories = sorted({lab for r in parts["train"] for lab in r.labels}, key=lambda c: (order.get(c, 99), c))
    how += (f"; documents split {'/'.join(f'{r:g}' for r in ratios)} (seed {seed}): {docs['train']}/{docs['dev']}/"
            f"{docs['test']} documents; questions capped at {'/'.join(str(c or 'all') for c in caps)} (seeded sample)")
    return QASplits(dataset, parts["train"], parts["dev"], parts["test"], list(categories), how, sources, counts)


def load_qa(path: str | os.PathLike, format: str = "auto", ratios: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
            caps: Sequence[int] = (0, 0, 0), templates: Sequence[Template] = TEMPLATES,
            emrqa_answer: str = "text") -> QASplits:
    """Read a question set and split it by document (see the module doc).

    ``format``: ``biored`` (PubTator file(s) -> templated questions with categories), ``emrqa`` (categories from
    the file), ``squad`` (COVID-QA, BioASQ: spans only, no categories) or ``auto``. ``caps``: at most this many
    train/dev/test questions (0: all).
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "no such file or folder")
    fmt = detect_qa_format(p) if format == "auto" else format
    if fmt not in FORMATS:
        raise InputError("--format", f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if fmt == "biored":
        from curation.readers.pubtator import read_pubtator

        files = _biored_files(p)
        counts: Counter = Counter()
        records = []
        for f in files:
            for doc in read_pubtator(f).records:
                records += template_questions(doc, templates, counts)
        if not records:
            raise InputError(p, "no templated question: the documents have no relation between typed concepts")
        counts["questions"] = len(records)
        how = (f"templated questions ({len(templates)} templates: {', '.join(t.name for t in templates)}) from "
               f"{', '.join(f.name for f in files)}")
        return _split_and_cap(p.name if p.is_dir() else p.parent.name, records, lambda r: r.doc_id, ratios, seed,
                              caps, None, how, [str(f) for f in files], dict(sorted(counts.items())))
    if fmt == "emrqa":
        corpus = read_emrqa(p, answer=emrqa_answer)
        how = f"emrQA questions from {p.name} (answer spans: {emrqa_answer})"
        return _split_and_cap(corpus.dataset, corpus.records, lambda r: r.doc_id, ratios, seed, caps, None, how,
                              [str(p)], corpus.meta | {"questions": len(corpus.records)})
    from curation.readers.squad import read_squad

    corpus = read_squad(p)
    records = [r for r in corpus.records if r.spans]
    counts = {"questions": len(corpus.records), "offsets_fixed": corpus.meta["offsets_fixed"],
              "offsets_unmatched_questions": len(corpus.meta["offsets_unmatched"]),
              "questions_without_usable_answer": len(corpus.records) - len(records)}
    how = (f"SQuAD questions from {p.name}: {counts['offsets_fixed']} misplaced answer offsets repaired, "
           f"{counts['questions_without_usable_answer']} questions left without a usable answer")
    return _split_and_cap(corpus.dataset, records, lambda r: r.doc_id or f"q:{r.question}", ratios, seed, caps, [],
                          how, [str(p)], counts)


# ---------------------------------------------------------------------------------------------------------------
# encoder windows


def _cut_question(question: str, tokenizer: Any, max_tokens: int) -> tuple[str, bool]:
    enc = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)
    if len(enc["input_ids"]) <= max_tokens:
        return question, False
    return question[: enc["offset_mapping"][max_tokens - 1][1]], True


def _answer_tokens(span: Span, offsets: Sequence[tuple[int, int] | None]) -> tuple[int, int] | None:
    """First and last window position covering ``span``, or ``None`` when the span is not wholly inside the
    window's context part (``offsets[i]`` is ``None`` outside it).

    >>> _answer_tokens(Span(4, 9, "x"), [None, (0, 3), (4, 6), (6, 9), (10, 12), None])
    (2, 3)
    >>> _answer_tokens(Span(4, 12, "x"), [None, (0, 3), (4, 6), (6, 9), None]) is None
    True
    """
    ctx = [i for i, o in enumerate(offsets) if o is not None]
    if not ctx or span.start < offsets[ctx[0]][0] or span.end > offsets[ctx[-1]][1]:
        return None
    first = next((i for i in ctx if offsets[i][1] > span.start), None)
    last = next((i for i in reversed(ctx) if offsets[i][0] < span.end), None)
    if first is None or last is None or first > last:
        return None
    return first, last


def encode_windows(records: Sequence[Record], tokenizer: Any, categories: Sequence[str], max_length: int,
                   stride: int, max_question_length: int = 64, negative_windows: int = -1, seed: int = 0
                   ) -> tuple[list[dict[str, Any]], list[Record], dict[str, int]]:
    """Encoder windows of the usable questions; return ``(windows, questions, counts)``.

    ``questions`` are the records kept (in order; a window's ``"q"`` indexes them). Each window holds
    ``input_ids``, ``token_type_ids`` (when the tokenizer makes them), ``offsets`` (character span of each
    context subword, ``None`` elsewhere), ``start``/``end`` (target positions, 0 = ``[CLS]`` when no gold span
    lies wholly in the window) and ``labels`` (multi-hot over ``categories``). ``negative_windows`` >= 0 keeps at
    most that many windows without an answer per question (a seeded choice; training on long documents), -1 all;
    ``counts["windows"]`` counts the windows kept. Skipped and repaired input is counted (see the module doc);
    nothing here raises on bad records.
    """
    counts: Counter = Counter()
    index = {c: i for i, c in enumerate(categories)}
    kept, questions, contexts = [], [], []
    for r in records:
        q = (r.question or "").strip()
        if not q:
            counts["empty_question"] += 1
            continue
        if not r.text.strip():
            counts["empty_context"] += 1
            continue
        good = [s for s in r.spans if 0 <= s.start < s.end <= len(r.text) and r.text[s.start : s.end].strip()]
        counts["answer_span_outside_context"] += len(r.spans) - len(good)
        if not good:
            counts["no_usable_answer"] += 1
            continue
        unseen = [lab for lab in r.labels if lab not in index]
        counts["labels_outside_category_set"] += len(unseen)
        q, cut = _cut_question(q, tokenizer, max_question_length)
        counts["question_truncated"] += cut
        kept.append(Record(id=r.id, text=r.text, spans=sorted(good), doc_id=r.doc_id, question=q, labels=r.labels,
                           meta=r.meta))
        questions.append(q)
        contexts.append(r.text)
    windows: list[dict[str, Any]] = []
    rng = random.Random(seed)
    for lo in range(0, len(kept), 64):
        enc = tokenizer(questions[lo : lo + 64], contexts[lo : lo + 64], truncation="only_second",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True,
                        return_offsets_mapping=True)
        by_question: dict[int, list[dict[str, Any]]] = {}
        for w in range(len(enc["input_ids"])):
            qi = lo + enc["overflow_to_sample_mapping"][w]
            seq = enc.sequence_ids(w)
            offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][w], seq)]
            start = end = 0
            for span in kept[qi].spans:
                pos = _answer_tokens(span, offsets)
                if pos is not None:
                    start, end = pos
                    break
            labels = [0.0] * len(categories)
            for lab in kept[qi].labels:
                if lab in index:
                    labels[index[lab]] = 1.0
            window = {"q": qi, "input_ids": enc["input_ids"][w], "offsets": offsets, "start": start, "end": end,
                      "labels": labels}
            if "token_type_ids" in enc:
                window["token_type_ids"] = enc["token_type_ids"][w]
            by_question.setdefault(qi, []).append(window)
        for qi in sorted(by_question):
            ws = by_question[qi]
            neg = [k for k, w in enumerate(ws) if w["start"] == 0]
            counts["multi_window_questions"] += len(ws) > 1
            if len(neg) == len(ws):
                counts["answer_in_no_window"] += 1
            if 0 <= negative_windows < len(neg):
                dropped = set(neg) - set(rng.sample(neg, negative_windows))
                counts["negative_windows_dropped"] += len(dropped)
                ws = [w for k, w in enumerate(ws) if k not in dropped]
            counts["windows"] += len(ws)
            windows += ws
    counts["questions"] = len(kept)
    return windows, kept, {k: counts[k] for k in sorted(counts)}


def collate(windows: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch of windows into tensors (``input_ids``, ``attention_mask``, ``token_type_ids``, ``start``,
    ``end``, ``labels``).

    >>> b = collate([{"input_ids": [5, 6, 7], "start": 1, "end": 2, "labels": [1.0]},
    ...              {"input_ids": [5], "start": 0, "end": 0, "labels": [0.0]}], pad_id=0)
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist(), b["start"].tolist()
    ([[5, 6, 7], [5, 0, 0]], [[1, 1, 1], [1, 0, 0]], [1, 0])
    """
    width = max(len(w["input_ids"]) for w in windows)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([w[key] + [value] * (width - len(w[key])) for w in windows], dtype=torch.long)

    out = {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": torch.tensor([[1] * len(w["input_ids"]) + [0] * (width - len(w["input_ids"]))
                                        for w in windows], dtype=torch.long),
        "start": torch.tensor([w["start"] for w in windows], dtype=torch.long),
        "end": torch.tensor([w["end"] for w in windows], dtype=torch.long),
        "labels": torch.tensor([w["labels"] for w in windows], dtype=torch.float),
    }
    if all("token_type_ids" in w for w in windows):
        out["token_type_ids"] = pad("token_type_ids", 0)
    return out
