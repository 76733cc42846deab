"""Corpora for the token MTL runs: train/dev/test splits, the checks made before any training, and encoding.

A corpus is a folder holding ``train``, ``dev`` (or ``devel``) and ``test`` files in any format
:func:`curation.readers.read_corpus` reads (``../shared/data/ner/NCBI-disease``), or a single file (or a folder
holding one file, ``../shared/data/ner/PK-relations``) that is split by document: the records sharing a ``doc_id``
stay together (a record without one is its own unit), units are put in the foundation's seeded class-balanced order
(:func:`curation.sample.sampling_order` with ``unit="document"``) and cut at the ratios, so each split keeps the
corpus's mix of entity types to within a document per stratum.

    splits = load_splits("../shared/data/ner/PK-relations", ratios=(0.6, 0.2, 0.2), seed=0)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from curation.io import InputError
from curation.readers import read_corpus
from curation.records import Record
from curation.sample import sampling_order, take
from mtl_baselines.token_mtl.labels import (
    IGNORE,
    align_to_subwords,
    first_subwords,
    has_entity,
    mention_count_class,
    multi_token_classes,
    word_tags,
)

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


def _where(splits: Splits, name: str) -> str:
    if len(splits.sources) == 3:
        return splits.sources[("train", "dev", "test").index(name)]
    if len(splits.sources) == 2:  # trained on a dev file minus a holdout (load_splits' dev_holdout)
        return splits.sources[name == "test"]
    return splits.sources[0] if splits.sources else splits.dataset


def check_splits(splits: Splits) -> list[str]:
    """Check a corpus before training; return its entity types.

    Every split must be non-empty and tokenised with spans on token edges and no nesting, and the entity types must
    be the same in train, dev and test (a type missing from train cannot be predicted; one missing from an
    evaluation split cannot be scored).
    """
    types = {}
    for name in ("train", "dev", "test"):
        records = getattr(splits, name)
        if not records:
            raise InputError(splits.dataset, f"the {name} split is empty ({splits.how})")
        for r in records:
            try:
                word_tags(r)
            except ValueError as err:
                raise InputError(_where(splits, name), str(err), line=r.meta.get("line"), record=r.id) from None
        types[name] = {s.label for r in records for s in r.spans}
    if not types["train"]:
        raise InputError(splits.dataset, "the train split has no entity mentions")
    for name in ("dev", "test"):
        if types[name] != types["train"]:
            only_train, only_eval = sorted(types["train"] - types[name]), sorted(types[name] - types["train"])
            parts = ([f"{name} has {', '.join(only_eval)} which train lacks"] if only_eval else []) + \
                    ([f"train has {', '.join(only_train)} which {name} lacks"] if only_train else [])
            raise InputError(splits.dataset, f"labels differ between train and {name}: {'; '.join(parts)}")
    return sorted(types["train"])


def check_fraction(train: Sequence[Record], fraction: float, seed: int, allow_missing_types: bool = False,
                   order: list[list[int]] | None = None) -> tuple[list[int], list[str]]:
    """The training indices kept at ``fraction`` for ``seed`` and the entity types they lack.

    Raises :class:`InputError` (before any training) when the sample keeps no sentence or no mention, or, unless
    ``allow_missing_types``, when it lacks a type of the full training split: too few sentences to keep class
    balance. ``order`` is ``sampling_order(train, seed)`` when already computed.
    """
    order = order if order is not None else sampling_order(list(train), seed)
    idx = take(order, fraction)
    where = f"fraction {fraction:g} (seed {seed}) keeps {len(idx)} of {len(train)} training sentences"
    if not idx:
        raise InputError("--fractions", f"{where}: nothing to train on; raise the fraction")
    full = Counter(s.label for r in train for s in r.spans)
    kept = Counter(s.label for i in idx for s in train[i].spans)
    if not kept:
        raise InputError("--fractions", f"{where} and no entity mention: too few sentences to keep class balance")
    missing = sorted(set(full) - set(kept))
    if missing and not allow_missing_types:
        lacks = ", ".join(f"{t} ({full[t]} in the full split)" for t in missing)
        raise InputError("--fractions", f"{where} and no mention of {lacks}: too few sentences to keep class "
                         "balance; drop the fraction or give --allow-missing-types")
    return idx, missing


def encode(records: Sequence[Record], tokenizer: Any, labels: Sequence[str], max_length: int
           ) -> list[dict[str, Any]]:
    """Tokenise records (words -> subwords) and attach the four label sets (see :mod:`.labels`).

    Each example holds ``input_ids``, ``ner`` and ``mtcls`` (subword-aligned, first subword labelled), ``bcls``,
    ``mcls`` and ``first`` (each word's first subword position, -1 when truncated away or tokenised to nothing).
    """
    label_id = {lab: i for i, lab in enumerate(labels)}
    enc = tokenizer([r.tokens for r in records], is_split_into_words=True, truncation=True, max_length=max_length)
    out = []
    for k, r in enumerate(records):
        tags = word_tags(r)
        unknown = sorted({t for t in tags if t not in label_id})
        if unknown:
            raise InputError(r.id, f"labels {', '.join(unknown)} are not in the training label set")
        word_ids = enc.word_ids(k)
        first = first_subwords(word_ids, len(tags))
        n = len(r.spans)
        out.append({
            "input_ids": enc["input_ids"][k],
            "ner": align_to_subwords([label_id[t] for t in tags], word_ids),
            "mtcls": align_to_subwords(multi_token_classes(tags), word_ids),
            "bcls": has_entity(n),
            "mcls": mention_count_class(n),
            "first": first,
        })
    return out


def collate(examples: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a batch: ``input_ids`` with ``pad_id``, token labels with ``IGNORE``, plus ``attention_mask``.

    >>> b = collate([{"input_ids": [1, 2], "ner": [-100, 1], "mtcls": [-100, 1], "bcls": 1, "mcls": 1},
    ...              {"input_ids": [1], "ner": [-100], "mtcls": [-100], "bcls": 0, "mcls": 0}], pad_id=0)
    >>> b["input_ids"].tolist(), b["attention_mask"].tolist(), b["ner"].tolist()
    ([[1, 2], [1, 0]], [[1, 1], [1, 0]], [[-100, 1], [-100, -100]])
    """
    width = max(len(e["input_ids"]) for e in examples)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([e[key] + [value] * (width - len(e[key])) for e in examples], dtype=torch.long)

    return {
        "input_ids": pad("input_ids", pad_id),
        "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"]))
                                        for e in examples], dtype=torch.long),
        "ner": pad("ner", IGNORE),
        "mtcls": pad("mtcls", IGNORE),
        "bcls": torch.tensor([e["bcls"] for e in examples], dtype=torch.long),
        "mcls": torch.tensor([e["mcls"] for e in examples], dtype=torch.long),
    }


def batch_indices(lengths: Sequence[int], batch_size: int, generator: torch.Generator | None = None,
                  pool: int = 50) -> Iterator[list[int]]:
    """Batches of example indices.

    Training (``generator`` given): a seeded shuffle, cut into pools of ``pool`` batches; each pool is sorted by
    length and cut into batches, and the batches are shuffled (length-grouped batching: far less padding to compute
    on a CPU, and still a different mix of sentences every epoch). Prediction (no generator): sorted by length.

    >>> list(batch_indices([3, 1, 2], 2))
    [[1, 2], [0]]
    >>> g = torch.Generator().manual_seed(0)
    >>> sorted(len(b) for b in batch_indices([5, 1, 4, 2, 3], 2, g))
    [1, 2, 2]
    """
    n = len(lengths)
    if generator is None:
        order = sorted(range(n), key=lambda i: (lengths[i], i))
        for lo in range(0, n, batch_size):
            yield order[lo : lo + batch_size]
        return
    shuffled = torch.randperm(n, generator=generator).tolist()
    batches = []
    for lo in range(0, n, batch_size * pool):
        chunk = sorted(shuffled[lo : lo + batch_size * pool], key=lambda i: lengths[i])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    for b in torch.randperm(len(batches), generator=generator).tolist():
        yield batches[b]
