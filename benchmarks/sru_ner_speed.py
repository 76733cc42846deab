"""SRU-NER decoding speed: sentences/s one sentence at a time vs batched, in one run (CPU by default).

    OMP_NUM_THREADS=1 python benchmarks/sru_ner_speed.py --sentences 64 --batch-size 32
    python benchmarks/sru_ner_speed.py --model ~/.cache/offline-models/minilm-l6 --corpus \\
        ../shared/data/nested_ner/GENIA/dev.jsonlines

Without ``--model`` a random tiny BERT (built in-process) drives the decoder; without ``--corpus`` random sentences
of 5 to 30 words are used. The SRU and action head are random-initialised, with the EOA bias pushed down so every
sentence is decoded to its last word. The last line is the speed-up of batched over batch-1 decoding.
"""

from __future__ import annotations

import argparse
import random
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--sentences", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--types", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from transformers import AutoModel, AutoTokenizer

    from mtl_baselines.sru_ner.actions import action_vocab
    from mtl_baselines.sru_ner.data import collate
    from mtl_baselines.sru_ner.model import SRUNER

    if args.model:
        tok, encoder = AutoTokenizer.from_pretrained(args.model), AutoModel.from_pretrained(args.model)
    else:
        from tiny_bert import tiny_bert

        tok, encoder = tiny_bert(max_positions=128)
    if args.corpus:
        from curation.readers import read_corpus

        sents = [r.tokens for r in read_corpus(args.corpus).records[: args.sentences]]
    else:
        rng = random.Random(0)
        sents = [[f"w{rng.randrange(200)}" for _ in range(rng.randint(5, 30))] for _ in range(args.sentences)]
    types = [f"T{i}" for i in range(args.types)]
    n_actions = len(action_vocab(types))
    model = SRUNER(encoder, n_actions, slot_dim=128, dropout=0.0).eval()
    with torch.no_grad():
        model.head[-1].bias[1] = -20.0  # no early EOA: decode every word
    examples = []
    for words in sents:
        enc = tok(words, is_split_into_words=True, truncation=True, max_length=128)
        examples.append({"input_ids": enc["input_ids"], "n_words": len(words), "supervised": [True] * n_actions,
                         "word_index": [-1 if w is None else w for w in enc.word_ids()]})
    pad = tok.pad_token_id or 0
    results = {}
    for bs in (1, args.batch_size):
        order = sorted(range(len(examples)), key=lambda i: examples[i]["n_words"])
        start = time.perf_counter()
        for lo in range(0, len(order), bs):
            b = collate([examples[i] for i in order[lo:lo + bs]], pad, n_actions)
            model.generate(b["input_ids"], b["attention_mask"], b["word_index"], b["n_words"])
        results[bs] = len(examples) / (time.perf_counter() - start)
        print(f"batch {bs}: {results[bs]:.1f} sentences/s ({len(examples)} sentences)")
    print(f"batched/batch-1 speed-up: {results[args.batch_size] / results[1]:.2f}x")


if __name__ == "__main__":
    main()
