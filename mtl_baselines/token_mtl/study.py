"""``bioselect mtl study``: single-task vs multi-task token models over a ladder of training fractions and seeds.

    bioselect mtl study --corpus ../shared/data/ner/NCBI-disease ../shared/data/ner/PK-relations \\
        --model ~/.cache/offline-models/minilm-l6 --output runs/mtl_study \\
        --fractions 1,0.75,0.5,0.25,0.1,0.075,0.05,0.025 --seeds 3 \\
        --variants single,heuristic,uw_sym,uw_asym,uw_class --ablation uw_sym

Also ``python -m mtl_baselines.token_mtl.study ...`` and ``--config configs/mtl_study_real.yaml``. For every corpus,
variant, fraction and seed one run (:func:`mtl_baselines.token_mtl.trainer.run_one`) trains on the foundation's
class-balanced nested sample (:mod:`curation.sample`, sampling seed = run seed; the train/dev/test split is fixed)
and is scored on the full dev and test splits. ``--ablation VARIANT`` adds that variant with each auxiliary head
dropped in turn (``VARIANT-no_HEAD``) at ``--ablation-fractions``.

Writes OUTPUT/CORPUS/runs/VARIANT/fFRACTION/sSEED/ (span files, logs, metrics.json), OUTPUT/CORPUS/split/ (the
split's records, for ``bioselect evaluate``), the per-corpus tables and plots (:mod:`.report`), and OUTPUT/results.csv,
OUTPUT/summary.md and OUTPUT/study.json (data efficiency, wall time, provenance) over all corpora. Resumable: a run
whose metrics.json exists is skipped, provided it was made with the same training settings. Several processes (one
per GPU, or per core with ``OMP_NUM_THREADS=1``) may work on one output folder at once: each run trains under an
exclusive lock (``RUN/.lock``, released by the kernel if its worker dies) and a worker skips runs another one holds.
Each worker's tables cover what had finished when it ended; ``--report-only`` trains nothing and writes the combined
tables from every finished run (missing runs are listed in summary.md and study.json). Everything that can be
checked (options, tokenizer against encoder, corpus labels, every sample) is checked before the first run trains.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from curation.cli import parse_config, run
from curation.io import InputError, run_lock
from mtl_baselines.token_mtl.config import StudyConfig


def run_dir(corpus_dir: Path, variant: str, fraction: float, seed: int) -> Path:
    return corpus_dir / "runs" / variant / f"f{fraction:g}" / f"s{seed}"


def finished(directory: Path, settings: dict, split: str) -> dict | None:
    """A finished run's metrics (None when it has none); :class:`InputError` when it was made with other settings."""
    metrics_file = directory / "metrics.json"
    if not metrics_file.is_file():
        return None
    done = json.loads(metrics_file.read_text(encoding="utf-8"))
    changed = sorted(k for k in settings if done.get("settings", {}).get(k) != settings[k])
    if changed or done.get("split") != split:
        what = ", ".join(changed) or "split"
        raise InputError(metrics_file, f"was made with other settings ({what}); resume with the same settings or give "
                         "a new --output")
    return done


def _main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    cfg, _ = parse_config(StudyConfig, argv, prog="bioselect mtl study", description=__doc__.split("\n\n")[0])
    from curation.io import atomic_write, provenance, write_json, write_jsonl
    from curation.sample import sampling_order
    from mtl_baselines.common import load_splits, load_tokenizer
    from mtl_baselines.token_mtl.data import check_fraction, check_splits
    from mtl_baselines.token_mtl.report import RUN_COLUMNS, overview_markdown, write_csv, write_report
    from mtl_baselines.token_mtl.trainer import run_one, run_settings

    out = Path(cfg.output)
    plan = cfg.plan()
    settings = json.loads(json.dumps(run_settings(cfg)))
    tokenizer = load_tokenizer(cfg.model, cfg.tokenizer)
    corpora = []
    for path in cfg.corpus:  # every check before the first run trains
        splits = load_splits(path, cfg.split_ratios(), cfg.split_seed)
        if any(c[0].dataset == splits.dataset for c in corpora):
            raise InputError("--corpus", f"two corpora are named {splits.dataset!r} (their folders' names)")
        types = check_splits(splits)
        orders = {s: sampling_order(splits.train, s) for s in range(cfg.seeds)}
        for variant, fraction, seed in plan:
            check_fraction(splits.train, fraction, seed, cfg.allow_missing_types, orders[seed])
            finished(run_dir(out / splits.dataset, variant, fraction, seed), settings, splits.how)
        corpora.append((splits, types, orders))
    n_done = sum(run_dir(out / s.dataset, *r).joinpath("metrics.json").is_file() for s, _, _ in corpora for r in plan)
    print(f"{len(corpora)} corpora x {len(plan)} runs; {n_done} finished, {len(corpora) * len(plan) - n_done} to run")
    all_rows, summaries, efficiency, missing = [], [], {}, []
    for splits, types, orders in corpora:
        corpus_dir = out / splits.dataset
        for name in ("train", "dev", "test"):
            write_jsonl(corpus_dir / "split" / f"{name}.jsonl", (r.to_dict() for r in getattr(splits, name)))
        metrics, dirs = [], []
        for variant, fraction, seed in plan:
            d = run_dir(corpus_dir, variant, fraction, seed)
            label = f"{splits.dataset} {variant} fraction {fraction:g} seed {seed}"
            m = finished(d, settings, splits.how)
            if m is not None:
                print(f"{label}: finished earlier, test F1 {100 * m['test']['f1']:.2f}")
            elif cfg.report_only:
                missing.append(label)
                continue
            else:
                with run_lock(d) as free:
                    m = finished(d, settings, splits.how)  # another worker may have finished it meanwhile
                    if m is None and not free:
                        print(f"{label}: running in another process, skipped")
                        missing.append(label)
                        continue
                    if m is None:
                        m = run_one(cfg, splits, types, variant, fraction, seed, d, tokenizer, orders[seed])
                        print(f"{label}: {m['n_train']} sentences, {m['steps']} steps, {m['seconds']:.0f} s, dev F1 "
                              f"{100 * m['dev']['f1']:.2f}, test F1 {100 * m['test']['f1']:.2f}")
            metrics.append(m)
            dirs.append(d)
        if not metrics:
            continue
        report = write_report(corpus_dir, metrics, dirs)
        all_rows += report["rows"]
        summaries.append(report["markdown"])
        efficiency[splits.dataset] = report["data_efficiency"]
    wall = time.perf_counter() - start
    write_csv(out / "results.csv", all_rows, RUN_COLUMNS)
    header = (f"# Token MTL study\n\nEncoder `{cfg.model}`; variants {', '.join(cfg.variant_list())}; fractions "
              f"{cfg.fractions}; {cfg.seeds} seed(s); strict micro F1 (%) from the foundation scorer. This "
              f"invocation's wall time: {wall / 60:.1f} min.\n\n")
    if missing:
        header += (f"**{len(missing)} of {len(corpora) * len(plan)} planned runs not finished yet** (the `seeds` "
                   f"column counts the finished ones): {'; '.join(missing)}.\n\n")
    if all_rows:
        header += ("Test F1 (%), seed mean ± sd, strict micro (per-corpus details below):\n\n"
                   + overview_markdown(all_rows) + "\n\n")
    markdown = header + "\n".join(summaries)
    with atomic_write(out / "summary.md") as f:
        f.write(markdown)
    write_json(out / "study.json", {"plan": plan, "corpora": {s.dataset: {"split": s.how, "types": t,
                                                                          "sources": s.sources}
                                                              for s, t, _ in corpora},
                                    "data_efficiency": efficiency, "missing_runs": missing,
                                    "wall_seconds": round(wall, 1),
                                    "run_seconds": round(sum(r["seconds"] for r in all_rows), 1),
                                    "provenance": provenance(cfg, [p for s, _, _ in corpora for p in s.sources])})
    print(markdown, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
