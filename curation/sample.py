"""Class-balanced, nested downsampling of a corpus (the training-fraction ladder of the PK-NER study).

Records are grouped into strata by what they annotate: ``"-"`` for a record without spans, otherwise the sorted
set of its span types (for classification corpora, the record's labels). Within each stratum records get a seeded
random order. One global order is then built seat by seat with Balinski and Young's *quota method* of apportionment:
the next record comes from the stratum with the largest ``n_s / (kept_s + 1)`` among those still under their upper
quota. A fraction ``f`` keeps the first ``round(f * N)`` records of that order. Hence

* after any prefix of size ``m`` every stratum holds ``floor(m n_s / N)`` or ``ceil(m n_s / N)`` records (the share
  of sentences with and without entities and the type mix are kept to within one record), and
* the subsets are nested for one seed: the 2.5% subset is a prefix of the 5% one, which is a prefix of the 75% one.

    >>> from curation.records import Record, Span
    >>> recs = [Record(id=str(i), text="x", spans=[Span(0, 1, "A")] if i % 4 == 0 else []) for i in range(40)]
    >>> [len(sample_records(recs, f, seed=1)) for f in (0.5, 0.25, 0.1)]
    [20, 10, 4]
"""

from __future__ import annotations

import random
from collections import defaultdict

from curation.records import Record

LADDER = (0.75, 0.5, 0.25, 0.1, 0.075, 0.05, 0.025)


def stratum(record: Record) -> str:
    """The stratum key of a record: ``"-"`` when it annotates nothing, else its sorted span types (or labels)."""
    types = sorted({s.label for s in record.spans}) or sorted(record.labels)
    return "|".join(types) if types else "-"


def sampling_order(records: list[Record], seed: int, unit: str = "sentence") -> list[list[int]]:
    """Sampling units (lists of record indices) in the seeded stratified order whose prefixes are the samples.

    ``unit="sentence"``: one record per unit. ``unit="document"``: the records sharing a ``doc_id`` form one unit,
    stratified by their combined types.
    """
    if unit not in ("sentence", "document"):
        raise ValueError(f"unit must be 'sentence' or 'document', not {unit!r}")
    if unit == "document":
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            groups[r.doc_id if r.doc_id is not None else f"\0{i}"].append(i)
        units = list(groups.values())
        keys = [stratum(Record(id="", text="", spans=[s for i in g for s in records[i].spans],
                               labels=[lab for i in g for lab in records[i].labels])) for g in units]
    else:
        units = [[i] for i in range(len(records))]
        keys = [stratum(r) for r in records]
    rng = random.Random(seed)
    by_stratum: dict[str, list[int]] = defaultdict(list)
    for u, key in enumerate(keys):
        by_stratum[key].append(u)
    strata = [by_stratum[k] for k in sorted(by_stratum)]
    for members in strata:
        rng.shuffle(members)
    tie = [rng.random() for _ in strata]
    total = len(units)
    kept = [0] * len(strata)
    order: list[list[int]] = []
    for m in range(1, total + 1):
        best, best_key = -1, None
        for s, members in enumerate(strata):
            n = len(members)
            if kept[s] >= -(-m * n // total):  # upper quota ceil(m n / N) reached
                continue
            key = (n / (kept[s] + 1), tie[s])
            if best_key is None or key > best_key:
                best, best_key = s, key
        order.append(units[strata[best][kept[best]]])
        kept[best] += 1
    return order


def take(order: list[list[int]], fraction: float) -> list[int]:
    """Sorted record indices of the first ``round(fraction * len(order))`` units of a sampling order."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    return sorted(i for unit in order[: round(fraction * len(order))] for i in unit)


def sample_indices(records: list[Record], fraction: float, seed: int, unit: str = "sentence") -> list[int]:
    """Sorted indices of the records kept at ``fraction`` (0 < fraction <= 1)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], not {fraction}")
    return take(sampling_order(records, seed, unit), fraction)


def sample_records(records: list[Record], fraction: float, seed: int, unit: str = "sentence") -> list[Record]:
    """The records kept at ``fraction``, in their original order."""
    return [records[i] for i in sample_indices(records, fraction, seed, unit)]


def strata_counts(records: list[Record]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for r in records:
        counts[stratum(r)] += 1
    return dict(sorted(counts.items()))
