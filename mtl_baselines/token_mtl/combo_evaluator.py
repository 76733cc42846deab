"""The encoder evaluator of the dataset-combination search (``bioselect curate combos --evaluator encoder``): the
token MTL baseline's single-task classifier trained on one mix of NER corpora, scored on the target's dev set.

    corpora = find_corpora(["NCBI-disease", "BC5CDR", "linnaeus"], "../shared/data/ner")
    evaluate = EncoderEvaluator(corpora, "NCBI-disease", "~/.cache/offline-models/minilm-l6", max_train=300,
                                steps=150, dev_size=400, work_dir="runs/combos/ncbi/evals")
    evaluate(frozenset({"NCBI-disease", "BC5CDR"}))        # dev F1 of that mix

The search, the corpora and the mix protocol are :mod:`curation.combo_evaluators` and :mod:`curation.combos`
(``bioselect curate combos --evaluator encoder`` imports this module by name from its table ``EVALUATORS``); this
module holds what depends on the baseline. **Label space**: entity types are shared *by name* across datasets;
types the target lacks are trained as their own labels but never predicted on the target (:class:`TargetLabelsOnly`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curation.combo_evaluators import Corpora, check_mix, mix_name, shared_label_types
from curation.io import provenance, write_json, write_jsonl
from mtl_baselines.common import load_tokenizer, score_records
from mtl_baselines.engine import EngineArgs, set_seed
from mtl_baselines.token_mtl.data import encode
from mtl_baselines.token_mtl.labels import bio_labels, label_types
from mtl_baselines.token_mtl.losses import MTLLoss
from mtl_baselines.token_mtl.model import TokenMTL
from mtl_baselines.token_mtl.trainer import fit, predict, predicted_records


class TargetLabelsOnly(nn.Module):
    """Wraps a :class:`~mtl_baselines.token_mtl.model.TokenMTL`; in eval mode the NER logits of labels outside
    ``keep`` are ``-inf``, so predictions use the target's labels only (training sees every label)."""

    def __init__(self, model: nn.Module, num_labels: int, keep: Sequence[int]):
        super().__init__()
        self.model = model
        blocked = torch.ones(num_labels, dtype=torch.bool)
        blocked[list(keep)] = False
        self.register_buffer("blocked", blocked, persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.model(input_ids, attention_mask)
        if not self.training:
            out["ner"] = out["ner"].masked_fill(self.blocked, float("-inf"))
        return out

    def shared_parameters(self) -> list[nn.Parameter]:
        return self.model.shared_parameters()


class EncoderEvaluator:
    """Train the single-task token classifier on a mix, return the target's dev strict F1 (see the module doc).

    ``corpora`` maps dataset names to corpus folders (train/dev(el)/test); ``model`` is the encoder (a local folder
    or hub id). Training: ``steps`` AdamW steps of ``batch_size`` sentences (linear warm-up over ``warmup_ratio``
    of them and decay), ``max_length`` subwords per sentence, the final model scored (no checkpoint selection on
    the dev set the search compares mixes on). Deterministic for a seed on CPU.
    """

    ADDED_SETTINGS = {"negative_ratio": 1.0}  # histories made before the option trained on every negative

    def __init__(self, corpora: Mapping[str, str | os.PathLike], target: str, model: str, *,
                 tokenizer: str | None = None, max_train: int = 300, steps: int = 150, batch_size: int = 16,
                 lr: float = 1e-4, max_length: int = 128, dev_size: int = 400, warmup_ratio: float = 0.1,
                 weight_decay: float = 0.01, dropout: float = 0.1, seed: int = 0, device: str = "auto",
                 negative_ratio: float = 1.0, work_dir: str | os.PathLike | None = None):
        self.target, self.model = target, os.path.expanduser(model)
        self.tokenizer_name = os.path.expanduser(tokenizer) if tokenizer else None
        self.max_train, self.steps, self.batch_size, self.lr = max_train, steps, batch_size, lr
        self.max_length, self.dev_size, self.warmup_ratio = max_length, dev_size, warmup_ratio
        self.weight_decay, self.dropout, self.seed, self.device = weight_decay, dropout, seed, device
        self.work_dir = Path(work_dir) if work_dir is not None else None
        self.negative_ratio = negative_ratio
        self.corpora = Corpora(corpora, target, max_train, dev_size, seed, negative_ratio=negative_ratio)
        self._tokenizer = None

    def settings(self) -> dict[str, Any]:
        """What a score depends on (a resumed search must use the same; see :func:`curation.combos.read_history`)."""
        return {"evaluator": "encoder", "model": self.model, "tokenizer": self.tokenizer_name,
                "max_train": self.max_train, "steps": self.steps, "batch_size": self.batch_size, "lr": self.lr,
                "max_length": self.max_length, "dev_size": self.dev_size, "warmup_ratio": self.warmup_ratio,
                "weight_decay": self.weight_decay, "dropout": self.dropout, "seed": self.seed,
                "negative_ratio": self.negative_ratio,
                "label_space": "shared by type name, target labels only at prediction"}

    def check(self) -> None:
        """Load every corpus and the tokenizer (bad input raises :class:`InputError` before any training)."""
        self.corpora.check()
        self.tokenizer()

    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self.model, self.tokenizer_name)
        return self._tokenizer

    def __call__(self, mix: frozenset) -> float:
        return self.train_and_score(mix, ("dev",))["dev"]["f1"]

    def test_score(self, mix: frozenset) -> dict[str, Any]:
        """Train on ``mix`` exactly as the search did and score the target's dev subset and whole test set."""
        return self.train_and_score(mix, ("dev", "test"))

    def train_and_score(self, mix: frozenset, splits: Sequence[str] = ("dev",)) -> dict[str, Any]:
        from transformers import AutoModel

        from tuning.sft_data import even_mix

        start = time.perf_counter()
        mix = frozenset(mix)
        check_mix(mix, self.corpora)
        c = self.corpora
        groups = {d: c.train(d) for d in sorted(mix)}
        types = shared_label_types({d: c.types(d) for d in mix}, mix)
        labels = bio_labels(types)
        target_types = set(c.types(self.target))
        keep = [i for i, lab in enumerate(labels) if lab == "O" or lab[2:] in target_types]
        pool = even_mix(groups, self.steps * self.batch_size, self.seed)
        tok = self.tokenizer()
        train = encode(pool, tok, labels, self.max_length)
        gold = {s: c.eval_records(s) for s in splits}
        encoded = {s: encode(gold[s], tok, labels, self.max_length) for s in splits}

        set_seed(self.seed)
        encoder = TokenMTL(AutoModel.from_pretrained(self.model), len(labels), heads=("ner",), dropout=self.dropout)
        model = TargetLabelsOnly(encoder, len(labels), keep)
        classes = ["O", *types]
        loss_fn = MTLLoss("single", ("ner",), [classes.index(t) for t in label_types(labels)], classes)
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        # one epoch over a pool of exactly steps x batch_size sentences = exactly `steps` optimizer steps
        log = fit(model, loss_fn, train, encoded["dev"], gold["dev"], labels, pad_id=pad_id, seed=self.seed,
                  epochs=1, batch_size=self.batch_size, lr=self.lr, weight_decay=self.weight_decay,
                  warmup_ratio=self.warmup_ratio, dev_evals=1, engine=EngineArgs(device=self.device))
        scores, preds = {}, {}
        for s in splits:
            ids = log["dev_pred"] if s == "dev" else predict(model, encoded[s], self.batch_size, pad_id)
            preds[s] = predicted_records(gold[s], ids, labels)
            scores[s] = score_records(gold[s], preds[s])
        drawn = _draw_counts(pool, groups)
        out = {"mix": sorted(mix), "labels": labels, "steps": log["steps"], "train_pool": len(pool),
               "drawn_per_dataset": drawn, "sample_per_dataset": {d: len(g) for d, g in groups.items()},
               "eval_sentences": {s: len(gold[s]) for s in splits}, **scores,
               "seconds": round(time.perf_counter() - start, 2)}
        if self.work_dir is not None:
            folder = self.work_dir / mix_name(mix, self.target)
            for s in splits:
                write_jsonl(folder / f"pred_{s}.jsonl", (r.to_dict() for r in preds[s]))
            name = "metrics.json" if splits == ("dev",) else "metrics_" + "_".join(splits) + ".json"
            write_json(folder / name, {**out, "settings": self.settings(),
                                       "provenance": provenance(None, c.sources(mix))})
        return out


    def dev_counts(self, mix: frozenset) -> tuple[str, list] | None:
        """``("ner", per-record strict counts)`` of ``mix``'s saved dev predictions (``pred_dev.jsonl`` in its folder
        of ``work_dir``) against the dev subset; None without them (no ``work_dir``, not evaluated, other records)."""
        from curation.io import read_jsonl
        from curation.records import Record
        from curation.scoring import main_metric_counts, prediction_from_spans, score

        if self.work_dir is None:
            return None
        path = self.work_dir / mix_name(frozenset(mix), self.target) / "pred_dev.jsonl"
        if not path.is_file():
            return None
        gold = self.corpora.eval_records("dev")
        pred = [Record.from_dict(obj) for _, obj in read_jsonl(path)]
        if [r.id for r in pred] != [r.id for r in gold]:
            return None
        result = score(gold, [prediction_from_spans(p.text, p.spans) for p in pred], n_bootstrap=0, per_record=True)
        return "ner", main_metric_counts(result)


def _draw_counts(pool: Sequence[Any], groups: Mapping[str, Sequence[Any]]) -> dict[str, int]:
    owner = {id(r): d for d, g in groups.items() for r in g}
    counts = dict.fromkeys(groups, 0)
    for r in pool:
        counts[owner[id(r)]] += 1
    return counts
