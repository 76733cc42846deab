"""The report of a ``bioselect tune experiment`` study: per-run scores, seed means, paired differences, plots.

Written into OUTPUT_DIR by every invocation of the study (and by ``--report_only true``) from the runs that have
finished; the runs still missing are listed. Files:

* ``results.csv``: one row per run (arm, rho, seed): the task's main metric (:data:`curation.scoring.MAIN_METRICS`:
  NER and RE ``strict_p/r/f1``, EE ``argument_classification_p/r/f1``, TC ``label_macro_p/r/f1``) with the 95%
  bootstrap interval over test sentences (none for TC's macro F1), NER's relaxed F1 or the task's record-level
  rate (``exact_match``, ``accuracy``), parse and schema failures, the training set (records, positives,
  negatives), optimizer steps, epochs, training seconds, tokens/s and seconds per epoch;
* ``report.md``: the same as tables, the seed mean and sd per (arm, rho), and the **paired** comparisons that answer
  the study's questions (``lora-ifd - lora-random``: does the IFD ranking matter beyond the class balance?
  ``lora-ifd - lora-full``: BioSelectTune's claim; ...): the difference of the main metric per seed and over the
  seeds in common, with a paired bootstrap interval (:func:`curation.scoring.paired_bootstrap`: the same test sentences
  resampled for both sides);
* ``report.json``: everything above as data; ``f1_vs_ratio.png``: the main metric against rho per ratio arm (seed mean
  and each seed), ``lora-full`` and ``zero-shot`` as lines; ``train_loss.png``: the training loss of each arm at
  the main rho and first seed.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# (a, b): the report gives a - b; each pair answers one question of the study
COMPARISONS = (
    ("lora-ifd", "lora-random"),  # does the IFD ranking matter beyond the change in class balance?
    ("lora-ifd", "lora-random-matched"),  # ... beyond the answer sizes (mention counts) it picks?
    ("lora-random-matched", "lora-random"),  # do the answer sizes alone matter?
    ("lora-ifd", "lora-full"),  # BioSelectTune's claim
    ("lora-random", "lora-full"),  # what the smaller, more negative set alone does
    ("lora-ifd-content", "lora-ifd"),  # IFD of the mentions vs of the whole JSON answer
    ("lora-ifd-content", "lora-random"),
    ("lora-ifd-low", "lora-random"),  # is the bottom of the ranking worse than chance?
    ("lora-ifd-other", "lora-ifd"),  # homologous scorer vs one of another family
    ("lora-ifd-auto", "lora-full"),  # rho chosen on dev
    ("lora-full", "zero-shot"),
    ("lora-ifd", "zero-shot"),
    ("lora-random", "zero-shot"),
)
COLUMNS = ("run", "arm", "ratio", "seed", "records", "strict_p", "strict_r", "strict_f1", "strict_f1_lo",
           "strict_f1_hi", "relaxed_f1", "parse_error_rate", "schema_error_rate", "empty_answers", "gold_empty",
           "train_records", "train_positives",
           "train_negatives", "steps", "epochs", "train_seconds", "tokens_per_s", "seconds_per_epoch", "resumed",
           "final_train_loss")  # NER's; columns(task) for any task
# the second score of a run's row: NER's relaxed F1, the record-level rate of the other tasks
SECOND = {"ner": ("relaxed_f1", "relaxed F1"), "re": ("exact_match", "exact match"),
          "ee": ("exact_match", "exact match"), "tc": ("accuracy", "accuracy")}
LABELS = {"ner": "strict F1", "re": "strict F1", "ee": "argument classification F1", "tc": "macro F1"}


def metric_keys(task: str) -> dict[str, str]:
    """The row keys of a task's main metric and second score.

    >>> metric_keys("ner")["f1"], metric_keys("tc")["p"], metric_keys("ee")["f1"]
    ('strict_f1', 'label_macro_p', 'argument_classification_f1')
    """
    from curation.scoring import main_metric_name

    f1 = main_metric_name(task)
    prefix = f1.removesuffix("_f1")
    return {"p": f"{prefix}_p", "r": f"{prefix}_r", "f1": f1, "lo": f"{f1}_lo", "hi": f"{f1}_hi",
            "second": SECOND[task][0]}


def columns(task: str) -> tuple[str, ...]:
    """``results.csv``'s columns: :data:`COLUMNS` with the task's main metric and second score in NER's places."""
    k, ner = metric_keys(task), metric_keys("ner")
    rename = {ner[name]: k[name] for name in ner}
    return tuple(rename.get(c, c) for c in COLUMNS)


def _training(folder: Path) -> dict[str, Any]:
    """What a run's training manifest and training file say (empty for zero-shot)."""
    from curation.ifd_scoring import is_negative
    from curation.io import read_jsonl

    manifest = folder / "adapter" / "manifest.json"
    if not manifest.is_file():
        return {}
    train = json.loads(manifest.read_text(encoding="utf-8"))
    t = train.get("training", {})
    files = train.get("config", {}).get("train_files") or []
    outputs = [obj["output"] for path in files if Path(path).is_file() for _, obj in read_jsonl(path)]
    positives = sum(not is_negative(o) for o in outputs)
    tokens, epochs = t.get("train_tokens"), t.get("epochs")
    resumed = bool(t.get("resumed_from"))
    # each step once in its last execution (tune train's step clock), else the trainer's runtime, which covers a
    # resumed run's last part only (no rates then)
    seconds = t.get("train_step_seconds")
    whole = seconds is not None or not resumed
    if seconds is None:
        seconds = t.get("train_runtime_s")
    return {"train_records": len(outputs), "train_positives": positives, "train_negatives": len(outputs) - positives,
            "steps": t.get("global_step"), "epochs": epochs, "train_seconds": seconds,
            "tokens_per_s": tokens / seconds if whole and tokens and seconds else None,
            "seconds_per_epoch": seconds / epochs if whole and seconds and epochs else None,
            "resumed": resumed, "final_train_loss": t.get("final_train_loss"),
            "loss_curve": t.get("loss_curve") or []}


def _empty_answers(metrics: dict[str, Any], task: str) -> dict[str, int | None]:
    """How many predicted and gold answers are ``[]`` (NER, RE, EE: a model that answers ``[]`` to nearly everything
    has collapsed onto its negatives); None for TC, whose answers always name a class."""
    if task == "tc":
        return {"empty_answers": None, "gold_empty": None}
    from curation.io import InputError, read_jsonl

    def empty(path: str) -> int | None:
        if not path or not Path(path).is_file():
            return None
        try:
            return sum(str(obj.get("output", "")).strip() == "[]" for _, obj in read_jsonl(path))
        except InputError:  # gold given as a corpus file (IOB, ...), not instruction JSONL
            return None

    return {"empty_answers": empty(metrics.get("pred")), "gold_empty": empty(metrics.get("gold"))}


def collect(cfg: Any, runs: Sequence[Any]) -> tuple[list[dict[str, Any]], dict[str, list], list[str]]:
    """Rows of the finished runs, each run's per-record counts of the task's main metric (for pairing: ``[tp, fp,
    fn]`` per record for a micro F1, per record and type for TC's macro F1), and the missing runs' keys."""
    from curation.evaluate import EvaluateConfig, read_gold, score_files
    from curation.scoring import MAIN_METRICS, main_metric_counts

    task = getattr(cfg, "task", "ner")
    mode, average = MAIN_METRICS[task]
    keys = metric_keys(task)

    rows, counts, missing = [], {}, []
    gold = None
    for run_ in runs:
        if run_.arm == "lora-ifd-auto-dev":
            continue
        folder = Path(run_.folder)
        metrics_file = folder / "eval.json"
        if not metrics_file.is_file():
            missing.append(run_.key)
            continue
        metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
        ecfg = EvaluateConfig(gold=metrics["gold"], pred=metrics["pred"], output=str(metrics_file), bootstrap=0)
        gold = gold if gold is not None else read_gold(ecfg)
        scored = score_files(ecfg, gold, per_record=True)
        counts[run_.key] = main_metric_counts(scored)
        main = metrics[mode][average]
        ci = main.get("ci") or {}  # a macro F1 has no bootstrap interval in the metrics file
        ratio = run_.ratio
        if run_.arm == "lora-ifd-auto":
            choice = folder / "choice.json"
            ratio = json.loads(choice.read_text(encoding="utf-8"))["ratio"] if choice.is_file() else None
        rows.append({"run": run_.key, "arm": run_.arm, "ratio": ratio, "seed": run_.seed,
                     "records": metrics["records"], keys["p"]: main["precision"], keys["r"]: main["recall"],
                     keys["f1"]: main["f1"], keys["lo"]: (ci.get("f1") or [None])[0],
                     keys["hi"]: (ci.get("f1") or [None, None])[1],
                     keys["second"]: (metrics["relaxed"]["micro"]["f1"] if task == "ner"
                                      else metrics[keys["second"]]["value"]),
                     "parse_error_rate": metrics["outputs"].get("parse_error_rate"),
                     "schema_error_rate": metrics["outputs"].get("schema_error_rate"),
                     **_empty_answers(metrics, task), **_training(folder)})
    return rows, counts, missing


def seed_means(rows: Sequence[dict[str, Any]], key: str = "strict_f1") -> list[dict[str, Any]]:
    """The main metric (row key ``key``) per (arm, rho) over seeds: n, mean, sd (None for one seed), the seeds.

    >>> seed_means([{"arm": "a", "ratio": 0.5, "seed": 0, "strict_f1": 0.2},
    ...             {"arm": "a", "ratio": 0.5, "seed": 1, "strict_f1": 0.4}])
    [{'arm': 'a', 'ratio': 0.5, 'n': 2, 'mean': 0.30000000000000004, 'sd': 0.1414213562373095, 'seeds': [0, 1]}]
    """
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["arm"], row["ratio"] if row["arm"] != "lora-ifd-auto" else None)].append(row)
    out = []
    for (arm, ratio), members in groups.items():
        f1 = [m[key] for m in members]
        out.append({"arm": arm, "ratio": ratio, "n": len(f1), "mean": statistics.fmean(f1),
                    "sd": statistics.stdev(f1) if len(f1) > 1 else None, "seeds": [m["seed"] for m in members]})
    return out


def comparisons(rows: Sequence[dict[str, Any]], counts: dict[str, list], n_resamples: int = 1000,
                seed: int = 0, task: str = "ner") -> list[dict[str, Any]]:
    """Paired differences of the task's main metric for :data:`COMPARISONS`: per seed and over the seeds both sides
    have, at every rho. ``counts`` are each run's :func:`curation.scoring.main_metric_counts`.

    Runs without a rho (``lora-full``, ``zero-shot``, ``lora-ifd-auto``) pair with every rho of the other side;
    ``zero-shot`` (one greedy run) pairs with every seed.
    """
    from curation.scoring import paired_main_metric

    def cells(arm: str) -> dict[tuple, str]:
        return {(None if arm == "lora-ifd-auto" else r["ratio"], r["seed"]): r["run"] for r in rows if r["arm"] == arm}

    out = []
    for a, b in COMPARISONS:
        ca, cb = cells(a), cells(b)
        for ratio in sorted({r for r, _ in (*ca, *cb) if r is not None}, reverse=True) or [None]:
            sa = {s: k for (r, s), k in ca.items() if r in (ratio, None)}
            sb = {s: k for (r, s), k in cb.items() if r in (ratio, None)}
            if None in sb:  # zero-shot: one run for every seed
                pairs = [(s, sa[s], sb[None]) for s in sorted(sa, key=str)]
            else:
                pairs = [(s, sa[s], sb[s]) for s in sorted(sa.keys() & sb.keys(), key=str)]
            groups = [(f"seed {s}", [(s, x, y)]) for s, x, y in pairs]
            if len(pairs) > 1:
                groups.append(("seeds " + ",".join(str(s) for s, _, _ in pairs), pairs))
            for label, chosen in groups:
                side_a, side_b = [counts[x] for _, x, _ in chosen], [counts[y] for _, _, y in chosen]
                result = paired_main_metric(side_a, side_b, task, n_resamples, seed)
                out.append({"a": a, "b": b, "ratio": ratio, "seeds": label, **result})
    return out


def _rho(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:g}"


def _f(x: Any, scale: float = 100, digits: int = 2) -> str:
    return "-" if x is None else f"{scale * x:.{digits}f}"


def _count(n: int | None, gold: int | None) -> str:
    """``n`` with the gold count beside it: ``290 (gold 128)``.

    >>> _count(290, 128), _count(None, None)
    ('290 (gold 128)', '-')
    """
    return "-" if n is None else f"{n} (gold {gold})" if gold is not None else str(n)


def format_report(cfg: Any, rows: Sequence[dict[str, Any]], means: Sequence[dict[str, Any]],
                  diffs: Sequence[dict[str, Any]], missing: Sequence[str]) -> str:
    length = f"{cfg.max_steps} steps" if cfg.max_steps > 0 else f"{cfg.epochs:g} epochs"
    task = getattr(cfg, "task", "ner")
    k, label, second = metric_keys(task), LABELS[task], SECOND[task][1]
    what = {"ner": "Strict micro F1", "re": "Strict micro F1 of (head, relation, tail)",
            "ee": "Argument classification micro F1", "tc": "Macro F1 over the classes"}[task]
    interval = ("intervals: 95% percentile bootstrap over sentences" if task != "tc" else
                "paired intervals: 95% percentile bootstrap over sentences")
    lines = [f"# tune experiment: {Path(cfg.train).name} -> {Path(cfg.test).name}", "",
             f"Model `{cfg.model}`, IFD from `{cfg.scorer_model or cfg.model}` ({cfg.prompt_format} prompt); "
             f"training {length} per arm, "
             f"batch {cfg.batch_size}"
             f"{f' x {cfg.gradient_accumulation_steps} accumulated' if cfg.gradient_accumulation_steps > 1 else ''}"
             f", lr {cfg.lr:g}, LoRA r {cfg.lora_r}; negatives kept by the ratio arms: "
             f"{cfg.negative_ratio:g} ({cfg.negative_order}). Task {task}: {what} on the same "
             f"{rows[0]['records'] if rows else '?'} test sentences; {interval} ({cfg.bootstrap} resamples).", ""]
    if missing:
        lines += [f"**Not finished ({len(missing)}):** {', '.join(missing)}", ""]
    lines += ["## Seed means", "", f"| arm | rho | seeds | {label} mean | sd |", "|---|---:|---:|---:|---:|"]
    for m in means:
        lines.append(f"| {m['arm']} | {_rho(m['ratio'])} | {m['n']} | "
                     f"{_f(m['mean'])} | {_f(m['sd'])} |")
    lines += ["", f"## Paired differences (a - b, {label} points)", "",
              "| a | b | rho | seeds | difference | 95% CI | P(a <= b) |", "|---|---|---:|---|---:|---|---:|"]
    for d in diffs:
        ci = "-" if d["ci"] is None else f"{_f(d['ci'][0])} to {_f(d['ci'][1])}"
        lines.append(f"| {d['a']} | {d['b']} | {_rho(d['ratio'])} | {d['seeds']} | "
                     f"{_f(d['diff'])} | {ci} | {_f(d['p_le_0'], 1, 3)} |")
    lines += ["", "## Runs", "",
              f"| run | P | R | {label} (95% CI) | {second} | `[]` answers | train records (pos/neg) | steps | "
              "epochs | train s | tokens/s | s/epoch |", "|---|" + "---:|" * 11]
    for r in rows:
        ci = f" ({_f(r[k['lo']])}–{_f(r[k['hi']])})" if r[k["lo"]] is not None else ""
        train = (f"{r['train_records']} ({r['train_positives']}/{r['train_negatives']})" if r.get("train_records")
                 else "-")
        lines.append(f"| {r['run']} | {_f(r[k['p']])} | {_f(r[k['r']])} | {_f(r[k['f1']])}{ci} | "
                     f"{_f(r[k['second']])} | {_count(r.get('empty_answers'), r.get('gold_empty'))} | {train} | "
                     f"{r.get('steps') or '-'} | {_f(r.get('epochs'), 1)} | "
                     f"{_f(r.get('train_seconds'), 1, 0)} | {_f(r.get('tokens_per_s'), 1, 0)} | "
                     f"{_f(r.get('seconds_per_epoch'), 1, 0)} |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from curation.io import atomic_write

    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=120)


def plot_f1_vs_ratio(rows: Sequence[dict[str, Any]], means: Sequence[dict[str, Any]], path: Path,
                     key: str = "strict_f1", label: str = "strict F1") -> bool:
    ratio_arms = sorted({m["arm"] for m in means if m["ratio"] is not None and m["arm"] != "lora-ifd-auto"})
    if not ratio_arms:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for k, arm in enumerate(ratio_arms):
        pts = sorted((m["ratio"], 100 * m["mean"], 100 * (m["sd"] or 0)) for m in means if m["arm"] == arm)
        x, y, e = zip(*pts)
        ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=arm, color=f"C{k}")
        seeds = [(r["ratio"], 100 * r[key]) for r in rows if r["arm"] == arm]
        ax.scatter(*zip(*seeds), s=10, alpha=0.5, color=f"C{k}")
    for k, arm in enumerate(("lora-full", "zero-shot")):
        m = next((m for m in means if m["arm"] == arm), None)
        if m:
            ax.axhline(100 * m["mean"], linestyle="--" if k == 0 else ":", color="gray", label=arm)
    ax.set_xlabel("rho (share of positives kept)")
    ax.set_ylabel(f"{label} (seed mean ± sd)")
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return True


def plot_train_loss(rows: Sequence[dict[str, Any]], path: Path, ratio: float, seed: int) -> bool:
    curves = {r["arm"]: r["loss_curve"] for r in rows if r.get("loss_curve") and r["seed"] == seed
              and r["ratio"] in (ratio, None)}
    if not curves:
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for arm, points in curves.items():
        ax.plot(*zip(*points), label=arm, linewidth=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (completion tokens)")
    ax.set_title(f"rho {ratio:g}, seed {seed}", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, path)
    plt.close(fig)
    return True


def write_report(cfg: Any, runs: Sequence[Any]) -> dict[str, Any]:
    """Write the report files of the finished runs; return ``runs`` (rows), ``main_metric`` (run -> the task's main
    metric), ``metric``/``metric_label`` (its row key and its name in words) and ``missing``."""
    from curation.io import atomic_write, write_json

    task = getattr(cfg, "task", "ner")
    key = metric_keys(task)["f1"]
    out = Path(cfg.output_dir)
    rows, counts, missing = collect(cfg, runs)
    means = seed_means(rows, key)
    diffs = comparisons(rows, counts, cfg.bootstrap, task=task)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(task), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_write(out / "results.csv") as f:
        f.write(buffer.getvalue())
    with atomic_write(out / "report.md") as f:
        f.write(format_report(cfg, rows, means, diffs, missing))
    plot_f1_vs_ratio(rows, means, out / "f1_vs_ratio.png", key, LABELS[task])
    plot_train_loss(rows, out / "train_loss.png", cfg.ratios[0], cfg.seeds[0])
    slim = [{k: v for k, v in r.items() if k != "loss_curve"} for r in rows]
    write_json(out / "report.json", {"task": task, "metric": key, "runs": slim, "seed_means": means,
                                     "comparisons": diffs, "missing": missing})
    return {"runs": slim, "main_metric": {r["run"]: r[key] for r in rows}, "metric": key,
            "metric_label": LABELS[task], "missing": missing}
