"""Sentence classification CSV files (HealthAdvice, CausalLanguage): one record per row, ``labels = [name]``.

* HealthAdvice (Li, Wang & Yu 2021): ``label,pmid,sentence,...``; 0/1/2 -> ``no_advice``/``weak_advice``/
  ``strong_advice``; ``doc_id`` is the pmid; the remaining columns (``design``, ``rel_loc``, ...) go to ``meta``.
* CausalLanguage (Yu, Li & Wang 2019): ``sentence,label``; 0/1/2/3 -> ``none``/``direct_causal``/
  ``conditional_causal``/``correlational``.

The text is the sentence with surrounding whitespace stripped (many HealthAdvice sentences end with a space,
two CausalLanguage sentences start with one); ``meta["original_sentence"]`` keeps the cell when it differed.
Record ids are ``{dataset}/{file stem}/{row index}``; errors name the row's first physical line.

    corpus = read_healthadvice("../shared/data/cls/HealthAdvice/annotations_discussion.csv")
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from curation.io import InputError, read_text
from curation.records import Corpus, Record

HEALTHADVICE_LABELS = {"0": "no_advice", "1": "weak_advice", "2": "strong_advice"}
CAUSAL_LABELS = {"0": "none", "1": "direct_causal", "2": "conditional_causal", "3": "correlational"}


def _read_csv(path: str | os.PathLike, dataset: str, fmt: str, labels: dict[str, str], required: tuple[str, ...],
              doc_column: str | None) -> Corpus:
    path = Path(path)
    name = dataset or path.parent.name
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise InputError(path, "file has no header")
        missing = [c for c in required if c not in header]
        if missing:
            raise InputError(path, f"header {','.join(header)[:80]!r} lacks the column(s) {', '.join(missing)}",
                             line=1)
        records: list[Record] = []
        line = reader.line_num + 1
        for row in reader:
            if not any(cell.strip() for cell in row):
                line = reader.line_num + 1
                continue
            rid = f"{name}/{path.stem}/{len(records)}"
            if len(row) != len(header):
                raise InputError(path, f"expected {len(header)} columns ({','.join(header)}), got {len(row)}",
                                 line=line)
            cells = dict(zip(header, row))
            value = cells["label"].strip()
            if value not in labels:
                raise InputError(path, f"label {value!r} is not one of {', '.join(sorted(labels))}", line=line)
            sentence = cells["sentence"]
            if not sentence.strip():
                raise InputError(path, "empty sentence", line=line)
            meta = {k: v for k, v in cells.items() if k not in ("label", "sentence", doc_column)}
            meta["line"] = line
            if sentence.strip() != sentence:
                meta["original_sentence"] = sentence
            doc = cells.get(doc_column) if doc_column else None
            records.append(Record(id=rid, text=sentence.strip(), labels=[labels[value]], doc_id=doc or None,
                                  meta=meta))
            line = reader.line_num + 1
    except csv.Error as err:
        raise InputError(path, f"invalid CSV: {err}", line=reader.line_num) from None
    if not records:
        raise InputError(path, "no rows found")
    return Corpus(records=records, path=str(path), format=fmt, dataset=name,
                  meta={"label_names": dict(labels)})


def read_healthadvice(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read a HealthAdvice ``annotations_*.csv`` file (``label,pmid,sentence,...``)."""
    return _read_csv(path, dataset, "healthadvice", HEALTHADVICE_LABELS, ("label", "pmid", "sentence"), "pmid")


def read_causal(path: str | os.PathLike, dataset: str = "") -> Corpus:
    """Read the CausalLanguage CSV (``sentence,label``)."""
    return _read_csv(path, dataset, "causal", CAUSAL_LABELS, ("sentence", "label"), None)
