"""What whole-answer and content-token IFD rank highest on NER answers, and what Hybrid Superfiltering keeps of each.

    python benchmarks/ifd_scope_analysis.py --records runs/ifd_content/ncbi_sub.jsonl \\
        --scores runs/ifd_content/ncbi.answer.ifd.jsonl runs/ifd_content/ncbi.content.ifd.jsonl

For each scores file (``bioselect curate ifd``, each naming its token scope) over the positives of ``--records``:
Spearman's rho (average ranks for ties) of IFD with the number of mentions in the answer and with the answer's length
in tokens (``n_response_tokens``), and what :func:`curation.filter.select` keeps at ``--ratio`` (the top share of
all positives among those with IFD <= ``--max-ifd``): the share of single-mention positives kept, and the share of
single-mention answers among the kept ones. With two files it also gives the rank correlation of the two IFDs and
the overlap of the kept sets. Prints a table; ``--output`` also writes the numbers as JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from curation.filter import KEPT, select
from curation.ifd_scoring import is_negative


def average_ranks(values) -> np.ndarray:
    """Ranks from 1, ties sharing their average rank.

    >>> average_ranks([10, 30, 20, 20]).tolist()
    [1.0, 4.0, 2.5, 2.5]
    """
    x = np.asarray(values, dtype=float)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(1, len(x) + 1)
    for value in np.unique(x):
        tied = x == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def spearman(a, b) -> float:
    """Spearman's rho: Pearson's correlation of the average ranks.

    >>> round(spearman([1, 2, 3, 4], [10, 20, 40, 30]), 3), spearman([1, 2, 3], [3, 2, 1])
    (0.8, -1.0)
    """
    return float(np.corrcoef(average_ranks(a), average_ranks(b))[0, 1])


def analyse(records: list[dict], lines: list[dict], ratio: float, max_ifd: float) -> dict:
    """The numbers of one scores file over the positives of ``records``."""
    scores = {str(line["id"]): line["ifd"] for line in lines}
    length = {str(line["id"]): line["n_response_tokens"] for line in lines}
    losses = {str(line["id"]): (line["loss_cond"], line["loss_uncond"]) for line in lines}
    positives = [r for r in records if not is_negative(r["output"])]
    names = {str(r["id"]): [e["name"] for e in json.loads(r["output"])] for r in positives}
    mentions = {rid: len(n) for rid, n in names.items()}
    scored = [rid for rid in mentions if scores.get(rid) is not None]
    distinct = [rid for rid in scored if len(set(names[rid])) == len(names[rid])]
    fate = dict(zip((str(r["id"]) for r in records), select(records, scores, ratio=ratio, max_ifd=max_ifd)))
    kept = [rid for rid in mentions if fate[rid] == KEPT]
    single = [rid for rid in mentions if mentions[rid] == 1]
    by_mentions = {}
    for name, low, high in (("1", 1, 1), ("2", 2, 2), ("3+", 3, 10**9)):
        members = [r for r in scored if low <= mentions[r] <= high]
        by_mentions[name] = {
            "n": len(members), "kept": sum(fate[r] == KEPT for r in members),
            "mean_loss_cond": float(np.mean([losses[r][0] for r in members])) if members else float("nan"),
            "mean_loss_uncond": float(np.mean([losses[r][1] for r in members])) if members else float("nan"),
            "median_ifd": float(np.median([scores[r] for r in members])) if members else float("nan")}
    return {
        "tokens": {line.get("tokens", "answer") for line in lines}.pop(),
        "positives": len(positives), "scored": len(scored), "kept": len(kept),
        "above_max_ifd": sum(fate[rid] == "ifd_above_max" for rid in mentions),
        "rho_mentions": spearman([scores[r] for r in scored], [mentions[r] for r in scored]),
        "rho_length": spearman([scores[r] for r in scored], [length[r] for r in scored]),
        "distinct": len(distinct),
        "rho_mentions_distinct": spearman([scores[r] for r in distinct], [mentions[r] for r in distinct]),
        "single_mention": len(single),
        "single_kept": sum(fate[rid] == KEPT for rid in single),
        "single_share_of_kept": sum(mentions[rid] == 1 for rid in kept) / len(kept) if kept else float("nan"),
        "mentions_per_kept": float(np.mean([mentions[r] for r in kept])) if kept else float("nan"),
        "median_ifd": float(np.median([scores[r] for r in scored])),
        "by_mentions": by_mentions, "kept_ids": kept, "scores": {r: scores[r] for r in scored},
    }


def read_jsonl(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", required=True, help="the instruction JSONL that was scored")
    p.add_argument("--scores", required=True, nargs="+", help="scores JSONL of `bioselect curate ifd`, one per scope")
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--max-ifd", type=float, default=1.0)
    p.add_argument("--output", help="write the numbers as JSON here")
    args = p.parse_args()

    records = read_jsonl(args.records)
    results = [analyse(records, read_jsonl(path), args.ratio, args.max_ifd) for path in args.scores]
    positives = results[0]["positives"]
    print(f"{args.records}: {len(records)} records, {positives} positives, {results[0]['single_mention']} of them "
          f"with one mention ({100 * results[0]['single_mention'] / positives:.1f}%)")
    print("| tokens | scored | rho(IFD, mentions) | rho(IFD, answer tokens) | median IFD | kept | IFD > max | "
          "single-mention kept | single-mention share of kept | mentions per kept answer |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['tokens']} | {r['scored']} | {r['rho_mentions']:.3f} | {r['rho_length']:.3f} | "
              f"{r['median_ifd']:.4f} | {r['kept']} | {r['above_max_ifd']} | {r['single_kept']} of "
              f"{r['single_mention']} ({100 * r['single_kept'] / r['single_mention']:.1f}%) | "
              f"{100 * r['single_share_of_kept']:.1f}% | {r['mentions_per_kept']:.2f} |")
    print("\n| tokens | mentions | answers | mean s(y\\|x) | mean s(y) | median IFD | kept |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in results:
        for name, g in r["by_mentions"].items():
            print(f"| {r['tokens']} | {name} | {g['n']} | {g['mean_loss_cond']:.3f} | {g['mean_loss_uncond']:.3f} | "
                  f"{g['median_ifd']:.4f} | {g['kept']} ({100 * g['kept'] / max(g['n'], 1):.1f}%) |")
    for r in results:
        print(f"{r['tokens']}: rho(IFD, mentions) = {r['rho_mentions_distinct']:.3f} over the {r['distinct']} answers "
              "that name no mention twice")
    if len(results) == 2:
        a, b = results
        both = sorted(set(a["scores"]) & set(b["scores"]))
        rho = spearman([a["scores"][r] for r in both], [b["scores"][r] for r in both])
        shared = len(set(a["kept_ids"]) & set(b["kept_ids"]))
        print(f"rho({a['tokens']} IFD, {b['tokens']} IFD) = {rho:.3f} over {len(both)} positives; kept by both: "
              f"{shared} ({100 * shared / max(len(a['kept_ids']), 1):.1f}% of {a['tokens']}'s kept)")
    if args.output:
        out = [{k: v for k, v in r.items() if k not in ("kept_ids", "scores")} for r in results]
        Path(args.output).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
