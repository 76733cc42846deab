"""Configs of the clinical QA commands: :class:`TrainArgs` (shared by ``mtl qa`` and ``mtl qa-study``),
:class:`TrainConfig` (``mtl qa``) and :class:`StudyConfig` (``mtl qa-study``). Model, trainer and commands import
them; this module imports none of those.

    cfg, _ = parse_config(TrainConfig, ["--config", "configs/qa_train_biored.yaml"])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from curation.io import Files, InputError, comma_floats
from mtl_baselines.engine import EngineArgs

VARIANTS = ("mtl", "qa_only", "cls_only")


@dataclass
class TrainArgs(EngineArgs):
    """Data, model and optimisation settings shared by ``mtl qa`` and ``mtl qa-study`` (plus the engine's:
    :class:`mtl_baselines.engine.EngineArgs`)."""

    corpus: str = field(default="", metadata={
        "help": "Question set: a BioRED PubTator file or folder (templated questions with answer categories), an "
                "emrQA JSON file, or a SQuAD JSON file (COVID-QA, BioASQ; spans only)."})
    format: str = field(default="auto", metadata={"help": "Corpus format: auto, biored, emrqa or squad."})
    model: str = field(default="", metadata={
        "help": "Encoder: a Hugging Face BERT-family folder or hub id (emilyalsentzer/Bio_ClinicalBERT, "
                "dmis-lab/biobert-base-cased-v1.2, or the local MiniLM folder ~/.cache/offline-models/minilm-l6)."})
    tokenizer: str | None = field(default=None, metadata={
        "help": "Tokenizer folder or hub id (a fast tokenizer); the encoder's own when omitted."})
    split: str = field(default="0.8,0.1,0.1", metadata={"help": "Train/dev/test shares of the documents."})
    split_seed: int = field(default=0, metadata={
        "help": "Seed of the document split and of the question caps (fixed across a study's runs)."})
    max_train_questions: int = field(default=0, metadata={"help": "Cap on training questions (seeded); 0: all."})
    max_dev_questions: int = field(default=0, metadata={"help": "Cap on dev questions (seeded); 0: all."})
    max_test_questions: int = field(default=0, metadata={"help": "Cap on test questions (seeded); 0: all."})
    templates: str = field(default="all", metadata={
        "help": "BioRED question templates, comma-separated (associated, associated_typed, positive, negative, "
                "binds, cotreatment, compared) or 'all'."})
    emrqa_answer: str = field(default="text", metadata={
        "help": "emrQA answer spans: 'text' (the answer concept) or 'evidence' (the evidence line)."})
    max_length: int = field(default=384, metadata={"help": "Subwords per window (question + context + 3)."})
    doc_stride: int = field(default=128, metadata={"help": "Context subwords shared by consecutive windows."})
    max_question_length: int = field(default=64, metadata={"help": "Questions are cut to this many subwords."})
    max_answer_length: int = field(default=30, metadata={"help": "Longest predicted answer, in subwords."})
    train_negative_windows: int = field(default=-1, metadata={
        "help": "Training windows without the answer kept per question (seeded); -1: all. For long contexts."})
    shared_layers: int = field(default=-1, metadata={
        "help": "MTL: encoder layers shared by both tasks (the rest are copied per task); -1: half the depth, "
                "rounded down (the paper shares 6 of 12; MiniLM-L6: 3 of 6)."})
    span_hidden: str = field(default="512,256", metadata={"help": "Span head: hidden ReLU layer sizes."})
    category_hidden: str = field(default="512,256,128", metadata={"help": "Category head: hidden ReLU layer sizes."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on the encoder output before the heads."})
    lambda_qa: float = field(default=1.0, metadata={"help": "λ_QA, the weight of the span loss."})
    lambda_cls: float = field(default=1.0, metadata={"help": "λ_cls, the weight of the category loss."})
    class_weighting: str = field(default="balanced", metadata={
        "help": "Category weights w_i: balanced (n / (C n_i), averaging 1) or none."})
    threshold: float = field(default=0.5, metadata={"help": "Sigmoid probability that predicts a category."})
    epochs: int = field(default=1, metadata={"help": "Passes over the training windows (unless --max-steps)."})
    max_steps: int = field(default=0, metadata={"help": "Train exactly this many optimizer steps; 0: epochs."})
    batch_size: int = field(default=8, metadata={"help": "Windows per batch."})
    lr: float = field(default=5e-5, metadata={"help": "Peak learning rate of the encoder (AdamW)."})
    head_lr: float = field(default=0.0, metadata={
        "help": "Peak learning rate of the randomly initialised heads; 0: --lr. A few hundred steps on CPU need a "
                "higher one (1e-3) for the deep heads to leave their initial constant output."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay of the matrices."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps with linear warm-up."})
    dev_evals: int = field(default=1, metadata={
        "help": "Dev evaluations at evenly spaced steps; the best dev checkpoint is scored on test."})
    log_every: int = field(default=20, metadata={"help": "Log the mean loss every N steps; 0: never."})

    def __post_init__(self):
        from mtl_baselines.clinical_qa.data import FORMATS, TEMPLATES

        super().__post_init__()
        for name in ("corpus", "model"):
            if not getattr(self, name):
                raise InputError(f"--{name}", "is required")
        # YAML recipes name local folders as ~/...; a hub id never starts with "~"
        self.model = os.path.expanduser(self.model)
        self.tokenizer = os.path.expanduser(self.tokenizer) if self.tokenizer else None
        if self.format not in FORMATS:
            raise InputError("--format", f"one of {', '.join(FORMATS)}, not {self.format!r}")
        for name in ("max_length", "doc_stride", "max_question_length", "max_answer_length", "epochs",
                     "batch_size", "dev_evals"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 1")
        for name in ("max_train_questions", "max_dev_questions", "max_test_questions", "max_steps", "log_every"):
            if getattr(self, name) < 0:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 0")
        if self.max_length - self.max_question_length - 3 <= self.doc_stride:
            raise InputError("--doc-stride", f"must be below max_length - max_question_length - 3 = "
                             f"{self.max_length - self.max_question_length - 3} (the context room of a window)")
        if self.train_negative_windows < -1:
            raise InputError("--train-negative-windows", "must be -1 (all) or >= 0")
        if self.shared_layers < -1:
            raise InputError("--shared-layers", "must be -1 (half the depth) or >= 0")
        if not 0 <= self.dropout < 1 or not 0 <= self.warmup_ratio < 1 or not 0 < self.threshold < 1:
            bad = "--dropout" if not 0 <= self.dropout < 1 else "--warmup-ratio" if not 0 <= self.warmup_ratio < 1 \
                else "--threshold"
            raise InputError(bad, "out of range ([0, 1) for dropout and warm-up, (0, 1) for the threshold)")
        if self.lr <= 0 or self.head_lr < 0:
            raise InputError("--lr" if self.lr <= 0 else "--head-lr", "must be > 0 (--head-lr: >= 0)")
        if self.lambda_qa < 0 or self.lambda_cls < 0:
            raise InputError("--lambda-qa" if self.lambda_qa < 0 else "--lambda-cls", "must be >= 0")
        if self.class_weighting not in ("balanced", "none"):
            raise InputError("--class-weighting", f"balanced or none, not {self.class_weighting!r}")
        if self.emrqa_answer not in ("text", "evidence"):
            raise InputError("--emrqa-answer", f"text or evidence, not {self.emrqa_answer!r}")
        ratios = self.split_ratios()
        if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-6:
            raise InputError("--split", f"needs three positive shares summing to 1, got {self.split!r}")
        names = {t.name for t in TEMPLATES}
        unknown = [t for t in self.template_names() if t not in names]
        if unknown:
            raise InputError("--templates", f"unknown template(s) {', '.join(unknown)}; from {', '.join(names)}")
        self.span_sizes()
        self.category_sizes()

    def span_sizes(self) -> tuple[int, ...]:
        return layer_sizes(self.span_hidden, "--span-hidden")

    def category_sizes(self) -> tuple[int, ...]:
        return layer_sizes(self.category_hidden, "--category-hidden")

    def split_ratios(self) -> list[float]:
        return comma_floats(self.split, "--split")

    def template_names(self) -> list[str]:
        from mtl_baselines.clinical_qa.data import TEMPLATES

        if self.templates.strip() == "all":
            return [t.name for t in TEMPLATES]
        return [t.strip() for t in self.templates.split(",") if t.strip()]

    def caps(self) -> tuple[int, int, int]:
        return self.max_train_questions, self.max_dev_questions, self.max_test_questions


@dataclass
class TrainConfig(TrainArgs):
    output: str = field(default="", metadata={"help": "Run folder to write."})
    variant: str = field(default="mtl", metadata={
        "help": "mtl (span + category heads on a partly shared encoder), qa_only or cls_only."})
    seed: int = field(default=0, metadata={"help": "Seed of the head initialisation, dropout and batch order."})

    def __post_init__(self):
        super().__post_init__()
        if not self.output:
            raise InputError("--output", "is required")
        if self.variant not in VARIANTS:
            raise InputError("--variant", f"one of {', '.join(VARIANTS)}, not {self.variant!r}")

    def files(self) -> Files:
        return Files(reads=[self.corpus, self.model, self.tokenizer], folders=[self.output])


def layer_sizes(text: str, option: str) -> tuple[int, ...]:
    """Hidden layer sizes from ``"512,256"`` (an :class:`InputError` naming ``option`` when malformed).

    >>> layer_sizes("512,256", "--span-hidden")
    (512, 256)
    """
    try:
        sizes = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(option, f"expected comma-separated layer sizes, got {text!r}") from None
    if any(s < 1 for s in sizes):
        raise InputError(option, f"layer sizes must be >= 1, got {text!r}")
    return sizes


@dataclass
class StudyConfig(TrainArgs):
    output: str = field(default="", metadata={"help": "Study folder (resumed when it holds finished runs)."})
    variants: str = field(default="mtl,qa_only,cls_only", metadata={
        "help": "Variants, comma-separated: mtl, qa_only, cls_only."})
    seeds: int = field(default=3, metadata={"help": "Seeds per variant: 0 .. N-1."})

    def __post_init__(self):
        super().__post_init__()
        if not self.output:
            raise InputError("--output", "is required")
        variants = self.variant_list()
        if not variants or len(set(variants)) != len(variants) or set(variants) - set(VARIANTS):
            raise InputError("--variants", f"needs distinct names from {', '.join(VARIANTS)}, got {self.variants!r}")
        if self.seeds < 1:
            raise InputError("--seeds", "must be >= 1")

    def files(self) -> Files:
        return Files(reads=[self.corpus, self.model, self.tokenizer], folders=[self.output])

    def variant_list(self) -> list[str]:
        return [v.strip() for v in self.variants.split(",") if v.strip()]

    def plan(self) -> list[tuple[str, int]]:
        """Every (variant, seed) in running order: seed by seed, so a cut-short study has every variant."""
        return [(v, s) for s in range(self.seeds) for v in self.variant_list()]
