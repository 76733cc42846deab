"""What the encoder baselines share: corpus splits, length-grouped batches, the tokenizer check and span scoring.

    splits = load_splits("../shared/data/ner/PK-relations", ratios=(0.6, 0.2, 0.2), seed=0)
    tokenizer = load_tokenizer("~/.cache/offline-models/minilm-l6")
    for idx in batch_indices([len(e["input_ids"]) for e in examples], 16, torch.Generator().manual_seed(0)): ...
    scores = score_records(gold_records, predicted_records)

A corpus is a folder holding ``train``, ``dev`` (or ``devel``) and ``test`` files in any format
:func:`curation.readers.read_corpus` reads (``../shared/data/ner/NCBI-disease``), or a single file (or a folder
holding one file, ``../shared/data/ner/PK-relations``) that is split by document: the records sharing a ``doc_id``
stay together (a record without one is its own unit), units are put in the foundation's seeded class-balanced order
(:func:`curation.sample.sampling_order` with ``unit="document"``) and cut at the ratios, so each split keeps the
corpus's mix of entity types to within a document per stratum. The training loop itself is :mod:`.engine`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from curation.io import InputError, check_model_source
from curation.records import Record
from curation.scoring import prediction_from_spans, score
from curation.splits import Splits, document_split, holdout_split, load_splits  # noqa: F401 (the baselines' names)


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


_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")


def check_tokenizer(tokenizer: Any, vocab_size: int, tokenizer_name: str, model_name: str,
                    shipped_vocab: dict[str, int] | None = None) -> None:
    """Raise :class:`InputError` when a tokenizer cannot drive an encoder.

    The tokenizer must be a fast one (word alignment needs ``word_ids()``), must not produce ids beyond the
    encoder's embedding table, and must have the same vocabulary as the tokenizer shipped with the encoder
    (``shipped_vocab``, when the encoder folder has one).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise InputError("--tokenizer", f"{tokenizer_name} is not a fast tokenizer; word alignment needs word_ids()")
    if len(tokenizer) > vocab_size:
        raise InputError("--tokenizer", f"tokenizer/encoder mismatch: {tokenizer_name} has {len(tokenizer)} tokens "
                         f"but the encoder {model_name} embeds only {vocab_size}; give the encoder's own tokenizer")
    if shipped_vocab is not None and tokenizer.get_vocab() != shipped_vocab:
        raise InputError("--tokenizer", f"tokenizer/encoder mismatch: {tokenizer_name}'s vocabulary differs from "
                         f"the tokenizer shipped with {model_name}; drop --tokenizer to use the encoder's own")


def load_tokenizer(model: str, tokenizer: str | None = None) -> Any:
    """Load the tokenizer for ``model`` (``tokenizer`` overrides its location) and check it fits the encoder (a
    local ``model`` folder must hold a config and intact weights, checked before anything is loaded)."""
    from transformers import AutoConfig, AutoTokenizer

    check_model_source(model)
    name = tokenizer or model
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise InputError("--model", f"cannot load an encoder config from {model!r}: {err}") from None
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise InputError("--tokenizer" if tokenizer else "--model", f"cannot load a tokenizer from {name!r}: {err}"
                         ) from None
    shipped = None
    if tokenizer and tokenizer != model and Path(model).is_dir() and \
            any((Path(model) / f).is_file() for f in _TOKENIZER_FILES):
        shipped = AutoTokenizer.from_pretrained(model).get_vocab()
    check_tokenizer(tok, config.vocab_size, name, model, shipped)
    return tok




def score_records(gold: Sequence[Record], pred: Sequence[Record]) -> dict[str, Any]:
    """Strict micro P/R/F1 and per-type scores from the foundation scorer (no bootstrap)."""
    result = score(list(gold), [prediction_from_spans(p.text, p.spans) for p in pred], n_bootstrap=0)
    micro = result["strict"]["micro"]
    return {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1"], "tp": micro["tp"],
            "fp": micro["fp"], "fn": micro["fn"], "per_type": result["strict"]["per_type"],
            "relaxed_f1": result["relaxed"]["micro"]["f1"]}

