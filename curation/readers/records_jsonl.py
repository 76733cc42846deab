"""The project's own JSON-lines formats read back as records.

* ``records``: one :meth:`Record.to_dict` per line (``{"id", "text", "spans": [[start, end, label], ...], ...}``);
  this is also the *span file* that encoder baselines write for the scorer.
* ``instruction``: the instruction JSONL of :mod:`curation.convert`
  (``{"id", "instruction", "input", "output", "dataset", "task", "spans"}``); ``input`` becomes the text and
  ``spans`` (character offsets into ``input``) the spans.
"""

from __future__ import annotations

import os
from pathlib import Path

from curation.io import InputError, read_jsonl
from curation.records import Corpus, Record, Span


def _check_spans(path, n: int, rid: str, text: str, spans: list[Span]) -> None:
    for s in spans:
        if not 0 <= s.start < s.end <= len(text):
            raise InputError(path, f"span {s.to_list()} is outside the text (length {len(text)})",
                             line=n, record=rid)


def read_records(path: str | os.PathLike, dataset: str = "") -> Corpus:
    records, seen = [], set()
    for n, obj in read_jsonl(path):
        try:
            rec = Record.from_dict(obj)
        except KeyError as err:
            raise InputError(path, f"not a record: it has no {err.args[0]!r} (a records line has id, text and spans; "
                                   "a generator's answer line has id and output)", line=n) from None
        except (TypeError, ValueError) as err:
            raise InputError(path, f"not a record ({type(err).__name__}: {err})", line=n) from None
        if rec.id in seen:
            raise InputError(path, f"duplicate id {rec.id!r}", line=n)
        seen.add(rec.id)
        _check_spans(path, n, rec.id, rec.text, rec.spans)
        records.append(rec)
    return Corpus(records=records, path=str(path), format="records", dataset=dataset or Path(path).stem)


def read_instruction(path: str | os.PathLike, dataset: str = "") -> Corpus:
    records, seen, datasets = [], set(), set()
    for n, obj in read_jsonl(path):
        missing = [k for k in ("id", "instruction", "input", "output") if k not in obj]
        if missing:
            raise InputError(path, f"instruction record lacks {', '.join(missing)}", line=n)
        rid = str(obj["id"])
        if rid in seen:
            raise InputError(path, f"duplicate id {rid!r}", line=n)
        seen.add(rid)
        try:
            spans = [Span.from_list(s) for s in obj.get("spans", [])]
        except (TypeError, ValueError):
            raise InputError(path, "'spans' must be a list of [start, end, label] (or [start, end, label, "
                                   "fragments])", line=n, record=rid) from None
        _check_spans(path, n, rid, obj["input"], spans)
        datasets.add(obj.get("dataset", ""))
        records.append(Record(id=rid, text=obj["input"], spans=spans,
                              meta={"output": obj["output"], "task": obj.get("task", ""),
                                    "dataset": obj.get("dataset", ""), "has_spans": "spans" in obj}))
    name = dataset or (datasets.pop() if len(datasets) == 1 else Path(path).stem)
    return Corpus(records=records, path=str(path), format="instruction", dataset=name)
