"""Config of ``bioselect mtl sru`` (:class:`TrainConfig`, extending the engine's
:class:`mtl_baselines.engine.EngineArgs`). Trainer and command import it; it imports neither.

    cfg, _ = parse_config(TrainConfig, ["--config", "configs/sru_single_ncbi.yaml"])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from curation.io import Files, InputError
from mtl_baselines.engine import EngineArgs


@dataclass
class TrainConfig(EngineArgs):
    corpora: str = field(default="", metadata={
        "help": "NAME=PATH pairs, comma-separated; each PATH a corpus folder (train/dev/test) or one file to split by "
                "document. Types are renamed NAME_TYPE."})
    model: str = field(default="", metadata={"help": "Encoder: a Hugging Face folder or hub id."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer; the encoder's own when omitted."})
    output: str = field(default="", metadata={"help": "Run folder to write."})
    steps: int = field(default=1000, metadata={"help": "Optimizer steps (batches drawn inverse to dataset size)."})
    batch_size: int = field(default=16, metadata={"help": "Sentences per training batch."})
    infer_batch_size: int = field(default=32, metadata={"help": "Sentences decoded together at evaluation."})
    encoder_lr: float = field(default=2e-5, metadata={"help": "Peak learning rate of the encoder's AdamW."})
    head_lr: float = field(default=1e-3, metadata={"help": "Peak learning rate of the SRU and action head's AdamW."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (both optimisers)."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps with linear warm-up, then decay."})
    slot_dim: int = field(default=256, metadata={"help": "Width of the SRU state slots."})
    latents: int = field(default=4, metadata={"help": "Latent embeddings of the SRU attention."})
    max_distance: int = field(default=8, metadata={"help": "Relative positions are clipped at +-this."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout on word embeddings and in the action head."})
    max_length: int = field(default=256, metadata={"help": "Subwords per sentence (longer ones are cut)."})
    max_steps_per_word: int = field(default=4, metadata={"help": "Decoding shifts by force after this many steps."})
    crossing: str = field(default="drop", metadata={
        "help": "Crossing same-type mentions (not expressible as actions): drop, split or error; each change is "
                "written to crossing.txt with its sentence id."})
    eval_every: int = field(default=0, metadata={
        "help": "Decode and score the dev splits every N steps and keep the best (mean disjoint F1 over datasets); "
                "0 scores the last step only."})
    max_dev_sentences: int = field(default=0, metadata={
        "help": "Dev sentences per dataset used for selection and the dev scores (seeded sample); 0 = all."})
    dev_holdout: float = field(default=0.0, metadata={
        "help": "For a corpus folder with dev and test but no train file (GENIA): train on its dev split minus this "
                "share of its documents, held out as the dev split."})
    types: str = field(default="", metadata={
        "help": "NAME=TYPE[+TYPE...] pairs, comma-separated: keep only these types of that corpus (all splits)."})
    train_parts: str = field(default="", metadata={
        "help": "NAME=K/N pairs, comma-separated: train that corpus on its K-th of N disjoint document parts "
                "(seeded by --split-seed), e.g. the Chemical-only and Disease-only halves of BC5CDR."})
    split: str = field(default="0.6,0.2,0.2", metadata={"help": "Train/dev/test shares for single-file corpora."})
    split_seed: int = field(default=0, metadata={"help": "Seed of the document-level split."})
    seed: int = field(default=0, metadata={"help": "Seed of the model initialisation and the batches."})

    def __post_init__(self):
        super().__post_init__()
        if not self.corpora or not self.model or not self.output:
            raise InputError("--corpora" if not self.corpora else "--model" if not self.model else "--output",
                             "is required")
        self.model = os.path.expanduser(self.model)
        self.tokenizer = os.path.expanduser(self.tokenizer) if self.tokenizer else None
        if self.eval_every < 0 or self.max_dev_sentences < 0 or not 0 <= self.dev_holdout < 1:
            bad = ("--eval-every" if self.eval_every < 0 else "--max-dev-sentences" if self.max_dev_sentences < 0
                   else "--dev-holdout")
            raise InputError(bad, "must be in [0, 1)" if bad == "--dev-holdout" else "must be >= 0")
        for name in ("steps", "batch_size", "infer_batch_size", "slot_dim", "latents", "max_distance", "max_length",
                     "max_steps_per_word"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 1")
        if self.crossing not in ("drop", "split", "error"):
            raise InputError("--crossing", f"must be drop, split or error, not {self.crossing!r}")
        if not 0 <= self.dropout < 1 or not 0 <= self.warmup_ratio < 1:
            raise InputError("--dropout" if not 0 <= self.dropout < 1 else "--warmup-ratio", "must be in [0, 1)")
        self.corpus_paths()
        self.corpus_types()
        self.corpus_parts()

    def files(self) -> Files:
        return Files(reads=[*self.corpus_paths().values(), self.model, self.tokenizer], folders=[self.output])

    def corpus_paths(self) -> dict[str, str]:
        out = {}
        for item in self.corpora.split(","):
            name, sep, path = item.partition("=")
            if not sep or not name.strip() or not path.strip():
                raise InputError("--corpora", f"expected NAME=PATH pairs, got {item!r}")
            if name.strip() in out:
                raise InputError("--corpora", f"dataset name {name.strip()!r} given twice")
            out[name.strip()] = os.path.expanduser(path.strip())
        return out

    def _pairs(self, flag: str) -> dict[str, str]:
        out = {}
        for item in filter(None, (x.strip() for x in getattr(self, flag).split(","))):
            name, sep, value = item.partition("=")
            if not sep or not value.strip():
                raise InputError(f"--{flag.replace('_', '-')}", f"expected NAME=VALUE pairs, got {item!r}")
            if name.strip() not in self.corpus_paths():
                raise InputError(f"--{flag.replace('_', '-')}", f"{name.strip()!r} is not one of --corpora")
            out[name.strip()] = value.strip()
        return out

    def corpus_types(self) -> dict[str, list[str]]:
        return {name: v.split("+") for name, v in self._pairs("types").items()}

    def corpus_parts(self) -> dict[str, tuple[int, int]]:
        out = {}
        for name, v in self._pairs("train_parts").items():
            k, _, n = v.partition("/")
            if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
                raise InputError("--train-parts", f"expected K/N with 1 <= K <= N for {name}, got {v!r}")
            out[name] = (int(k), int(n))
        return out

    def split_ratios(self) -> list[float]:
        try:
            return [float(x) for x in self.split.split(",")]
        except ValueError:
            raise InputError("--split", f"expected comma-separated numbers, got {self.split!r}") from None
