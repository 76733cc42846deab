"""Token MTL training speed: length-grouped batches (the trainer's way) vs plain shuffled batches, in one run.

    OMP_NUM_THREADS=1 python benchmarks/token_mtl_batching.py --model ~/.cache/offline-models/minilm-l6 \\
        --corpus ../shared/data/ner/NCBI-disease --steps 40
    python benchmarks/token_mtl_batching.py --model ~/.cache/offline-models/minilm-l6 --random-init --device cuda

Both ways train the same four-head ``uw_sym`` model (:class:`~mtl_baselines.token_mtl.model.TokenMTL`, loss
:class:`~mtl_baselines.token_mtl.losses.MTLLoss`, AdamW, gradient clipping) for ``--steps`` optimizer steps on the
same seeded shuffle of the corpus's training sentences. The trainer's batching
(:func:`~mtl_baselines.common.batch_indices`, pools of 50 batches sorted by length) is compared with
``pool=1`` (each batch a plain slice of the shuffle). Reported per way: sentences/s, subword tokens/s and the share
of padded positions. ``--random-init`` builds the encoder from the model folder's config with random weights (for a
GPU machine without the weights); without ``--model`` a tiny random BERT and random sentences are used. The last
line is the speed-up of length-grouped over plain batches.
"""

from __future__ import annotations

import argparse
import random
import time

import torch


def _records(corpus: str | None, n: int):
    from curation.records import Record, Span

    if corpus:
        from mtl_baselines.common import load_splits

        return load_splits(corpus).train[:n]
    rng = random.Random(0)
    out = []
    for k in range(n):
        words = [f"w{rng.randrange(200)}" for _ in range(rng.choice([rng.randint(5, 15), rng.randint(15, 80)]))]
        offsets, pos = [], 0
        for w in words:
            offsets.append((pos, pos + len(w)))
            pos += len(w) + 1
        spans = [Span(offsets[0][0], offsets[0][1], "T0")] if k % 2 else []
        out.append(Record(id=f"s{k}", text=" ".join(words), spans=spans, tokens=words, token_offsets=offsets))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="Encoder folder or hub id (default: a tiny random BERT).")
    ap.add_argument("--random-init", action="store_true", help="Random weights from the model's config.")
    ap.add_argument("--corpus", default=None, help="Corpus folder (default: random sentences).")
    ap.add_argument("--sentences", type=int, default=2000, help="Training sentences to draw batches from.")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from mtl_baselines.common import batch_indices
    from mtl_baselines.token_mtl.data import collate, encode
    from mtl_baselines.token_mtl.labels import bio_labels, label_types
    from mtl_baselines.token_mtl.losses import MTLLoss
    from mtl_baselines.token_mtl.model import TokenMTL
    from mtl_baselines.token_mtl.trainer import param_groups

    if args.model:
        tok = AutoTokenizer.from_pretrained(args.model)
        make_encoder = ((lambda: AutoModel.from_config(AutoConfig.from_pretrained(args.model))) if args.random_init
                        else (lambda: AutoModel.from_pretrained(args.model)))
    else:
        from tiny_bert import tiny_bert

        tok, encoder = tiny_bert(max_positions=256)
        state = encoder.state_dict()

        def make_encoder():
            enc = type(encoder)(encoder.config)
            enc.load_state_dict(state)
            return enc

    records = _records(args.corpus, args.sentences)
    types = sorted({s.label for r in records for s in r.spans})
    labels = bio_labels(types)
    classes = ["O", *types]
    examples = encode(records, tok, labels, 256)
    lengths = [len(e["input_ids"]) for e in examples]
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
    device = torch.device(args.device)
    results = {}
    for name, pool in (("plain", 1), ("length-grouped", 50)):
        torch.manual_seed(0)
        model = TokenMTL(make_encoder(), len(labels)).to(device).train()
        loss_fn = MTLLoss("uw_sym", model.heads.keys(), [classes.index(t) for t in label_types(labels)],
                          classes).to(device)
        opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "constant_lr"}
                                 for g in param_groups(model, loss_fn, 0.01, 1e-2)], lr=1e-4)
        batches = []
        while len(batches) < args.steps + 2:  # two warm-up steps, not timed
            batches += list(batch_indices(lengths, args.batch_size, torch.Generator().manual_seed(len(batches)), pool))
        batches = batches[: args.steps + 2]
        tokens = padded = sentences = 0
        for step, idx in enumerate(batches):
            if step == 2:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            batch = {k: v.to(device) for k, v in collate([examples[i] for i in idx], pad_id).items()}
            loss, _ = loss_fn(model(batch["input_ids"], batch["attention_mask"]), batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            if step >= 2:
                real = int(batch["attention_mask"].sum())
                tokens += real
                padded += batch["attention_mask"].numel() - real
                sentences += len(idx)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        results[name] = sentences / seconds
        print(f"{name}: {sentences / seconds:.1f} sentences/s, {tokens / seconds:.0f} tokens/s, "
              f"padding {100 * padded / (tokens + padded):.1f}% ({args.steps} steps of {args.batch_size}, "
              f"{seconds:.1f} s)")
    print(f"length-grouped/plain speed-up: {results['length-grouped'] / results['plain']:.2f}x")


if __name__ == "__main__":
    main()
