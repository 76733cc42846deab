"""Dataset-combination search on synthetic score surfaces: evaluations needed to find the true best mix and to reach
the top 1%, for the neural search (:mod:`curation.combos`), random search and greedy forward selection.

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python benchmarks/combo_search.py [--k 11] [--seeds 50] [--cap 150]

A surface over ``k`` candidate datasets (``2**k`` mixes; the target is always trained on) is the sum of main
effects ``N(0, 1)`` per dataset, pairwise interactions ``N(0, 0.5)`` on a random 30% of the pairs, ``k`` random
third-order interactions ``N(0, 0.5)``, and a dilution term ``-0.05 |mix|^2`` (more datasets share a fixed training
budget); an evaluation returns the true value plus Gaussian noise of ``--noise`` (default 0.1) times the surface's
standard deviation. Each seed draws a new surface and new noise, the same for every method. The true best mix and
the top 1% (the ``ceil(0.01 * 2**k)`` best true values) are known from the noiseless surface; a method "reaches"
them at the first evaluation of such a mix. Search methods run up to ``--cap`` evaluations (their stopping rule off,
so that the count is defined); where a method does not reach a mark within its run, that seed counts as not
reached (median ">cap" when that is over half of the seeds). Random search draws mixes without replacement (it
always ends); greedy forward selection starts from the target alone and adds, round by round, the dataset whose
addition scores best, and stops when no addition improves on the round before.

For the neural search the "stop rule" columns replay the paper's stopping rule (patience 1) and the default
(patience 3) on the same runs: at how many evaluations it would have stopped, and how often the best mix found by
then is in the true top 1%. The last line is the ratio of random search's median evaluations to the top 1% over
the default search's.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curation.combos import all_mixes, mix_index, mix_to_bits, search_steps  # noqa: E402


def surface(k: int, seed: int, noise: float = 0.1) -> tuple[np.ndarray, float]:
    """True score of every mix (row ``i`` of ``all_mixes(k)``) and the noise standard deviation."""
    rng = np.random.default_rng(seed)
    X = all_mixes(k).astype(np.float64)
    f = X @ rng.normal(0.0, 1.0, k)
    pairs = np.triu(rng.normal(0.0, 0.5, (k, k)) * (rng.random((k, k)) < 0.3), 1)
    f += np.einsum("ni,ij,nj->n", X, pairs, X)
    for _ in range(k):
        i, j, m = rng.choice(k, 3, replace=False)
        f += rng.normal(0.0, 0.5) * X[:, i] * X[:, j] * X[:, m]
    f -= 0.05 * X.sum(axis=1) ** 2
    return f, noise * float(f.std())


def marks(true: np.ndarray) -> tuple[int, np.ndarray]:
    """The row of the true best mix and a mask of the top 1% rows."""
    n_top = math.ceil(0.01 * len(true))
    top = np.zeros(len(true), dtype=bool)
    top[np.argsort(-true, kind="stable")[:n_top]] = True
    return int(np.argmax(true)), top


class Oracle:
    """A noisy evaluator over one surface that records the rows it was asked for."""

    def __init__(self, true: np.ndarray, noise_sd: float, k: int, seed: int):
        self.true, self.noise_sd, self.k = true, noise_sd, k
        self.rng = np.random.default_rng([seed, 7])
        self.names = [f"d{j}" for j in range(k)]
        self.asked: list[int] = []

    def row(self, idx: int) -> float:
        self.asked.append(idx)
        return float(self.true[idx] + self.rng.normal(0.0, self.noise_sd))

    def __call__(self, mix: frozenset) -> float:
        return self.row(int(mix_index(mix_to_bits(mix, self.names, "t"))))


def first_hit(asked: list[int], best: int, top: np.ndarray) -> tuple[float, float]:
    hit_best = next((n for n, i in enumerate(asked, 1) if i == best), math.inf)
    hit_top = next((n for n, i in enumerate(asked, 1) if top[i]), math.inf)
    return hit_best, hit_top


def run_search(oracle: Oracle, best: int, top: np.ndarray, cap: int, seed: int, **options) -> dict:
    found_best = found_top = False
    rows = []
    for row in search_steps(oracle, ["t", *oracle.names], target="t", budget=cap, seed=seed, patience=0,
                            **options):
        rows.append(row)
        idx = oracle.asked[-1]
        found_best |= idx == best
        found_top |= bool(top[idx])
        if found_best and found_top:
            break
    hit_best, hit_top = first_hit(oracle.asked, best, top)
    stops = {}
    for patience in (1, 3):  # replay the stopping rule: the search stops instead of its p-th "untried" in a row
        streak, stop = 0, len(rows)
        for n, r in enumerate(rows):
            streak = streak + 1 if r.chosen_by == "untried" else 0
            if streak >= patience:
                stop = n
                break
        scored = [(r.score, oracle.asked[m]) for m, r in enumerate(rows[:stop])]
        chosen = max(scored)[1] if scored else 0
        # a run cut at the mark may end before its stopping rule: not counted (stop None)
        stops[patience] = (stop, bool(top[chosen])) if stop < len(rows) or len(rows) >= cap else None
    return {"best": hit_best, "top": hit_top, "stops": stops}


def run_random(oracle: Oracle, best: int, top: np.ndarray, seed: int) -> dict:
    order = np.random.default_rng([seed, 3]).permutation(len(oracle.true))
    hit_best, hit_top = first_hit(order.tolist(), best, top)
    return {"best": hit_best, "top": hit_top}


def run_greedy(oracle: Oracle, best: int, top: np.ndarray) -> dict:
    k = oracle.k
    current = np.zeros(k, dtype=np.uint8)
    current_score = oracle.row(0)
    while True:
        trials = []
        for j in np.flatnonzero(current == 0):
            bits = current.copy()
            bits[j] = 1
            trials.append((oracle.row(int(mix_index(bits))), int(j)))
        if not trials:
            break
        score, j = max(trials)
        if score <= current_score:
            break
        current[j], current_score = 1, score
    hit_best, hit_top = first_hit(oracle.asked, best, top)
    return {"best": hit_best, "top": hit_top}


def median(xs: list[float], cap: int | None = None) -> str:
    m = float(np.median(xs))
    if math.isinf(m):
        return f">{cap}" if cap else "never"
    return f"{m:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=11)
    ap.add_argument("--seeds", type=int, default=50)
    ap.add_argument("--cap", type=int, default=150, help="evaluations a search may use per seed")
    ap.add_argument("--noise", type=float, default=0.1)
    args = ap.parse_args(argv)

    methods = {
        "neural search (default: 5 MLPs, UCB beta 3, balanced design)": {},
        "paper (1 MLP, greedy, one-at-a-time design)": {"members": 1, "beta": 0.0, "design": "single"},
    }
    results: dict[str, list[dict]] = {name: [] for name in [*methods, "random search", "greedy forward selection"]}
    seconds = dict.fromkeys(results, 0.0)
    for s in range(args.seeds):
        true, noise_sd = surface(args.k, s, args.noise)
        best, top = marks(true)
        for name, options in methods.items():
            t = time.process_time()
            results[name].append(run_search(Oracle(true, noise_sd, args.k, s), best, top, args.cap, s, **options))
            seconds[name] += time.process_time() - t
        t = time.process_time()
        results["random search"].append(run_random(Oracle(true, noise_sd, args.k, s), best, top, s))
        seconds["random search"] += time.process_time() - t
        t = time.process_time()
        results["greedy forward selection"].append(run_greedy(Oracle(true, noise_sd, args.k, s), best, top))
        seconds["greedy forward selection"] += time.process_time() - t

    n_top = math.ceil(0.01 * 2**args.k)
    print(f"k = {args.k} candidates ({2**args.k} mixes, top 1% = {n_top} mixes), {args.seeds} surfaces, noise "
          f"{args.noise:g} sd, search cap {args.cap} evaluations")
    print()
    print("| method | median evals to top 1% | reached top 1% | median evals to true best | found true best | "
          "stop rule p=1: median evals, top 1% at stop | p=3 | CPU seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rs in results.items():
        cap = args.cap if name in methods else None
        top_hits = [r["top"] for r in rs]
        best_hits = [r["best"] for r in rs]
        cells = [name, median(top_hits, cap), f"{np.mean(np.isfinite(top_hits)):.0%}", median(best_hits, cap),
                 f"{np.mean(np.isfinite(best_hits)):.0%}"]
        for p in (1, 3):
            stops = [r["stops"][p] for r in rs if "stops" in r and r["stops"][p] is not None]
            cells.append(f"{np.median([x[0] for x in stops]):g}, {np.mean([x[1] for x in stops]):.0%}" if stops
                         else "-")
        cells.append(f"{seconds[name]:.0f}")
        print("| " + " | ".join(cells) + " |")
    default = next(iter(methods))
    ratio = float(np.median([r["top"] for r in results["random search"]])) / float(
        np.median([r["top"] for r in results[default]]))
    print()
    print(f"random/search evaluations to top 1%: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
