"""``bioselect tune experiment``: BioSelectTune's comparison end to end on one NER corpus, resumable.

    bioselect tune experiment --config configs/demo_ncbi.yaml                  # what `make demo` runs
    bioselect tune experiment --config configs/bioselecttune_cpu_ncbi.yaml     # docs/results/bioselecttune_cpu.md

Runs the project's own commands in order, each on the previous one's output, in OUTPUT_DIR:

1. ``bioselect data convert`` of the train and test corpora into instruction JSONL (``train.jsonl``, ``test.jsonl``);
2. ``bioselect data sample``: a class-balanced training subset (``train_subset.jsonl``) and test subset
   (``test_subset.jsonl``);
3. ``bioselect curate run`` (arm ``lora-ifd``): IFD of the subset's positives under the scoring model, Hybrid
   Superfiltering (top ``ratio`` of positives with IFD <= ``max_ifd``, plus every negative) -> ``train_ifd.jsonl``;
4. ``bioselect tune train``: one LoRA adapter per tuned arm, the same number of steps for each
   (``adapters/lora-subset`` on the subset, ``adapters/lora-ifd`` on the curated set);
5. ``bioselect tune generate``: constrained greedy answers on the test subset for every arm (``pred_<arm>.jsonl``;
   ``zero-shot`` is the base model without adapter);
6. ``bioselect tune evaluate``: one table (``comparison.md/json/png``) with strict, relaxed and string F1 and
   bootstrap intervals; ``train_loss.png`` plots the tuned arms' training loss.

A step whose output exists is skipped, so a killed run started again goes on where it stopped (training itself
resumes from its last checkpoint). ``experiment.json`` records the resolved config, every step's equivalent command
and wall time, and provenance; a folder holding a run with another config is refused. With ``require_better`` the
command exits with code 1 unless every tuned arm's strict F1 is above the zero-shot model's.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from curation.cli import parse_config, run
from curation.io import InputError

ARMS = ("zero-shot", "lora-subset", "lora-ifd")


@dataclass
class ExperimentConfig:
    model: str = field(default="", metadata={
        "help": "Causal LM to tune and evaluate (folder or hub id; needs a chat template)."})
    train: str = field(default="", metadata={"help": "Training corpus (any format `bioselect data` reads)."})
    test: str = field(default="", metadata={"help": "Test corpus."})
    output_dir: str = field(default="runs/demo", metadata={"help": "Folder for every output of the run."})
    scorer_model: str | None = field(default=None, metadata={
        "help": "Weak model that scores IFD (same tokenizer as --model: a homologous pair); default: --model."})
    task: str = field(default="ner", metadata={"help": "Instruction task of the conversion (ner, re, ee, tc)."})
    arms: list[str] = field(default_factory=lambda: ["zero-shot", "lora-ifd"], metadata={
        "help": f"Models compared, in table order: {', '.join(ARMS)}."})
    train_fraction: float = field(default=0.08, metadata={"help": "Share of the training corpus in the subset."})
    test_fraction: float = field(default=0.1, metadata={"help": "Share of the test corpus that is generated on."})
    seed: int = field(default=0, metadata={"help": "Seed of the samples, the filter, the adapters and bootstrap."})
    # curation
    prompt_format: str = field(default="plain", metadata={"help": "IFD prompt format: plain or chat."})
    ratio: float = field(default=0.5, metadata={"help": "Share of positives kept by IFD (Hybrid Superfiltering)."})
    max_ifd: float = field(default=1.0, metadata={"help": "Positives with IFD above this are dropped."})
    negative_ratio: float = field(default=1.0, metadata={"help": "Share of negatives kept."})
    # training
    max_steps: int = field(default=20, metadata={"help": "Optimizer steps of every tuned arm."})
    batch_size: int = field(default=8, metadata={"help": "Training examples per step."})
    lr: float = field(default=5e-4, metadata={"help": "Peak learning rate."})
    warmup_steps: float = field(default=0.1, metadata={"help": "Warm-up share (< 1) or steps."})
    max_length: int = field(default=256, metadata={"help": "Tokens per training example."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    # generation and scoring
    gen_batch_size: int = field(default=16, metadata={"help": "Prompts per generation batch."})
    max_new_tokens: int = field(default=48, metadata={"help": "Answer token budget."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples of the intervals."})
    require_better: bool = field(default=False, metadata={
        "help": "Exit with code 1 unless every tuned arm's strict F1 beats the zero-shot model's."})

    def __post_init__(self):
        for name in ("model", "scorer_model", "train", "test", "output_dir"):  # recipes name ~/.cache/...
            if getattr(self, name):
                setattr(self, name, os.path.expanduser(getattr(self, name)))
        for name in ("model", "train", "test"):
            if not getattr(self, name):
                raise InputError(f"--{name}", "is required")
        for path in (self.train, self.test):
            if not Path(path).exists():
                raise InputError(path, "no such file")
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms or len(set(self.arms)) != len(self.arms):
            raise InputError("--arms", f"expected distinct arms among {', '.join(ARMS)}, got {self.arms}")
        if self.require_better and "zero-shot" not in self.arms:
            raise InputError("--require_better", "needs the zero-shot arm to compare with")
        for name in ("train_fraction", "test_fraction"):
            if not 0 < getattr(self, name) <= 1:
                raise InputError(f"--{name}", f"must be in (0, 1], got {getattr(self, name)}")
        if self.max_steps < 1:
            raise InputError("--max_steps", f"must be at least 1, got {self.max_steps}")


@dataclass(frozen=True)
class Step:
    """One command of the run: its name, the module ``main`` and arguments, and the file that proves it done."""

    name: str
    module: str
    argv: tuple[str, ...]
    done: str

    def command(self) -> str:
        from curation.cli import COMMANDS

        words = next(" ".join(w) for w, m in COMMANDS.items() if m == self.module)
        return " ".join(["bioselect", words, *self.argv])


def plan(cfg: ExperimentConfig) -> list[Step]:
    """The commands of a run, in order (pure: no file is read or written).

    >>> cfg = ExperimentConfig(model="m", train=__file__, test=__file__, output_dir="out", arms=["zero-shot"])
    >>> [s.name for s in plan(cfg)]
    ['convert train', 'convert test', 'sample train', 'sample test', 'generate zero-shot', 'evaluate']
    >>> plan(cfg)[-2].command()  # doctest: +NORMALIZE_WHITESPACE
    'bioselect tune generate --model m --input out/test_subset.jsonl --output out/pred_zero-shot.jsonl
     --batch_size 16 --max_new_tokens 48'
    """
    out = Path(cfg.output_dir)
    p = {name: str(out / name) for name in ("train.jsonl", "test.jsonl", "train_subset.jsonl", "test_subset.jsonl",
                                             "train_ifd.jsonl", "comparison.json")}
    steps = [
        Step("convert train", "curation.data", ("convert", cfg.train, "--task", cfg.task, "--output",
                                                p["train.jsonl"]), p["train.jsonl"]),
        Step("convert test", "curation.data", ("convert", cfg.test, "--task", cfg.task, "--output",
                                               p["test.jsonl"]), p["test.jsonl"]),
        Step("sample train", "curation.data", ("sample", p["train.jsonl"], "--fraction", str(cfg.train_fraction),
                                               "--seed", str(cfg.seed), "--output", p["train_subset.jsonl"]),
             p["train_subset.jsonl"]),
        Step("sample test", "curation.data", ("sample", p["test.jsonl"], "--fraction", str(cfg.test_fraction),
                                              "--seed", str(cfg.seed), "--output", p["test_subset.jsonl"]),
             p["test_subset.jsonl"]),
    ]
    if "lora-ifd" in cfg.arms:
        steps.append(Step("curate", "curation.pipeline", (
            "--model", cfg.scorer_model or cfg.model, "--strong_model", cfg.model, "--input", p["train_subset.jsonl"],
            "--output", p["train_ifd.jsonl"], "--prompt_format", cfg.prompt_format, "--ratio", str(cfg.ratio),
            "--max_ifd", str(cfg.max_ifd), "--negative_ratio", str(cfg.negative_ratio), "--seed", str(cfg.seed)),
            p["train_ifd.jsonl"]))
    train_data = {"lora-subset": p["train_subset.jsonl"], "lora-ifd": p["train_ifd.jsonl"]}
    for arm in (a for a in cfg.arms if a != "zero-shot"):
        folder = str(out / "adapters" / arm)
        steps.append(Step(f"train {arm}", "tuning.train", (
            "--model", cfg.model, "--train_files", train_data[arm], "--output_dir", folder,
            "--max_steps", str(cfg.max_steps), "--batch_size", str(cfg.batch_size), "--lr", str(cfg.lr),
            "--warmup_steps", str(cfg.warmup_steps), "--max_length", str(cfg.max_length), "--lora_r", str(cfg.lora_r),
            "--lora_alpha", str(cfg.lora_alpha), "--seed", str(cfg.seed), "--logging_steps", "1",
            "--save_steps", str(max(cfg.max_steps // 2, 1)), "--report_to", "none"),
            str(Path(folder) / "manifest.json")))
    for arm in cfg.arms:
        adapter = () if arm == "zero-shot" else ("--adapter", str(out / "adapters" / arm))
        pred = str(out / f"pred_{arm}.jsonl")
        steps.append(Step(f"generate {arm}", "tuning.generate", (
            "--model", cfg.model, *adapter, "--input", p["test_subset.jsonl"], "--output", pred,
            "--batch_size", str(cfg.gen_batch_size), "--max_new_tokens", str(cfg.max_new_tokens)), pred))
    steps.append(Step("evaluate", "tuning.compare", (
        "--gold", p["test_subset.jsonl"], "--pred", *(f"{a}={out / f'pred_{a}.jsonl'}" for a in cfg.arms),
        "--output", p["comparison.json"], "--bootstrap", str(cfg.bootstrap), "--seed", str(cfg.seed)),
        p["comparison.json"]))
    return steps


def verdict(strict_f1: dict[str, float]) -> tuple[bool, str]:
    """Whether every tuned arm's strict F1 beats zero-shot's, and the line that says so.

    >>> verdict({"zero-shot": 0.05, "lora-ifd": 0.42})
    (True, 'strict F1: zero-shot 5.00, lora-ifd 42.00 (+37.00 over zero-shot)')
    >>> verdict({"zero-shot": 0.3, "lora-ifd": 0.2})[0]
    False
    """
    base = strict_f1.get("zero-shot", math.nan)
    parts, ok = [], True
    for arm, f1 in strict_f1.items():
        text = f"{arm} {100 * f1:.2f}"
        if arm != "zero-shot" and not math.isnan(base):
            text += f" ({100 * (f1 - base):+.2f} over zero-shot)"
            ok = ok and f1 > base
        parts.append(text)
    return ok, "strict F1: " + ", ".join(parts)


def plot_train_loss(adapters: dict[str, Path], path: Path) -> bool:
    """Training loss per step of each tuned arm (from the Trainer's log history in its last checkpoint)."""
    curves = {}
    for arm, folder in adapters.items():
        states = sorted(folder.glob("checkpoint-*/trainer_state.json"), key=lambda q: int(q.parent.name.split("-")[1]))
        if states:
            history = json.loads(states[-1].read_text())["log_history"]
            curves[arm] = [(h["step"], h["loss"]) for h in history if "loss" in h]
    if not curves:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curation.io import atomic_write

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, points in curves.items():
        ax.plot(*zip(*points), marker=".", label=arm)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)
    return True


def _load_record(path: Path, cfg: ExperimentConfig) -> dict[str, Any]:
    if not path.exists():
        return {"config": asdict(cfg), "steps": {}}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"not JSON ({err.msg}); delete it to start the run again") from None
    if record.get("config") != asdict(cfg):
        changed = sorted(k for k, v in asdict(cfg).items() if record.get("config", {}).get(k) != v)
        raise InputError(path, f"this folder holds a run with another config (differs in {', '.join(changed)}); "
                               "use another --output_dir or delete the folder")
    return record


def run_experiment(cfg: ExperimentConfig, call: Callable[[Step], int] | None = None) -> tuple[int, dict[str, Any]]:
    """Run (or resume) every step; return the exit code and the experiment record (also in experiment.json)."""
    import importlib

    from curation.io import provenance, write_json

    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "experiment.json"
    record = _load_record(record_path, cfg)
    call = call or (lambda step: int(importlib.import_module(step.module).main(list(step.argv)) or 0))
    for step in plan(cfg):
        if Path(step.done).exists():
            print(f"[experiment] {step.name}: done ({step.done})", flush=True)
            continue
        print(f"[experiment] {step.name}: {step.command()}", flush=True)
        start = time.perf_counter()
        code = call(step)
        seconds = time.perf_counter() - start
        if code:
            print(f"error: step '{step.name}' exited with code {code}; fix it and run the same command again",
                  file=sys.stderr)
            return code, record
        record["steps"][step.name] = {"command": step.command(), "seconds": round(seconds, 1)}
        write_json(record_path, record)
    comparison = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    strict = {row["model"]: row["strict_f1"] for row in comparison["rows"]}
    plot_train_loss({a: out / "adapters" / a for a in cfg.arms if a != "zero-shot"}, out / "train_loss.png")
    ok, line = verdict(strict)
    record.update(strict_f1=strict, tuned_beats_zero_shot=ok if "zero-shot" in cfg.arms else None,
                  total_step_seconds=round(sum(s["seconds"] for s in record["steps"].values()), 1))
    write_json(record_path, {**record, "provenance": provenance(cfg, [cfg.train, cfg.test])})
    print(line)
    if cfg.require_better and not ok:
        print("error: a tuned model does not beat the zero-shot model's strict F1", file=sys.stderr)
        return 1, record
    return 0, record


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(ExperimentConfig, argv, prog="bioselect tune experiment",
                          description=__doc__.split("\n\n")[0])
    return run_experiment(cfg)[0]


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
