"""Corpus splits: a corpus folder's own train/dev/test files, or one file split by document.

    splits = load_splits("../shared/data/ner/PK-relations", ratios=(0.6, 0.2, 0.2), seed=0)

A corpus is a folder holding ``train``, ``dev`` (or ``devel``) and ``test`` files in any format
:func:`curation.readers.read_corpus` reads (``../shared/data/ner/NCBI-disease``), or a single file (or a folder
holding one file, ``../shared/data/ner/PK-relations``) that is split by document: the records sharing a ``doc_id``
stay together (a record without one is its own unit), units are put in the foundation's seeded class-balanced order
(:func:`curation.sample.sampling_order` with ``unit="document"``) and cut at the ratios, so each split keeps the
corpus's mix of entity types to within a document per stratum. The encoder baselines and both evaluators of the
combination search read their corpora through :func:`load_splits`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from curation.io import InputError
from curation.readers import read_corpus
from curation.records import Record
from curation.sample import sampling_order

SPLIT_NAMES = {"train": ("train",), "dev": ("dev", "devel", "valid", "validation"), "test": ("test",)}
_SKIP_FILES = ("readme", "license")


@dataclass
class Splits:
    """The three splits of one corpus and how they were made."""

    dataset: str
    train: list[Record]
    dev: list[Record]
    test: list[Record]
    how: str
    sources: list[str] = field(default_factory=list)

    @property
    def types(self) -> list[str]:
        return sorted({s.label for r in self.train for s in r.spans})


def document_split(records: Sequence[Record], ratios: Sequence[float], seed: int) -> list[list[int]]:
    """Record indices of each split (train, dev, test): whole documents, in the seeded class-balanced order.

    >>> from curation.records import Span
    >>> recs = [Record(id=str(i), text="x", doc_id=f"d{i // 2}", spans=[Span(0, 1, "A")] * (i % 4 < 2))
    ...         for i in range(20)]
    >>> parts = document_split(recs, (0.6, 0.2, 0.2), seed=0)
    >>> [len(p) for p in parts], {recs[i].doc_id for i in parts[0]} & {recs[i].doc_id for i in parts[2]}
    ([12, 4, 4], set())
    """
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
        raise ValueError(f"ratios must be three positive shares summing to 1, not {list(ratios)}")
    order = sampling_order(list(records), seed, unit="document")
    n = len(order)
    cut1, cut2 = round(ratios[0] * n), round((ratios[0] + ratios[1]) * n)
    return [sorted(i for u in part for i in u) for part in (order[:cut1], order[cut1:cut2], order[cut2:])]


def _split_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.name.startswith(".") or p.stem.lower().startswith(_SKIP_FILES):
            continue
        for split, stems in SPLIT_NAMES.items():
            if p.stem.lower() in stems:
                found.setdefault(split, p)
    return found


def _read(path: Path, dataset: str) -> list[Record]:
    return read_corpus(path, dataset=dataset).records


def holdout_split(records: Sequence[Record], holdout: float, seed: int) -> tuple[list[Record], list[Record]]:
    """(train, held out): a seeded ``holdout`` share of the documents, in the class-balanced order, held out."""
    if not 0 < holdout < 1:
        raise ValueError(f"the held-out share must be in (0, 1), not {holdout}")
    order = sampling_order(list(records), seed, unit="document")
    cut = len(order) - max(1, round(holdout * len(order)))
    keep = sorted(i for u in order[:cut] for i in u)
    held = sorted(i for u in order[cut:] for i in u)
    return [records[i] for i in keep], [records[i] for i in held]


def load_splits(corpus: str | os.PathLike, ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                dev_holdout: float = 0.0) -> Splits:
    """Read a corpus folder with train/dev/test files, or split a single file by document (see the module doc).

    A folder with dev and test files but no train file (GENIA here: its train split is not available offline) is
    trained on its dev split when ``dev_holdout`` > 0: that share of the dev documents (seeded, class-balanced
    order) is held out as the dev split for model selection and the rest is the training split.
    """
    path = Path(corpus)
    if not path.exists():
        raise InputError(path, "no such file or folder")
    single = path
    if path.is_dir():
        dataset = path.name
        files = _split_files(path)
        if "train" not in files and "dev" in files and "test" in files:
            if dev_holdout <= 0:
                raise InputError(path, "has dev and test files but no train file; pass a dev holdout share "
                                 "(--dev-holdout 0.1) to train on dev minus a held-out part")
            try:
                train, dev = holdout_split(_read(files["dev"], dataset), dev_holdout, seed)
            except ValueError as err:
                raise InputError("--dev-holdout", str(err)) from None
            how = (f"no train file: trained on {files['dev'].name} minus {dev_holdout:g} of its documents (seed "
                   f"{seed}), which are the dev split for model selection; tested on {files['test'].name}")
            return Splits(dataset, train, dev, _read(files["test"], dataset), how,
                          [str(files[s]) for s in ("dev", "test")])
        if "train" in files and "test" in files:
            if "dev" not in files:
                raise InputError(path, "has train and test files but no dev/devel file (model selection needs one)")
            parts = {s: _read(files[s], dataset) for s in ("train", "dev", "test")}
            how = "the corpus's own split: " + " / ".join(files[s].name for s in ("train", "dev", "test"))
            return Splits(dataset, parts["train"], parts["dev"], parts["test"], how,
                          [str(files[s]) for s in ("train", "dev", "test")])
        data = [p for p in sorted(path.iterdir()) if p.is_file() and not p.name.startswith(".")
                and not p.stem.lower().startswith(_SKIP_FILES)]
        if len(data) != 1:
            raise InputError(path, "needs train, dev (or devel) and test files, or exactly one file to split by "
                             f"document; found {', '.join(p.name for p in data) or 'nothing'}")
        single = data[0]
    else:
        dataset = path.parent.name
    records = _read(single, dataset)
    try:
        parts = document_split(records, ratios, seed)
    except ValueError as err:
        raise InputError("--split", str(err)) from None
    n_docs = len({r.doc_id if r.doc_id is not None else f"\0{i}" for i, r in enumerate(records)})
    how = (f"document-level split of {single.name} ({len(records)} records, {n_docs} documents by doc_id) into "
           f"train/dev/test {'/'.join(f'{r:g}' for r in ratios)} of the documents, class-balanced order, seed {seed}")
    train, dev, test = ([records[i] for i in p] for p in parts)
    return Splits(dataset, train, dev, test, how, [str(single)])
