"""``bioselect curate combos``: search the mixes of auxiliary datasets for the one that helps a target most.

    bioselect curate combos --config configs/combos_ner_encoder.yaml
    bioselect curate combos --target NCBI-disease --datasets BC5CDR,BC2GM,JNLPBA,LINNAEUS \\
        --data-root ../shared/data/ner --evaluator encoder --model ~/.cache/offline-models/minilm-l6 \\
        --budget 12 --output runs/combos/ncbi_encoder

Also ``python -m curation.combos_cli ...``. The search is :func:`curation.combos.search` (initial design, MLP
ensemble over all 2^k mixes, UCB choice, stop when the predicted best was already evaluated or the budget is
spent; docs/combos.md). The evaluator is a recipe that trains on one mix and returns the target's dev F1
(the protocol :class:`curation.combo_evaluators.Evaluator`): ``encoder`` (the token classifier of the multi-task
baselines, cheap on a CPU) or ``lora`` (:class:`tuning.combo_evaluator.LoraEvaluator`: ``bioselect tune train --mix
even --max-steps N`` plus generation, the paper's protocol). ``EVALUATORS`` names each one's class as a string,
imported only when that evaluator is asked for, so this command depends on neither.

OUTPUT receives ``history.jsonl`` (a header, then one line per evaluation, written as soon as it is known),
``evals/<mix>/`` (each evaluation's metrics and dev predictions), ``test.jsonl`` (the test-set scores of the best
mix and of the target-only baseline, after the search), ``result.json`` (best mix, stop reason, every evaluation,
the model's top predicted mixes, test scores, provenance), ``result.md`` (the tables) and ``best_so_far.png``.
Run the same command again to resume: evaluations in the history are not repeated. Unknown dataset names, a
history made for other datasets or other evaluator settings, and bad options exit with code 2 before any training.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from curation.cli import parse_config, run
from curation.combos import DESIGNS
from curation.io import Files, InputError

if TYPE_CHECKING:
    from curation.combo_evaluators import Evaluator

# evaluator name -> "module:Class", imported when asked for (like the commands of curation/cli.py); each class is
# built as Class(corpora, target, model, **options) and follows curation.combo_evaluators.Evaluator
EVALUATORS: dict[str, str] = {
    "encoder": "mtl_baselines.token_mtl.combo_evaluator:EncoderEvaluator",
    "lora": "tuning.combo_evaluator:LoraEvaluator",
}


@dataclass
class CombosConfig:
    target: str = field(default="", metadata={"help": "Target dataset (a folder name under data_root, or a path)."})
    datasets: list[str] = field(default_factory=list, metadata={
        "help": "Auxiliary datasets (the target may be listed too): folder names under data_root (case-insensitive) "
                "or corpus folders; several values or a comma list."})
    data_root: str = field(default="../shared/data/ner", metadata={
        "help": "Folder holding one corpus folder (train/dev(el)/test files) per dataset."})
    evaluator: str = field(default="encoder", metadata={
        "help": "How one mix is trained and scored: 'encoder' (token classifier, cheap) or 'lora' (LoRA generator)."})
    model: str = field(default="", metadata={
        "help": "encoder: a Hugging Face encoder folder or hub id (~/.cache/offline-models/minilm-l6); lora: a "
                "causal LM with a chat template."})
    output: str = field(default="", metadata={"help": "Run folder (history, results, plot); resumed when it exists."})
    budget: int = field(default=12, metadata={"help": "Evaluations at most (those in the history included)."})
    hours: float | None = field(default=None, metadata={
        "help": "Stop starting evaluations once the history's evaluations add up to this many hours."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the design, the regressors, the training samples and the training runs."})
    design: str = field(default="balanced", metadata={
        "help": "Initial design besides the target-only baseline: 'balanced' (every auxiliary in about half of the "
                "mixes) or 'single' (one auxiliary at a time, the paper's)."})
    n_init: int | None = field(default=None, metadata={
        "help": "Mixes in the balanced design, baseline included; default max(3, ceil(k/2)+1)."})
    members: int = field(default=5, metadata={"help": "MLPs in the ensemble (1: the paper's single regressor)."})
    beta: float = field(default=3.0, metadata={
        "help": "Exploration bonus: the next mix maximises mean + beta * ensemble spread (0: the paper's greedy)."})
    hidden: int = field(default=32, metadata={"help": "Hidden units of each two-layer MLP."})
    patience: int = field(default=3, metadata={
        "help": "Stop when the predicted best mix was already evaluated this many times in a row (1: the paper's "
                "rule; 0: run to the budget)."})
    max_train: int | None = field(default=None, metadata={
        "help": "Training sentences kept per dataset (seeded class-balanced prefix); default 300 (encoder) or 1000 "
                "(lora); 0: all."})
    steps: int | None = field(default=None, metadata={
        "help": "Optimizer steps per evaluation, the same for every mix; default 150 (encoder) or 300 (lora)."})
    batch_size: int | None = field(default=None, metadata={
        "help": "Sentences per step (lora: per forward pass); default 16 (encoder) or 8 (lora)."})
    gradient_accumulation_steps: int | None = field(default=None, metadata={
        "help": "lora: forward passes of --batch-size sentences summed into each optimizer step (the same steps "
                "with less memory per pass); default 1."})
    negative_ratio: float = field(default=1.0, metadata={
        "help": "Share of each capped training sample's negatives kept (sentences with no mention, relation or "
                "event: the answer []; a TC sentence always has a class), seeded; 1: all, 0: none. A model tuned "
                "on mostly [] answers may answer [] to everything."})
    lr: float | None = field(default=None, metadata={
        "help": "Peak learning rate; default 1e-4 (encoder) or 2e-4 (lora)."})
    max_length: int | None = field(default=None, metadata={
        "help": "Tokens per example; default 128 (encoder) or 512 (lora)."})
    dev_size: int | None = field(default=None, metadata={
        "help": "Target dev sentences every mix is scored on (a fixed class-balanced subset); default 400 "
                "(encoder) or 200 (lora); 0: the whole dev set."})
    max_new_tokens: int = field(default=256, metadata={"help": "lora: token budget of a generated answer."})
    unconstrained: bool = field(default=False, metadata={
        "help": "lora: generate without the JSON grammar (the default is constrained, which needs llguidance)."})
    test: bool = field(default=True, metadata={
        "help": "After the search, retrain the best mix and the target-only baseline and score the test set."})
    exposure: bool = field(default=True, metadata={
        "help": "After the search, retrain the target alone for as many target draws as it gets in the best mix "
                "that holds an auxiliary (--steps over the mix's datasets: the even mix's share) and report its dev "
                "score beside the mix's: do the auxiliaries help at equal exposure to the target, apart from the "
                "dilution a fixed step budget brings?"})
    exposure_per_size: bool = field(default=True, metadata={
        "help": "The equal-exposure control for every mix size evaluated (the best mix of each size with an "
                "auxiliary against the target alone for its share: one short training per size, the best mix's "
                "first), so every mix can be read at equal exposure; false: the best mix's size only."})
    argument_types: str | None = field(default=None, metadata={
        "help": "lora: 'target' (the default) constrains an RE target's answers to the entity types of the heads and "
                "tails of its training split's relations (an EE target's to its argument roles); 'free' lets them "
                "give any word there (histories made before this option)."})
    save_steps: int = field(default=25, metadata={
        "help": "lora: checkpoint an evaluation's training every N steps; a stopped search resumes the evaluation "
                "it was in from its last checkpoint (the same adapter as an uninterrupted run)."})
    threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (torch.set_num_threads); torch's default when not set."})
    device: str = field(default="auto", metadata={"help": "encoder: torch device (auto, cpu, cuda, cuda:1, ...)."})

    def __post_init__(self):
        for name in ("target", "model", "output"):
            if not getattr(self, name):
                raise InputError(f"--{name}", "is required")
        items = [self.datasets] if isinstance(self.datasets, str) else list(self.datasets)
        self.datasets = [p.strip() for item in items for p in str(item).split(",") if p.strip()]
        if not [d for d in self.datasets if d.lower() != self.target.lower()]:
            raise InputError("--datasets", "name at least one auxiliary dataset besides the target")
        if self.evaluator not in EVALUATORS:
            raise InputError("--evaluator", f"must be one of {', '.join(EVALUATORS)}, not {self.evaluator!r}")
        if self.design not in DESIGNS:
            raise InputError("--design", f"must be one of {', '.join(DESIGNS)}, not {self.design!r}")
        for name in ("budget", "members", "hidden"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 1")
        for name in ("steps", "batch_size", "max_length", "threads", "max_new_tokens", "gradient_accumulation_steps",
                     "save_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 1")
        for name in ("max_train", "dev_size", "patience"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 0")
        if self.evaluator == "encoder" and self.gradient_accumulation_steps is not None:
            raise InputError("--gradient-accumulation-steps", "applies to the lora evaluator only")
        if self.evaluator == "encoder" and self.argument_types is not None:
            raise InputError("--argument-types", "applies to the lora evaluator only")
        if self.argument_types not in (None, "target", "free"):
            raise InputError("--argument-types", f"must be 'target' or 'free', not {self.argument_types!r}")
        if not 0 <= self.negative_ratio <= 1:
            raise InputError("--negative-ratio", f"must be between 0 and 1, got {self.negative_ratio}")
        if self.n_init is not None and self.n_init < 2:
            raise InputError("--n-init", "must be >= 2 (the baseline and at least one mix)")
        if self.hours is not None and self.hours <= 0:
            raise InputError("--hours", "must be > 0")
        if self.beta < 0 or (self.lr is not None and self.lr <= 0):
            raise InputError("--beta" if self.beta < 0 else "--lr", "must be >= 0" if self.beta < 0 else "must be > 0")
        self.model = os.path.expanduser(self.model)

    def files(self) -> Files:
        return Files(reads=[self.data_root, self.model, self.target, *self.datasets], folders=[self.output])

    def evaluator_options(self) -> dict[str, Any]:
        """The evaluator's keyword options: those set here, the evaluator's defaults for the rest."""
        opts = {k: getattr(self, k) for k in ("max_train", "steps", "batch_size", "lr", "max_length", "dev_size")
                if getattr(self, k) is not None}
        opts["seed"] = self.seed
        opts["negative_ratio"] = self.negative_ratio
        work = Path(self.output) / "evals"
        if self.evaluator == "encoder":
            return {**opts, "device": self.device, "work_dir": work}
        if self.gradient_accumulation_steps is not None:
            opts["gradient_accumulation_steps"] = self.gradient_accumulation_steps
        if self.argument_types is not None:
            opts["argument_types"] = self.argument_types
        return {**opts, "work_dir": work, "max_new_tokens": self.max_new_tokens, "constrained": not self.unconstrained,
                "save_steps": self.save_steps}


def build_evaluator(name: str, corpora: Mapping[str, str | os.PathLike], target: str, model: str,
                    **options: Any) -> Evaluator:
    """The evaluator ``name`` (a key of :data:`EVALUATORS`) with its keyword options; its module is imported here."""
    if name not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {', '.join(EVALUATORS)}, not {name!r}")
    module, cls = EVALUATORS[name].split(":")
    return getattr(importlib.import_module(module), cls)(corpora, target, model, **options)


def _fmt(x: float | None) -> str:
    return "failed" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def _mix_label(mix: Sequence[str], target: str) -> str:
    rest = sorted(d for d in mix if d != target)
    return target + (" + " + " + ".join(rest) if rest else " (alone)")


def markdown(result: dict[str, Any], tests: list[dict[str, Any]], exposure: list[dict[str, Any]] | None = None) -> str:
    """The result's tables: every evaluation (mix, dev F1), the test scores, then the equal-exposure control."""
    target = result["target"]
    lines = [f"# Combination search, target {target}", "",
             f"Best mix: {_mix_label(result['best_mix'] or [], target)}, dev F1 {_fmt(result['best_score'])}; "
             f"{result['evaluations']} evaluations, stopped: {result['stopped_because']}.", "",
             "| # | mix | chosen by | dev F1 | predicted | seconds |", "|---|---|---|---|---|---|"]
    for r in result["history"]:
        score = _fmt(r["score"]) if r["error"] is None else f"failed: {r['error'][:80]}"
        pred = _fmt(r["predicted"]) if r["predicted"] is not None else ""
        lines.append(f"| {r['n']} | {_mix_label(r['mix'], target)} | {r['chosen_by']} | {score} | {pred} | "
                     f"{r['seconds']:.0f} |")
    if tests:
        lines += ["", "| test set | mix | dev F1 | test P | test R | test F1 |", "|---|---|---|---|---|---|"]
        for t in tests:
            if t.get("error"):
                lines.append(f"| {t['role']} | {_mix_label(t['mix'], target)} | failed: {t['error'][:80]} | | | |")
                continue
            d, s = t["dev"], t["test"]
            lines.append(f"| {t['role']} | {_mix_label(t['mix'], target)} | {_fmt(d['f1'])} | {_fmt(s['precision'])} "
                         f"| {_fmt(s['recall'])} | {_fmt(s['f1'])} |")
    if exposure:
        steps = exposure[0]["steps"]
        lines += ["", f"Equal exposure to the target: a mix of k datasets trains {steps} steps of which about "
                      f"{steps}/k draw {target}; the best mix of each size against {target} alone for that many "
                      "steps (mix - alone with its paired 95% bootstrap interval over the dev subset where both "
                      "dev answers are on disk):", "",
                  f"| mix | datasets | mix dev F1 ({steps} steps) | {target} steps | {target} alone dev F1 | "
                  "mix - alone |", "|---|---:|---:|---:|---:|---:|"]
        for row in exposure:
            ok = row.get("error") is None
            alone = _fmt(row["target_dev"]) if ok else f"failed: {row['error'][:80]}"
            diff = f"{100 * (row['mix_dev'] - row['target_dev']):+.2f}" if ok else ""
            if ok and row.get("paired"):
                lo, hi = row["paired"]["ci"]
                diff += f" ({100 * lo:+.2f} to {100 * hi:+.2f})"
            lines.append(f"| {_mix_label(row['mix'], target)} | {len(row['mix'])} | {_fmt(row['mix_dev'])} | "
                         f"{row['target_steps']} | {alone} | {diff} |")
    return "\n".join(lines) + "\n"


def _read_tests(path: Path) -> dict[tuple[str, ...], dict[str, Any]]:
    from curation.io import read_jsonl

    if not path.is_file() or not path.stat().st_size:
        return {}
    return {tuple(sorted(obj["mix"])): obj for _, obj in read_jsonl(path) if not obj.get("error")}


def score_tests(evaluator, result, target: str, path: Path, log: logging.Logger) -> list[dict[str, Any]]:
    """Test-set scores of the best mix and of the target-only baseline, read from ``path`` when already there
    (appended to it otherwise)."""
    from curation.combos import _append

    done = _read_tests(path)
    out = []
    todo = [("target only", frozenset({target}))]
    if result.best_mix == frozenset({target}):
        todo = [("best mix = target only", frozenset({target}))]
    elif result.best_mix is not None:
        todo.insert(0, ("best mix", result.best_mix))
    for role, mix in todo:
        key = tuple(sorted(mix))
        if key in done:
            out.append({**done[key], "role": role})
            continue
        log.info("test set: retraining %s", ", ".join(key))
        start = time.perf_counter()
        try:
            m = evaluator.test_score(mix)
            row = {"mix": list(key), "dev": m["dev"], "test": m["test"], "error": None}
        except Exception as err:  # noqa: BLE001 - recorded; the search result is still written
            row = {"mix": list(key), "error": f"{type(err).__name__}: {err}"}
            log.warning("test scoring of %s failed: %s", ", ".join(key), row["error"])
        row["seconds"] = round(time.perf_counter() - start, 2)
        _append(path, row)
        out.append({**row, "role": role})
    return out


def exposure_mixes(result, per_size: bool = True) -> list:
    """The evaluated mixes the equal-exposure control reads: the best (ok) mix that holds an auxiliary, then, with
    ``per_size``, the best of every other size (largest share of the target first); the earliest of equal scores."""
    mixes = [r for r in result.rows if r.ok and len(r.mix) > 1]
    if not mixes:
        return []
    best = max(mixes, key=lambda r: r.score)
    if not per_size:
        return [best]
    sizes = sorted({len(r.mix) for r in mixes} - {len(best.mix)})
    return [best, *(max((r for r in mixes if len(r.mix) == k), key=lambda r: r.score) for k in sizes)]


def _read_exposure(path: Path) -> list[dict[str, Any]]:
    """The rows of ``path`` (a list; a single row, as written before the control covered every size, reads as
    one); an :class:`InputError` when it is not what this command writes."""
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not the JSON this command writes ({err}); delete it to make the control "
                               "again") from None
    rows = [done] if isinstance(done, dict) else done
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "target_steps" in r for r in rows):
        raise InputError(path, "not the JSON this command writes (rows with target_steps); delete it to make the "
                               "control again")
    return rows


def paired_dev(mix_counts: tuple[str, list] | None, alone_counts: tuple[str, list] | None,
               seed: int = 0) -> dict[str, Any] | None:
    """The paired bootstrap (1,000 resamples of the dev subset, :func:`curation.scoring.paired_main_metric`) of the
    main metric's difference, mix minus target alone, from their :meth:`dev_counts`; None unless both are there
    and count the same records."""
    from curation.scoring import paired_main_metric

    if mix_counts is None or alone_counts is None or mix_counts[0] != alone_counts[0] \
            or len(mix_counts[1]) != len(alone_counts[1]):
        return None
    r = paired_main_metric([mix_counts[1]], [alone_counts[1]], mix_counts[0], n_resamples=1000, seed=seed)
    return {"diff": r["diff"], "ci": r["ci"], "p_le_0": r["p_le_0"], "records": len(mix_counts[1])}


def exposure_control(cfg: CombosConfig, corpora: Mapping[str, Path], target: str, steps: int, result,
                     path: Path, log: logging.Logger, evaluator=None) -> list[dict[str, Any]]:
    """The target alone, trained for as many target draws as it gets in the best evaluated mix that holds an
    auxiliary (``steps / len(mix)``: each example of an even mix comes from each dataset with equal probability),
    and with ``cfg.exposure_per_size`` for the best mix of every other size too (:func:`exposure_mixes`), with the
    search's evaluator otherwise. One row per mix, in that order; ``path`` holds the rows made so far (rewritten
    after each, so a stopped control resumes), and a target-alone score already there for the same number of steps
    is reused (it does not depend on the mix). Each row's ``paired`` is the paired dev interval of mix minus
    target alone (:func:`paired_dev`) where both dev answers are on disk (``evaluator``, the search's, has the
    mix's), else the one recorded for the same mix, else None. Empty when no mix with an auxiliary was scored."""
    from curation.io import write_json

    done = {}
    if path.is_file():
        done = {r["target_steps"]: r for r in _read_exposure(path) if r.get("error") is None
                and r.get("steps") == steps and r.get("target_dev") is not None}
    rows: list[dict[str, Any]] = []
    for mix in exposure_mixes(result, cfg.exposure_per_size):
        target_steps = max(1, round(steps / len(mix.mix)))
        row = {"mix": sorted(mix.mix), "mix_dev": mix.score, "steps": steps, "target_steps": target_steps}
        options = {**cfg.evaluator_options(), "steps": target_steps,
                   "work_dir": Path(cfg.output) / "evals" / f"exposure-{target_steps}"}
        alone = build_evaluator(cfg.evaluator, corpora, target, cfg.model, **options)
        stored = done.get(target_steps)
        if stored is not None:
            row.update({k: stored[k] for k in ("target_dev", "error", "seconds")})
        else:
            log.info("equal exposure: %s alone for %d steps (the share of %s)", target, target_steps,
                     ", ".join(row["mix"]))
            start = time.perf_counter()
            try:
                row.update(target_dev=alone(frozenset({target})), error=None)
                done[target_steps] = row
            except Exception as err:  # noqa: BLE001 - recorded; the search result is still written
                row.update(target_dev=None, error=f"{type(err).__name__}: {err}")
                log.warning("equal-exposure control failed: %s", row["error"])
            row["seconds"] = round(time.perf_counter() - start, 2)
        paired = None
        if row["error"] is None and evaluator is not None and hasattr(evaluator, "dev_counts"):
            paired = paired_dev(evaluator.dev_counts(mix.mix), alone.dev_counts(frozenset({target})), cfg.seed)
        if paired is None and stored is not None and stored.get("mix") == row["mix"]:
            paired = stored.get("paired")
        row["paired"] = paired
        rows.append(row)
        if stored is not None:
            continue
        made = {r["target_steps"] for r in rows}  # the rows so far, and those read and not reached yet
        write_json(path, rows + [r for n, r in done.items() if n not in made])
    if rows and (not path.is_file() or _read_exposure(path) != rows):
        write_json(path, rows)
    return rows


def check_encoder_tasks(corpora: Mapping[str, str | os.PathLike]) -> None:
    """The encoder evaluator tags entities: refuse a corpus that sits in a folder of another task (``re``, ``ee``,
    ``cls``; :data:`curation.combo_evaluators.TASK_FOLDERS`)."""
    from curation.combo_evaluators import TASK_FOLDERS

    for name, folder in corpora.items():
        task = TASK_FOLDERS.get(Path(folder).parent.name, "ner")
        if task != "ner":
            raise InputError(folder, f"the encoder evaluator tags entities (NER) only, and {name} is a {task} "
                                     "corpus; use --evaluator lora")


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(CombosConfig, argv, prog="bioselect curate combos", description=__doc__.split("\n\n")[0])
    from curation.combo_evaluators import find_corpora
    from curation.combos import plot_best_so_far, result_from, search_steps
    from curation.io import atomic_write, provenance, write_json

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    log = logging.getLogger("curation.combos")
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    target_folder = find_corpora([cfg.target], cfg.data_root, "--target")
    target = next(iter(target_folder))
    others = [d for d in cfg.datasets if d.lower() != cfg.target.lower() and d != target]
    corpora = {**target_folder, **find_corpora(others, cfg.data_root)}
    if cfg.evaluator == "encoder":
        check_encoder_tasks(corpora)
    evaluator = build_evaluator(cfg.evaluator, corpora, target, cfg.model, **cfg.evaluator_options())
    evaluator.check()  # bad corpora, tokenizer or model exit with code 2 here, before any training

    out = Path(cfg.output)
    settings = evaluator.settings()  # what every score depends on: the history's header, the control, the report
    state: dict[str, Any] = {}
    steps = search_steps(evaluator, list(corpora), target, cfg.budget, cfg.seed, hours=cfg.hours,
                         history_path=out / "history.jsonl", design=cfg.design, n_init=cfg.n_init,
                         members=cfg.members, beta=cfg.beta, hidden=cfg.hidden, patience=cfg.patience,
                         settings=settings, added_settings=evaluator.ADDED_SETTINGS, state=state)
    for row in steps:
        score = f"dev F1 {100 * row.score:.2f}" if row.ok else f"failed ({row.error})"
        print(f"[{row.n}] {_mix_label(sorted(row.mix), target)}: {score} in {row.seconds:.0f} s", flush=True)  # noqa: T201
    result = result_from(state)
    tests = score_tests(evaluator, result, target, out / "test.jsonl", log) if cfg.test else []
    exposure = (exposure_control(cfg, corpora, target, settings["steps"], result, out / "exposure.json", log,
                                 evaluator) if cfg.exposure else None)
    summary = result.to_dict()
    report = {**summary, "tests": tests, "exposure": exposure, "corpora": {k: str(v) for k, v in corpora.items()},
              "evaluator_settings": settings,
              "provenance": provenance(cfg, [out / "history.jsonl"])}
    write_json(out / "result.json", report)
    with atomic_write(out / "result.md") as f:
        f.write(markdown(summary, tests, exposure))
    if result.rows:
        plot_best_so_far(result, out / "best_so_far.png", f"{cfg.evaluator} evaluator, target {target}")
    best = _mix_label(sorted(result.best_mix), target) if result.best_mix else "none (every evaluation failed)"
    print(f"stopped: {result.stopped_because} after {len(result.rows)} evaluations; best mix {best}, dev F1 "  # noqa: T201
          f"{_fmt(result.best_score)}")
    for t in tests:
        if not t.get("error"):
            print(f"test F1 {_fmt(t['test']['f1'])}: {t['role']} ({_mix_label(t['mix'], target)})")  # noqa: T201
    for row in exposure or []:
        if row.get("error") is None:
            print(f"equal exposure: {_mix_label(row['mix'], target)} dev F1 {_fmt(row['mix_dev'])} in "  # noqa: T201
                  f"{row['steps']} steps; {target} alone dev F1 {_fmt(row['target_dev'])} in "
                  f"{row['target_steps']} steps")
    print(f"wrote {out}/result.json, result.md, best_so_far.png")  # noqa: T201
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
