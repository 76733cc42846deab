"""``bioselect mtl qa-study``: MTL vs QA-only vs classification-only over seeds on one question set.

    bioselect mtl qa-study --corpus ../shared/data/re/BioRED --model ~/.cache/offline-models/minilm-l6 \\
        --variants mtl,qa_only,cls_only --seeds 3 --max-train-questions 2000 --output runs/qa_study

Also ``python -m mtl_baselines.clinical_qa.study ...`` and ``--config configs/qa_study_biored.yaml``. The corpus is
read, split, capped and encoded once; every (variant, seed) run (:func:`mtl_baselines.clinical_qa.trainer.run_one`)
trains on the same questions. Writes OUTPUT/runs/VARIANT/sSEED/ (predictions, history, metrics.json),
OUTPUT/split/{train,dev,test}.jsonl (the questions, one ``Record.to_dict()`` per line), OUTPUT/summary.md (mean ±
sample standard deviation over seeds per variant, and every run), OUTPUT/results.json and OUTPUT/study.json (data
counts, wall time, provenance). Resumable: a run whose metrics.json exists is skipped, provided it was made with
the same settings; the summary is rewritten after every run, so a study cut short still leaves its partial table.
"""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curation.cli import parse_config, run
from curation.io import InputError
from mtl_baselines.clinical_qa.config import StudyConfig
from mtl_baselines.clinical_qa.train import format_scores, say

METRICS = (("exact_match", "EM"), ("f1", "F1"), ("accuracy", "cat. acc."), ("weighted_f1", "cat. wF1"))


def run_dir(out: Path, variant: str, seed: int) -> Path:
    return out / "runs" / variant / f"s{seed}"


def mean_sd(values: Sequence[float]) -> str:
    """``mean ± sd`` in percent (sample standard deviation; one value: no sd).

    >>> mean_sd([0.5, 0.6, 0.7]), mean_sd([0.25])
    ('60.00 ± 10.00', '25.00')
    """
    if not values:
        return "-"
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f} ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def summary_table(runs: Sequence[dict[str, Any]], variants: Sequence[str], split: str = "test") -> str:
    """Markdown table: one row per variant, mean ± sd over its finished seeds of each metric it has.

    >>> runs = [{"variant": "qa_only", "seed": 0, "seconds": 10, "test": {"exact_match": 0.5, "f1": 0.6}}]
    >>> print(summary_table(runs, ["qa_only", "cls_only"]))
    | variant | seeds | EM | F1 | cat. acc. | cat. wF1 | mean run time |
    |---|---|---|---|---|---|---|
    | qa_only | 1 | 50.00 | 60.00 | - | - | 10 s |
    | cls_only | 0 | - | - | - | - | - |
    """
    lines = ["| variant | seeds | " + " | ".join(h for _, h in METRICS) + " | mean run time |",
             "|---" * (len(METRICS) + 3) + "|"]
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        cells = [mean_sd([r[split][k] for r in rs if k in r[split]]) for k, _ in METRICS]
        secs = f"{statistics.fmean(r['seconds'] for r in rs):.0f} s" if rs else "-"
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + f" | {secs} |")
    return "\n".join(lines)


def runs_table(runs: Sequence[dict[str, Any]]) -> str:
    lines = ["| variant | seed | steps | dev EM | dev F1 | dev cat. wF1 | test EM | test F1 | test cat. acc. | "
             "test cat. wF1 | run time |", "|---" * 11 + "|"]

    def pct(s: dict, k: str) -> str:
        return f"{100 * s[k]:.2f}" if k in s else "-"

    for r in runs:
        d, t = r["dev"], r["test"]
        lines.append(f"| {r['variant']} | {r['seed']} | {r['steps']} | {pct(d, 'exact_match')} | {pct(d, 'f1')} | "
                     f"{pct(d, 'weighted_f1')} | {pct(t, 'exact_match')} | {pct(t, 'f1')} | {pct(t, 'accuracy')} | "
                     f"{pct(t, 'weighted_f1')} | {r['seconds']:.0f} s |")
    return "\n".join(lines)


def _write_summary(out: Path, cfg: StudyConfig, splits: Any, encoded: dict, runs: list[dict], plan: list,
                   wall: float) -> str:
    from curation.io import atomic_write, provenance, write_json

    enc = {k: v[2] for k, v in encoded.items()}
    md = (f"# Clinical QA study: {splits.dataset}\n\n"
          f"Encoder `{cfg.model}`; variants {', '.join(cfg.variant_list())}; {cfg.seeds} seed(s); "
          f"{len(runs)} of {len(plan)} runs finished. Split: {splits.how}. Questions train/dev/test "
          f"{enc['train']['questions']}/{enc['dev']['questions']}/{enc['test']['questions']} "
          f"(windows {enc['train']['windows']}/{enc['dev']['windows']}/{enc['test']['windows']}); categories "
          f"{', '.join(splits.categories) or 'none'}. This invocation's wall time: {wall / 60:.1f} min.\n\n"
          f"## Test (mean ± sd over seeds, %)\n\n{summary_table(runs, cfg.variant_list())}\n\n"
          f"## Dev (mean ± sd over seeds, %)\n\n{summary_table(runs, cfg.variant_list(), 'dev')}\n\n"
          f"## Every run\n\n{runs_table(runs)}\n")
    with atomic_write(out / "summary.md") as f:
        f.write(md)
    write_json(out / "results.json", [{k: r[k] for k in ("variant", "seed", "steps", "seconds", "dev", "test",
                                                         "shared_layers", "encoder_layers")} for r in runs])
    write_json(out / "study.json", {"plan": plan, "finished": len(runs), "data": splits.counts, "encoding": enc,
                                    "categories": splits.categories, "split": splits.how,
                                    "wall_seconds": round(wall, 1),
                                    "run_seconds": round(sum(r["seconds"] for r in runs), 1),
                                    "provenance": provenance(cfg, splits.sources)})
    return md


def _main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    cfg, _ = parse_config(StudyConfig, argv, prog="bioselect mtl qa-study", description=__doc__.split("\n\n")[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    from curation.io import write_jsonl
    from mtl_baselines.clinical_qa.train import load_checked
    from mtl_baselines.clinical_qa.trainer import run_one, run_settings

    out = Path(cfg.output)
    plan = cfg.plan()
    settings = json.loads(json.dumps(run_settings(cfg)))
    for variant, seed in plan:  # every check before the first run trains
        metrics_file = run_dir(out, variant, seed) / "metrics.json"
        if metrics_file.is_file():
            done = json.loads(metrics_file.read_text(encoding="utf-8"))
            changed = sorted(k for k in settings if done.get("settings", {}).get(k) != settings[k])
            if changed:
                raise InputError(metrics_file, f"was made with other settings ({', '.join(changed)}); resume with "
                                 "the same settings or give a new --output")
    splits, tokenizer, encoded = load_checked(cfg, cfg.variant_list())
    for name in ("train", "dev", "test"):
        write_jsonl(out / "split" / f"{name}.jsonl", (r.to_dict() for r in encoded[name][1]))
    n_done = sum(run_dir(out, v, s).joinpath("metrics.json").is_file() for v, s in plan)
    say(f"{splits.dataset}: {len(plan)} runs; {n_done} finished, {len(plan) - n_done} to run")
    runs = []
    for variant, seed in plan:
        d = run_dir(out, variant, seed)
        if (d / "metrics.json").is_file():
            m = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
            say(f"{variant} seed {seed}: finished earlier; test {format_scores(m, 'test')}")
        else:
            m = run_one(cfg, splits, variant, seed, d, tokenizer, encoded)
            say(f"{variant} seed {seed}: {m['steps']} steps, {m['seconds']:.0f} s; test {format_scores(m, 'test')}")
        runs.append(m)
        md = _write_summary(out, cfg, splits, encoded, runs, plan, time.perf_counter() - start)
    say(md)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
