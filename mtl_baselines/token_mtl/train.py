"""``bioselect mtl train``: one token MTL run (one loss variant, training fraction and seed) on one corpus.

    bioselect mtl train --corpus ../shared/data/ner/PK-relations --model ~/.cache/offline-models/minilm-l6 \\
        --variant uw_sym --fraction 0.25 --seed 0 --output runs/mtl/pk_uw_sym

Also ``python -m mtl_baselines.token_mtl.train ...`` and ``--config configs/mtl_train_pk.yaml``. Writes the span
files ``pred_dev.jsonl``/``pred_test.jsonl``, ``history.jsonl``, ``grad_cosine.jsonl`` and ``metrics.json`` into
OUTPUT (see :mod:`mtl_baselines.token_mtl.trainer`) and prints dev and test P/R/F1. The corpus, the tokenizer and
the sample are checked before training; bad input exits with code 2 and trains nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from curation.cli import parse_config, run
from mtl_baselines.token_mtl.config import TrainConfig


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(TrainConfig, argv, prog="bioselect mtl train", description=__doc__.split("\n\n")[0])
    from mtl_baselines.common import load_splits, load_tokenizer
    from mtl_baselines.engine import is_main_process
    from mtl_baselines.token_mtl.data import check_fraction, check_splits
    from mtl_baselines.token_mtl.trainer import run_one

    splits = load_splits(cfg.corpus, cfg.split_ratios(), cfg.split_seed)
    types = check_splits(splits)
    check_fraction(splits.train, cfg.fraction, cfg.seed, cfg.allow_missing_types)
    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    m = run_one(cfg, splits, types, cfg.variant, cfg.fraction, cfg.seed, cfg.output, tokenizer)
    if not is_main_process():
        return 0
    for name in ("dev", "test"):
        s = m[name]
        print(f"{m['corpus']} {m['variant']} fraction {m['fraction']:g} seed {m['seed']} {name}: "
              f"P {100 * s['precision']:.2f} R {100 * s['recall']:.2f} F1 {100 * s['f1']:.2f}")
    print(f"{m['n_train']} training sentences, {m['steps']} steps, {m['seconds']:.0f} s; wrote {cfg.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
