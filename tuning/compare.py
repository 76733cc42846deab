"""``bioselect tune evaluate``: one comparison table of every model's predictions on the same gold set.

    bioselect tune evaluate --gold runs/demo/ncbi_test_sub.jsonl \\
        --pred zero-shot=runs/demo/pred_zero_shot.jsonl lora-full=runs/demo/pred_lora_full.jsonl \\
               biobert=runs/demo/biobert_spans.jsonl --output runs/demo/comparison.json

Each ``NAME=PATH`` after ``--pred`` is scored by :func:`curation.evaluate.score_files` (the unified scorer: strict
span, relaxed overlap and string matching, bootstrap intervals), so generated entity lists (``{"id", "output"}``
JSONL) and encoder baselines' span files or IOB files sit in one table. Writes OUT.json (every model's full result
plus provenance), OUT.md (the table) and OUT.png (strict micro F1 with its interval per model), and prints the
table. RE, EE and TC gold (``--task`` as for ``bioselect evaluate``) give a table of every mode's F1 and the task's
rate (exact match, accuracy); the plot shows the headline mode (:data:`HEADLINE`).

With two or more models, every model is also compared with a baseline (``--baseline NAME``, the first ``--pred`` by
default) by a paired bootstrap of the task's main metric (:data:`curation.scoring.MAIN_METRICS`: strict micro F1
for NER and RE, argument classification micro F1 for EE, label macro F1 for TC) on the same gold records
(:func:`curation.scoring.paired_bootstrap`): the difference, its 95% interval and the share of resamples where the
model does not beat the baseline. This is the interval to quote for "A beats B": two overlapping per-model intervals
do not say that A and B tie, since both were scored on the same sentences.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from curation.cli import parse_config, run
from curation.evaluate import EvaluateConfig, read_gold, score_files, warn_missing
from curation.io import Files, InputError, atomic_write, provenance, together, write_json
from curation.scoring import RATES, TASK_MODES

# the mode whose P, R, F1 and interval head the table and the plot, per task
HEADLINE = {"ner": "strict", "re": "strict", "ee": "argument_classification", "tc": "label"}


@dataclass
class CompareConfig:
    gold: str = field(metadata={"help": "Gold corpus file or instruction JSONL (as for `bioselect evaluate`)."})
    pred: list[str] = field(metadata={"help": "NAME=PATH of each model's predictions (several after one --pred)."})
    output: str = field(metadata={"help": "Comparison file to write (.json); .md and .png go beside it."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for the intervals (0: none)."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap resampling."})
    labels: list[str] | None = field(default=None, metadata={
        "help": "Labels generated answers may use (entity, relation or event types, classes); as for `bioselect "
                "evaluate` when not given."})
    task: str | None = field(default=None, metadata={
        "help": "Task to score (ner, re, ee, tc); detected as by `bioselect evaluate` when not given."})
    plot: bool = field(default=True, metadata={"help": "Write OUT.png, strict F1 per model with its interval."})
    allow_missing: bool = field(default=False, metadata={
        "help": "Score gold records without a prediction as empty answers; else they are an error."})
    baseline: str | None = field(default=None, metadata={
        "help": "NAME of the --pred every other model is compared with by a paired bootstrap of the task's main "
                "metric on the same gold records (needs --bootstrap > 0); the first --pred when not given."})

    def __post_init__(self):
        if Path(self.output).suffix != ".json":
            raise InputError("--output", f"must end in .json, got {self.output!r}")
        names = [p.split("=", 1)[0] for p in self.pred]
        for p in self.pred:
            if "=" not in p or not p.split("=", 1)[0] or not p.split("=", 1)[1]:
                raise InputError("--pred", f"expected NAME=PATH, got {p!r}")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError("--pred", f"model names must be unique; repeated: {', '.join(dupes)}")
        if self.baseline is not None and self.baseline not in names:
            raise InputError("--baseline", f"{self.baseline!r} is not a --pred name ({', '.join(names)})")

    def paths(self) -> dict[str, str]:
        """Model name -> predictions file."""
        return dict(p.split("=", 1) for p in self.pred)

    def files(self) -> Files:
        out = Path(self.output)
        return Files(reads=[self.gold, *self.paths().values()],
                     writes=[out, out.with_suffix(".md"), out.with_suffix(".png")])


def comparison_rows(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per model: strict/relaxed/string micro F1 (strict with P, R and interval) and failure rates.

    >>> r = {"name": "m", "records": 2, "outputs": {"parse_error_rate": 0.5, "schema_error_rate": 0.0},
    ...      "strict": {"micro": {"precision": 1.0, "recall": 0.5, "f1": 2 / 3}},
    ...      "relaxed": {"micro": {"f1": 0.8}}, "string": {"micro": {"f1": 0.7}}}
    >>> comparison_rows([r])[0]["strict_f1"]
    0.6666666666666666
    """
    rows = []
    for r in results:
        if r.get("task", "ner") != "ner":
            rows.append(_task_row(r))
            continue
        strict = r["strict"]["micro"]
        rows.append({
            "model": r["name"], "records": r["records"],
            "strict_p": strict["precision"], "strict_r": strict["recall"], "strict_f1": strict["f1"],
            "strict_f1_ci": strict.get("ci", {}).get("f1") if strict.get("ci") else None,
            "relaxed_f1": r["relaxed"]["micro"]["f1"], "string_f1": r["string"]["micro"]["f1"],
            "parse_error_rate": r["outputs"]["parse_error_rate"],
            "schema_error_rate": r["outputs"]["schema_error_rate"],
        })
    return rows


def _task_row(r: dict[str, Any]) -> dict[str, Any]:
    """An RE, EE or TC model's row: the headline mode's P, R, F1 (interval) and macro F1, every mode's F1, the
    task's rate with its interval, failure rates."""
    task = r["task"]
    head, rate = r[HEADLINE[task]], RATES[task]
    ci = head["micro"].get("ci")
    return {"model": r["name"], "records": r["records"], "task": task, "mode": HEADLINE[task],
            "p": head["micro"]["precision"], "r": head["micro"]["recall"], "f1": head["micro"]["f1"],
            "f1_ci": ci["f1"] if ci else None, "macro_f1": head["macro"]["f1"],
            **{f"{m}_f1": r[m]["micro"]["f1"] for m in TASK_MODES[task]},
            rate: r[rate]["value"], f"{rate}_ci": r[rate]["ci"],
            "parse_error_rate": r["outputs"]["parse_error_rate"],
            "schema_error_rate": r["outputs"]["schema_error_rate"]}


def paired_differences(results: list[dict[str, Any]], baseline: str, n_resamples: int = 1000,
                       seed: int = 0) -> list[dict[str, Any]]:
    """Every model's main metric minus the baseline's, with a paired bootstrap interval over the gold records.

    ``results`` are :func:`curation.evaluate.score_files` reports made with ``per_record=True`` on one gold set (so
    their records are in the same order). Returns one row per model other than the baseline: ``model``,
    ``baseline``, ``metric`` (:func:`curation.scoring.main_metric_name`) and the ``diff``, ``ci``, ``p_le_0``,
    ``records`` and ``resamples`` of :func:`curation.scoring.paired_bootstrap`.
    """
    from curation.scoring import main_metric_counts, main_metric_name, paired_main_metric

    task = results[0].get("task", "ner")
    base = next(r for r in results if r["name"] == baseline)
    out = []
    for r in results:
        if r is not base:
            out.append({"model": r["name"], "baseline": baseline, "metric": main_metric_name(task),
                        **paired_main_metric([main_metric_counts(r)], [main_metric_counts(base)], task,
                                             n_resamples, seed)})
    return out


def format_paired(paired: list[dict[str, Any]]) -> str:
    """The paired differences in Markdown (points of the metric, in %).

    >>> print(format_paired([{"model": "a", "baseline": "b", "metric": "strict_f1", "diff": 0.1, "ci": [0.02, 0.2],
    ...                       "p_le_0": 0.01, "records": 9, "resamples": 100}]), end="")
    <BLANKLINE>
    Paired differences against b (strict_f1, 100 resamples of the 9 gold records):
    <BLANKLINE>
    | model | difference (95% CI) | P(difference <= 0) |
    |---|---:|---:|
    | a | +10.00 (+2.00 to +20.00) | 0.010 |
    """
    if not paired:
        return ""
    first = paired[0]
    lines = ["", f"Paired differences against {first['baseline']} ({first['metric']}, {first['resamples']} resamples "
             f"of the {first['records']} gold records):", "",
             "| model | difference (95% CI) | P(difference <= 0) |", "|---|---:|---:|"]
    for p in paired:
        ci = f" ({100 * p['ci'][0]:+.2f} to {100 * p['ci'][1]:+.2f})" if p["ci"] else ""
        p_le_0 = "-" if p["p_le_0"] is None else f"{p['p_le_0']:.3f}"
        lines.append(f"| {p['model']} | {100 * p['diff']:+.2f}{ci} | {p_le_0} |")
    return "\n".join(lines) + "\n"


def _format_task_comparison(rows: list[dict[str, Any]], title: str) -> str:
    def pct(x: float) -> str:
        return f"{100 * x:.2f}"

    task, mode = rows[0]["task"], rows[0]["mode"]
    rate = RATES[task]
    others = [m for m in TASK_MODES[task] if m != mode]
    lines = [f"## Comparison{': ' + title if title else ''}", "", f"Task: {task}.", "",
             f"| model | records | {mode} P | {mode} R | {mode} F1 (95% CI) | {mode} macro F1 | "
             + "".join(f"{m} F1 | " for m in others) + f"{rate.replace('_', ' ')} (95% CI) | parse fail | "
             "schema viol. |", "|---|" + "---:|" * (8 + len(others))]
    for r in rows:
        f1 = pct(r["f1"]) + (f" ({pct(r['f1_ci'][0])}–{pct(r['f1_ci'][1])})" if r["f1_ci"] else "")
        ci = r[f"{rate}_ci"]
        value = pct(r[rate]) + (f" ({pct(ci[0])}–{pct(ci[1])})" if ci else "")
        lines.append(f"| {r['model']} | {r['records']} | {pct(r['p'])} | {pct(r['r'])} | {f1} | "
                     f"{pct(r['macro_f1'])} | " + "".join(f"{pct(r[f'{m}_f1'])} | " for m in others)
                     + f"{value} | {r['parse_error_rate']:.1%} | {r['schema_error_rate']:.1%} |")
    return "\n".join(lines) + "\n"


def format_comparison(rows: list[dict[str, Any]], title: str = "") -> str:
    """The comparison table in Markdown (scores in %)."""
    def pct(x: float) -> str:
        return f"{100 * x:.2f}"

    if rows and "task" in rows[0]:
        return _format_task_comparison(rows, title)

    lines = [f"## Comparison{': ' + title if title else ''}", "",
             "| model | records | strict P | strict R | strict F1 (95% CI) | relaxed F1 | string F1 | parse fail | "
             "schema viol. |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = r["strict_f1_ci"]
        f1 = pct(r["strict_f1"]) + (f" ({pct(ci[0])}–{pct(ci[1])})" if ci else "")
        lines.append(f"| {r['model']} | {r['records']} | {pct(r['strict_p'])} | {pct(r['strict_r'])} | {f1} | "
                     f"{pct(r['relaxed_f1'])} | {pct(r['string_f1'])} | {r['parse_error_rate']:.1%} | "
                     f"{r['schema_error_rate']:.1%} |")
    return "\n".join(lines) + "\n"


def plot_comparison(rows: list[dict[str, Any]], path: str | Path) -> None:
    """Bar chart of strict micro F1 (RE, EE, TC: the headline mode's) per model with its bootstrap interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, mode = ("f1", rows[0]["mode"]) if rows and "task" in rows[0] else ("strict_f1", "strict")
    names = [r["model"] for r in rows]
    f1 = [100 * r[key] for r in rows]
    err = [[100 * (r[key] - r[f"{key}_ci"][0]) if r[f"{key}_ci"] else 0 for r in rows],
           [100 * (r[f"{key}_ci"][1] - r[key]) if r[f"{key}_ci"] else 0 for r in rows]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(rows) + 1.5), 3.5))
    ax.bar(names, f1, yerr=err, capsize=4, color="#4C72B0")
    ax.set_ylabel(f"{mode} micro F1 (%)")
    ax.set_ylim(0, max(100.0, max(f1, default=0) + 5))
    for i, v in enumerate(f1):
        ax.text(i, v / 2, f"{v:.1f}", ha="center", va="center", fontsize=8, color="white")
    ax.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)
    plt.close(fig)


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(CompareConfig, argv, prog="bioselect tune evaluate",
                          description=__doc__.split("\n\n")[0])
    base = EvaluateConfig(gold=cfg.gold, pred="", output=cfg.output, bootstrap=cfg.bootstrap, seed=cfg.seed,
                          labels=cfg.labels, allow_missing=cfg.allow_missing, task=cfg.task)
    gold = read_gold(base)
    paired_on = len(cfg.pred) > 1 and cfg.bootstrap > 0
    results = [score_files(replace(base, pred=path, name=name), gold=gold, per_record=paired_on)
               for name, path in cfg.paths().items()]
    for result in results:
        warn_missing(result)
    rows = comparison_rows(results)
    paired = []
    if paired_on:
        paired = paired_differences(results, cfg.baseline or results[0]["name"], cfg.bootstrap, cfg.seed)
        for result in results:  # per-record counts: what the paired bootstrap resampled, not part of the report
            result.pop("per_record", None)
            result.pop("per_record_types", None)
    markdown = format_comparison(rows, Path(cfg.gold).name) + format_paired(paired)
    out = Path(cfg.output)
    with together():  # the table, the plot and the results land together or not at all
        if cfg.plot:
            plot_comparison(rows, out.with_suffix(".png"))
        with atomic_write(out.with_suffix(".md")) as f:
            f.write(markdown)
        write_json(out, {"rows": rows, "paired": paired, "models": results,
                         "provenance": provenance(cfg, [cfg.gold, *cfg.paths().values()])})
    print(markdown, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
