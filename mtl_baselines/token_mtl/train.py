"""``bioselect mtl train``: one token MTL run (one loss variant, training fraction and seed) on one corpus.

    bioselect mtl train --corpus ../shared/data/ner/PK-relations --model ~/.cache/offline-models/minilm-l6 \\
        --variant uw_sym --fraction 0.25 --seed 0 --output runs/mtl/pk_uw_sym

Also ``python -m mtl_baselines.token_mtl.train ...`` and ``--config configs/mtl_train_pk.yaml``. Writes the span
files ``pred_dev.jsonl``/``pred_test.jsonl``, ``history.jsonl``, ``grad_cosine.jsonl`` and ``metrics.json`` into
OUTPUT (see :mod:`mtl_baselines.token_mtl.trainer`) and prints dev and test P/R/F1. The corpus, the tokenizer and
the sample are checked before training; bad input exits with code 2 and trains nothing.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from curation.cli import parse_config, run
from curation.io import Files, InputError

_VARIANT_HELP = ("Loss variant: single, heuristic, uw_sym, uw_asym or uw_class; a '-no_HEAD' suffix (HEAD one of "
                 "mtcls, bcls, mcls) drops an auxiliary head, e.g. uw_sym-no_mtcls.")


def _floats(text: str, option: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(option, f"expected comma-separated numbers, got {text!r}") from None


@dataclass
class TrainArgs:
    """Model, optimisation and corpus settings shared by ``mtl train`` and ``mtl study``."""

    model: str = field(default="", metadata={
        "help": "Encoder: a Hugging Face folder or hub id (e.g. dmis-lab/biobert-base-cased-v1.2, or the local "
                "MiniLM folder ~/.cache/offline-models/minilm-l6)."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Tokenizer folder or hub id; the encoder's own when omitted (must match the encoder)."})
    max_length: int = field(default=512, metadata={"help": "Subwords per sentence; words cut off are predicted O."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the encoder output before every head."})
    epochs: int = field(default=3, metadata={"help": "Passes over the training sample."})
    min_steps: int = field(default=0, metadata={
        "help": "Train at least this many optimizer steps (more epochs on small fractions); 0: epochs only."})
    batch_size: int = field(default=16, metadata={"help": "Sentences per batch."})
    lr: float = field(default=5e-5, metadata={"help": "Peak learning rate of the encoder and heads (AdamW)."})
    log_var_lr: float = field(default=1e-2, metadata={
        "help": "Constant learning rate of the learned log-variances (own group, no weight decay)."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay of the model's matrices."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps with linear learning-rate warm-up."})
    dev_evals: int = field(default=3, metadata={
        "help": "Dev evaluations at evenly spaced steps; the best dev checkpoint is scored on test."})
    heuristic_weights: str = field(default="ner=1,mtcls=0.5,bcls=0.5,mcls=0.5", metadata={
        "help": "Fixed loss weights of the 'heuristic' variant, HEAD=WEIGHT pairs."})
    grad_cosine_every: int = field(default=20, metadata={
        "help": "Every N steps, log the pairwise cosine of the task gradients on the encoder; 0: never."})
    split: str = field(default="0.6,0.2,0.2", metadata={
        "help": "Train/dev/test shares of the documents when a corpus is a single file (document-level split)."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the document-level split (fixed across runs)."})
    device: str = field(default="auto", metadata={
        "help": "Torch device: auto (cuda when available, else cpu), cpu, cuda, cuda:1, ... Bit-for-bit "
                "reproducibility holds on CPU."})
    allow_missing_types: bool = field(default=False, metadata={
        "help": "Train on samples that lack an entity type of the full training split (else an error)."})

    def __post_init__(self):
        if not self.model:
            raise InputError("--model", "is required (a Hugging Face encoder folder or hub id)")
        # YAML recipes name local folders as ~/...; a hub id never starts with "~"
        self.model = os.path.expanduser(self.model)
        self.tokenizer = os.path.expanduser(self.tokenizer) if self.tokenizer else None
        for name in ("max_length", "epochs", "batch_size", "dev_evals"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 1")
        if self.min_steps < 0 or self.grad_cosine_every < 0:
            raise InputError("--min-steps" if self.min_steps < 0 else "--grad-cosine-every", "must be >= 0")
        if not 0 <= self.dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise InputError("--dropout" if not 0 <= self.dropout < 1 else "--warmup-ratio", "must be in [0, 1)")
        ratios = self.split_ratios()
        if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
            raise InputError("--split", f"needs three positive shares summing to 1, got {self.split!r}")
        self.weights()

    def split_ratios(self) -> list[float]:
        return _floats(self.split, "--split")

    def weights(self) -> dict[str, float]:
        """The heuristic weights as ``{head: weight}``."""
        from mtl_baselines.token_mtl.losses import HEADS

        out = {}
        for item in self.heuristic_weights.split(","):
            head, _, value = item.partition("=")
            try:
                out[head.strip()] = float(value)
            except ValueError:
                raise InputError("--heuristic-weights", f"expected HEAD=WEIGHT pairs, got {item!r}") from None
            if head.strip() not in HEADS:
                raise InputError("--heuristic-weights", f"unknown head {head.strip()!r}; one of {', '.join(HEADS)}")
        return out


@dataclass
class TrainConfig(TrainArgs):
    corpus: str = field(default="", metadata={
        "help": "Corpus folder with train/dev(el)/test files, or one file (or a folder of one) split by document."})
    output: str = field(default="", metadata={"help": "Run folder to write."})
    variant: str = field(default="uw_sym", metadata={"help": _VARIANT_HELP})
    fraction: float = field(default=1.0, metadata={"help": "Share of the training split kept (class-balanced)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample, the head initialisation and the batches."})

    def __post_init__(self):
        super().__post_init__()
        from mtl_baselines.token_mtl.losses import parse_variant

        if not self.corpus or not self.output:
            raise InputError("--corpus" if not self.corpus else "--output", "is required")
        if not 0 < self.fraction <= 1:
            raise InputError("--fraction", f"must be in (0, 1], not {self.fraction}")
        try:
            parse_variant(self.variant)
        except ValueError as err:
            raise InputError("--variant", str(err)) from None

    def files(self) -> Files:
        return Files(reads=[self.corpus, self.model, self.tokenizer], folders=[self.output])


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(TrainConfig, argv, prog="bioselect mtl train", description=__doc__.split("\n\n")[0])
    from mtl_baselines.token_mtl.data import check_fraction, check_splits, load_splits
    from mtl_baselines.token_mtl.model import load_tokenizer
    from mtl_baselines.token_mtl.trainer import run_one

    splits = load_splits(cfg.corpus, cfg.split_ratios(), cfg.split_seed)
    types = check_splits(splits)
    check_fraction(splits.train, cfg.fraction, cfg.seed, cfg.allow_missing_types)
    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    m = run_one(cfg, splits, types, cfg.variant, cfg.fraction, cfg.seed, cfg.output, tokenizer)
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
