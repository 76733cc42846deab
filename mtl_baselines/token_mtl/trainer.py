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

Training: AdamW with linear warm-up and decay on the model (no weight decay on biases and LayerNorm weights), the
log-variances in their own parameter group (no weight decay, constant learning rate ``log_var_lr``), gradient norm
clipped to 1 on the model, length-grouped batches (:func:`.data.batch_indices`). ``epochs`` passes over the
sample, more when ``min_steps`` needs them. Dev F1 (strict, micro, the foundation scorer) is measured
``dev_evals`` times at evenly spaced steps (the last at the end) and the best checkpoint is the one scored on test.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from curation.io import provenance, write_json, write_jsonl
from curation.records import Record
from curation.scoring import prediction_from_spans, score
from mtl_baselines.token_mtl.analysis import mean_by_key, pairwise_cosine
from mtl_baselines.token_mtl.data import Splits, batch_indices, check_fraction, collate, encode
from mtl_baselines.token_mtl.labels import bio_labels, label_types, tags_to_spans
from mtl_baselines.token_mtl.losses import MTLLoss, parse_variant
from mtl_baselines.token_mtl.model import TokenMTL, build_model

if TYPE_CHECKING:
    from mtl_baselines.token_mtl.train import TrainArgs


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_optimizer(model: TokenMTL, loss_fn: MTLLoss, lr: float, weight_decay: float, log_var_lr: float
                   ) -> torch.optim.AdamW:
    """AdamW: model matrices with weight decay, vectors (biases, LayerNorm) without, log-variances without and at
    their own learning rate (group named ``"log_vars"``)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "model"},
              {"params": no_decay, "weight_decay": 0.0, "name": "model_no_decay"}]
    if loss_fn.log_vars.numel():
        groups.append({"params": [loss_fn.log_vars], "weight_decay": 0.0, "lr": log_var_lr, "name": "log_vars"})
    return torch.optim.AdamW(groups, lr=lr)


def linear_warmup_decay(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear from 0 to 1 over ``warmup`` steps, then linear to 0 at ``total``.

    >>> [round(linear_warmup_decay(s, 10, 2), 2) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return step / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


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


def score_records(gold: Sequence[Record], pred: Sequence[Record]) -> dict[str, Any]:
    """Strict micro P/R/F1 and per-type scores from the foundation scorer (no bootstrap)."""
    result = score(list(gold), [prediction_from_spans(p.text, p.spans) for p in pred], n_bootstrap=0)
    micro = result["strict"]["micro"]
    return {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1"], "tp": micro["tp"],
            "fp": micro["fp"], "fn": micro["fn"], "per_type": result["strict"]["per_type"],
            "relaxed_f1": result["relaxed"]["micro"]["f1"]}


def fit(model: TokenMTL, loss_fn: MTLLoss, train: Sequence[dict[str, Any]], dev: Sequence[dict[str, Any]],
        dev_records: Sequence[Record], labels: Sequence[str], *, pad_id: int, seed: int, epochs: int = 3,
        min_steps: int = 0, batch_size: int = 16, lr: float = 5e-5, log_var_lr: float = 1e-2,
        weight_decay: float = 0.01, warmup_ratio: float = 0.1, max_grad_norm: float = 1.0, dev_evals: int = 3,
        grad_cosine_every: int = 0) -> dict[str, Any]:
    """Train ``model`` (restored to its best dev checkpoint on return); return the logs (see the module doc)."""
    gen = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    n_epochs = max(epochs, math.ceil(min_steps / steps_per_epoch))
    total = n_epochs * steps_per_epoch
    warmup = round(warmup_ratio * total)
    eval_at = {max(1, round(total * k / dev_evals)) for k in range(1, dev_evals + 1)}
    opt = make_optimizer(model, loss_fn, lr, weight_decay, log_var_lr)
    factors = [lambda s: linear_warmup_decay(s, total, warmup)] * 2 + [lambda s: 1.0] * (len(opt.param_groups) - 2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factors)
    shared = model.shared_parameters()
    clipped = [p for p in model.parameters() if p.requires_grad]
    lengths = [len(e["input_ids"]) for e in train]
    history, cosines, dev_curve = [], [], []
    best_f1, best_step, best_state, best_pred = -1.0, 0, None, None
    device = next(model.parameters()).device
    step = 0
    model.train()
    for epoch in range(n_epochs):
        for idx in batch_indices(lengths, batch_size, gen):
            batch = {k: v.to(device) for k, v in collate([train[i] for i in idx], pad_id).items()}
            loss, losses = loss_fn(model(batch["input_ids"], batch["attention_mask"]), batch)
            if grad_cosine_every and len(losses) > 1 and step % grad_cosine_every == 0:
                cosines.append({"step": step + 1, **pairwise_cosine(task_gradients(losses, shared))})
            row = {"step": step + 1, "epoch": epoch + 1, "lr": sched.get_last_lr()[0], "loss": loss.item()}
            row |= {f"loss_{h}": v.item() for h, v in losses.items()}
            row |= {f"log_var_{n}": v for n, v in zip(loss_fn.log_var_names, loss_fn.log_vars.tolist(), strict=True)}
            history.append(row)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clipped, max_grad_norm)
            opt.step()
            sched.step()
            step += 1
            if step in eval_at:
                pred = predict(model, dev, batch_size, pad_id)
                f1 = score_records(dev_records, predicted_records(dev_records, pred, labels))["f1"]
                dev_curve.append({"step": step, "f1": f1})
                if f1 > best_f1:
                    best_f1, best_step = f1, step
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    best_pred = pred
    if best_state is not None:
        model.load_state_dict(best_state)
    return {"history": history, "grad_cosine": cosines, "dev_curve": dev_curve, "best_step": best_step,
            "dev_pred": best_pred,
            "steps": step, "epochs": n_epochs, "log_vars": dict(zip(loss_fn.log_var_names, loss_fn.log_vars.tolist(),
                                                                     strict=True))}


def run_settings(cfg: TrainArgs) -> dict[str, Any]:
    """The training settings a finished run is tied to (a resumed study must use the same)."""
    from mtl_baselines.token_mtl.train import TrainArgs

    return {f.name: getattr(cfg, f.name) for f in fields(TrainArgs) if f.name != "device"}


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
    device = torch.device(cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(cfg, len(labels), heads).to(device)
    loss_fn = MTLLoss(base, heads, [classes.index(t) for t in label_types(labels)], classes, cfg.weights()).to(device)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    log = fit(model, loss_fn, encoded["train"], encoded["dev"], splits.dev, labels, pad_id=pad_id, seed=seed,
              epochs=cfg.epochs, min_steps=cfg.min_steps, batch_size=cfg.batch_size, lr=cfg.lr,
              log_var_lr=cfg.log_var_lr, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
              dev_evals=cfg.dev_evals, grad_cosine_every=cfg.grad_cosine_every)
    scores = {}
    for name, gold in (("dev", splits.dev), ("test", splits.test)):
        ids = log["dev_pred"] if name == "dev" else predict(model, encoded[name], cfg.batch_size, pad_id)
        pred = predicted_records(gold, ids, labels)
        write_jsonl(out / f"pred_{name}.jsonl", (r.to_dict() for r in pred))
        scores[name] = score_records(gold, pred)
    write_jsonl(out / "history.jsonl", log["history"])
    write_jsonl(out / "grad_cosine.jsonl", log["grad_cosine"])
    lost = sum(f < 0 for name in ("dev", "test") for e in encoded[name] for f in e["first"])
    metrics = {
        "corpus": splits.dataset, "variant": variant, "loss": base, "heads": list(heads), "fraction": fraction,
        "seed": seed, "n_train": len(train_records), "train_mentions": sum(len(r.spans) for r in train_records),
        "missing_types": missing, "labels": labels, "steps": log["steps"], "epochs": log["epochs"],
        "best_step": log["best_step"], "dev_curve": log["dev_curve"], "log_vars_final": log["log_vars"],
        "grad_cosine_mean": mean_by_key([{k: v for k, v in c.items() if k != "step"} for c in log["grad_cosine"]]),
        "eval_words_without_subword": lost, "dev": scores["dev"], "test": scores["test"],
        "seconds": round(time.perf_counter() - start, 2), "split": splits.how, "settings": run_settings(cfg),
        "provenance": provenance(cfg, splits.sources),
    }
    write_json(out / "metrics.json", metrics)
    return metrics
