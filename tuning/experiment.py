"""``bioselect tune experiment``: BioSelectTune's claim as a study on one corpus: arms, a ratio ladder, seeds.

    bioselect tune experiment --config configs/demo_ncbi.yaml                   # what `make demo` runs
    bioselect tune experiment --config configs/bioselecttune_study_ncbi.yaml    # docs/results/bioselecttune_study.md
    bioselect tune experiment --config configs/bioselecttune_study_ncbi.yaml --report_only true

Arms (``--arms``, in table order):

* ``zero-shot``: the base model without adapter;
* ``lora-full``: LoRA on the whole class-balanced training subset;
* ``lora-ifd``: LoRA on the top ``rho`` of the subset's positives by IFD (among those with IFD <= ``max_ifd``) plus
  its negatives (Hybrid Superfiltering);
* ``lora-random``: the control: a seeded random sample of as many positives from the same candidates, plus the same
  negatives, so that it differs from ``lora-ifd`` in the IFD ranking only and not in the class balance;
* ``lora-random-matched``: the stricter control: a seeded random sample with as many positives of each answer size
  (number of mentions, relations or events; a TC label) as ``lora-ifd`` keeps, plus the same negatives, so that it
  also has the same number of mentions (``curate filter --order matched``);
* ``lora-ifd-content``: the top ``rho`` by the IFD of the answers' content tokens only (the mentions, not the JSON
  scaffolding around them: ``curate ifd --tokens content``);
* ``lora-ifd-low``: the bottom ``rho`` by IFD;
* ``lora-ifd-other``: the top ``rho`` by the IFD of ``other_scorer_model`` (a model of another family: the paper's
  homologous-vs-other question);
* ``lora-ifd-auto``: ``rho`` chosen on a dev split (``--dev``, held out from training) by short runs
  (``auto_epochs``) over the ladder, then the final adapter at that ``rho`` (the choice is in ``choice.json``).

Every tuned arm runs for each seed of ``--seeds`` (the seed of the adapter, the batches and the random control) and
the ratio arms for each ``rho`` of ``--ratios`` (the first is the main one; ``--ladder_arms`` and ``--ladder_seeds``
limit the others to some arms and some seeds). Training lasts ``epochs`` passes over the arm's own data (so a
smaller curated set takes fewer steps, as in the paper), or ``max_steps`` for every arm (the equal-steps reading).
The training and test subsets are sampled once (``data_seed``), so every run is scored on the same test sentences
and differences can be paired.

The study runs the project's own commands (``data convert``/``sample``, ``curate ifd``/``filter``, ``tune train``,
``tune generate``, ``evaluate``); a step whose output exists is skipped, so a killed study started again goes on where
it stopped (training resumes from its last checkpoint). Several worker processes may run the same command on one
folder: the shared data steps run under a lock, and each run under a lock of its own that the others skip.
``experiment.json`` records the resolved config, every step's command and wall time, and provenance; ``report.md``,
``results.csv``, ``f1_vs_ratio.png`` and ``train_loss.png`` hold the task's main metric with bootstrap intervals per
run, seed means, and paired bootstrap intervals of the differences that answer the study's questions (see
:mod:`tuning.experiment_report`). A folder holding a study with other settings is refused; arms, ratios and seeds may
be added to a finished study. With ``require_better`` the command exits with code 1 unless every tuned run's main
metric is above the zero-shot model's.

``--task`` (ner, re, ee, tc) picks the annotations the corpora are converted from and the main metric
(:data:`curation.scoring.MAIN_METRICS`): strict micro F1 for NER and RE, argument classification micro F1 for EE,
macro F1 over the classes for TC. A corpus without annotations of the task is refused before any step. An RE or EE
record without relations or events has the answer ``[]``: it is a negative, kept or dropped by ``negative_ratio``
as NER's are. Every TC answer names a class, so TC has no negatives: ``negative_ratio`` and ``negative_order`` are
refused for it, and the ratio arms keep ``rho`` of all records.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from curation.cli import parse_config, run
from curation.convert import TYPED_OPTION
from curation.io import Files, InputError
from curation.scoring import main_metric, main_metric_name

ARMS = ("zero-shot", "lora-full", "lora-ifd", "lora-random", "lora-random-matched", "lora-ifd-content", "lora-ifd-low",
        "lora-ifd-other", "lora-ifd-auto")
# arms that select a share of the positives: arm -> (IFD scores it ranks by, order of `curate filter`)
SELECTION = {"lora-ifd": ("main", "top"), "lora-random": ("main", "random"),
             "lora-random-matched": ("main", "matched"), "lora-ifd-content": ("content", "top"),
             "lora-ifd-low": ("main", "bottom"), "lora-ifd-other": ("other", "top"), "lora-ifd-auto": ("main", "top")}
# steps that run on every process under `accelerate launch` (they shard their work); the others run on the main one
DISTRIBUTED = ("curation.ifd", "tuning.train")
# fields that may change between invocations on one folder: which runs exist, not how a run is made
GROWABLE = ("arms", "ratios", "seeds", "ladder_seeds", "ladder_arms", "require_better", "report_only", "report_to",
            "export_records")
TASKS = ("ner", "re", "ee", "tc")
# what each task's annotations are called (a corpus without any cannot be studied for that task)
ANNOTATIONS = {"ner": "entity mentions", "re": "relations", "ee": "events", "tc": "class labels"}


@dataclass
class ExperimentConfig:
    model: str = field(default="", metadata={
        "help": "Causal LM to tune and evaluate (folder or hub id; needs a chat template)."})
    train: str = field(default="", metadata={"help": "Training corpus (any format `bioselect data` reads)."})
    test: str = field(default="", metadata={"help": "Test corpus."})
    dev: str = field(default="", metadata={"help": "Dev corpus, held out from training (the lora-ifd-auto arm)."})
    output_dir: str = field(default="runs/demo", metadata={"help": "Folder for every output of the study."})
    scorer_model: str | None = field(default=None, metadata={
        "help": "Weak model that scores IFD (same tokenizer as --model: a homologous pair); default: --model."})
    other_scorer_model: str | None = field(default=None, metadata={
        "help": "Scoring model of another family, for the lora-ifd-other arm."})
    task: str = field(default="ner", metadata={
        "help": "Task of the study: ner, re, ee or tc (the corpora's annotations it converts and the main metric it "
                "reports: strict F1 for ner and re, argument classification F1 for ee, macro F1 for tc)."})
    arms: list[str] = field(default_factory=lambda: ["zero-shot", "lora-ifd"], metadata={
        "help": f"Arms compared, in table order: {', '.join(ARMS)}."})
    train_fraction: float = field(default=0.08, metadata={"help": "Share of the training corpus in the subset."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of the test corpus that is generated on."})
    dev_fraction: float = field(default=0.1, metadata={"help": "Share of the dev corpus that picks rho (auto arm)."})
    data_seed: int = field(default=0, metadata={"help": "Seed of the training, test and dev subsets (one per study)."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={
        "help": "Seeds of the tuned runs (adapter initialisation, batches, the random control, negative samples)."})
    # curation
    prompt_format: str = field(default="plain", metadata={"help": "IFD prompt format: plain or chat."})
    ratios: list[float] = field(default_factory=lambda: [0.5], metadata={
        "help": "rho ladder: shares of the positives kept by the ratio arms; the first is the main one."})
    ladder_seeds: list[int] | None = field(default=None, metadata={
        "help": "Seeds that run the ratios after the first (default: every seed)."})
    ladder_arms: list[str] | None = field(default=None, metadata={
        "help": "Ratio arms that run the ratios after the first (default: every ratio arm; e.g. lora-ifd lora-random, "
                "the paper's ladder, while a control such as lora-random-matched runs at the main rho only)."})
    max_ifd: float = field(default=1.0, metadata={"help": "Positives with IFD above this are dropped."})
    negative_ratio: float = field(default=1.0, metadata={
        "help": "Share of negatives kept by the ratio arms (1: all, as the paper)."})
    negative_order: str = field(default="random", metadata={
        "help": "Which negatives a negative_ratio < 1 keeps: 'random' (seeded) or 'ifd' (highest IFD of their own)."})
    # training
    epochs: float = field(default=3.0, metadata={"help": "Passes over each arm's own training data (the paper: 3)."})
    max_steps: int = field(default=-1, metadata={
        "help": "Optimizer steps of every tuned arm instead of epochs (the equal-steps reading); -1: epochs."})
    auto_epochs: float = field(default=1.0, metadata={"help": "Epochs of the short runs that pick rho (auto arm)."})
    batch_size: int = field(default=8, metadata={"help": "Training examples per forward pass."})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "Forward passes whose gradients make one optimizer step: each step sees batch_size x this many "
                "examples, with the memory of batch_size (trl's option)."})
    lr: float = field(default=5e-4, metadata={"help": "Peak learning rate."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up share (< 1) or steps."})
    max_length: int = field(default=256, metadata={"help": "Tokens per training example (per packed row)."})
    packing: bool = field(default=False, metadata={
        "help": "Train every tuned arm on packed rows of max_length tokens (trl's packing, position ids restarting "
                "at every example, so none attends to another): batch_size then counts rows, not examples, and an "
                "epoch takes fewer steps. The same for all arms, so the comparison stays fair."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    save_steps: int = field(default=25, metadata={"help": "Checkpoint every N steps (what a killed run resumes)."})
    # generation and scoring
    entity_types: list[str] | None = field(default=None, metadata={
        "help": "re: the entity types a constrained answer may give as head_type and tail_type (tune generate "
                "--entity_types; the instruction names relation types only); the corpora's relations must use no "
                "other. Default: any word of letters, digits, '_', '.', '-'."})
    roles: list[str] | None = field(default=None, metadata={
        "help": "ee: the argument roles a constrained answer may use (tune generate --roles); the corpora's events "
                "must use no other. Default: any word of letters, digits, '_', '.', '-'."})
    gen_batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch."})
    max_new_tokens: int = field(default=48, metadata={"help": "Answer token budget."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples of the intervals."})
    require_better: bool = field(default=False, metadata={
        "help": "Exit with code 1 unless every tuned run's main metric (strict F1 for ner) beats the zero-shot "
                "model's."})
    report_to: str = field(default="none", metadata={
        "help": "Tracker of every tuned run's training (a transformers integration: tensorboard, mlflow, wandb, ...). "
                "With mlflow each run (arm, rho, seed) is one MLflow run holding its training and its test scores "
                "(store MLFLOW_TRACKING_URI, experiment MLFLOW_EXPERIMENT_NAME, default bioselect)."})
    report_only: bool = field(default=False, metadata={
        "help": "Write the report from the finished runs and list the missing ones; train nothing."})
    export_records: str = field(default="", metadata={
        "help": "Write the report (train nothing), then the study's records to this new folder: settings, step logs, "
                "report, and each finished run's answers, scores and training manifest, without adapters or data "
                "(tuning/experiment_records.py). Copied into an empty OUTPUT_DIR, the same command rebuilds the data, "
                "scores and selections, checks them against the records, and reports without retraining."})

    def __post_init__(self):
        for name in ("model", "scorer_model", "other_scorer_model", "train", "test", "dev", "output_dir"):
            if getattr(self, name):  # recipes name ~/.cache/...
                setattr(self, name, os.path.expanduser(getattr(self, name)))
        for name in ("model", "train", "test"):
            if not getattr(self, name):
                raise InputError(f"--{name}", "is required")
        for path in (self.train, self.test, self.dev):
            if path and not Path(path).exists():
                raise InputError(path, "no such file")
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms or len(set(self.arms)) != len(self.arms):
            raise InputError("--arms", f"expected distinct arms among {', '.join(ARMS)}, got {self.arms}")
        if "lora-ifd-other" in self.arms and not self.other_scorer_model:
            raise InputError("--other_scorer_model", "the lora-ifd-other arm needs a scoring model of another family")
        if "lora-ifd-auto" in self.arms and not self.dev:
            raise InputError("--dev", "the lora-ifd-auto arm picks rho on a dev corpus: name one")
        if self.require_better and "zero-shot" not in self.arms:
            raise InputError("--require_better", "needs the zero-shot arm to compare with")
        for name in ("train_fraction", "test_fraction", "dev_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise InputError(f"--{name}", f"must be in (0, 1], got {getattr(self, name)}")
        if not self.ratios or any(not 0 < r <= 1 for r in self.ratios) or len(set(self.ratios)) != len(self.ratios):
            raise InputError("--ratios", f"expected distinct shares in (0, 1], got {self.ratios}")
        if not 0 <= self.negative_ratio <= 1:
            raise InputError("--negative_ratio", f"must be in [0, 1], got {self.negative_ratio}")
        if self.task not in TASKS:
            raise InputError("--task", f"must be one of {', '.join(TASKS)}, not {self.task!r}")
        for task, name in TYPED_OPTION.items():
            given = getattr(self, name)
            if given is not None and self.task != task:
                raise InputError(f"--{name}", f"applies to --task {task} only (this study's task is {self.task})")
            if given is not None and (not given or len(set(given)) != len(given)):
                raise InputError(f"--{name}", f"expected distinct names, got {given}")
        if self.task == "tc" and (self.negative_ratio != 1 or self.negative_order != "random"):
            raise InputError("--negative_ratio" if self.negative_ratio != 1 else "--negative_order",
                             "does not apply to tc: every TC answer names a class, so there are no negatives to keep "
                             "or rank")
        if self.negative_order not in ("random", "ifd"):
            raise InputError("--negative_order", f"must be random or ifd, not {self.negative_order!r}")
        if self.negative_order == "ifd" and "lora-ifd-content" in self.arms:
            raise InputError("--negative_order", "ifd cannot rank the lora-ifd-content arm's negatives: an empty "
                                                 "answer has no content tokens; use random")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise InputError("--seeds", f"expected distinct seeds >= 0, got {self.seeds}")
        ladder_able = [a for a in ARMS if a in SELECTION and a != "lora-ifd-auto"]
        if self.ladder_arms is not None and not set(self.ladder_arms) <= set(ladder_able):
            raise InputError("--ladder_arms", f"expected ratio arms among {', '.join(ladder_able)}, "
                                              f"got {self.ladder_arms}")
        if self.ladder_seeds is not None and not set(self.ladder_seeds) <= set(self.seeds):
            raise InputError("--ladder_seeds", f"must be among --seeds {self.seeds}, got {self.ladder_seeds}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise InputError("--max_steps", f"must be at least 1, or -1 to train for epochs; got {self.max_steps}")
        if self.max_steps == -1 and not self.epochs >= 1:
            raise InputError("--epochs", f"must be at least 1, got {self.epochs}")
        if self.report_to != "none":
            from tuning.train import check_report_to

            check_report_to(self.report_to)
        if self.auto_epochs <= 0:
            raise InputError("--auto_epochs", f"must be > 0, got {self.auto_epochs}")
        for name in ("batch_size", "gradient_accumulation_steps"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name}", f"must be at least 1, got {getattr(self, name)}")

    def settings(self) -> dict[str, Any]:
        """What every run of the study shares (a folder made with other settings is refused)."""
        return {k: v for k, v in asdict(self).items() if k not in GROWABLE}

    def files(self) -> Files:
        return Files(reads=[self.train, self.test, self.dev, self.model, self.scorer_model, self.other_scorer_model],
                     folders=[self.output_dir])


@dataclass(frozen=True)
class Step:
    """One command of the study: its name, the module ``main`` and arguments, and the file that proves it done.

    A step runs as the command line it records (``module.main(argv)``, :meth:`command` for the user), not as a call
    of the command's library function: the record is what ran, parsing, file checks, the one-line error and the exit
    code included, so a user rerunning it from ``experiment.json`` gets the same run.
    """

    name: str
    module: str
    argv: tuple[str, ...]
    done: str

    def command(self) -> str:
        from curation.cli import COMMANDS

        words = next(" ".join(w) for w, m in COMMANDS.items() if m == self.module)
        return " ".join(["bioselect", words, *self.argv])


@dataclass(frozen=True)
class Run:
    """One (arm, rho, seed) cell of the study: its folder and its steps."""

    key: str  # the folder under OUTPUT_DIR/runs, e.g. lora-ifd/rho-0.5/seed-0
    arm: str
    ratio: float | None
    seed: int | None
    folder: str
    steps: tuple[Step, ...]


def _paths(cfg: ExperimentConfig) -> dict[str, str]:
    out = Path(cfg.output_dir)
    names = ("train.jsonl", "test.jsonl", "dev.jsonl", "train_subset.jsonl", "test_subset.jsonl", "dev_subset.jsonl")
    return {name: str(out / "data" / name) for name in names} | {
        key: str(out / "scores" / f"{key}.jsonl") for key in ("main", "other", "content")}


def shared_steps(cfg: ExperimentConfig) -> list[Step]:
    """Conversion, subsets and IFD scores that every run reads (pure: no file is read or written)."""
    p = _paths(cfg)
    corpora = [("train", cfg.train, cfg.train_fraction), ("test", cfg.test, cfg.test_fraction)]
    if "lora-ifd-auto" in cfg.arms:
        corpora.append(("dev", cfg.dev, cfg.dev_fraction))
    steps = [Step(f"convert {name}", "curation.data", ("convert", path, "--task", cfg.task, "--output",
                                                       p[f"{name}.jsonl"]), p[f"{name}.jsonl"])
             for name, path, _ in corpora]
    steps += [Step(f"sample {name}", "curation.data", ("sample", p[f"{name}.jsonl"], "--fraction", str(fraction),
                                                       "--seed", str(cfg.data_seed), "--output",
                                                       p[f"{name}_subset.jsonl"]), p[f"{name}_subset.jsonl"])
              for name, _, fraction in corpora]
    scorers = {SELECTION[a][0] for a in cfg.arms if a in SELECTION}
    models = {"main": cfg.scorer_model or cfg.model, "other": cfg.other_scorer_model,
              "content": cfg.scorer_model or cfg.model}
    for key in sorted(scorers):
        negatives = () if cfg.negative_order == "ifd" else ("--positives_only", "true")
        tokens = ("--tokens", "content") if key == "content" else ()
        steps.append(Step(f"score {key}", "curation.ifd", (
            "--model", models[key], "--input", p["train_subset.jsonl"], "--output", p[key],
            "--prompt_format", cfg.prompt_format, *negatives, *tokens), p[key]))
    return steps


def _tuned_steps(cfg: ExperimentConfig, folder: Path, arm: str, ratio: float | None, seed: int,
                 eval_on: str, epochs: float) -> list[Step]:
    p = _paths(cfg)
    steps = []
    train_file = p["train_subset.jsonl"]
    if arm in SELECTION:
        scores, order = SELECTION[arm]
        train_file = str(folder / "train.jsonl")
        steps.append(Step("select", "curation.filter", (
            "--input", p["train_subset.jsonl"], "--scores", p[scores], "--output", train_file, "--ratio", str(ratio),
            "--order", order, "--max_ifd", str(cfg.max_ifd), "--negative_ratio", str(cfg.negative_ratio),
            "--negative_order", cfg.negative_order, "--seed", str(seed)), train_file))
    adapter = folder / "adapter"
    length = ("--max_steps", str(cfg.max_steps)) if cfg.max_steps > 0 else ("--num_train_epochs", str(epochs))
    steps.append(Step("train", "tuning.train", (
        "--model", cfg.model, "--train_files", train_file, "--output_dir", str(adapter), *length,
        "--per_device_train_batch_size", str(cfg.batch_size),
        *(("--gradient_accumulation_steps", str(cfg.gradient_accumulation_steps))
          if cfg.gradient_accumulation_steps > 1 else ()),
        "--learning_rate", str(cfg.lr), "--warmup_steps", str(cfg.warmup_steps),
        "--max_length", str(cfg.max_length), *(("--packing", "true") if cfg.packing else ()),
        "--lora_r", str(cfg.lora_r), "--lora_alpha", str(cfg.lora_alpha), "--seed", str(seed), "--logging_steps", "1",
        "--save_steps", str(cfg.save_steps), "--save_total_limit", "1",
        "--report_to", cfg.report_to,
        *(("--run_name", folder.relative_to(Path(cfg.output_dir) / "runs").as_posix())
          if cfg.report_to != "none" else ())), str(adapter / "manifest.json")))
    return steps + _scoring_steps(cfg, folder, eval_on, adapter=str(adapter), name=arm)


def _scoring_steps(cfg: ExperimentConfig, folder: Path, eval_on: str, adapter: str | None, name: str) -> list[Step]:
    pred, metrics = str(folder / "pred.jsonl"), str(folder / "eval.json")
    typed = TYPED_OPTION.get(cfg.task)
    return [
        Step("generate", "tuning.generate", (
            "--model", cfg.model, *(("--adapter", adapter) if adapter else ()), "--input", eval_on, "--output", pred,
            "--batch_size", str(cfg.gen_batch_size), "--max_new_tokens", str(cfg.max_new_tokens),
            *((f"--{typed}", *getattr(cfg, typed)) if typed and getattr(cfg, typed) else ())), pred),
        Step("evaluate", "curation.evaluate", (
            "--gold", eval_on, "--pred", pred, "--output", metrics, "--bootstrap", str(cfg.bootstrap), "--seed", "0",
            "--name", name), metrics),
    ]


def run_key(arm: str, ratio: float | None, seed: int | None) -> str:
    """``arm[/rho-R][/seed-S]``: a run's name and its folder under ``OUTPUT_DIR/runs``.

    >>> run_key("lora-ifd", 0.5, 1), run_key("lora-full", None, 0), run_key("zero-shot", None, None)
    ('lora-ifd/rho-0.5/seed-1', 'lora-full/seed-0', 'zero-shot')
    """
    return "/".join([arm, *([f"rho-{ratio:g}"] if ratio is not None else []),
                     *([f"seed-{seed}"] if seed is not None else [])])


def run_folder(cfg: ExperimentConfig, arm: str, ratio: float | None, seed: int | None) -> Path:
    return Path(cfg.output_dir) / "runs" / run_key(arm, ratio, seed)


def plan(cfg: ExperimentConfig) -> list[Run]:
    """Every run of the study, main comparison first (pure: no file is read or written).

    >>> cfg = ExperimentConfig(model="m", train=__file__, test=__file__, output_dir="out", seeds=[0, 1],
    ...                        arms=["zero-shot", "lora-full", "lora-ifd", "lora-random"], ratios=[0.5, 0.25],
    ...                        ladder_seeds=[0])
    >>> [r.key for r in plan(cfg)]  # doctest: +NORMALIZE_WHITESPACE
    ['zero-shot', 'lora-full/seed-0', 'lora-ifd/rho-0.5/seed-0', 'lora-random/rho-0.5/seed-0',
     'lora-full/seed-1', 'lora-ifd/rho-0.5/seed-1', 'lora-random/rho-0.5/seed-1',
     'lora-ifd/rho-0.25/seed-0', 'lora-random/rho-0.25/seed-0']
    >>> [s.name for s in plan(cfg)[2].steps]
    ['select', 'train', 'generate', 'evaluate']
    >>> plan(cfg)[0].steps[0].command()  # doctest: +NORMALIZE_WHITESPACE
    'bioselect tune generate --model m --input out/data/test_subset.jsonl --output out/runs/zero-shot/pred.jsonl
     --batch_size 16 --max_new_tokens 48'
    """
    p = _paths(cfg)
    runs: list[Run] = []
    if "zero-shot" in cfg.arms:
        folder = run_folder(cfg, "zero-shot", None, None)
        runs.append(Run("zero-shot", "zero-shot", None, None, str(folder),
                        tuple(_scoring_steps(cfg, folder, p["test_subset.jsonl"], None, "zero-shot"))))
    ladder = cfg.seeds if cfg.ladder_seeds is None else cfg.ladder_seeds
    cells = [(r, s) for r in cfg.ratios for s in (cfg.seeds if r == cfg.ratios[0] else ladder)]
    cells.sort(key=lambda c: (c[0] != cfg.ratios[0], cfg.ratios.index(c[0]) if c[0] != cfg.ratios[0] else 0,
                              cfg.seeds.index(c[1])))
    for ratio, seed in cells:
        for arm in cfg.arms:
            if arm in ("zero-shot", "lora-ifd-auto") or (arm == "lora-full" and ratio != cfg.ratios[0]):
                continue
            if ratio != cfg.ratios[0] and cfg.ladder_arms is not None and arm not in cfg.ladder_arms:
                continue
            r = None if arm == "lora-full" else ratio
            folder = run_folder(cfg, arm, r, seed)
            runs.append(Run(run_key(arm, r, seed), arm, r, seed, str(folder), tuple(
                _tuned_steps(cfg, folder, arm, r, seed, p["test_subset.jsonl"], cfg.epochs))))
    if "lora-ifd-auto" in cfg.arms:
        for seed in cfg.seeds:
            for ratio in cfg.ratios:  # the short runs on the dev subset; the final one is added once rho is known
                folder = run_folder(cfg, "lora-ifd-auto", None, seed) / f"dev-rho-{ratio:g}"
                key = f"{run_key('lora-ifd-auto', None, seed)}/dev-rho-{ratio:g}"
                runs.append(Run(key, "lora-ifd-auto-dev", ratio, seed, str(folder), tuple(
                    _tuned_steps(cfg, folder, "lora-ifd-auto", ratio, seed, p["dev_subset.jsonl"],
                                 cfg.auto_epochs))))
            folder = run_folder(cfg, "lora-ifd-auto", None, seed)
            runs.append(Run(run_key("lora-ifd-auto", None, seed), "lora-ifd-auto", None, seed, str(folder), ()))
    return runs


def auto_choice(cfg: ExperimentConfig, seed: int) -> dict[str, Any] | None:
    """rho with the best dev main metric (strict F1 for NER) among the seed's short runs (the smaller rho on ties);
    None until all are done.

    >>> import tempfile
    >>> cfg = ExperimentConfig(model="m", train=__file__, test=__file__, dev=__file__, ratios=[0.5, 0.25],
    ...                        arms=["lora-ifd-auto"], output_dir=tempfile.mkdtemp())
    >>> for rho, f1 in ((0.5, 0.31), (0.25, 0.4)):
    ...     d = run_folder(cfg, "lora-ifd-auto", None, 0) / f"dev-rho-{rho:g}"
    ...     d.mkdir(parents=True)
    ...     _ = (d / "eval.json").write_text(json.dumps({"strict": {"micro": {"f1": f1}}}))
    >>> auto_choice(cfg, 0)["ratio"]
    0.25
    """
    dev_f1 = {}
    for ratio in cfg.ratios:
        metrics = run_folder(cfg, "lora-ifd-auto", None, seed) / f"dev-rho-{ratio:g}" / "eval.json"
        if not metrics.is_file():
            return None
        dev_f1[ratio] = main_metric(json.loads(metrics.read_text(encoding="utf-8")))
    best = min(dev_f1, key=lambda r: (-dev_f1[r], r))
    return {"ratio": best, f"dev_{main_metric_name(cfg.task)}": {f"{r:g}": f for r, f in dev_f1.items()},
            "auto_epochs": cfg.auto_epochs}


def _auto_final(cfg: ExperimentConfig, run_: Run) -> Run | None:
    """The final run of the auto arm once rho is chosen (``choice.json`` records it)."""
    from curation.io import write_json

    choice_file = Path(run_.folder) / "choice.json"
    if choice_file.is_file():
        choice = json.loads(choice_file.read_text(encoding="utf-8"))
    else:
        choice = auto_choice(cfg, run_.seed)
        if choice is None:
            return None
        write_json(choice_file, choice)
    steps = _tuned_steps(cfg, Path(run_.folder), "lora-ifd-auto", choice["ratio"], run_.seed,
                         _paths(cfg)["test_subset.jsonl"], cfg.epochs)
    return Run(run_.key, run_.arm, None, run_.seed, run_.folder, tuple(steps))


def check_task(cfg: ExperimentConfig) -> None:
    """Refuse a corpus whose records hold no annotation of ``cfg.task`` (an NER corpus studied with ``--task re``),
    instruction records of another task, or relation entity types / event roles that ``entity_types`` / ``roles``
    leave out, before any step runs (:class:`InputError` naming the corpus)."""
    from curation.convert import argument_types, task_labels
    from curation.readers import read_corpus

    for path in (cfg.train, cfg.test, *([cfg.dev] if "lora-ifd-auto" in cfg.arms else [])):
        corpus = read_corpus(path)
        other = next((r for r in corpus.records if r.meta.get("task") not in (None, cfg.task)), None)
        if other is not None:
            raise InputError(path, f"--task is {cfg.task}, but record {other.id!r} is a {other.meta['task']} record",
                             line=other.meta.get("line"), record=other.id)
        if not task_labels(corpus, cfg.task):
            raise InputError(path, f"--task is {cfg.task}, but the corpus holds no {ANNOTATIONS[cfg.task]}; give the "
                                   "task of its annotations")
        listed = getattr(cfg, TYPED_OPTION[cfg.task]) if cfg.task in TYPED_OPTION else None
        unlisted = sorted(set(argument_types(corpus, cfg.task)) - set(listed)) if listed else []
        if unlisted:
            raise InputError(path, f"its {ANNOTATIONS[cfg.task]} use {', '.join(map(repr, unlisted))}, which "
                                   f"--{TYPED_OPTION[cfg.task]} does not list: a constrained answer could never give "
                                   "them")


def _check_folder(cfg: ExperimentConfig) -> dict[str, Any]:
    """The study record of ``output_dir`` (a new one for a new folder); refuse a folder of other settings."""
    path = Path(cfg.output_dir) / "experiment.json"
    if not path.exists():
        return {"settings": cfg.settings(), "steps": {}}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not JSON ({err.msg}); delete it to start the study again") from None
    held = record.get("settings", {})
    # a setting added after the folder was made reads as its default there
    defaults = {f.name: f.default for f in fields(cfg) if f.default is not MISSING}
    changed = sorted(k for k, v in cfg.settings().items()
                     if held.get(k, defaults.get(k)) != v or (k not in held and k not in defaults))
    if changed:
        raise InputError(path, f"this folder holds a study with other settings (differs in {', '.join(changed)}); "
                               "use another --output_dir or delete the folder")
    return record


def _run_steps(steps: Sequence[Step], call: Callable[[Step], int], log: dict[str, Any], prefix: str = "",
               verbose: bool = True) -> int:
    for step in steps:
        name = f"{prefix}{step.name}"
        if Path(step.done).exists():
            continue
        if verbose:
            print(f"[experiment] {name}: {step.command()}", flush=True)
        start = time.perf_counter()
        code = call(step)
        if code:
            print(f"error: step '{name}' exited with code {code}; fix it and run the same command again",
                  file=sys.stderr)
            return code
        log[name] = {"command": step.command(), "seconds": round(time.perf_counter() - start, 1)}
    return 0


def _save_log(path: Path, log: dict[str, Any]) -> None:
    from curation.io import write_json

    old = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    write_json(path, {**old, **log})


def _distributed(call: Callable[[Step], int]) -> tuple[Callable[[Step], int], bool]:
    """Under ``accelerate launch`` with several processes: IFD scoring and training run on every process (they shard
    their work), every other step on the main process only, its exit code shared with the others (which also waits
    for its files). Returns the wrapped call and whether this is the main process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return call, True
    from accelerate.utils import broadcast_object_list

    from curation.io import process_state

    state = process_state()

    def wrapped(step: Step) -> int:
        if step.module in DISTRIBUTED:
            return call(step)
        code = call(step) if state.is_main_process else 0
        return int(broadcast_object_list([code])[0])

    return wrapped, state.is_main_process


def run_experiment(cfg: ExperimentConfig, call: Callable[[Step], int] | None = None) -> tuple[int, dict[str, Any]]:
    """Run (or resume) the shared steps, then every run this worker can lock; write the report of what is finished.

    Returns the exit code and the study record (also in ``experiment.json``). Several workers share a folder through
    locks; under ``accelerate launch`` the processes are one worker (no locks: they run every step together).
    """
    import contextlib
    import importlib

    from curation.io import provenance, run_lock, write_json
    from tuning.experiment_records import (
        check_export_dest,
        check_recorded_runs,
        check_records,
        export_records,
        git_ignored,
    )
    from tuning.experiment_report import write_report

    out = Path(cfg.output_dir)
    record = _check_folder(cfg)
    check_recorded_runs(out)
    if cfg.export_records:
        check_export_dest(out, cfg.export_records)
    report_only = cfg.report_only or bool(cfg.export_records)
    if not report_only and not all(Path(step.done).is_file() for step in shared_steps(cfg)):
        check_task(cfg)  # before the folder is made: a study of the wrong task leaves nothing behind
    out.mkdir(parents=True, exist_ok=True)
    call, main_process = _distributed(
        call or (lambda step: int(importlib.import_module(step.module).main(list(step.argv)) or 0)))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # the processes of one launch run every run together
        def lock(directory: Path, wait: bool = False) -> contextlib.AbstractContextManager[bool]:
            return contextlib.nullcontext(True)
    else:
        lock = run_lock
    held: list[str] = []
    if not report_only:
        with lock(out, wait=True):  # one worker converts, samples and scores; the others wait for it
            _check_folder(cfg)
            log: dict[str, Any] = {}
            if main_process:
                write_json(out / "experiment.json", {**record, "settings": cfg.settings()})
            code = _run_steps(shared_steps(cfg), call, log, verbose=main_process)
            if main_process:
                _save_log(out / "shared_steps.json", log)
            if code:
                return code, record
            check_records(out)  # a folder rebuilt from records: the same data and scores, or nothing trains
        for run_ in plan(cfg):
            with lock(Path(run_.folder)) as free:
                if not free:
                    held.append(run_.key)
                    print(f"[experiment] {run_.key}: another worker holds it; skipped", flush=True)
                    continue
                todo = _auto_final(cfg, run_) if run_.arm == "lora-ifd-auto" else run_
                if todo is None:
                    held.append(run_.key)  # its dev runs are held by another worker
                    continue
                log = {}
                tracked = contextlib.nullcontext()
                if cfg.report_to == "mlflow" and main_process:
                    from tuning.experiment_tracking import lend_run, run_id

                    tracked = lend_run(run_id(out, todo.key, todo.folder))
                with tracked:
                    code = _run_steps(todo.steps, call, log, prefix=f"{run_.key}: ", verbose=main_process)
                if main_process:
                    _save_log(Path(run_.folder) / "steps.json", log)
                if code:
                    return code, record
    if not main_process:
        return 0, record
    check_records(out)  # the rebuilt selections too, before a report reads them
    report = write_report(cfg, plan(cfg))
    shared = out / "shared_steps.json"
    record.update(settings=cfg.settings(), config=asdict(cfg),
                  shared_steps=json.loads(shared.read_text(encoding="utf-8")) if shared.is_file() else {},
                  runs=report["runs"], missing=report["missing"], held_by_other_workers=held,
                  provenance=provenance(cfg, [cfg.train, cfg.test, *([cfg.dev] if cfg.dev else [])]))
    with run_lock(out, wait=True):
        write_json(out / "experiment.json", record)
        if cfg.report_to == "mlflow":
            from tuning.experiment_tracking import log_results

            log_results(out, report["runs"], {r.key: r.folder for r in plan(cfg)})
    code = 0
    if report["missing"]:
        print(f"[experiment] {len(report['missing'])} run(s) not finished: {', '.join(report['missing'])}")
    else:
        ok, line = verdict(report["main_metric"], report["metric_label"])
        record["tuned_beats_zero_shot"] = ok if "zero-shot" in cfg.arms else None
        write_json(out / "experiment.json", record)
        print(line)
        if cfg.require_better and not ok:
            print(f"error: a tuned model does not beat the zero-shot model's {report['metric_label']}",
                  file=sys.stderr)
            code = 1
    if cfg.export_records:
        kept = export_records(out, plan(cfg), cfg.export_records)
        print(f"[experiment] records of {len(kept['runs'])} finished run(s) in {cfg.export_records}")
        hidden = git_ignored(cfg.export_records)
        if hidden:
            print(f"warning: git ignores {len(hidden)} file(s) of the records, so a commit would leave them out "
                  f"(e.g. {hidden[0]}); add them with `git add -f` or narrow the rule (`/runs/`)", file=sys.stderr)
    return code, record


def verdict(scores: dict[str, float], label: str = "strict F1") -> tuple[bool, str]:
    """Whether every tuned run's main metric (``label``: strict F1 for NER) beats zero-shot's, and the line that
    says so.

    >>> verdict({"zero-shot": 0.05, "lora-ifd/rho-0.5/seed-0": 0.42})
    (True, 'strict F1: zero-shot 5.00, lora-ifd/rho-0.5/seed-0 42.00 (+37.00 over zero-shot)')
    >>> verdict({"zero-shot": 0.3, "lora-ifd": 0.2})[0]
    False
    """
    base = scores.get("zero-shot", math.nan)
    parts, ok = [], True
    for arm, f1 in scores.items():
        text = f"{arm} {100 * f1:.2f}"
        if arm != "zero-shot" and not math.isnan(base):
            text += f" ({100 * (f1 - base):+.2f} over zero-shot)"
            ok = ok and f1 > base
        parts.append(text)
    return ok, f"{label}: " + ", ".join(parts)


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(ExperimentConfig, argv, prog="bioselect tune experiment",
                          description=__doc__.split("\n\n")[0])
    return run_experiment(cfg)[0]


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
