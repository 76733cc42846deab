"""Study statistics over finished runs: pure functions over plain rows (dicts) and tensors, no I/O.

A *row* is one run: ``{"corpus", "variant", "fraction", "seed", "dev_f1", "test_f1", ...}`` (F1 as a share, 0..1).

    >>> rows = [{"corpus": "c", "variant": v, "fraction": f, "seed": 0, "test_f1": x}
    ...         for v, f, x in [("single", 1.0, 0.80), ("single", 0.5, 0.70), ("uw", 1.0, 0.82), ("uw", 0.5, 0.795)]]
    >>> data_efficiency(rows)
    {'single': 1.0, 'uw': 0.5}
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from statistics import mean, stdev
from typing import Any

import torch
import torch.nn.functional as F


def aggregate(rows: Sequence[Mapping[str, Any]], metric: str = "test_f1",
              keys: Sequence[str] = ("corpus", "variant", "fraction")) -> list[dict[str, Any]]:
    """Mean, sample standard deviation, min and max of ``metric`` over the seeds of each ``keys`` group.

    >>> aggregate([{"variant": "a", "test_f1": 0.5}, {"variant": "a", "test_f1": 0.7}], keys=("variant",))
    [{'variant': 'a', 'n': 2, 'mean': 0.6, 'sd': 0.14142135623730948, 'min': 0.5, 'max': 0.7}]
    """
    groups: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(float(r[metric]))
    out = []
    for key in sorted(groups, key=lambda k: tuple(-x if isinstance(x, (int, float)) else x for x in k)):
        vals = groups[key]
        out.append(dict(zip(keys, key)) | {"n": len(vals), "mean": mean(vals),
                                           "sd": stdev(vals) if len(vals) > 1 else 0.0,
                                           "min": min(vals), "max": max(vals)})
    return out


def data_efficiency(rows: Sequence[Mapping[str, Any]], reference: str = "single", tolerance: float = 0.01,
                    metric: str = "test_f1") -> dict[str, float | None]:
    """Smallest training fraction at which each variant's seed-mean ``metric`` reaches the reference variant's
    full-data (largest fraction) mean minus ``tolerance`` (0.01 = one F1 point). ``None`` when no fraction does;
    an empty dict when the reference variant has no run. Rows must come from one corpus.

    >>> data_efficiency([{"variant": "single", "fraction": 1.0, "test_f1": 0.8}], reference="other")
    {}
    """
    means = {(a["variant"], a["fraction"]): a["mean"] for a in aggregate(rows, metric, ("variant", "fraction"))}
    ref_fracs = [f for v, f in means if v == reference]
    if not ref_fracs:
        return {}
    target = means[(reference, max(ref_fracs))] - tolerance
    out: dict[str, float | None] = {}
    for variant in sorted({v for v, _ in means}, key=lambda v: (v != reference, v)):
        reached = [f for (v, f), m in means.items() if v == variant and m >= target - 1e-12]
        out[variant] = min(reached) if reached else None
    return out


def ablation_deltas(rows: Sequence[Mapping[str, Any]], metric: str = "test_f1") -> list[dict[str, Any]]:
    """For each ablation variant ``BASE-no_HEAD``: its seed-mean ``metric`` minus the full ``BASE`` variant's at the
    same fraction (negative: the dropped head helped).

    >>> ablation_deltas([{"variant": "uw_sym", "fraction": 1.0, "test_f1": 0.8},
    ...                  {"variant": "uw_sym-no_bcls", "fraction": 1.0, "test_f1": 0.75}])
    [{'variant': 'uw_sym-no_bcls', 'base': 'uw_sym', 'fraction': 1.0, 'mean': 0.75, 'base_mean': 0.8, 'delta': -0.05}]
    """
    means = {(a["variant"], a["fraction"]): a["mean"] for a in aggregate(rows, metric, ("variant", "fraction"))}
    out = []
    for (variant, frac), m in sorted(means.items(), key=lambda kv: (kv[0][0], -kv[0][1])):
        base = variant.split("-")[0]
        if base != variant and (base, frac) in means:
            ref = means[(base, frac)]
            out.append({"variant": variant, "base": base, "fraction": frac, "mean": m, "base_mean": ref,
                        "delta": round(m - ref, 12)})
    return out


def pairwise_cosine(vectors: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Cosine similarity of every pair of (flattened) task gradients, keyed ``"a/b"`` in the mapping's order.

    >>> pairwise_cosine({"ner": torch.tensor([1.0, 0.0]), "bcls": torch.tensor([1.0, 1.0]),
    ...                  "mcls": torch.tensor([-2.0, 0.0])})
    {'ner/bcls': 0.7071067690849304, 'ner/mcls': -1.0, 'bcls/mcls': -0.7071067690849304}
    """
    names = list(vectors)
    out = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            out[f"{a}/{b}"] = float(F.cosine_similarity(vectors[a].reshape(-1), vectors[b].reshape(-1), dim=0))
    return out


def mean_by_key(dicts: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Key-wise mean of numeric dicts, skipping NaN values.

    >>> mean_by_key([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    {'a': 2.0, 'b': 2.0}
    """
    vals: dict[str, list[float]] = defaultdict(list)
    for d in dicts:
        for k, v in d.items():
            if not math.isnan(v):
                vals[k].append(v)
    return {k: mean(v) for k, v in vals.items()}
