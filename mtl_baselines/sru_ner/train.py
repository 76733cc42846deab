"""``bioselect mtl sru``: one SRU-NER run, trained on several partially annotated corpora at once.

    bioselect mtl sru \\
        --corpora genia=../shared/data/nested_ner/GENIA/dev.jsonlines,ncbi=../shared/data/ner/NCBI-disease \\
        --model ~/.cache/offline-models/minilm-l6 --steps 2000 --output runs/sru/genia_ncbi

Also ``python -m mtl_baselines.sru_ner.train ...`` and ``--config configs/sru_*.yaml``. Each corpus is a folder
with train/dev(el)/test files or one file split by document (:func:`mtl_baselines.common.load_splits`).
Writes span files, ``history.jsonl``, ``crossing.txt`` and ``metrics.json`` into OUTPUT (see
:mod:`mtl_baselines.sru_ner.trainer`) and prints each dataset's strict F1 in the disjoint and merged views.

Learning rates: the paper's values could not be looked up here (no copy of its body in reach), so the defaults
(encoder 2e-5, SRU and head 1e-3, 10% linear warm-up) are our choice, set by flags.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from curation.cli import parse_config, run
from curation.io import InputError
from mtl_baselines.sru_ner.config import TrainConfig


def _main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg, _ = parse_config(TrainConfig, argv, prog="bioselect mtl sru", description=__doc__.split("\n\n")[0])
    from mtl_baselines.common import load_splits, load_tokenizer
    from mtl_baselines.engine import is_main_process
    from mtl_baselines.sru_ner.data import restrict_splits
    from mtl_baselines.sru_ner.trainer import run_one

    types, parts = cfg.corpus_types(), cfg.corpus_parts()
    corpora = {name: restrict_splits(load_splits(path, cfg.split_ratios(), cfg.split_seed, cfg.dev_holdout),
                                     types.get(name, ()), parts.get(name), cfg.split_seed)
               for name, path in cfg.corpus_paths().items()}
    for name, s in corpora.items():
        if not s.train or not any(r.spans for r in s.train):
            raise InputError(name, f"the train split has no entity mentions ({s.how})")
        logging.getLogger(__name__).info("%s: %s; %d/%d/%d sentences", name, s.how, len(s.train), len(s.dev),
                                         len(s.test))
    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    m = run_one(cfg, corpora, tokenizer, cfg.output)
    if not is_main_process():
        return 0
    for split in ("dev", "test"):
        for mode, per in m[split].items():
            for name, s in per.items():
                print(f"{name} {split} {mode}: P {100 * s['precision']:.2f} R {100 * s['recall']:.2f} "
                      f"F1 {100 * s['f1']:.2f}")
    print(f"{sum(m['n_train'].values())} training sentences, {m['steps']} steps (kept: {m['best_step']}), "
          f"{m['crossing_changes']} crossing "
          f"mentions changed, {m['seconds']:.0f} s; wrote {cfg.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
