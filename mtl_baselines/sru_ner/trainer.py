"""Training, batched prediction and scoring of one SRU-NER run over several partially annotated corpora.

    metrics = run_one(cfg, {"genia": splits_a, "ncbi": splits_b}, tokenizer, out_dir="runs/sru/genia_ncbi")

Training draws ``steps`` batches with :func:`.data.draw_batches` (inverse-size sampling over the datasets), runs the
teacher-forced model and :func:`.model.action_loss` (the loss-masking rule) on :func:`mtl_baselines.engine.fit`
(devices, precision, accumulation, ``accelerate launch``, checkpoints and resume): AdamW with two parameter
groups, the encoder and the SRU plus action head, each with its own learning rate, linear warm-up over
``warmup_ratio`` of the steps then linear decay, gradient norm clipped to 1. Dev and test are decoded in batches
(:meth:`.model.SRUNER.generate`) and scored by the foundation scorer in the ``disjoint`` and ``merged`` views
(:func:`.data.evaluation_spans`). A run writes ``pred_{dev,test}_{disjoint,merged}.jsonl`` (span files),
``history.jsonl``, ``crossing.txt`` (every crossing mention split or dropped, with its sentence id) and, last,
``metrics.json``.

Checkpoint selection: every ``eval_every`` steps (and at the last one) the dev splits are decoded and the model is
scored by the mean over datasets of the strict micro-F1 in the disjoint view; the best state is kept on disk and
restored before the final dev and test predictions (``metrics["best_step"]``, ``metrics["dev_curve"]``).
``eval_every`` 0 scores the last step only. ``max_dev_sentences`` caps each dataset's dev split (a seeded sample,
the same for selection and the reported dev scores) so that selection stays cheap on large corpora.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from curation.io import provenance, write_json, write_jsonl
from curation.records import Record
from mtl_baselines.common import Splits, batch_indices, score_records
from mtl_baselines.engine import engine_args, fit, remove_checkpoints, result_settings, set_seed
from mtl_baselines.sru_ner.actions import action_vocab
from mtl_baselines.sru_ner.config import TrainConfig
from mtl_baselines.sru_ner.data import (
    clean_mentions,
    collate,
    draw_batches,
    encode_example,
    evaluation_spans,
    rename_types,
)
from mtl_baselines.sru_ner.model import SRUNER, action_loss, build_model, steps_to_mentions

MODES = ("disjoint", "merged")
# settings a checkpoint need not match: where and how a run is written, not what it computes
ENGINE_ONLY = ("output", "device", "save_steps", "report_to", "mixed_precision", "gradient_accumulation_steps")
log = logging.getLogger(__name__)


def param_groups(model: SRUNER, encoder_lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups, each with its own peak rate: the encoder's parameters, and the SRU plus action head's (one
    AdamW over both groups updates every parameter exactly as two optimisers would)."""
    enc = [p for p in model.encoder.parameters() if p.requires_grad]
    return [{"params": enc, "lr": encoder_lr, "weight_decay": weight_decay, "name": "encoder"},
            {"params": model.head_parameters(), "lr": head_lr, "weight_decay": weight_decay, "name": "head"}]


@torch.no_grad()
def predict(model: SRUNER, examples: Sequence[dict[str, Any]], vocab: Sequence[str], batch_size: int, pad_id: int,
            max_steps_per_word: int = 4) -> list[list[tuple[int, int, str]]]:
    """Token mentions (renamed types) of every example, decoded in length-sorted batches."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[tuple[int, int, str]]] = [[] for _ in examples]
    for idx in batch_indices([e["n_words"] for e in examples], batch_size):
        b = collate([examples[i] for i in idx], pad_id, len(vocab))
        steps = model.generate(b["input_ids"].to(device), b["attention_mask"].to(device),
                               b["word_index"].to(device), b["n_words"].to(device), max_steps_per_word)
        for row, i in enumerate(idx):
            out[i] = steps_to_mentions(steps[row], vocab, examples[i]["n_words"])
    model.train(was_training)
    return out


def dev_sample(n: int, cap: int, seed: int) -> list[int]:
    """Indices of the dev sentences scored: all when ``cap`` is 0 or >= n, else a seeded sample kept in order."""
    if cap <= 0 or cap >= n:
        return list(range(n))
    return sorted(random.Random(seed).sample(range(n), cap))


def _with_spans(r: Record, spans: list) -> Record:
    return Record(id=r.id, text=r.text, tokens=r.tokens, token_offsets=r.token_offsets, doc_id=r.doc_id, spans=spans)


def prepare(corpora: Mapping[str, Splits], crossing: str) -> dict[str, Any]:
    """Renamed types, the origin of each, and every split's cleaned token mentions (plus the crossing notes)."""
    origin, own, notes, parts = {}, {}, [], {}
    for name, splits in corpora.items():
        types = sorted({s.label for r in (*splits.train, *splits.dev, *splits.test) for s in r.spans})
        own[name] = [f"{name}_{t}" for t in types]
        origin |= {f"{name}_{t}": (name, t) for t in types}
        for split in ("train", "dev", "test"):
            recs = [rename_types(r, name) for r in getattr(splits, split)]
            cleaned = []
            for r in recs:
                mentions, n = clean_mentions(r, crossing, where=f"{name}/{split}")
                notes += [f"{name}/{split} {x}" for x in n]
                cleaned.append(mentions)
            parts[(name, split)] = (getattr(splits, split), recs, cleaned)
    return {"types": sorted(origin), "origin": origin, "own": own, "notes": notes, "parts": parts}


def run_one(cfg: TrainConfig, corpora: Mapping[str, Splits], tokenizer: Any, out_dir: str | Path) -> dict[str, Any]:
    """Train on every corpus's train split, predict and score dev and test; write the run (see the module doc)."""
    start = time.perf_counter()
    out = Path(out_dir)
    prep = prepare(corpora, cfg.crossing)
    types, vocab = prep["types"], action_vocab(prep["types"])
    encoded = {key: [encode_example(r, m, tokenizer, types, prep["own"][key[0]], cfg.max_length)
                     for r, m in zip(recs, cleaned, strict=True)]
               for key, (_, recs, cleaned) in prep["parts"].items()}
    set_seed(cfg.seed)
    model = build_model(cfg.model, len(vocab), cfg.slot_dim, cfg.latents, cfg.max_distance, cfg.dropout)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    train = [e for name in corpora for e in encoded[(name, "train")]]
    sizes = [len(encoded[(name, "train")]) for name in corpora]
    dev_keep = {name: dev_sample(len(encoded[(name, "dev")]), cfg.max_dev_sentences, cfg.seed) for name in corpora}

    def evaluate(m: SRUNER) -> tuple[float, dict[str, float], None]:
        f1 = []
        for name in corpora:
            gold = [prep["parts"][(name, "dev")][0][i] for i in dev_keep[name]]
            pred = predict(m, [encoded[(name, "dev")][i] for i in dev_keep[name]], vocab, cfg.infer_batch_size,
                           pad_id, cfg.max_steps_per_word)
            recs = [_with_spans(r, evaluation_spans(r, x, name, prep["origin"], "disjoint"))
                    for r, x in zip(gold, pred, strict=True)]
            f1.append(score_records(gold, recs)["f1"])
        score = sum(f1) / len(f1)
        log.info("dev mean F1 %.2f", 100 * score)
        return score, {"dev_mean_f1": score}, None

    def step_fn(m: SRUNER, b: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        logits = m(b["input_ids"], b["attention_mask"], b["word_index"], b["gold"], b["n_words"])
        return action_loss(logits, b["gold"], b["step_mask"], b["supervised"]), {}

    plan = list(draw_batches(sizes, cfg.batch_size, cfg.steps * cfg.gradient_accumulation_steps,
                             torch.Generator().manual_seed(cfg.seed)))
    eval_at = {s for s in range(1, cfg.steps + 1) if s % cfg.eval_every == 0 or s == cfg.steps} \
        if cfg.eval_every else set()
    settings = {k: v for k, v in vars(cfg).items() if k not in ENGINE_ONLY} | result_settings(cfg)
    state = fit(model, step_fn, plan, lambda idx: collate([train[i] for i in idx], pad_id, len(vocab)),
                param_groups(model, cfg.encoder_lr, cfg.head_lr, cfg.weight_decay), out_dir=out,
                engine=engine_args(cfg), warmup_ratio=cfg.warmup_ratio, max_grad_norm=1.0,
                evaluate=evaluate if cfg.eval_every else None, eval_at=eval_at,
                log_lrs={"encoder_lr": 0, "head_lr": 1}, settings=settings, logger=log)
    history, dev_curve, main = state["history"], state["dev_curve"], state["main"]
    best_step = state["best_step"] or state["steps"]
    scores: dict[str, Any] = {}
    for split in ("dev", "test"):
        for name in corpora:
            gold, _, _ = prep["parts"][(name, split)]
            examples = encoded[(name, split)]
            if split == "dev":
                gold, examples = [gold[i] for i in dev_keep[name]], [examples[i] for i in dev_keep[name]]
            pred = predict(model, examples, vocab, cfg.infer_batch_size, pad_id, cfg.max_steps_per_word)
            for mode in MODES:
                recs = [_with_spans(r, evaluation_spans(r, m, name, prep["origin"], mode))
                        for r, m in zip(gold, pred, strict=True)]
                if main:
                    write_jsonl(out / f"pred_{split}_{name}_{mode}.jsonl", (r.to_dict() for r in recs))
                scores.setdefault(split, {}).setdefault(mode, {})[name] = score_records(gold, recs)
    if main:
        write_jsonl(out / "history.jsonl", history)
        (out / "crossing.txt").write_text("".join(f"{n}\n" for n in prep["notes"]), encoding="utf-8")
    metrics = {"datasets": list(corpora), "types": types, "actions": vocab, "steps": cfg.steps,
               "n_train": dict(zip(corpora, sizes, strict=True)), "crossing_changes": len(prep["notes"]),
               "n_dev": {name: len(keep) for name, keep in dev_keep.items()},
               "best_step": best_step, "resumed_from": state["resumed_from"],
               "examples_per_process": state["examples_per_process"], "dev_curve": dev_curve,
               "dev": scores["dev"], "test": scores["test"], "seconds": round(time.perf_counter() - start, 2),
               "provenance": provenance(cfg, [p for s in corpora.values() for p in s.sources])}
    if main:
        write_json(out / "metrics.json", metrics)
    remove_checkpoints(out)
    return metrics
