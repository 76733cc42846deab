"""Configs of the token MTL commands: :class:`TrainArgs` (shared by ``mtl train`` and ``mtl study``),
:class:`TrainConfig` (``mtl train``) and :class:`StudyConfig` (``mtl study``). Model, trainer and commands import
them; this module imports none of those.

    cfg, _ = parse_config(TrainConfig, ["--config", "configs/mtl_train_pk.yaml"])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from curation.io import Files, InputError, comma_floats
from mtl_baselines.engine import EngineArgs

_VARIANT_HELP = ("Loss variant: single, heuristic, uw_sym, uw_asym or uw_class; a '-no_HEAD' suffix (HEAD one of "
                 "mtcls, bcls, mcls) drops an auxiliary head, e.g. uw_sym-no_mtcls.")


@dataclass
class TrainArgs(EngineArgs):
    """Model, optimisation and corpus settings shared by ``mtl train`` and ``mtl study`` (plus the engine's:
    :class:`mtl_baselines.engine.EngineArgs`)."""

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
    allow_missing_types: bool = field(default=False, metadata={
        "help": "Train on samples that lack an entity type of the full training split (else an error)."})

    def __post_init__(self):
        super().__post_init__()
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
        return comma_floats(self.split, "--split")

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


@dataclass
class StudyConfig(TrainArgs):
    corpus: list[str] = field(default_factory=list, metadata={
        "help": "Corpus folder(s) with train/dev(el)/test files, or file(s) (or folders of one file) split by "
                "document."})
    output: str = field(default="", metadata={"help": "Study folder (resumed when it holds finished runs)."})
    fractions: str = field(default="1,0.75,0.5,0.25,0.1,0.075,0.05,0.025", metadata={
        "help": "Training fractions, comma-separated, each in (0, 1]."})
    seeds: int = field(default=3, metadata={"help": "Number of seeds per (variant, fraction): seeds 0 .. N-1."})
    variants: str = field(default="single,heuristic,uw_sym,uw_asym,uw_class", metadata={
        "help": "Loss variants, comma-separated: single, heuristic, uw_sym, uw_asym, uw_class."})
    ablation: str = field(default="", metadata={
        "help": "Multi-task variant to ablate: it also runs with each auxiliary head dropped in turn; empty: none."})
    ablation_fractions: str = field(default="1", metadata={"help": "Fractions of the ablation runs."})
    report_only: bool = field(default=False, metadata={
        "help": "Train nothing: write the tables and plots from the runs finished so far and list the missing ones "
                "(a study in progress, or one run corpus by corpus in several processes)."})

    def __post_init__(self):
        super().__post_init__()
        from mtl_baselines.token_mtl.losses import parse_variant

        if not self.corpus or not self.output:
            raise InputError("--corpus" if not self.corpus else "--output", "is required")
        for option, values in (("--fractions", self.fraction_list()), ("--ablation-fractions",
                                                                        self.ablation_fraction_list())):
            if not values or any(not 0 < f <= 1 for f in values) or len(set(values)) != len(values):
                raise InputError(option, "needs distinct fractions in (0, 1]")
        if self.seeds < 1:
            raise InputError("--seeds", "must be >= 1")
        variants = self.variant_list()
        if not variants or len(set(variants)) != len(variants):
            raise InputError("--variants", "needs distinct variant names")
        for v in variants + ([self.ablation] if self.ablation else []):
            try:
                parse_variant(v)
            except ValueError as err:
                raise InputError("--ablation" if v == self.ablation else "--variants", str(err)) from None
        if self.ablation and ("-" in self.ablation or self.ablation == "single"):
            raise InputError("--ablation", f"needs a multi-task variant without -no_ suffixes, not {self.ablation!r}")

    def files(self) -> Files:
        return Files(reads=[*self.corpus, self.model, self.tokenizer], folders=[self.output])

    def fraction_list(self) -> list[float]:
        return comma_floats(self.fractions, "--fractions")

    def ablation_fraction_list(self) -> list[float]:
        return comma_floats(self.ablation_fractions, "--ablation-fractions")

    def variant_list(self) -> list[str]:
        return [v.strip() for v in self.variants.split(",") if v.strip()]

    def plan(self) -> list[tuple[str, float, int]]:
        """Every (variant, fraction, seed) to run, in running order."""
        from mtl_baselines.token_mtl.losses import AUX_HEADS

        runs = [(v, f, s) for f in self.fraction_list() for v in self.variant_list() for s in range(self.seeds)]
        if self.ablation:
            runs += [(f"{self.ablation}-no_{h}", f, s) for f in self.ablation_fraction_list() for h in AUX_HEADS
                     for s in range(self.seeds)]
        return list(dict.fromkeys(runs))
