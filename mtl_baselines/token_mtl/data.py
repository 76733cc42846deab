"""Token MTL data: the checks made before any training (types, fractions) and encoding to subword labels.

Splits and batches come from :mod:`mtl_baselines.common` (:func:`~mtl_baselines.common.load_splits`,
:func:`~mtl_baselines.common.batch_indices`).

    splits = load_splits("../shared/data/ner/PK-relations", ratios=(0.6, 0.2, 0.2), seed=0)
    types = check_splits(splits)
    examples = encode(splits.train, tokenizer, bio_labels(types), max_length=512)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch

from curation.io import InputError
from curation.records import Record
from curation.sample import sampling_order, take
from mtl_baselines.common import Splits
from mtl_baselines.token_mtl.labels import (
    IGNORE,
    align_to_subwords,
    first_subwords,
    has_entity,
    mention_count_class,
    multi_token_classes,
    word_tags,
)


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
