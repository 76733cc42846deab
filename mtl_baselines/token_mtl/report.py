"""Tables and plots of a token MTL study, built from the finished runs' ``metrics.json`` and logs.

    write_report("runs/mtl_study/PK-relations", metrics, run_dirs)   # CSVs, PNGs and summary.md in that folder

Per corpus: ``results.csv`` (one row per run: dev and test P/R/F1), ``per_class.csv``, ``grad_cosine.csv``,
``f1_vs_fraction.png`` (seed mean, shaded min-max over seeds, the data-efficiency target dashed),
``per_class_f1.png``, ``log_vars_<variant>.png`` (learned log-variance per task over training steps, one line per
fraction, seed mean), ``grad_cosine.png`` and ``summary.md``. Matplotlib is imported only here.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curation.io import atomic_write
from mtl_baselines.token_mtl.analysis import ablation_deltas, aggregate, data_efficiency
from mtl_baselines.token_mtl.losses import UW_VARIANTS

RUN_COLUMNS = ("corpus", "variant", "fraction", "seed", "n_train", "train_mentions", "dev_precision", "dev_recall",
               "dev_f1", "test_precision", "test_recall", "test_f1", "test_relaxed_f1", "steps", "best_step",
               "seconds", "missing_types", "ner_loss_end")
CLASS_COLUMNS = ("corpus", "variant", "fraction", "seed", "split", "type", "precision", "recall", "f1", "support")


def run_row(m: Mapping[str, Any]) -> dict[str, Any]:
    """One CSV row of a run's metrics."""
    row = {k: m[k] for k in ("corpus", "variant", "fraction", "seed", "n_train", "train_mentions", "steps",
                             "best_step", "seconds")}
    for split in ("dev", "test"):
        for k in ("precision", "recall", "f1"):
            row[f"{split}_{k}"] = m[split][k]
    row["test_relaxed_f1"] = m["test"]["relaxed_f1"]
    row["missing_types"] = "|".join(m["missing_types"])
    return row


def ner_loss_end(history: Sequence[Mapping[str, Any]], share: float = 0.1) -> float | None:
    """Mean raw NER training loss over the last ``share`` of the steps (at least one): how far the primary task has
    been fitted, comparable across loss variants because it is taken before any weighting.

    >>> ner_loss_end([{"loss_ner": x} for x in (2.0, 1.0, 0.5, 0.25)], share=0.5)
    0.375
    """
    if not history:
        return None
    tail = history[-max(1, math.ceil(share * len(history))):]
    return sum(r["loss_ner"] for r in tail) / len(tail)


def class_rows(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per-type rows of a run (every training label type, also when it got no prediction)."""
    out = []
    types = sorted({lab[2:] for lab in m["labels"] if lab != "O"})
    for split in ("dev", "test"):
        per_type = m[split]["per_type"]
        for t in types:
            s = per_type.get(t, {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0})
            out.append({"corpus": m["corpus"], "variant": m["variant"], "fraction": m["fraction"], "seed": m["seed"],
                        "split": split, "type": t, **{k: s[k] for k in ("precision", "recall", "f1", "support")}})
    return out


def cosine_rows(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"corpus": m["corpus"], "variant": m["variant"], "fraction": m["fraction"], "seed": m["seed"],
             "pair": pair, "cosine": c} for pair, c in m["grad_cosine_mean"].items()]


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    with atomic_write(path) as f:
        w = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in columns})


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _variant_order(variants) -> list[str]:
    base = ["single", "heuristic", "uw_sym", "uw_asym", "uw_class"]
    return sorted(set(variants), key=lambda v: (base.index(v.split("-")[0]) if v.split("-")[0] in base else 9, v))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_f1_vs_fraction(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "",
                        target: float | None = None) -> None:
    """Dev and test F1 against the training fraction: seed mean per variant, min-max over seeds shaded."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, split in zip(axes, ("dev", "test"), strict=True):
        for variant in _variant_order(r["variant"] for r in rows):
            agg = sorted((a for a in aggregate(rows, f"{split}_f1", ("variant", "fraction"))
                          if a["variant"] == variant), key=lambda a: a["fraction"])
            x = [a["fraction"] for a in agg]
            ax.plot(x, [100 * a["mean"] for a in agg], marker="o", label=variant)
            ax.fill_between(x, [100 * a["min"] for a in agg], [100 * a["max"] for a in agg], alpha=0.2)
        if target is not None and split == "test":
            ax.axhline(100 * target, color="grey", linestyle="--", linewidth=1, label="single full-data F1 - 1")
        ax.set_xscale("log")
        ax.set_xlabel("training fraction")
        ax.set_title(f"{split} F1 (strict, micro)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("F1 (%)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_per_class(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """Test F1 per entity type against the training fraction (seed mean per variant)."""
    plt = _plt()
    test = [r for r in rows if r["split"] == "test"]
    types = sorted({r["type"] for r in test})
    fig, axes = plt.subplots(1, len(types), figsize=(4 * len(types), 3.6), sharey=True, squeeze=False)
    for ax, t in zip(axes[0], types, strict=True):
        sub = [r for r in test if r["type"] == t]
        for variant in _variant_order(r["variant"] for r in sub):
            agg = sorted((a for a in aggregate(sub, "f1", ("variant", "fraction")) if a["variant"] == variant),
                         key=lambda a: a["fraction"])
            ax.plot([a["fraction"] for a in agg], [100 * a["mean"] for a in agg], marker="o", label=variant)
        ax.set_xscale("log")
        ax.set_title(t)
        ax.set_xlabel("training fraction")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test F1 (%)")
    axes[0][-1].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_log_vars(histories: Mapping[tuple[float, int], Sequence[Mapping[str, Any]]], path: str | Path,
                  title: str = "") -> None:
    """One panel per task: the learned log-variance ``s`` over steps, one line per fraction (mean over seeds)."""
    plt = _plt()
    names = list(dict.fromkeys(k for h in histories.values() for row in h[:1] for k in row
                               if k.startswith("log_var_")))
    if not names:
        return
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.4), sharey=True, squeeze=False)
    by_fraction: dict[float, list] = defaultdict(list)
    for (fraction, _seed), h in histories.items():
        by_fraction[fraction].append(h)
    for ax, name in zip(axes[0], names, strict=True):
        for fraction in sorted(by_fraction, reverse=True):
            runs = by_fraction[fraction]
            n = min(len(h) for h in runs)
            ys = [sum(h[i][name] for h in runs) / len(runs) for i in range(n)]
            ax.plot(range(1, n + 1), ys, label=f"{fraction:g}")
        ax.set_title(name.removeprefix("log_var_"))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("s = log sigma^2")
    axes[0][-1].legend(title="fraction", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_grad_cosine(rows: Sequence[Mapping[str, Any]], path: str | Path, title: str = "") -> None:
    """Mean pairwise cosine of task gradients on the encoder, per variant, at each fraction (seed mean)."""
    plt = _plt()
    if not rows:
        return
    pairs = list(dict.fromkeys(r["pair"] for r in rows))
    fractions = sorted({r["fraction"] for r in rows}, reverse=True)
    variants = _variant_order(r["variant"] for r in rows)
    fig, axes = plt.subplots(1, len(fractions), figsize=(max(4.0, 0.9 * len(pairs) * len(variants) / 2) *
                                                         len(fractions) / 1.5, 3.6), sharey=True, squeeze=False)
    width = 0.8 / len(variants)
    for ax, fraction in zip(axes[0], fractions, strict=True):
        for k, variant in enumerate(variants):
            sub = [r for r in rows if r["fraction"] == fraction and r["variant"] == variant]
            means = {a["pair"]: a["mean"] for a in aggregate(sub, "cosine", ("pair",))}
            ax.bar([i + k * width for i in range(len(pairs))], [means.get(p, 0.0) for p in pairs], width,
                   label=variant)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(pairs))], pairs, rotation=45, ha="right", fontsize=7)
        ax.axhline(0, color="black", linewidth=0.6)
        ax.set_title(f"fraction {fraction:g}")
    axes[0][0].set_ylabel("cosine of task gradients")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def overview_markdown(rows: Sequence[Mapping[str, Any]]) -> str:
    """One table over all corpora: a row per (corpus, fraction), a column per variant with the seed-mean test F1
    (%) ± its sample sd (none for one seed) and, when fewer than the most seeds any cell has, the number of seeds.

    >>> print(overview_markdown([{"corpus": "c", "variant": v, "fraction": 1.0, "seed": s, "test_f1": x}
    ...                          for v, s, x in [("single", 0, 0.5), ("single", 1, 0.7), ("uw_sym", 0, 0.4)]]))
    | corpus | fraction | single | uw_sym |
    |---|---|---|---|
    | c | 1 | 60.00 ± 14.14 | 40.00 (1 seed) |
    """
    cells = {(a["corpus"], a["fraction"], a["variant"]): a for a in aggregate(rows, "test_f1")}
    variants = _variant_order(r["variant"] for r in rows)
    most = max((a["n"] for a in cells.values()), default=0)
    lines = ["| corpus | fraction | " + " | ".join(variants) + " |", "|---|---|" + "---|" * len(variants)]
    for corpus, fraction in sorted({(c, f) for c, f, _ in cells}, key=lambda k: (k[0], -k[1])):
        out = []
        for v in variants:
            a = cells.get((corpus, fraction, v))
            if a is None:
                out.append("-")
            elif a["n"] == 1:
                out.append(f"{_pct(a['mean'])} (1 seed)" if most > 1 else _pct(a["mean"]))
            else:
                out.append(f"{_pct(a['mean'])} ± {_pct(a['sd'])}" + (f" ({a['n']} seeds)" if a["n"] < most else ""))
        lines.append(f"| {corpus} | {fraction:g} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def summary_markdown(corpus: str, how: str, rows: Sequence[Mapping[str, Any]], per_class: Sequence[Mapping[str, Any]],
                     cosines: Sequence[Mapping[str, Any]], log_vars: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown report of one corpus (all scores in %, strict micro F1 from the foundation scorer)."""
    lines = [f"## {corpus}", "", f"Split: {how}.", ""]
    lines += ["| variant | fraction | train sents | seeds | dev F1 | test P | test R | test F1 (mean ± sd) | "
              "test F1 min–max | NER train loss, last 10% |", "|---|---|---|---|---|---|---|---|---|---|"]
    stats = {m: {(a["variant"], a["fraction"]): a for a in aggregate(rows, m, ("variant", "fraction"))}
             for m in ("dev_f1", "test_precision", "test_recall", "test_f1")}
    loss_end = {(a["variant"], a["fraction"]): a["mean"] for a in aggregate(
        [r for r in rows if r.get("ner_loss_end") is not None], "ner_loss_end", ("variant", "fraction"))}
    n_train = {(r["variant"], r["fraction"]): r["n_train"] for r in rows}
    for variant in _variant_order(r["variant"] for r in rows):
        for key in sorted((k for k in stats["test_f1"] if k[0] == variant), key=lambda k: -k[1]):
            t = stats["test_f1"][key]
            lines.append(f"| {variant} | {key[1]:g} | {n_train[key]} | {t['n']} | {_pct(stats['dev_f1'][key]['mean'])}"
                         f" | {_pct(stats['test_precision'][key]['mean'])} | {_pct(stats['test_recall'][key]['mean'])}"
                         f" | {_pct(t['mean'])} ± {_pct(t['sd'])} | {_pct(t['min'])}–{_pct(t['max'])} | "
                         f"{'-' if key not in loss_end else f'{loss_end[key]:.3f}'} |")
    eff = data_efficiency(rows)
    if eff:
        ref = max(r["fraction"] for r in rows if r["variant"] == "single")
        target = [a["mean"] for a in aggregate(rows, "test_f1", ("variant", "fraction"))
                  if a["variant"] == "single" and a["fraction"] == ref][0] - 0.01
        lines += ["", f"Data efficiency: smallest fraction whose seed-mean test F1 reaches the single-task F1 at "
                  f"fraction {ref:g} minus 1 point ({_pct(target)}):", "", "| variant | fraction |", "|---|---|"]
        lines += [f"| {v} | {'not reached' if f is None else f'{f:g}'} |" for v, f in eff.items()]
    types = sorted({r["type"] for r in per_class})
    if types:
        test = [r for r in per_class if r["split"] == "test"]
        means = {(a["variant"], a["fraction"], a["type"]): a["mean"]
                 for a in aggregate(test, "f1", ("variant", "fraction", "type"))}
        lines += ["", "Per-class test F1 (seed mean):", "", "| variant | fraction | " + " | ".join(types) + " |",
                  "|---|---|" + "---|" * len(types)]
        for variant, fraction in sorted({(v, f) for v, f, _ in means}, key=lambda k: (_variant_order(
                [r["variant"] for r in rows]).index(k[0]), -k[1])):
            lines.append(f"| {variant} | {fraction:g} | " +
                         " | ".join(_pct(means.get((variant, fraction, t))) for t in types) + " |")
    abl = ablation_deltas(rows)
    if abl:
        lines += ["", "Auxiliary-task ablation (test F1, seed mean; delta = ablated - full):", "",
                  "| variant | fraction | test F1 | full variant F1 | delta |", "|---|---|---|---|---|"]
        lines += [f"| {a['variant']} | {a['fraction']:g} | {_pct(a['mean'])} | {_pct(a['base_mean'])} | "
                  f"{100 * a['delta']:+.2f} |" for a in abl]
    if cosines:
        pairs = list(dict.fromkeys(r["pair"] for r in cosines))
        means = {(a["variant"], a["fraction"], a["pair"]): a["mean"]
                 for a in aggregate(cosines, "cosine", ("variant", "fraction", "pair"))}
        lines += ["", "Pairwise cosine of the raw task-loss gradients on the shared encoder (mean over logged steps "
                  "and seeds):", "", "| variant | fraction | " + " | ".join(pairs) + " |",
                  "|---|---|" + "---|" * len(pairs)]
        for variant, fraction in sorted({(v, f) for v, f, _ in means}, key=lambda k: (k[0], -k[1])):
            lines.append(f"| {variant} | {fraction:g} | " + " | ".join(
                "-" if (variant, fraction, p) not in means else f"{means[(variant, fraction, p)]:+.3f}"
                for p in pairs) + " |")
    if log_vars:
        names = list(dict.fromkeys(r["name"] for r in log_vars))
        means = {(a["variant"], a["fraction"], a["name"]): a["mean"]
                 for a in aggregate(log_vars, "value", ("variant", "fraction", "name"))}
        lines += ["", "Final learned log-variances s = log sigma^2 (seed mean; loss weight exp(-s)):", "",
                  "| variant | fraction | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
        for variant, fraction in sorted({(v, f) for v, f, _ in means}, key=lambda k: (k[0], -k[1])):
            lines.append(f"| {variant} | {fraction:g} | " + " | ".join(
                "-" if (variant, fraction, n) not in means else f"{means[(variant, fraction, n)]:+.3f}"
                for n in names) + " |")
    lines += ["", f"Time of these runs (training and evaluation): {sum(r['seconds'] for r in rows) / 60:.1f} min "
              f"({len(rows)} runs).", ""]
    return "\n".join(lines)


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    with open(Path(run_dir) / "history.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_report(out_dir: str | Path, metrics: Sequence[Mapping[str, Any]], run_dirs: Sequence[str | Path]
                 ) -> dict[str, Any]:
    """Write one corpus's CSVs, plots and ``summary.md``; return the rows and the Markdown."""
    out = Path(out_dir)
    corpus = metrics[0]["corpus"]
    histories = [read_history(d) for d in run_dirs]  # read once: the NER-loss column and the log-variance plots
    rows = [run_row(m) | {"ner_loss_end": ner_loss_end(h)} for m, h in zip(metrics, histories, strict=True)]
    per_class = [r for m in metrics for r in class_rows(m)]
    cosines = [r for m in metrics for r in cosine_rows(m)]
    log_vars = [{"variant": m["variant"], "fraction": m["fraction"], "seed": m["seed"], "name": n, "value": v}
                for m in metrics for n, v in m["log_vars_final"].items()]
    write_csv(out / "results.csv", rows, RUN_COLUMNS)
    write_csv(out / "per_class.csv", per_class, CLASS_COLUMNS)
    write_csv(out / "grad_cosine.csv", cosines, ("corpus", "variant", "fraction", "seed", "pair", "cosine"))
    eff = data_efficiency(rows)
    target = None
    if eff:
        ref = max(r["fraction"] for r in rows if r["variant"] == "single")
        target = [a["mean"] for a in aggregate(rows, "test_f1", ("variant", "fraction"))
                  if a["variant"] == "single" and a["fraction"] == ref][0] - 0.01
    plot_f1_vs_fraction(rows, out / "f1_vs_fraction.png", corpus, target)
    plot_per_class(per_class, out / "per_class_f1.png", f"{corpus}: test F1 per class")
    for variant in _variant_order(m["variant"] for m in metrics):
        if variant.split("-")[0] not in UW_VARIANTS:
            continue
        by_run = {(m["fraction"], m["seed"]): h for m, h in zip(metrics, histories, strict=True)
                  if m["variant"] == variant}
        plot_log_vars(by_run, out / f"log_vars_{variant}.png", f"{corpus}: {variant} learned log-variances")
    plot_grad_cosine(cosines, out / "grad_cosine.png", f"{corpus}: task-gradient cosine on the encoder")
    markdown = summary_markdown(corpus, metrics[0]["split"], rows, per_class, cosines, log_vars)
    with atomic_write(out / "summary.md") as f:
        f.write(markdown)
    return {"rows": rows, "per_class": per_class, "grad_cosine": cosines, "data_efficiency": eff,
            "markdown": markdown}
