"""Evaluators for the dataset-combination search (:mod:`curation.combos`): train on one mix of NER corpora, return the
target's strict micro F1 on its dev set (the project scorer, :mod:`curation.scoring`).

    from mtl_baselines.token_mtl.combo_evaluator import EncoderEvaluator
    corpora = find_corpora(["NCBI-disease", "BC5CDR", "linnaeus"], "../shared/data/ner")
    evaluate = EncoderEvaluator(corpora, "NCBI-disease", "~/.cache/offline-models/minilm-l6", max_train=300,
                                steps=150, dev_size=400, work_dir="runs/combos/ncbi/evals")
    evaluate(frozenset({"NCBI-disease", "BC5CDR"}))        # dev F1 of that mix
    evaluate.test_score(frozenset({"NCBI-disease", "BC5CDR"}))  # the same training, scored on the test set

This module holds what every evaluator shares: the :class:`Evaluator` protocol ``bioselect curate combos`` drives,
the corpus folders by name (:func:`find_corpora`), each dataset's capped training sample and the target's dev subset
(:class:`Corpora`), and mix names. Evaluators train for a fixed number of steps on a pool drawn with equal
probability from each dataset of the mix (:func:`tuning.sft_data.even_mix`), the paper's protocol, so every mix gets
the same compute and the target-only baseline is the one-dataset case; training data are capped per dataset
(``max_train`` sentences, the first of the project's seeded class-balanced order,
:func:`curation.sample.sampling_order`); the dev set can be a fixed class-balanced subset (``dev_size``). Each
evaluation writes ``metrics.json`` (settings, per-dataset counts, scores, provenance) and its dev predictions into
``work_dir/<mix>/``.

* :class:`mtl_baselines.token_mtl.combo_evaluator.EncoderEvaluator`: the token classifier of the multi-task
  baselines (variant ``single``: one linear BIO head on an encoder), trained by that baseline's own
  :func:`~mtl_baselines.token_mtl.trainer.fit` (in :mod:`mtl_baselines`, beside the model it trains).
  **Label space**: entity types are shared *by name* across datasets (BC5CDR's ``Disease`` is NCBI-disease's
  ``Disease``, as the same word in an instruction is for a generator); types the target lacks (``Chemical``,
  ``GENE``, ``Species``, ...) are trained as their own labels but never predicted on the target: at prediction time
  the head's other labels are masked out (``TargetLabelsOnly``). Cheap enough for a CPU.
* :class:`tuning.combo_evaluator.LoraEvaluator`: the LoRA generator of the tuning stage (in :mod:`tuning`, which
  it trains and generates with). Expensive.

``bioselect curate combos`` finds an evaluator by name in its table ``EVALUATORS`` (:mod:`curation.combos_cli`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from curation.io import InputError


class Evaluator(Protocol):
    """What ``bioselect curate combos`` needs of an evaluator (built as ``Evaluator(corpora, target, model,
    **options)``)."""

    # settings added after histories were written, each with the value those histories used: a history whose header
    # lacks one reads as holding it (see :func:`curation.combos.read_history`)
    ADDED_SETTINGS: Mapping[str, Any]

    def settings(self) -> dict[str, Any]:
        """What a score depends on (a resumed search must use the same; see :func:`curation.combos.read_history`)."""

    def check(self) -> None:
        """Read the corpora and check the model, raising :class:`InputError` before any training."""

    def __call__(self, mix: frozenset) -> float:
        """Train on ``mix``; the target's dev strict micro F1."""

    def test_score(self, mix: frozenset) -> dict[str, Any]:
        """Train on ``mix`` as the search did; ``{"dev": scores, "test": scores}``, each with ``f1``."""

    def dev_counts(self, mix: frozenset) -> tuple[str, list] | None:
        """The target's task and the per-record counts of its main metric (:func:`curation.scoring.main_metric_counts`,
        in dev-subset order) of ``mix``'s dev answers as saved by an earlier call; None when they are not on disk.
        What the equal-exposure control's paired intervals resample."""

def find_corpora(names: Sequence[str], data_root: str | os.PathLike, option: str = "--datasets") -> dict[str, Path]:
    """Corpus folders by dataset name: a name is a folder under ``data_root`` (case-insensitive, so ``LINNAEUS``
    finds ``linnaeus``; the folder's own spelling is the dataset's name) or a path to a corpus folder. An unknown name
    is an :class:`InputError` (naming ``option``) listing the names that exist."""
    root = Path(os.path.expanduser(str(data_root)))
    available = {p.name.lower(): p for p in sorted(root.iterdir()) if p.is_dir()} if root.is_dir() else {}
    out: dict[str, Path] = {}
    for name in names:
        given = Path(os.path.expanduser(name))
        if given.is_dir() and (os.sep in name or name.startswith(".")):
            folder = given
        elif name.lower() in available:
            folder = available[name.lower()]
        else:
            where = f"under {root}" if root.is_dir() else f"(--data-root {root} is not a folder)"
            known = ", ".join(p.name for p in available.values()) or "none"
            raise InputError(option, f"unknown dataset {name!r}: no corpus folder {where}; known: {known}")
        if folder.name in out:
            raise InputError(option, f"dataset {folder.name!r} is named twice")
        out[folder.name] = folder
    return out


# the folder a corpus sits in under ../shared/data names its task (README there)
TASK_FOLDERS = {"ner": "ner", "nested_ner": "ner", "re": "re", "ee": "ee", "cls": "tc", "tc": "tc"}


def corpus_task(folder: str | os.PathLike) -> str:
    """A corpus folder's task, read from the name of the folder it sits in (``../shared/data/re/DDI``: ``re``;
    :data:`TASK_FOLDERS`); any other parent is an :class:`InputError`.

    >>> corpus_task("../shared/data/cls/HealthAdvice"), corpus_task("data/nested_ner/GENIA")
    ('tc', 'ner')
    """
    parent = Path(folder).parent.name
    if parent not in TASK_FOLDERS:
        raise InputError(folder, f"cannot tell the corpus's task: it sits in {parent!r}, not in a folder named "
                                 f"after a task ({', '.join(TASK_FOLDERS)}, as under ../shared/data)")
    return TASK_FOLDERS[parent]


def mix_name(mix: frozenset, target: str | None = None) -> str:
    """A folder name for a mix: the target first, then the others sorted, joined by ``+``.

    >>> mix_name(frozenset({"linnaeus", "NCBI-disease", "BC5CDR"}), "NCBI-disease")
    'NCBI-disease+BC5CDR+linnaeus'
    """
    rest = sorted(d for d in mix if d != target)
    return "+".join(safe_name(d) for d in ([target] if target in mix else []) + rest)


def safe_name(name: str) -> str:
    """``name`` as one file-name component.

    >>> safe_name("BC5CDR/chem 1")
    'BC5CDR_chem_1'
    """
    return re.sub(r"[^\w.-]", "_", name)


def capped_indices(records: Sequence[Any], cap: int, seed: int) -> list[int]:
    """Indices of the first ``cap`` records of the seeded class-balanced order (all of them when ``cap`` is 0 or
    at least their number), sorted.

    >>> from curation.records import Record, Span
    >>> recs = [Record(id=str(i), text="x", spans=[Span(0, 1, "A")] * (i % 2)) for i in range(10)]
    >>> idx = capped_indices(recs, 4, seed=0)
    >>> len(idx), sum(len(recs[i].spans) for i in idx)
    (4, 2)
    """
    from curation.sample import sampling_order

    if cap <= 0 or cap >= len(records):
        return list(range(len(records)))
    return sorted(i for unit in sampling_order(list(records), seed)[:cap] for i in unit)


def thin_negatives(records: Sequence[Any], indices: Sequence[int], task: str, ratio: float, seed: int) -> list[int]:
    """``indices`` with all of their positives and a seeded ``ratio`` of their negatives (records with no mention,
    relation or event: the ones whose answer is ``[]``; a TC record always has a class, so TC has none), in order.

    >>> from curation.records import Record, Span
    >>> recs = [Record(id=str(i), text="x", spans=[Span(0, 1, "A")] * (i % 3 == 0)) for i in range(9)]
    >>> kept = thin_negatives(recs, range(9), "ner", 0.5, seed=0)
    >>> [i for i in kept if i % 3 == 0], len(kept)
    ([0, 3, 6], 6)
    """
    import random

    from curation.filter import share

    what = {"ner": "spans", "re": "relations", "ee": "events"}.get(task)
    if what is None or ratio >= 1:
        return list(indices)
    negatives = [i for i in indices if not getattr(records[i], what)]
    kept = set(random.Random(f"negatives-{seed}").sample(negatives, share(ratio, len(negatives))))
    dropped = set(negatives) - kept
    return [i for i in indices if i not in dropped]


def shared_label_types(types_by_dataset: Mapping[str, Sequence[str]], mix: frozenset) -> list[str]:
    """The entity types trained on for a mix: the union of its datasets' types, one label per name.

    >>> shared_label_types({"NCBI": ["Disease"], "CDR": ["Chemical", "Disease"], "G": ["GENE"]},
    ...                    frozenset({"NCBI", "CDR"}))
    ['Chemical', 'Disease']
    """
    return sorted({t for d in mix for t in types_by_dataset[d]})


class Corpora:
    """Each dataset's splits, read once, with its capped training sample and the target's dev subset (the data every
    evaluator trains and scores on)."""

    def __init__(self, corpora: Mapping[str, str | os.PathLike], target: str, max_train: int, dev_size: int,
                 seed: int, tasks: Mapping[str, str] | None = None, negative_ratio: float = 1.0):
        if target not in corpora:
            raise InputError("--target", f"{target!r} is not among the datasets ({', '.join(corpora)})")
        self.paths = {name: Path(p) for name, p in corpora.items()}
        self.tasks = dict(tasks) if tasks is not None else {name: "ner" for name in corpora}  # dataset -> task
        self.target, self.max_train, self.dev_size, self.seed = target, max_train, dev_size, seed
        self.negative_ratio = negative_ratio  # share of each capped training sample's negatives kept
        self._splits: dict[str, Any] = {}
        self._train: dict[str, list] = {}

    def splits(self, name: str):
        if name not in self._splits:
            from curation.splits import load_splits

            self._splits[name] = load_splits(self.paths[name])
        return self._splits[name]

    def train(self, name: str) -> list:
        if name not in self._train:
            recs = self.splits(name).train
            kept = thin_negatives(recs, capped_indices(recs, self.max_train, self.seed), self.tasks[name],
                                  self.negative_ratio, self.seed)
            self._train[name] = [recs[i] for i in kept]
            if not self.labels(name):
                what = {"ner": "entity mention", "re": "relation", "ee": "event", "tc": "class label"}
                del self._train[name]
                raise InputError(self.paths[name], f"the capped training sample has no {what[self.tasks[name]]}")
        return self._train[name]

    def types(self, name: str) -> list[str]:
        return self.splits(name).types

    def labels(self, name: str) -> list[str]:
        """The labels of a dataset's task in its capped training sample: entity types (NER, as :meth:`types`
        gives them for the whole training split), relation types, event types or classes."""
        from curation.convert import task_labels
        from curation.records import Corpus

        if self.tasks[name] == "ner":
            return sorted({s.label for r in self.train(name) for s in r.spans})
        return task_labels(Corpus(records=list(self.train(name)), dataset=name), self.tasks[name])

    def eval_records(self, split: str) -> list:
        recs = getattr(self.splits(self.target), split)
        if split == "dev":  # the fixed subset every mix is scored on; the test set is always scored whole
            recs = [recs[i] for i in capped_indices(recs, self.dev_size, 0)]
        return recs

    def check(self) -> None:
        """Read every corpus now and check its records can be tagged (tokens, spans on token edges, no nesting),
        so that bad input stops the command before any training."""
        from curation.bio import word_tags

        for name in self.paths:
            todo = [("train", self.train(name))]
            if name == self.target:
                todo += [(s, self.eval_records(s)) for s in ("dev", "test")]
            for split, records in todo:
                if not records:
                    raise InputError(self.paths[name], f"the {split} split is empty")
                if self.tasks[name] != "ner":  # answers are converted, not tagged (curation.convert checks them)
                    continue
                for r in records:
                    try:
                        word_tags(r)
                    except ValueError as err:
                        raise InputError(self.paths[name], f"{split}: {err}", record=r.id) from None

    def sources(self, mix: frozenset) -> list[str]:
        return [s for d in sorted(mix) for s in self.splits(d).sources]


def check_mix(mix: frozenset, corpora: Corpora) -> None:
    """Raise ``ValueError`` unless ``mix`` names known datasets only and includes the target."""
    unknown = sorted(set(mix) - set(corpora.paths))
    if unknown:
        raise ValueError(f"mix names unknown dataset(s) {', '.join(unknown)}")
    if corpora.target not in mix:
        raise ValueError(f"a mix must include the target {corpora.target!r}")
