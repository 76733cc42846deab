"""SQuAD v1 JSON (COVID-QA, BioASQ factoid): one record per question.

The file is one JSON document ``{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}]}]}]}]}``. A record's text is the context, ``question`` the question, and each
answer a ``Span(label="answer")`` whose surface is exactly the answer text; ``doc_id`` is the paragraph's
``document_id`` where the file has one (COVID-QA).

COVID-QA's early release has 234 answers whose ``answer_start`` does not point at the answer text: 196 answers
start with a space and their offset points one character past it, 38 (all in document 2684) are two or three
characters early. With ``fix_offsets=True`` (the default) an answer not found at its offset is placed at its
nearest occurrence within ``FIX_WINDOW`` characters and counted in ``Corpus.meta["offsets_fixed"]`` (the
record's ``meta["offsets_fixed"]`` keeps ``[given, repaired]`` starts). An answer that cannot be located that way
(or any mismatch when ``fix_offsets=False``) is left out of the record's spans, kept in its
``meta["unmatched_answers"]``, and the record id is listed in ``Corpus.meta["offsets_unmatched"]``.

    corpus = read_squad("../shared/data/qa/COVID-QA/200423_covidQA.json")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from curation.io import InputError, read_text
from curation.records import Corpus, Record, Span

FIX_WINDOW = 8  # characters either side of answer_start searched for a misplaced answer


def _locate(context: str, text: str, start: int) -> int | None:
    """The occurrence of ``text`` nearest to ``start`` within ``FIX_WINDOW`` characters, or ``None``."""
    best = None
    lo = max(0, start - FIX_WINDOW)
    pos = context.find(text, lo, start + FIX_WINDOW + len(text))
    while pos != -1:
        if best is None or abs(pos - start) < abs(best - start):
            best = pos
        pos = context.find(text, pos + 1, start + FIX_WINDOW + len(text))
    return best


def _list(obj: Any, key: str, path: Path, record: str | None = None) -> list:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, list):
        raise InputError(path, f"expected a list under {key!r}", record=record)
    return value


def read_squad(path: str | os.PathLike, dataset: str = "", fix_offsets: bool = True) -> Corpus:
    """Read a SQuAD v1 JSON file; see the module docstring for how misplaced answers are handled."""
    path = Path(path)
    try:
        doc = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise InputError(path, f"invalid JSON: {err.msg} (column {err.colno})", line=err.lineno) from None
    records: list[Record] = []
    seen: set[str] = set()
    fixed, unmatched = 0, []
    for article in _list(doc, "data", path):
        title = article.get("title") if isinstance(article, dict) else None
        for para in _list(article, "paragraphs", path):
            context = para.get("context") if isinstance(para, dict) else None
            if not isinstance(context, str):
                raise InputError(path, f"a paragraph of article {title!r} has no 'context' string")
            for qa in _list(para, "qas", path):
                if not isinstance(qa, dict) or "id" not in qa or not isinstance(qa.get("question"), str):
                    raise InputError(path, f"a question of article {title!r} lacks 'id' or 'question': "
                                           f"{str(qa)[:80]}")
                rid = str(qa["id"])
                if rid in seen:
                    raise InputError(path, f"duplicate question id {rid!r}", record=rid)
                seen.add(rid)
                spans, repairs, lost = [], [], []
                for ans in _list(qa, "answers", path, rid):
                    text, start = (ans.get("text"), ans.get("answer_start")) if isinstance(ans, dict) else (0, 0)
                    if not isinstance(text, str) or not text or not isinstance(start, int) \
                            or isinstance(start, bool):
                        raise InputError(path, f"answer {str(ans)[:80]} needs a non-empty 'text' and an integer "
                                               "'answer_start'", record=rid)
                    if not 0 <= start < len(context):
                        raise InputError(path, f"answer_start {start} falls outside the context (length "
                                               f"{len(context)})", record=rid)
                    if context[start : start + len(text)] != text:
                        found = _locate(context, text, start) if fix_offsets else None
                        if found is None:
                            lost.append(ans)
                            continue
                        repairs.append([start, found])
                        start = found
                    spans.append(Span(start, start + len(text), "answer"))
                meta: dict[str, Any] = {}
                if title:
                    meta["title"] = title
                if "is_impossible" in qa:
                    meta["is_impossible"] = qa["is_impossible"]
                if repairs:
                    meta["offsets_fixed"] = repairs
                    fixed += len(repairs)
                if lost:
                    meta["unmatched_answers"] = lost
                    unmatched.append(rid)
                doc_id = para.get("document_id")
                records.append(Record(id=rid, text=context, spans=spans, question=qa["question"],
                                      doc_id=str(doc_id) if doc_id is not None else None, meta=meta))
    if not records:
        raise InputError(path, "no questions found")
    return Corpus(records=records, path=str(path), format="squad", dataset=dataset or path.parent.name,
                  meta={"offsets_fixed": fixed, "offsets_unmatched": unmatched, "fix_offsets": fix_offsets})
