"""Training steps/s of the shared engine (:func:`mtl_baselines.engine.fit`) against the loop it replaced, in one run.

    nice -n 10 env OMP_NUM_THREADS=1 python benchmarks/engine_steps.py --steps 60 --rounds 3
    python benchmarks/engine_steps.py --model ~/.cache/offline-models/minilm-l6 \\
        --corpus ../shared/data/ner/NCBI-disease

Both loops train the same four-head ``uw_sym`` token MTL model (tiny random BERT by default) from the same
initial weights on the same batch plan (length-grouped, seeded): AdamW with the model / no-decay / log-variance
groups, linear warm-up and decay, gradient clipping, a history row per step, no dev evaluation. The reference is
the token MTL baseline's hand-written loop as it stood before the engine (main at 967bd56,
``mtl_baselines/token_mtl/trainer.py::fit``), kept here only as the reference. The loops alternate for
``--rounds`` rounds (alternating which goes first) and each keeps its fastest round (the machine may be shared);
the engine's time includes its set-up (accelerator, optimizer, a temporary output folder). It also checks that both end
with the same losses, bit for bit. The last line is the engine/reference steps/s ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch


def reference_loop(model, loss_fn, train, plan, pad_id, lr=1e-4, weight_decay=0.01, log_var_lr=1e-2,
                   warmup_ratio=0.1, max_grad_norm=1.0) -> list[float]:
    """REFERENCE ONLY: the pre-engine token MTL loop (967bd56), dev evaluation and gradient cosines left out."""
    from mtl_baselines.engine import linear_warmup_decay
    from mtl_baselines.token_mtl.data import collate

    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "model"},
              {"params": no_decay, "weight_decay": 0.0, "name": "model_no_decay"},
              {"params": [loss_fn.log_vars], "weight_decay": 0.0, "lr": log_var_lr, "name": "log_vars"}]
    opt = torch.optim.AdamW(groups, lr=lr)
    total = len(plan)
    warmup = round(warmup_ratio * total)
    factors = [lambda s: linear_warmup_decay(s, total, warmup)] * 2 + [lambda s: 1.0]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factors)
    clipped = [p for p in model.parameters() if p.requires_grad]
    device = next(model.parameters()).device
    history = []
    model.train()
    for step, idx in enumerate(plan):
        batch = {k: v.to(device) for k, v in collate([train[i] for i in idx], pad_id).items()}
        loss, losses = loss_fn(model(batch["input_ids"], batch["attention_mask"]), batch)
        row = {"step": step + 1, "lr": sched.get_last_lr()[0], "loss": loss.item()}
        row |= {f"loss_{h}": v.item() for h, v in losses.items()}
        row |= {f"log_var_{n}": v for n, v in zip(loss_fn.log_var_names, loss_fn.log_vars.tolist(), strict=True)}
        history.append(row)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(clipped, max_grad_norm)
        opt.step()
        sched.step()
    return [h["loss"] for h in history]


def engine_loop(model, loss_fn, train, plan, pad_id) -> list[float]:
    from torch import nn

    from mtl_baselines.engine import EngineArgs, fit
    from mtl_baselines.token_mtl.data import collate
    from mtl_baselines.token_mtl.trainer import param_groups

    names = loss_fn.log_var_names

    def step_fn(m, batch, step):
        loss, losses = m["loss"](m["model"](batch["input_ids"], batch["attention_mask"]), batch)
        extra = {f"loss_{h}": v.item() for h, v in losses.items()}
        extra |= {f"log_var_{n}": v for n, v in zip(names, m["loss"].log_vars.tolist(), strict=True)}
        return loss, extra

    with tempfile.TemporaryDirectory() as out:
        state = fit(nn.ModuleDict({"model": model, "loss": loss_fn}), step_fn, plan,
                    lambda idx: collate([train[i] for i in idx], pad_id), param_groups(model, loss_fn, 0.01, 1e-2),
                    out_dir=out, engine=EngineArgs(device="cpu"), lr=1e-4, warmup_ratio=0.1,
                    clip=[p for p in model.parameters() if p.requires_grad])
    return [h["loss"] for h in state["history"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Encoder folder (default: a tiny random BERT).")
    ap.add_argument("--corpus", default=None, help="Corpus folder (default: random sentences).")
    ap.add_argument("--sentences", type=int, default=600)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from token_mtl_batching import _records
    from transformers import AutoModel, AutoTokenizer

    from mtl_baselines.common import batch_indices
    from mtl_baselines.token_mtl.data import encode
    from mtl_baselines.token_mtl.labels import bio_labels, label_types
    from mtl_baselines.token_mtl.losses import MTLLoss
    from mtl_baselines.token_mtl.model import TokenMTL

    if args.model:
        tok = AutoTokenizer.from_pretrained(args.model)
        encoder = AutoModel.from_pretrained(args.model)
    else:
        from tiny_bert import tiny_bert

        torch.manual_seed(0)
        tok, encoder = tiny_bert(max_positions=256)
    state = {k: v.clone() for k, v in encoder.state_dict().items()}
    records = _records(args.corpus, args.sentences)
    types = sorted({s.label for r in records for s in r.spans})
    labels, classes = bio_labels(types), ["O", *types]
    train = encode(records, tok, labels, 256)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    gen = torch.Generator().manual_seed(0)
    plan = []
    while len(plan) < args.steps:
        plan += list(batch_indices([len(e["input_ids"]) for e in train], args.batch_size, gen))
    plan = plan[: args.steps]

    def fresh():
        encoder.load_state_dict(state)
        torch.manual_seed(1)
        model = TokenMTL(type(encoder)(encoder.config), len(labels))
        model.encoder.load_state_dict(state)
        loss_fn = MTLLoss("uw_sym", model.heads.keys(), [classes.index(t) for t in label_types(labels)], classes)
        torch.manual_seed(2)  # the dropout stream
        return model, loss_fn

    times: dict[str, list[float]] = {"reference": [], "engine": []}
    losses = {}
    loops = [("reference", reference_loop), ("engine", engine_loop)]
    for r in range(args.rounds):
        for name, loop in loops if r % 2 == 0 else loops[::-1]:  # alternate which goes first
            model, loss_fn = fresh()
            start = time.perf_counter()
            losses[name] = loop(model, loss_fn, train, plan, pad_id)
            times[name].append(time.perf_counter() - start)
    same = losses["reference"] == losses["engine"]
    best = {name: min(t) for name, t in times.items()}
    for name, seconds in best.items():
        median = sorted(times[name])[len(times[name]) // 2]
        print(f"{name}: {args.steps / seconds:.2f} steps/s ({args.steps} steps of {args.batch_size}, best of "
              f"{args.rounds} rounds: {seconds:.2f} s; median {median:.2f} s; engine set-up included)")
    print(f"same losses bit for bit: {same}")
    print(f"engine/reference steps/s: {best['reference'] / best['engine']:.3f}")


if __name__ == "__main__":
    main()
