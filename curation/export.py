"""Records or a generator's predictions out to brat or BioC XML, to be looked at in an annotation tool
(``bioselect data export``).

    records = prediction_records("runs/pred.jsonl", "runs/test.jsonl")    # tune generate output + its input
    export(records, "brat", "runs/review/", name="pred")

A prediction line (``bioselect tune generate``, docs/generation.md) is joined with the instruction record of the same
``id``: the record's ``input`` is the text, the prediction's ``spans`` (the generated names placed in that text) are
the spans, and ``status``, ``unplaced`` and ``output`` go to ``meta["infons"]`` (document infons in BioC).
"""

from __future__ import annotations

import os
from pathlib import Path

from curation.io import InputError, read_jsonl
from curation.records import Record, Span

FORMATS = ("brat", "bioc")
WRITTEN_SUFFIXES = (".txt", ".ann", ".xml", ".conf")


def prediction_records(pred_path: str | os.PathLike, input_path: str | os.PathLike) -> tuple[list[Record], int]:
    """The predicted records, in the input's order, and how many input records have no prediction.

    Every prediction needs ``id`` (one of the input's), ``output`` and ``spans`` (``[start, end, label]`` inside the
    input text); a duplicate or unknown id, or spans that are not spans, raise :class:`InputError` with the line.
    """
    from curation.readers.records_jsonl import read_instruction

    inputs = read_instruction(input_path)
    index = {r.id: k for k, r in enumerate(inputs.records)}
    found: dict[int, Record] = {}
    for n, obj in read_jsonl(pred_path):
        missing = [k for k in ("id", "output", "spans") if k not in obj]
        if missing:
            raise InputError(pred_path, f"a prediction needs 'id', 'output' and 'spans' (as tune generate writes "
                                        f"them); this one lacks {', '.join(missing)}", line=n)
        rid = str(obj["id"])
        if rid not in index:
            raise InputError(pred_path, f"id {rid!r} is not in {input_path}", line=n)
        k = index[rid]
        if k in found:
            raise InputError(pred_path, f"duplicate id {rid!r}", line=n)
        text = inputs.records[k].text
        try:
            spans = [Span.from_list(s) for s in obj["spans"]]
        except (TypeError, ValueError):
            raise InputError(pred_path, "'spans' must be a list of [start, end, label]", line=n, record=rid) from None
        bad = next((s for s in spans if not 0 <= s.start < s.end <= len(text)), None)
        if bad is not None:
            raise InputError(pred_path, f"span {bad.to_list()} is outside the input text (length {len(text)})",
                             line=n, record=rid)
        infons = {"status": str(obj.get("status", "")), "unplaced": str(obj.get("unplaced", 0)),
                  "output": str(obj["output"])}
        found[k] = Record(id=rid, text=text, spans=spans, doc_id=rid, meta={"infons": infons})
    if not found:
        raise InputError(pred_path, "holds no predictions")
    return [found[k] for k in sorted(found)], len(inputs.records) - len(found)


def planned_files(records: list[Record], to: str, folder: str | os.PathLike, name: str) -> list[Path]:
    """The files :func:`export` writes (``manifest.json`` aside)."""
    from curation.readers.brat import file_names

    folder = Path(folder)
    if to == "bioc":
        return [folder / f"{name}.xml"]
    names = file_names([r.id for r in records])
    return [folder / f"{n}{suffix}" for n in names for suffix in (".txt", ".ann")] + [folder / "annotation.conf"]


def export(records: list[Record], to: str, folder: str | os.PathLike, name: str = "records") -> list[Path]:
    """Write ``records`` into ``folder`` as brat (``NAME.txt`` + ``NAME.ann`` per record, ``annotation.conf``) or as
    one BioC XML collection ``folder/NAME.xml``; return the files written.

    A folder that already holds ``.txt``, ``.ann``, ``.xml`` or ``.conf`` files this export would not write is
    refused (:class:`InputError` naming one), so an annotation tool never shows documents of another export. A
    record the format cannot hold (an event without a trigger, text XML cannot carry) raises :class:`InputError`.
    """
    from curation.readers.bioc import write_bioc
    from curation.readers.brat import write_brat

    if to not in FORMATS:
        raise InputError("--to", f"must be brat or bioc, not {to!r}")
    folder = Path(folder)
    planned = set(planned_files(records, to, folder, name))
    if folder.is_dir():
        stale = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WRITTEN_SUFFIXES
                       and p not in planned)
        if stale:
            raise InputError(stale[0], f"is in the output folder but not part of this export ({len(stale)} such "
                                       "files); export into a new or empty folder")
    try:
        if to == "brat":
            return write_brat(records, folder)
        return [write_bioc(records, folder / f"{name}.xml")]
    except ValueError as err:
        raise InputError(folder, str(err)) from None
