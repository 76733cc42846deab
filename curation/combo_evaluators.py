"""Evaluators for the dataset-combination search (:mod:`curation.combos`): train on one mix of NER corpora, return the
target's strict micro F1 on its dev set (the project scorer, :mod:`curation.scoring`).

    corpora = find_corpora(["NCBI-disease", "BC5CDR", "linnaeus"], "../shared/data/ner")
    evaluate = build_evaluator("encoder", corpora, "NCBI-disease", "~/.cache/offline-models/minilm-l6", max_train=300,
                               steps=150, dev_size=400, work_dir="runs/combos/ncbi/evals")
    evaluate(frozenset({"NCBI-disease", "BC5CDR"}))        # dev F1 of that mix
    evaluate.test_score(frozenset({"NCBI-disease", "BC5CDR"}))  # the same training, scored on the test set

Both evaluators train for a fixed number of steps on a pool drawn with equal probability from each dataset of the
mix (:func:`tuning.sft_data.even_mix`), the paper's protocol, so every mix gets the same compute and the target-only
baseline is the one-dataset case; training data are capped per dataset (``max_train`` sentences, the first of the
project's seeded class-balanced order, :func:`curation.sample.sampling_order`); the dev set can be a fixed
class-balanced subset (``dev_size``). Each evaluation writes ``metrics.json`` (settings, per-dataset counts, scores,
provenance) and its dev predictions into ``work_dir/<mix>/``.

* ``encoder``: :class:`mtl_baselines.token_mtl.combo_evaluator.EncoderEvaluator`, the token classifier of the
  multi-task baselines (variant ``single``: one linear BIO head on an encoder), trained by that baseline's own
  :func:`~mtl_baselines.token_mtl.trainer.fit`; it lives with the baseline and is imported when asked for.
  **Label space**: entity types are shared *by name* across datasets (BC5CDR's ``Disease`` is NCBI-disease's
  ``Disease``, as the same word in an instruction is for a generator); types the target lacks (``Chemical``,
  ``GENE``, ``Species``, ...) are trained as their own labels but never predicted on the target: at prediction time
  the head's other labels are masked out (:class:`TargetLabelsOnly`). Cheap enough for a CPU.
* :class:`LoraEvaluator`: the LoRA generator of the tuning stage: converts each capped sample to instruction JSONL
  (:func:`curation.convert.convert_corpus`), runs ``bioselect tune train --mix even --max-steps N``, generates the
  dev answers with ``bioselect tune generate`` and scores them with :func:`curation.evaluate.score_files`. Expensive.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curation.io import InputError, provenance, write_json, write_jsonl

EVALUATORS = ("encoder", "lora")


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


def mix_name(mix: frozenset, target: str | None = None) -> str:
    """A folder name for a mix: the target first, then the others sorted, joined by ``+``.

    >>> mix_name(frozenset({"linnaeus", "NCBI-disease", "BC5CDR"}), "NCBI-disease")
    'NCBI-disease+BC5CDR+linnaeus'
    """
    rest = sorted(d for d in mix if d != target)
    return "+".join(_safe(d) for d in ([target] if target in mix else []) + rest)


def _safe(name: str) -> str:
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


def shared_label_types(types_by_dataset: Mapping[str, Sequence[str]], mix: frozenset) -> list[str]:
    """The entity types trained on for a mix: the union of its datasets' types, one label per name.

    >>> shared_label_types({"NCBI": ["Disease"], "CDR": ["Chemical", "Disease"], "G": ["GENE"]},
    ...                    frozenset({"NCBI", "CDR"}))
    ['Chemical', 'Disease']
    """
    return sorted({t for d in mix for t in types_by_dataset[d]})


class _Corpora:
    """Each dataset's splits, read once, with its capped training sample and the target's dev subset."""

    def __init__(self, corpora: Mapping[str, str | os.PathLike], target: str, max_train: int, dev_size: int,
                 seed: int):
        if target not in corpora:
            raise InputError("--target", f"{target!r} is not among the datasets ({', '.join(corpora)})")
        self.paths = {name: Path(p) for name, p in corpora.items()}
        self.target, self.max_train, self.dev_size, self.seed = target, max_train, dev_size, seed
        self._splits: dict[str, Any] = {}
        self._train: dict[str, list] = {}

    def splits(self, name: str):
        if name not in self._splits:
            from mtl_baselines.common import load_splits

            self._splits[name] = load_splits(self.paths[name])
        return self._splits[name]

    def train(self, name: str) -> list:
        if name not in self._train:
            recs = self.splits(name).train
            self._train[name] = [recs[i] for i in capped_indices(recs, self.max_train, self.seed)]
            if not any(r.spans for r in self._train[name]):
                raise InputError(self.paths[name], "the capped training sample has no entity mention")
        return self._train[name]

    def types(self, name: str) -> list[str]:
        return self.splits(name).types

    def eval_records(self, split: str) -> list:
        recs = getattr(self.splits(self.target), split)
        if split == "dev":  # the fixed subset every mix is scored on; the test set is always scored whole
            recs = [recs[i] for i in capped_indices(recs, self.dev_size, 0)]
        return recs

    def check(self) -> None:
        """Read every corpus now and check its records can be tagged (tokens, spans on token edges, no nesting),
        so that bad input stops the command before any training."""
        from mtl_baselines.token_mtl.labels import word_tags

        for name in self.paths:
            todo = [("train", self.train(name))]
            if name == self.target:
                todo += [(s, self.eval_records(s)) for s in ("dev", "test")]
            for split, records in todo:
                if not records:
                    raise InputError(self.paths[name], f"the {split} split is empty")
                for r in records:
                    try:
                        word_tags(r)
                    except ValueError as err:
                        raise InputError(self.paths[name], f"{split}: {err}", record=r.id) from None

    def sources(self, mix: frozenset) -> list[str]:
        return [s for d in sorted(mix) for s in self.splits(d).sources]


def _check_mix(mix: frozenset, corpora: _Corpora) -> None:
    unknown = sorted(set(mix) - set(corpora.paths))
    if unknown:
        raise ValueError(f"mix names unknown dataset(s) {', '.join(unknown)}")
    if corpora.target not in mix:
        raise ValueError(f"a mix must include the target {corpora.target!r}")


def _draw_counts(pool: Sequence[Any], groups: Mapping[str, Sequence[Any]]) -> dict[str, int]:
    owner = {id(r): d for d, g in groups.items() for r in g}
    counts = dict.fromkeys(groups, 0)
    for r in pool:
        counts[owner[id(r)]] += 1
    return counts


# ---------------------------------------------------------------------------------------------------------------
# LoRA generator


class LoraEvaluator:
    """Train a LoRA adapter on a mix with ``bioselect tune train --mix even --max-steps steps`` (the paper's
    protocol: a fixed number of steps, each example from a dataset drawn with equal probability), generate the
    target's dev answers with ``bioselect tune generate`` and return their strict micro F1 (see the module doc).

    ``work_dir`` receives ``data/`` (each dataset's capped instruction JSONL, the dev subset and the test set) and
    one folder per mix (``adapter/``, ``pred_dev.jsonl``, ``metrics.json``). ``train_args`` are further
    ``tune train`` options (``["--lora-r", "8"]``).
    """

    def __init__(self, corpora: Mapping[str, str | os.PathLike], target: str, model: str, *,
                 work_dir: str | os.PathLike, max_train: int = 1000, steps: int = 300, batch_size: int = 8,
                 lr: float = 2e-4, max_length: int = 512, dev_size: int = 200, max_new_tokens: int = 256,
                 constrained: bool = True, generate_batch_size: int = 8, seed: int = 0,
                 train_args: Sequence[str] = ()):
        self.target, self.model = target, os.path.expanduser(model)
        self.work_dir = Path(work_dir)
        self.max_train, self.steps, self.batch_size, self.lr, self.max_length = max_train, steps, batch_size, lr, \
            max_length
        self.dev_size, self.max_new_tokens, self.constrained = dev_size, max_new_tokens, constrained
        self.generate_batch_size, self.seed, self.train_args = generate_batch_size, seed, list(train_args)
        self.corpora = _Corpora(corpora, target, max_train, dev_size, seed)

    def settings(self) -> dict[str, Any]:
        return {"evaluator": "lora", "model": self.model, "max_train": self.max_train, "steps": self.steps,
                "batch_size": self.batch_size, "lr": self.lr, "max_length": self.max_length,
                "dev_size": self.dev_size, "max_new_tokens": self.max_new_tokens, "constrained": self.constrained,
                "seed": self.seed, "train_args": self.train_args}

    def check(self) -> None:
        """Load every corpus, check the model folder (and llguidance when generating constrained)."""
        from curation.io import check_model_source

        self.corpora.check()
        check_model_source(self.model)
        if self.constrained:
            from tuning.constrained import require_llguidance

            try:
                require_llguidance()
            except ImportError as err:
                raise InputError("--unconstrained", str(err)) from None

    def data_file(self, name: str, split: str = "train") -> Path:
        """Instruction JSONL of a dataset's capped training sample, or of the target's dev subset / test set
        (written on first use)."""
        from curation.convert import convert_corpus
        from curation.records import Corpus

        path = self.work_dir / "data" / f"{_safe(name)}.{split}.jsonl"
        if not path.is_file():
            c = self.corpora
            records = c.train(name) if split == "train" else c.eval_records(split)
            rows = convert_corpus(Corpus(records=list(records), dataset=name), "ner", labels=c.types(name),
                                  dataset=name)
            for row in rows:
                row["id"] = f"{name}/{row['id']}"  # readers number records per file: ids repeat across corpora
            write_jsonl(path, rows)
        return path

    def train_argv(self, mix: frozenset, output_dir: str | os.PathLike) -> list[str]:
        """The ``bioselect tune train`` arguments for a mix."""
        files = [str(self.data_file(d)) for d in sorted(mix)]
        return ["--model", self.model, "--train-files", ",".join(files), "--output-dir", str(output_dir),
                "--mix", "even", "--max-steps", str(self.steps), "--batch-size", str(self.batch_size),
                "--lr", str(self.lr), "--max-length", str(self.max_length), "--seed", str(self.seed),
                "--report-to", "none", "--resume-from-checkpoint", "no", "--save-steps", str(self.steps),
                "--save-total-limit", "1", *self.train_args]

    def generate_argv(self, adapter: str | os.PathLike, split: str, output: str | os.PathLike) -> list[str]:
        """The ``bioselect tune generate`` arguments for the target's ``split``."""
        return ["--model", self.model, "--adapter", str(adapter), "--input", str(self.data_file(self.target, split)),
                "--output", str(output), "--batch-size", str(self.generate_batch_size),
                "--max-new-tokens", str(self.max_new_tokens),
                "--constrained" if self.constrained else "--unconstrained"]

    def __call__(self, mix: frozenset) -> float:
        return self.train_and_score(mix, ("dev",))["dev"]["f1"]

    def test_score(self, mix: frozenset) -> dict[str, Any]:
        return self.train_and_score(mix, ("dev", "test"))

    def train_and_score(self, mix: frozenset, splits: Sequence[str] = ("dev",)) -> dict[str, Any]:
        from curation.cli import EXIT_INTERRUPTED, parse_config
        from curation.evaluate import EvaluateConfig, score_files
        from tuning import generate, train

        start = time.perf_counter()
        mix = frozenset(mix)
        _check_mix(mix, self.corpora)
        folder = self.work_dir / mix_name(mix, self.target)
        adapter = folder / "adapter"
        if not (adapter / "adapter_config.json").is_file():
            argv = self.train_argv(mix, adapter)
            cfg, _ = parse_config(train.TrainConfig, argv, prog="bioselect tune train")
            train.train(cfg)
        scores = {}
        for s in splits:
            pred = folder / f"pred_{s}.jsonl"
            rc = generate.main(self.generate_argv(adapter, s, pred))
            if rc == EXIT_INTERRUPTED:  # Ctrl-C stops the search, not just this evaluation
                raise KeyboardInterrupt
            if rc:
                raise RuntimeError(f"bioselect tune generate exited with code {rc} on the {s} set")
            result = score_files(EvaluateConfig(gold=str(self.data_file(self.target, s)), pred=str(pred),
                                                output=str(folder / f"eval_{s}.json"), bootstrap=0))
            micro = result["strict"]["micro"]
            scores[s] = {k: micro[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")}
        out = {"mix": sorted(mix), "steps": self.steps, "adapter": str(adapter), **scores,
               "seconds": round(time.perf_counter() - start, 2)}
        name = "metrics.json" if tuple(splits) == ("dev",) else "metrics_" + "_".join(splits) + ".json"
        write_json(folder / name, {**out, "settings": self.settings(),
                                   "train_command": ["bioselect", "tune", "train", *self.train_argv(mix, adapter)],
                                   "provenance": provenance(None, [str(self.data_file(d)) for d in sorted(mix)])})
        return out


# evaluators kept in a layer above this one, imported only when asked for (as curation.cli's COMMANDS)
LAZY_EVALUATORS = {"encoder": "mtl_baselines.token_mtl.combo_evaluator:EncoderEvaluator"}


def build_evaluator(kind: str, corpora: Mapping[str, str | os.PathLike], target: str, model: str,
                    **options: Any):
    """An evaluator by name (``encoder`` or ``lora``) with its keyword options."""
    if kind in LAZY_EVALUATORS:
        import importlib

        module, _, name = LAZY_EVALUATORS[kind].partition(":")
        return getattr(importlib.import_module(module), name)(corpora, target, model, **options)
    if kind == "lora":
        return LoraEvaluator(corpora, target, model, **options)
    raise ValueError(f"evaluator must be one of {', '.join(EVALUATORS)}, not {kind!r}")
