"""Training, prediction and scoring of one clinical QA run (one variant and seed).

    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    encoded = encode_splits(cfg, splits, tokenizer)
    metrics = run_one(cfg, splits, "mtl", seed=0, out_dir="runs/qa/mtl/s0", tokenizer=tokenizer, encoded=encoded)

A run writes into ``out_dir``: ``pred_dev.jsonl`` and ``pred_test.jsonl`` (one line per question: the predicted
answer text and character span, the gold answers, predicted and gold categories with the category
probabilities), ``history.jsonl`` (every optimizer step: total and per-task loss, learning rate) and, last,
``metrics.json``: a run is finished when that file exists.

Training: AdamW with linear warm-up and decay (no weight decay on biases and LayerNorm weights; the randomly
initialised heads may take their own peak rate, ``head_lr``), gradient norm
clipped to 1, length-grouped shuffled batches of windows (:func:`mtl_baselines.common.batch_indices`);
``epochs`` passes, or exactly ``max_steps`` steps when set. Dev is scored ``dev_evals`` times at evenly spaced
steps (the last at the end) and the best dev checkpoint is scored on test; the dev score is the mean of the
tasks' headline metrics (span token F1, category weighted F1).

Prediction: a question's answer is the best valid span over all its windows (start <= end, at most
``max_answer_length`` subwords, inside the context; score = start logit + end logit), mapped back to characters
through the tokenizer's offsets; its categories are those whose sigmoid probability, averaged over its windows,
reaches ``threshold`` (the most probable one when none does: every question has at least one category).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import torch

from curation.io import provenance, write_json, write_jsonl
from curation.records import Record
from mtl_baselines.clinical_qa.config import TrainArgs
from mtl_baselines.clinical_qa.data import QASplits, collate, encode_windows
from mtl_baselines.clinical_qa.losses import QALoss, class_weights
from mtl_baselines.clinical_qa.metrics import category_scores, span_scores
from mtl_baselines.clinical_qa.model import VARIANT_TASKS, ClinicalQA, build_model
from mtl_baselines.common import batch_indices
from mtl_baselines.engine import EngineArgs, engine_args, remove_checkpoints, result_settings, set_seed
from mtl_baselines.engine import fit as engine_fit

log = logging.getLogger(__name__)


def best_span(start: torch.Tensor, end: torch.Tensor, context: torch.Tensor, max_answer_length: int
              ) -> tuple[float, int, int] | None:
    """The highest-scoring valid span of one window: ``(start + end logit, first, last position)``, or ``None``
    when the window has no context position. Valid: both ends in the context, ``first <= last`` and at most
    ``max_answer_length`` positions long.

    >>> s, e = torch.tensor([0.0, 5.0, 1.0, 0.0]), torch.tensor([9.0, 0.0, 2.0, 4.0])
    >>> best_span(s, e, torch.tensor([False, True, True, True]), max_answer_length=3)   # [CLS] never answers
    (9.0, 1, 3)
    >>> best_span(s, e, torch.tensor([False, True, True, True]), max_answer_length=2)
    (7.0, 1, 2)
    """
    n = start.shape[0]
    if not bool(context.any()):
        return None
    i = torch.arange(n)
    length = i[None, :] - i[:, None]
    valid = context[:, None] & context[None, :] & (length >= 0) & (length < max_answer_length)
    scores = (start[:, None] + end[None, :]).masked_fill(~valid, float("-inf"))
    flat = int(scores.argmax())
    return float(scores.view(-1)[flat]), flat // n, flat % n


@torch.no_grad()
def predict(model: ClinicalQA, windows: Sequence[dict[str, Any]], questions: Sequence[Record],
            categories: Sequence[str], *, batch_size: int, pad_id: int, max_answer_length: int = 30,
            threshold: float = 0.5) -> list[dict[str, Any]]:
    """One prediction per question (see the module doc): ``answer``/``start``/``end``/``score`` when the model
    has the span head, ``categories``/``probabilities`` when it has the category head."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    spans: list[tuple[float, int, int] | None] = [None] * len(questions)
    prob_sum = [[0.0] * len(categories) for _ in questions]
    n_windows = [0] * len(questions)
    for idx in batch_indices([len(w["input_ids"]) for w in windows], batch_size):
        batch = collate([windows[i] for i in idx], pad_id)
        out = model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                    batch["token_type_ids"].to(device) if "token_type_ids" in batch else None)
        for row, i in enumerate(idx):
            w = windows[i]
            q = w["q"]
            n_windows[q] += 1
            if "start" in out:
                n = len(w["input_ids"])
                context = torch.tensor([o is not None for o in w["offsets"]])
                found = best_span(out["start"][row, :n].float().cpu(), out["end"][row, :n].float().cpu(), context,
                                  max_answer_length)
                if found is not None and (spans[q] is None or found[0] > spans[q][0]):
                    score, a, b = found
                    spans[q] = (score, w["offsets"][a][0], w["offsets"][b][1])
            if "category" in out:
                for c, p in enumerate(torch.sigmoid(out["category"][row].float()).tolist()):
                    prob_sum[q][c] += p
    model.train(was_training)
    preds = []
    for q, r in enumerate(questions):
        p: dict[str, Any] = {"id": r.id}
        if "qa" in model.tasks:
            score, a, b = spans[q] if spans[q] is not None else (float("-inf"), 0, 0)
            p |= {"answer": r.text[a:b], "start": a, "end": b, "score": score}
        if "cls" in model.tasks:
            probs = [s / max(1, n_windows[q]) for s in prob_sum[q]]
            chosen = [c for c, pr in zip(categories, probs) if pr >= threshold]
            p |= {"categories": chosen or [categories[max(range(len(probs)), key=probs.__getitem__)]],
                  "probabilities": dict(zip(categories, probs))}
        preds.append(p)
    return preds


def gold_answers(record: Record) -> list[str]:
    """A question's distinct gold answer texts (every gold mention's surface), in order of appearance."""
    return list(dict.fromkeys(s.surface(record.text) for s in record.sorted_spans()))


def evaluate_predictions(questions: Sequence[Record], preds: Sequence[dict[str, Any]], categories: Sequence[str]
             ) -> dict[str, Any]:
    """Exact match and token F1 of the spans and/or accuracy and weighted F1 of the categories, plus ``score``
    (the mean of span F1 and category weighted F1, those present) used to pick the dev checkpoint."""
    out: dict[str, Any] = {"n": len(questions)}
    headline = []
    if preds and "answer" in preds[0]:
        s = span_scores({p["id"]: p["answer"] for p in preds}, {r.id: gold_answers(r) for r in questions})
        out |= {"exact_match": s["exact_match"], "f1": s["f1"]}
        headline.append(s["f1"])
    if preds and "categories" in preds[0]:
        c = category_scores([[lab for lab in r.labels if lab in categories] for r in questions],
                            [p["categories"] for p in preds], categories)
        out |= {"accuracy": c["accuracy"], "weighted_f1": c["weighted_f1"], "macro_f1": c["macro_f1"],
                "micro_f1": c["micro_f1"], "per_category": c["per_label"]}
        headline.append(c["weighted_f1"])
    out["score"] = sum(headline) / len(headline) if headline else 0.0
    return out


def param_groups(model: ClinicalQA, lr: float, weight_decay: float, head_lr: float = 0.0) -> list[dict[str, Any]]:
    """AdamW groups: matrices with weight decay, vectors (biases, LayerNorm weights) without; the heads at
    ``head_lr`` (``lr`` when 0), the encoder at ``lr``."""
    head_ids = {id(p) for p in model.heads.parameters()}
    groups = []
    for is_head, rate in ((False, lr), (True, head_lr or lr)):
        params = [p for p in model.parameters() if p.requires_grad and (id(p) in head_ids) == is_head]
        groups += [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay, "lr": rate},
                   {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0, "lr": rate}]
    return groups


def fit(model: ClinicalQA, loss_fn: QALoss, train: Sequence[dict[str, Any]], dev: Sequence[dict[str, Any]],
        dev_questions: Sequence[Record], categories: Sequence[str], *, pad_id: int, seed: int, epochs: int = 1,
        max_steps: int = 0, batch_size: int = 8, lr: float = 5e-5, head_lr: float = 0.0, weight_decay: float = 0.01,
        warmup_ratio: float = 0.1, max_grad_norm: float = 1.0, dev_evals: int = 1, max_answer_length: int = 30,
        threshold: float = 0.5, log_every: int = 0, engine: EngineArgs | None = None,
        out_dir: str | Path | None = None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``model`` on :func:`mtl_baselines.engine.fit` (restored to its best dev checkpoint on return); return
    the logs (see the module doc)."""
    engine = engine or EngineArgs()
    accum = engine.gradient_accumulation_steps
    gen = torch.Generator().manual_seed(seed)
    lengths = [len(w["input_ids"]) for w in train]
    total = max_steps or epochs * math.ceil(math.ceil(len(train) / batch_size) / accum)
    plan, epoch_of = [], []
    while len(plan) < total * accum:
        epoch = len(set(epoch_of)) + 1
        for idx in batch_indices(lengths, batch_size, gen):
            plan.append(idx)
            epoch_of.append(epoch)
    plan, epoch_of = plan[:total * accum], epoch_of[:total * accum]
    eval_at = {max(1, round(total * k / dev_evals)) for k in range(1, dev_evals + 1)}

    def step_fn(m: ClinicalQA, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        loss, parts = m["loss"](m["model"](batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")),
                                batch)
        return loss, {f"loss_{k}": v.item() for k, v in parts.items()}

    def evaluate(m: torch.nn.Module) -> tuple[float, dict[str, Any], list[dict[str, Any]]]:
        pred = predict(m["model"], dev, dev_questions, categories, batch_size=batch_size, pad_id=pad_id,
                       max_answer_length=max_answer_length, threshold=threshold)
        scores = evaluate_predictions(dev_questions, pred, categories)
        row = {k: v for k, v in scores.items() if k != "per_category"}
        log.info("dev %s", {k: round(v, 4) for k, v in row.items()})
        return scores["score"], row, pred

    state = engine_fit(torch.nn.ModuleDict({"model": model, "loss": loss_fn}), step_fn, plan,
                       lambda idx: collate([train[i] for i in idx], pad_id), param_groups(model, lr, weight_decay,
                                                                                           head_lr),
                       out_dir=out_dir, engine=engine, lr=lr, warmup_ratio=warmup_ratio, max_grad_norm=max_grad_norm,
                       clip=[p for p in model.parameters() if p.requires_grad], evaluate=evaluate, eval_at=eval_at,
                       settings=settings, log_every=log_every, logger=log)
    history = [{"step": r["step"], "epoch": epoch_of[(r["step"] - 1) * accum]} | r for r in state["history"]]
    return {"history": history, "dev_curve": state["dev_curve"], "best_step": state["best_step"],
            "dev_pred": state["best_payload"], "steps": state["steps"], "epochs": max(epoch_of, default=0),
            "resumed_from": state["resumed_from"], "examples_per_process": state["examples_per_process"],
            "main": state["main"]}


def encode_splits(cfg: TrainArgs, splits: QASplits, tokenizer: Any) -> dict[str, tuple[list, list, dict]]:
    """``{split: (windows, questions, counts)}`` for train, dev and test (the same for every variant and seed)."""
    return {name: encode_windows(getattr(splits, name), tokenizer, splits.categories, cfg.max_length,
                                 cfg.doc_stride, cfg.max_question_length,
                                 cfg.train_negative_windows if name == "train" else -1, cfg.split_seed)
            for name in ("train", "dev", "test")}


def run_settings(cfg: TrainArgs) -> dict[str, Any]:
    """The training settings a finished run is tied to (a resumed study must use the same)."""
    skip = {f.name for f in fields(EngineArgs)} | {"log_every"}
    return {f.name: getattr(cfg, f.name) for f in fields(TrainArgs) if f.name not in skip} | result_settings(cfg)


def run_one(cfg: TrainArgs, splits: QASplits, variant: str, seed: int, out_dir: str | Path, tokenizer: Any,
            encoded: dict[str, tuple[list, list, dict]] | None = None) -> dict[str, Any]:
    """Train, predict dev and test, score and write one run (see the module doc); return its metrics."""
    start = time.perf_counter()
    out = Path(out_dir)
    tasks = VARIANT_TASKS[variant]
    encoded = encoded or encode_splits(cfg, splits, tokenizer)
    train_w, train_q, _ = encoded["train"]
    categories = splits.categories
    positives = [sum(c in r.labels for r in train_q) for c in categories]
    weights = class_weights(positives, len(train_q), cfg.class_weighting) if categories else []
    set_seed(seed)
    model = build_model(cfg.model, variant, len(categories), cfg.shared_layers, cfg.span_sizes(), cfg.category_sizes(),
                        cfg.dropout)
    loss_fn = QALoss(tasks, weights, cfg.lambda_qa, cfg.lambda_cls)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    common = {"batch_size": cfg.batch_size, "pad_id": pad_id, "max_answer_length": cfg.max_answer_length,
              "threshold": cfg.threshold}
    logs = fit(model, loss_fn, train_w, encoded["dev"][0], encoded["dev"][1], categories, seed=seed,
               epochs=cfg.epochs, max_steps=cfg.max_steps, lr=cfg.lr, head_lr=cfg.head_lr,
               weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio, dev_evals=cfg.dev_evals,
               log_every=cfg.log_every, engine=engine_args(cfg), out_dir=out,
               settings=run_settings(cfg) | {"dataset": splits.dataset, "variant": variant, "seed": seed}, **common)
    scores = {}
    for name in ("dev", "test"):
        windows, questions, _ = encoded[name]
        preds = logs["dev_pred"] if name == "dev" else predict(model, windows, questions, categories, **common)
        golds = {r.id: r for r in questions}
        if logs["main"]:
            write_jsonl(out / f"pred_{name}.jsonl",
                        (p | {"question": golds[p["id"]].question, "gold_answers": gold_answers(golds[p["id"]]),
                              "gold_categories": golds[p["id"]].labels} for p in preds))
        scores[name] = evaluate_predictions(questions, preds, categories)
    if logs["main"]:
        write_jsonl(out / "history.jsonl", logs["history"])
    metrics = {
        "dataset": splits.dataset, "variant": variant, "tasks": list(tasks), "seed": seed,
        "encoder_layers": model.depth, "shared_layers": model.shared_layers, "categories": categories,
        "class_weights": dict(zip(categories, weights)), "train_category_questions": dict(zip(categories, positives)),
        "n_train_questions": len(train_q), "n_train_windows": len(train_w), "steps": logs["steps"],
        "epochs": logs["epochs"], "best_step": logs["best_step"], "resumed_from": logs["resumed_from"],
        "examples_per_process": logs["examples_per_process"],
        "dev_curve": logs["dev_curve"],
        "dev": scores["dev"], "test": scores["test"], "encoding": {k: v[2] for k, v in encoded.items()},
        "data": splits.counts, "split": splits.how, "seconds": round(time.perf_counter() - start, 2),
        "settings": run_settings(cfg), "provenance": provenance(cfg, splits.sources),
    }
    if logs["main"]:
        write_json(out / "metrics.json", metrics)
    remove_checkpoints(out)
    return metrics
