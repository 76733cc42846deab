"""Corpus readers: every format under ``../shared/data`` -> :class:`curation.records.Corpus`.

``read_corpus(path)`` detects the format from the file's name and first bytes; ``format=`` overrides detection.
Each reader lives in its own module and is imported only when used.

    corpus = read_corpus("../shared/data/ner/NCBI-disease/test.tsv")    # format "iob"
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

from curation.io import InputError
from curation.records import Corpus

# format name -> "module:function"; every function takes (path, dataset="") and returns a Corpus
READERS: dict[str, str] = {
    "iob": "curation.readers.iob:read_iob",
    "genia": "curation.readers.genia:read_genia",
    "pubtator": "curation.readers.pubtator:read_pubtator",
    "ddi": "curation.readers.ddi:read_ddi",
    "phee": "curation.readers.phee:read_phee",
    "squad": "curation.readers.squad:read_squad",
    "prodigy": "curation.readers.prodigy:read_prodigy",
    "healthadvice": "curation.readers.cls_csv:read_healthadvice",
    "causal": "curation.readers.cls_csv:read_causal",
    "ade": "curation.readers.ade:read_ade",
    "brat": "curation.readers.brat:read_brat",
    "bioc": "curation.readers.bioc:read_bioc",
    "bigbio": "curation.readers.bigbio:read_bigbio",
    "records": "curation.readers.records_jsonl:read_records",
    "instruction": "curation.readers.records_jsonl:read_instruction",
}


def _first_json(path: Path) -> dict | None:
    """The first line of a JSON-lines file as an object (however long the line), ``{"data": None}`` for a SQuAD
    file (one JSON document opening with ``"data"``), None when the first line is not a JSON object."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        stripped = head.decode("utf-8", errors="replace").lstrip()
        if stripped.startswith("{") and '"data"' in stripped[:40]:
            return {"data": None}
        f.seek(len(head) - len(head.lstrip()))  # skip leading blank lines
        first = f.readline().decode("utf-8", errors="replace").removeprefix("\ufeff")
    try:
        obj = json.loads(first)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def _xml_root(path: Path) -> str:
    """The name of the first element of an XML file (after the declaration, comments and the doctype)."""
    with open(path, "rb") as f:
        head = f.read(1 << 14).decode("utf-8", errors="replace")
    head = re.sub(r"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^>]*>", "", head, flags=re.S)
    m = re.search(r"<\s*([A-Za-z_][\w.:-]*)", head)
    return m.group(1) if m else ""


def _bioc_json(path: Path) -> bool:
    """A BioC JSON collection (one JSON document, often indented, holding ``documents`` made of ``passages``)."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("utf-8", errors="replace")
    return bool(re.search(r'"documents"\s*:', head)) and bool(re.search(r'"passages"\s*:', head))


def detect_format(path: str | os.PathLike) -> str:
    """Guess a corpus format from the path's name and content; raise :class:`InputError` when it cannot."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        if any(p.rglob("*.ann")):
            return "brat"
        if any(p.rglob("*.xml")):
            return "ddi"
        if (p / "DRUG-AE.rel").exists():
            return "ade"
        raise InputError(p, "directory holds no known corpus (brat, DDI XML or ADE-Corpus-V2); give --format")
    if not p.is_file():
        raise InputError(p, "no such file")
    if name.endswith(".ann") or (name.endswith(".txt") and p.with_suffix(".ann").is_file()):
        return "brat"
    if name.endswith(".parquet"):
        return "bigbio"
    if name.endswith((".tsv", ".iob", ".iob2", ".bio", ".conll")):
        return "iob"
    if name.endswith(".pubtator"):
        return "pubtator"
    if name.endswith(".xml"):
        return "bioc" if _xml_root(p) == "collection" else "ddi"
    if name.endswith(".rel") or name == "ade-neg.txt":
        return "ade"
    if name.endswith(".csv"):
        with open(p, encoding="utf-8", errors="replace") as f:
            header = f.readline().strip().lower()
        if header.startswith("label,pmid,sentence"):
            return "healthadvice"
        if header.startswith("sentence,label"):
            return "causal"
        raise InputError(p, f"unknown CSV header {header[:60]!r}; give --format", line=1)
    if name.endswith((".json", ".jsonl", ".jsonlines")):
        if _bioc_json(p):
            return "bioc"
        obj = _first_json(p)
        if obj is None:
            with open(p, "rb") as f:
                head = f.read(1 << 16)
            if not head.strip() and len(head) < 1 << 16:
                raise InputError(p, "file is empty")
            raise InputError(p, "first line is not a JSON object; give --format", line=1)
        keys = set(obj)
        if "data" in keys:
            return "squad"
        if "entity_mentions" in keys:
            return "genia"
        if "context" in keys and "annotations" in keys:
            return "phee"
        if {"document_id", "passages", "entities"} <= keys:
            return "bigbio"
        if {"id", "passages", "infons"} <= keys:
            return "bioc"  # JSON lines, one BioC document per line
        if {"instruction", "input", "output"} <= keys:
            return "instruction"
        if "spans" in keys and "tokens" in keys and isinstance(obj.get("tokens", [None])[0], dict):
            return "prodigy"
        if {"id", "text"} <= keys:
            return "records"
        raise InputError(p, f"JSON lines with keys {sorted(keys)[:8]} match no known format; give --format", line=1)
    raise InputError(p, "cannot tell the format from the name; give --format")


def read_corpus(path: str | os.PathLike, format: str | None = None, dataset: str = "", **kwargs) -> Corpus:
    """Read any supported corpus file (or DDI/ADE folder) into a :class:`Corpus`."""
    fmt = format or detect_format(path)
    if fmt not in READERS:
        raise InputError(path, f"unknown format {fmt!r}; one of {', '.join(sorted(READERS))}")
    module, func = READERS[fmt].split(":")
    reader = getattr(importlib.import_module(module), func)
    return reader(path, dataset=dataset, **kwargs)

