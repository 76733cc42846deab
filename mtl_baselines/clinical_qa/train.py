"""``bioselect mtl qa``: one clinical QA run (variant ``mtl``, ``qa_only`` or ``cls_only``, one seed) on one
question set.

    bioselect mtl qa --corpus ../shared/data/re/BioRED --model ~/.cache/offline-models/minilm-l6 \\
        --variant mtl --seed 0 --max-train-questions 2000 --output runs/qa/biored_mtl_s0

Also ``python -m mtl_baselines.clinical_qa.train ...`` and ``--config configs/qa_train_biored.yaml``. The corpus is
BioRED (PubTator file or folder: templated questions with answer categories), an emrQA JSON file, or a SQuAD JSON
file (COVID-QA, BioASQ: spans only, so ``--variant qa_only``); see :mod:`mtl_baselines.clinical_qa.data`. Writes
``pred_dev.jsonl``, ``pred_test.jsonl``, ``history.jsonl`` and ``metrics.json`` into OUTPUT (see
:mod:`mtl_baselines.clinical_qa.trainer`) and prints dev and test scores. Options, corpus and tokenizer are checked
before training; bad input exits with code 2.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from typing import Any

from curation.cli import parse_config, run
from curation.io import InputError
from mtl_baselines.clinical_qa.config import TrainArgs, TrainConfig


def say(line: str) -> None:
    """A command's result line on stdout."""
    print(line)  # noqa: T201


def load_checked(cfg: TrainArgs, variants: Sequence[str]) -> tuple[Any, Any, dict]:
    """Read, split and encode the corpus and load the tokenizer, checking everything a run needs; return
    ``(splits, tokenizer, encoded)``."""
    from mtl_baselines.clinical_qa.data import TEMPLATES, load_qa
    from mtl_baselines.clinical_qa.trainer import encode_splits
    from mtl_baselines.common import load_tokenizer

    templates = [t for t in TEMPLATES if t.name in cfg.template_names()]
    splits = load_qa(cfg.corpus, cfg.format, cfg.split_ratios(), cfg.split_seed, cfg.caps(), templates,
                     cfg.emrqa_answer)
    logging.getLogger(__name__).info("%s: %s", splits.dataset, splits.how)
    if not splits.categories and any(v != "qa_only" for v in variants):
        raise InputError("--variant", f"{splits.dataset} has no answer categories (a SQuAD file): only qa_only runs")
    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    from transformers import AutoConfig

    depth = AutoConfig.from_pretrained(cfg.model).num_hidden_layers
    if "mtl" in variants and cfg.shared_layers > depth:
        raise InputError("--shared-layers", f"must be in [0, {depth}] for the {depth}-layer encoder {cfg.model}, "
                         f"not {cfg.shared_layers}")
    encoded = encode_splits(cfg, splits, tokenizer)
    for name, (windows, _, counts) in encoded.items():
        if not windows:
            raise InputError(cfg.corpus, f"the {name} split has no usable question ({splits.how}; {counts})")
    return splits, tokenizer, encoded


def format_scores(m: dict[str, Any], name: str) -> str:
    s = m[name]
    parts = [f"EM {100 * s['exact_match']:.2f} F1 {100 * s['f1']:.2f}"] if "f1" in s else []
    parts += [f"category accuracy {100 * s['accuracy']:.2f} weighted F1 {100 * s['weighted_f1']:.2f}"] \
        if "accuracy" in s else []
    return "; ".join(parts)


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(TrainConfig, argv, prog="bioselect mtl qa", description=__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from mtl_baselines.clinical_qa.trainer import run_one
    from mtl_baselines.engine import is_main_process

    splits, tokenizer, encoded = load_checked(cfg, [cfg.variant])
    m = run_one(cfg, splits, cfg.variant, cfg.seed, cfg.output, tokenizer, encoded)
    if not is_main_process():
        return 0
    for name in ("dev", "test"):
        say(f"{m['dataset']} {m['variant']} seed {m['seed']} {name} ({m[name]['n']} questions): "
            f"{format_scores(m, name)}")
    say(f"{m['n_train_questions']} training questions ({m['n_train_windows']} windows), {m['steps']} steps, "
        f"{m['seconds']:.0f} s; wrote {cfg.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
