"""Training, prediction and scoring of one token MTL run (one variant, training fraction and seed).

    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    metrics = run_one(cfg, splits, types, "uw_sym", 0.25, seed=0, out_dir="runs/mtl/uw_sym/f0.25/s0",
                      tokenizer=tokenizer)

A run writes into ``out_dir``: ``pred_dev.jsonl`` and ``pred_test.jsonl`` (span files, one
:meth:`curation.records.Record.to_dict` per line, readable by ``bioselect evaluate``), ``history.jsonl`` (every
optimizer step: total and raw task losses, learning rate, the learned log-variances used in that step),
``grad_cosine.jsonl`` (pairwise cosine similarity of the raw task-loss gradients on the shared encoder, every
``grad_cosine_every`` steps; positive loss weights do not change a cosine) and, last, ``metrics.json``: a run is
finished when that file exists.

Training runs on :func:`mtl_baselines.engine.fit` (devices, precision, accumulation, ``accelerate launch``,
checkpoints and resume): AdamW with linear warm-up and decay on the model (no weight decay on biases and LayerNorm
weights), the log-variances in their own parameter group (no weight decay, constant learning rate ``log_var_lr``),
gradient norm clipped to 1 on the model, length-grouped batches (:func:`mtl_baselines.common.batch_indices`).
``epochs`` passes over the sample, more when ``min_steps`` needs them (counted in optimizer steps). Dev F1 (strict,
micro, the foundation scorer) is measured ``dev_evals`` times at evenly spaced steps (the last at the end) and the
best checkpoint is the one scored on test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curation.io import provenance, write_json, write_jsonl
from curation.records import Record
from mtl_baselines.common import Splits, batch_indices, score_records
from mtl_baselines.engine import EngineArgs, engine_args, remove_checkpoints, result_settings, set_seed
from mtl_baselines.engine import fit as engine_fit
from mtl_baselines.token_mtl.analysis import mean_by_key, pairwise_cosine
from mtl_baselines.token_mtl.config import TrainArgs
from mtl_baselines.token_mtl.data import check_fraction, collate, encode
from mtl_baselines.token_mtl.labels import bio_labels, label_types, tags_to_spans
from mtl_baselines.token_mtl.losses import MTLLoss, parse_variant
from mtl_baselines.token_mtl.model import TokenMTL, build_model


def param_groups(model: TokenMTL, loss_fn: MTLLoss, weight_decay: float, log_var_lr: float) -> list[dict[str, Any]]:
    """AdamW groups: model matrices with weight decay, vectors (biases, LayerNorm) without, log-variances without,
    at their own constant learning rate (group named ``"log_vars"``)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "model"},
              {"params": no_decay, "weight_decay": 0.0, "name": "model_no_decay"}]
    if loss_fn.log_vars.numel():
        groups.append({"params": [loss_fn.log_vars], "weight_decay": 0.0, "lr": log_var_lr, "name": "log_vars",
                       "constant_lr": True})
    return groups


def task_gradients(losses: dict[str, torch.Tensor], params: Sequence[torch.nn.Parameter]) -> dict[str, torch.Tensor]:
    """Each task loss's gradient on ``params``, flattened into one vector (the graph is kept for the update)."""
    out = {}
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
        out[name] = torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                               for g, p in zip(grads, params, strict=True)])
    return out


@torch.no_grad()
def predict(model: TokenMTL, examples: Sequence[dict[str, Any]], batch_size: int, pad_id: int) -> list[list[int]]:
    """Predicted NER label id of every word (read at its first subword; 0 = ``O`` for a word without one)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    out: list[list[int]] = [[] for _ in examples]
    for idx in batch_indices([len(e["input_ids"]) for e in examples], batch_size):
        batch = collate([examples[i] for i in idx], pad_id)
        pred = model(batch["input_ids"].to(device), batch["attention_mask"].to(device))["ner"].argmax(-1).cpu()
        for row, i in enumerate(idx):
            out[i] = [int(pred[row, f]) if f >= 0 else 0 for f in examples[i]["first"]]
    model.train(was_training)
    return out


def predicted_records(records: Sequence[Record], word_label_ids: Sequence[Sequence[int]], labels: Sequence[str]
                      ) -> list[Record]:
    """Gold records with their spans replaced by the predicted ones (a span file's records)."""
    return [Record(id=r.id, text=r.text, spans=tags_to_spans([labels[i] for i in ids], r.token_offsets),
                   tokens=r.tokens, token_offsets=r.token_offsets, doc_id=r.doc_id)
            for r, ids in zip(records, word_label_ids, strict=True)]


def fit(model: nn.Module, loss_fn: MTLLoss, train: Sequence[dict[str, Any]], dev: Sequence[dict[str, Any]],
        dev_records: Sequence[Record], labels: Sequence[str], *, pad_id: int, seed: int, epochs: int = 3,
        min_steps: int = 0, batch_size: int = 16, lr: float = 5e-5, log_var_lr: float = 1e-2,
        weight_decay: float = 0.01, warmup_ratio: float = 0.1, max_grad_norm: float = 1.0, dev_evals: int = 3,
        grad_cosine_every: int = 0, engine: EngineArgs | None = None, out_dir: str | Path | None = None,
        settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` on :func:`mtl_baselines.engine.fit` (restored to its best dev checkpoint on return); return
    the logs (see the module doc)."""
    engine = engine or EngineArgs()
    gen = torch.Generator().manual_seed(seed)
    lengths = [len(e["input_ids"]) for e in train]
    batches_per_epoch = math.ceil(len(train) / batch_size)
    accum = engine.gradient_accumulation_steps
    n_epochs = max(epochs, math.ceil(min_steps / math.ceil(batches_per_epoch / accum)))
    plan = [idx for _ in range(n_epochs) for idx in batch_indices(lengths, batch_size, gen)]
    total = math.ceil(len(plan) / accum)
    eval_at = {max(1, round(total * k / dev_evals)) for k in range(1, dev_evals + 1)}
    names = loss_fn.log_var_names

    def step_fn(m: nn.Module, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        loss, losses = m["loss"](m["model"](batch["input_ids"], batch["attention_mask"]), batch)
        extra: dict[str, Any] = {f"loss_{h}": v.item() for h, v in losses.items()}
        extra |= {f"log_var_{n}": v for n, v in zip(names, m["loss"].log_vars.tolist(), strict=True)}
        if grad_cosine_every and len(losses) > 1 and step % grad_cosine_every == 0:
            extra["grad_cosine"] = pairwise_cosine(task_gradients(losses, m["model"].shared_parameters()))
        return loss, extra

    def evaluate(m: nn.Module) -> tuple[float, dict[str, float], list[list[int]]]:
        pred = predict(m["model"], dev, batch_size, pad_id)
        f1 = score_records(dev_records, predicted_records(dev_records, pred, labels))["f1"]
        return f1, {"f1": f1}, pred

    state = engine_fit(nn.ModuleDict({"model": model, "loss": loss_fn}), step_fn, plan,
                       lambda idx: collate([train[i] for i in idx], pad_id),
                       param_groups(model, loss_fn, weight_decay, log_var_lr), out_dir=out_dir, engine=engine, lr=lr,
                       warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
                       clip=[p for p in model.parameters() if p.requires_grad], evaluate=evaluate, eval_at=eval_at,
                       settings=settings)
    history, cosines = [], []
    for row in state["history"]:
        cos = row.pop("grad_cosine", None)
        if cos is not None:
            cosines.append({"step": row["step"], **cos})
        history.append({"step": row["step"], "epoch": (row["step"] - 1) * accum // batches_per_epoch + 1} | row)
    return {"history": history, "grad_cosine": cosines, "dev_curve": state["dev_curve"],
            "best_step": state["best_step"], "dev_pred": state["best_payload"], "steps": state["steps"],
            "epochs": n_epochs, "resumed_from": state["resumed_from"], "main": state["main"],
            "examples_per_process": state["examples_per_process"],
            "log_vars": dict(zip(names, loss_fn.log_vars.tolist(), strict=True))}


def run_settings(cfg: TrainArgs) -> dict[str, Any]:
    """The training settings a finished run is tied to (a resumed study must use the same)."""
    engine = {f.name for f in fields(EngineArgs)}
    return {f.name: getattr(cfg, f.name) for f in fields(TrainArgs) if f.name not in engine} | result_settings(cfg)


def run_one(cfg: TrainArgs, splits: Splits, types: Sequence[str], variant: str, fraction: float, seed: int,
            out_dir: str | Path, tokenizer: Any, order: list[list[int]] | None = None) -> dict[str, Any]:
    """Sample, train, predict dev and test, score and write one run (see the module doc); return its metrics."""
    start = time.perf_counter()
    out = Path(out_dir)
    base, heads = parse_variant(variant)
    labels = bio_labels(types)
    classes = ["O", *types]
    idx, missing = check_fraction(splits.train, fraction, seed, cfg.allow_missing_types, order)
    train_records = [splits.train[i] for i in idx]
    encoded = {name: encode(recs, tokenizer, labels, cfg.max_length)
               for name, recs in (("train", train_records), ("dev", splits.dev), ("test", splits.test))}
    set_seed(seed)
    model = build_model(cfg.model, len(labels), heads, cfg.dropout)
    loss_fn = MTLLoss(base, heads, [classes.index(t) for t in label_types(labels)], classes, cfg.weights())
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    settings = run_settings(cfg) | {"corpus": splits.dataset, "variant": variant, "fraction": fraction, "seed": seed}
    log = fit(model, loss_fn, encoded["train"], encoded["dev"], splits.dev, labels, pad_id=pad_id, seed=seed,
              epochs=cfg.epochs, min_steps=cfg.min_steps, batch_size=cfg.batch_size, lr=cfg.lr,
              log_var_lr=cfg.log_var_lr, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
              dev_evals=cfg.dev_evals, grad_cosine_every=cfg.grad_cosine_every, engine=engine_args(cfg),
              out_dir=out, settings=settings)
    scores = {}
    for name, gold in (("dev", splits.dev), ("test", splits.test)):
        ids = log["dev_pred"] if name == "dev" else predict(model, encoded[name], cfg.batch_size, pad_id)
        pred = predicted_records(gold, ids, labels)
        if log["main"]:
            write_jsonl(out / f"pred_{name}.jsonl", (r.to_dict() for r in pred))
        scores[name] = score_records(gold, pred)
    if log["main"]:
        write_jsonl(out / "history.jsonl", log["history"])
        write_jsonl(out / "grad_cosine.jsonl", log["grad_cosine"])
    lost = sum(f < 0 for name in ("dev", "test") for e in encoded[name] for f in e["first"])
    metrics = {
        "corpus": splits.dataset, "variant": variant, "loss": base, "heads": list(heads), "fraction": fraction,
        "seed": seed, "n_train": len(train_records), "train_mentions": sum(len(r.spans) for r in train_records),
        "missing_types": missing, "labels": labels, "steps": log["steps"], "epochs": log["epochs"],
        "best_step": log["best_step"], "resumed_from": log["resumed_from"],
        "examples_per_process": log["examples_per_process"], "dev_curve": log["dev_curve"],
        "log_vars_final": log["log_vars"],
        "grad_cosine_mean": mean_by_key([{k: v for k, v in c.items() if k != "step"} for c in log["grad_cosine"]]),
        "eval_words_without_subword": lost, "dev": scores["dev"], "test": scores["test"],
        "seconds": round(time.perf_counter() - start, 2), "split": splits.how, "settings": run_settings(cfg),
        "provenance": provenance(cfg, splits.sources),
    }
    if log["main"]:
        write_json(out / "metrics.json", metrics)
    remove_checkpoints(out)
    return metrics
