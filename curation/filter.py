"""Select a training set by IFD (hybrid Superfiltering): ``bioselect curate filter``.

    bioselect curate filter --input runs/ncbi_train.jsonl --scores runs/ncbi_train.ifd.jsonl \\
        --output runs/ncbi_train.filtered.jsonl [--ratio 0.5 | --count N] [--negative-ratio 1.0] \\
        [--tokens answer|content]

Positives (records whose output is not ``[]``) are ranked by IFD: records with IFD above ``--max-ifd`` (1 by default:
the prompt does not help the model) are dropped, or only reported with ``--keep-high-ifd``; the ``--count`` highest,
or the top ``--ratio`` share of all positives (Superfiltering's convention: the share is of every positive, scored or
not), are kept. ``--order bottom`` keeps the lowest instead and ``--order random`` a seeded random sample of the same
size from the same candidates (the control that separates IFD ranking from the change in class balance).
``--order matched`` is a stricter control: a seeded random sample that holds, for every answer size (the number of
entities, relations or events in the answer; a TC answer's label), as many records as the top-IFD selection does, so
it has the same number of mentions as the IFD selection and differs from it only in which sentences of each size.
Negatives are all kept, or a ``--negative-ratio`` share: a seeded random one, or with ``--negative-order ifd`` the
negatives of highest IFD (they must be scored: ``curate ifd`` without ``--positives-only``).
The kept records are written unchanged, in input order, with ``OUTPUT.manifest.json`` (inputs, model, prompt
format, IFD variant and token scope, thresholds, kept/dropped counts per dataset and type) and ``OUTPUT.ifd.png``
(IFD histogram of kept and dropped positives).
A scores file ranks records by one token scope (``curate ifd --tokens``); one that mixes scopes, or names another
than ``--tokens``, is refused.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curation.cli import parse_config, run
from curation.io import Files, InputError, read_jsonl, sha256_file, staged, together, write_json

KEPT = "kept"
ORDERS = ("top", "bottom", "random", "matched")
NEGATIVE_ORDERS = ("random", "ifd")


@dataclass
class FilterConfig:
    input: str = field(metadata={"help": "Instruction JSONL that was scored."})
    scores: str = field(metadata={"help": "Scores JSONL written by `bioselect curate ifd`."})
    output: str = field(metadata={"help": "Filtered instruction JSONL to write."})
    ratio: float = field(default=0.5, metadata={"help": "Keep the top share of positives by IFD (of all positives)."})
    count: int | None = field(default=None, metadata={"help": "Keep this many positives instead of --ratio."})
    max_ifd: float = field(default=1.0, metadata={"help": "Positives with IFD above this are dropped."})
    keep_high_ifd: bool = field(
        default=False, metadata={"help": "Rank positives above --max-ifd with the others instead of dropping them "
                                         "(they are reported either way)."})
    negative_ratio: float = field(default=1.0, metadata={"help": "Share of negatives (output []) to keep."})
    seed: int = field(default=0, metadata={"help": "Seed of the negative sample (and of --order random or matched)."})
    order: str = field(default="top", metadata={
        "help": "Which positives are kept: 'top' (highest IFD), 'bottom' (lowest), 'random' (seeded sample of the "
                "same size from the same candidates: the control arm) or 'matched' (seeded sample with as many "
                "records of each answer size, i.e. number of answer items or TC label, as the top selection: the "
                "same number of mentions)."})
    negative_order: str = field(default="random", metadata={
        "help": "Which negatives --negative-ratio keeps: 'random' (seeded) or 'ifd' (highest IFD first)."})
    tokens: Literal["answer", "content"] | None = field(
        default=None, metadata={"help": "Token scope the scores must have been computed over (`curate ifd "
                                        "--tokens`): answer or content; by default the one the scores file names."})

    def __post_init__(self):
        if self.order not in ORDERS:
            raise InputError("--order", f"must be one of {', '.join(ORDERS)}, not {self.order!r}")
        if self.negative_order not in NEGATIVE_ORDERS:
            raise InputError("--negative-order", f"must be one of {', '.join(NEGATIVE_ORDERS)}, "
                                                 f"not {self.negative_order!r}")
        _check_negative_order(self.negative_order, self.tokens)
        if not 0 <= self.ratio <= 1:
            raise InputError("--ratio", f"must be between 0 and 1, got {self.ratio}")
        if self.count is not None and self.count < 0:
            raise InputError("--count", f"must not be negative, got {self.count}")
        if not 0 <= self.negative_ratio <= 1:
            raise InputError("--negative-ratio", f"must be between 0 and 1, got {self.negative_ratio}")

    def files(self) -> Files:
        out = Path(self.output)
        return Files(reads=[self.input, self.scores, self.scores + ".manifest.json"],
                     writes=[out, out.with_name(out.name + ".manifest.json"), out.with_name(out.name + ".ifd.png")])


def _check_negative_order(negative_order: str, tokens: str | None) -> None:
    if negative_order == "ifd" and tokens == "content":
        raise InputError("--negative-order", "ifd ranks negatives by their IFD, and under --tokens content a negative "
                                             "([]) has no content token to score")


def share(ratio: float, n: int) -> int:
    """``floor(ratio * n)``, robust to float error (``0.29 * 100`` is 28.999999999999996).

    >>> share(0.5, 7), share(0.29, 100), share(1.0, 3)
    (3, 29, 3)
    """
    return math.floor(ratio * n + 1e-9)


def answer_size(output: str) -> int | str:
    """The stratum of ``--order matched``: the number of items of a JSON list answer (entities, relations, events),
    a TC answer's label, 0 for anything else.

    >>> answer_size('[{"name": "gout"}, {"name": "FAP"}]'), answer_size('{"label": "advice"}'), answer_size("x")
    (2, 'advice', 0)
    """
    try:
        value = json.loads(output)
    except (json.JSONDecodeError, TypeError):
        return 0
    if isinstance(value, list):
        return len(value)
    if isinstance(value, dict) and isinstance(value.get("label"), str):
        return value["label"]
    return 0


def select(rows: Sequence[dict[str, Any]], scores: dict[str, float | None], ratio: float = 0.5,
           count: int | None = None, max_ifd: float = 1.0, keep_high_ifd: bool = False,
           negative_ratio: float = 1.0, seed: int = 0, order: str = "top",
           negative_order: str = "random") -> list[str]:
    """The fate of each row: ``"kept"`` or why it was dropped (``invalid``: see
    :func:`~curation.ifd_scoring.record_problem`; ``duplicate_id``, ``unscored``, ``ifd_above_max``, ``below_cut``,
    ``not_sampled`` (``order="random"`` or ``"matched"``), ``negative_sampled_out``).

    >>> rows = [{"id": i, "instruction": "Find diseases.", "output": o} for i, o in [("a", '[{"name": "gout"}]'),
    ...         ("b", "[]"), ("c", '[{"name": "FAP"}]'), ("d", '[{"name": "AT"}]'), ("e", '[{"name": "DM"}]')]]
    >>> select(rows, {"a": 0.6, "c": 0.9, "d": 1.2, "e": 0.3}, ratio=0.5)
    ['kept', 'kept', 'kept', 'ifd_above_max', 'below_cut']

    Half of the four positives are kept, highest IFD first (ties in input order): ``c`` (0.9) and ``a`` (0.6); ``d``
    is dropped for IFD > 1 and ``e`` falls below the cut; the negative ``b`` is kept. The other orders take as many
    from the same candidates:

    >>> select(rows, {"a": 0.6, "c": 0.9, "d": 1.2, "e": 0.3}, ratio=0.5, order="bottom")
    ['kept', 'kept', 'below_cut', 'ifd_above_max', 'kept']
    >>> select(rows, {"a": 0.6, "c": 0.9, "d": 1.2, "e": 0.3}, ratio=0.5, order="random").count("kept")
    3

    ``order="matched"`` draws at random within each answer size as many as the top selection holds (here two
    one-mention answers of the three candidates):

    >>> select(rows, {"a": 0.6, "c": 0.9, "d": 1.2, "e": 0.3}, ratio=0.5, order="matched").count("kept")
    3
    """
    from curation.ifd_scoring import is_negative, record_problem

    fate: list[str] = [""] * len(rows)
    seen: set[str] = set()
    positives, negatives = [], []
    for i, row in enumerate(rows):
        if record_problem(row):
            fate[i] = "invalid"
            continue
        rid = str(row["id"])
        if rid in seen:
            fate[i] = "duplicate_id"
            continue
        seen.add(rid)
        (negatives if is_negative(row["output"]) else positives).append(i)
    candidates = []
    for i in positives:
        value = scores.get(str(rows[i]["id"]))
        if value is None or not math.isfinite(value):
            fate[i] = "unscored"
        elif value > max_ifd and not keep_high_ifd:
            fate[i] = "ifd_above_max"
        else:
            candidates.append(i)
    n_keep = count if count is not None else share(ratio, len(positives))

    def by_ifd(sign: int) -> list[int]:  # highest IFD first for sign -1, lowest for 1; ties in input order
        return sorted(candidates, key=lambda i: (sign * scores[str(rows[i]["id"])], i))

    if order == "random":  # a stream of its own, so the negatives drawn below are the same as for the other orders
        chosen = set(random.Random(f"positives-{seed}").sample(candidates, min(n_keep, len(candidates))))
        for i in candidates:
            fate[i] = KEPT if i in chosen else "not_sampled"
    elif order == "matched":  # the top selection's count per answer size, drawn at random within each size
        size = {i: answer_size(rows[i]["output"]) for i in candidates}
        top = by_ifd(-1)[:n_keep]
        need = Counter(size[i] for i in top)
        rng = random.Random(f"matched-{seed}")
        chosen = set()
        for stratum in sorted(need, key=str):
            chosen.update(rng.sample([i for i in candidates if size[i] == stratum], need[stratum]))
        for i in candidates:
            fate[i] = KEPT if i in chosen else "not_sampled"
    else:
        for rank, i in enumerate(by_ifd(-1 if order == "top" else 1)):
            fate[i] = KEPT if rank < n_keep else "below_cut"
    n_negatives = share(negative_ratio, len(negatives))
    if negative_order == "ifd":
        scored = [i for i in negatives if isinstance(scores.get(str(rows[i]["id"])), (int, float))
                  and math.isfinite(scores[str(rows[i]["id"])])]
        scored.sort(key=lambda i: (-scores[str(rows[i]["id"])], i))
        kept_negatives = set(scored[:n_negatives])
        for i in set(negatives) - set(scored):
            fate[i] = "unscored"
    else:
        kept_negatives = set(random.Random(seed).sample(negatives, n_negatives))
    for i in negatives:
        fate[i] = fate[i] or (KEPT if i in kept_negatives else "negative_sampled_out")
    return fate


def tally(rows: Sequence[dict[str, Any]], fate: Sequence[str]) -> dict[str, dict[str, dict[str, int]]]:
    """Counts per dataset and type (``positive``/``negative``/``invalid``): kept, dropped and dropped by reason.

    >>> tally([{"id": "a", "output": "[]", "dataset": "NCBI-disease"}], ["kept"])
    {'NCBI-disease': {'negative': {'kept': 1, 'dropped': 0}}}
    """
    from curation.ifd_scoring import is_negative

    counts: dict[str, dict[str, Counter]] = {}
    for row, f in zip(rows, fate):
        output = row.get("output")
        kind = "invalid" if not isinstance(output, str) else "negative" if is_negative(output) else "positive"
        c = counts.setdefault(str(row.get("dataset", "")), {}).setdefault(kind, Counter(kept=0, dropped=0))
        c["kept" if f == KEPT else "dropped"] += 1
        if f != KEPT:
            c[f"dropped_{f}"] += 1
    return {d: {k: dict(c) for k, c in kinds.items()} for d, kinds in counts.items()}


def ifd_histogram(path: str | Path, kept: Sequence[float], dropped: Sequence[float], title: str = "") -> None:
    """Write a PNG histogram of the IFD of kept and dropped records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curation.io import atomic_write

    values = [v for v in (*kept, *dropped) if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    bins = [lo + (hi - lo + 1e-9) * k / 40 for k in range(41)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist([list(kept), list(dropped)], bins=bins, stacked=True, color=["tab:blue", "tab:gray"],
            label=[f"kept ({len(kept)})", f"dropped ({len(dropped)})"])
    ax.set_xlabel("IFD")
    ax.set_ylabel("records")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def read_scores(path: str) -> tuple[dict[str, float | None], set[str], set[str]]:
    """``id -> ifd`` of a scores file, the variants it names and its token scopes (``answer`` for lines written
    before scores named one: they were all over the whole answer)."""
    scores, variants, scopes = {}, set(), set()
    for line, obj in read_jsonl(path):
        if "id" not in obj or "ifd" not in obj:
            raise InputError(path, "not a scores line (needs 'id' and 'ifd')", line=line)
        value = obj["ifd"]
        if value is not None and not isinstance(value, (int, float)):
            raise InputError(path, f"'ifd' is not a number: {value!r}", line=line, record=str(obj["id"]))
        scores[str(obj["id"])] = value
        variants.add(obj.get("variant", "unknown"))
        scopes.add(obj.get("tokens", "answer"))
    return scores, variants, scopes


def run_filter(cfg: FilterConfig) -> dict[str, Any]:
    """Write the filtered JSONL, its manifest and histogram; return the manifest."""
    from curation.ifd_scoring import is_negative

    rows, lines = [], []
    for line, obj in read_jsonl(cfg.input):
        rows.append(obj)
        lines.append(line)
    scores, variants, scopes = read_scores(cfg.scores)
    if len(variants) > 1:
        raise InputError(cfg.scores, f"mixes IFD variants {sorted(variants)}")
    if len(scopes) > 1:
        raise InputError(cfg.scores, f"mixes token scopes {sorted(scopes)} (scores over the whole answer and over "
                                     "its content tokens do not rank together)")
    variant = variants.pop() if variants else "unknown"
    tokens = scopes.pop() if scopes else cfg.tokens or "answer"
    if cfg.tokens is not None and tokens != cfg.tokens:
        raise InputError(cfg.scores, f"scores are over the {tokens} tokens, not --tokens {cfg.tokens}")
    _check_negative_order(cfg.negative_order, tokens)
    fate = select(rows, scores, cfg.ratio, cfg.count, cfg.max_ifd, cfg.keep_high_ifd, cfg.negative_ratio, cfg.seed,
                  cfg.order, cfg.negative_order)
    positive_ids = [str(row["id"]) for row, f in zip(rows, fate) if f not in ("invalid", "duplicate_id")
                    and not is_negative(row["output"])]
    if positive_ids and not any(rid in scores for rid in positive_ids):
        raise InputError(cfg.scores, f"has no score for any of the {len(positive_ids)} positive records of "
                                     f"{cfg.input} (no id matches): scores of another file?")
    out = Path(cfg.output)
    with together():  # the filtered file, its histogram and its manifest land together or not at all
        manifest = _write_outputs(cfg, rows, lines, fate, scores, variant, tokens, out)
    return manifest


def _write_outputs(cfg: FilterConfig, rows: list[dict[str, Any]], lines: list[int], fate: list[str],
                   scores: dict[str, float | None], variant: str, tokens: str, out: Path) -> dict[str, Any]:
    from curation.ifd_scoring import is_negative, record_problem
    from curation.io import provenance, write_jsonl

    write_jsonl(out, (row for row, f in zip(rows, fate) if f == KEPT))

    unusable = [{"id": rows[i].get("id"), "line": lines[i],
                 "reason": record_problem(rows[i]) if f == "invalid" else "duplicate id"}
                for i, f in enumerate(fate) if f in ("invalid", "duplicate_id")]
    positives = [i for i, f in enumerate(fate) if f not in ("invalid", "duplicate_id")
                 and not is_negative(rows[i]["output"])]
    ranked = [(i, scores[str(rows[i]["id"])]) for i in positives if fate[i] != "unscored"]
    histogram = out.with_name(out.name + ".ifd.png")
    ifd_histogram(histogram, [v for i, v in ranked if fate[i] == KEPT], [v for i, v in ranked if fate[i] != KEPT],
                  title=f"{Path(cfg.input).name}: IFD ({variant}, {tokens} tokens) of positives")
    scores_manifest = Path(cfg.scores + ".manifest.json")
    scored_with = json.loads(scores_manifest.read_text(encoding="utf-8")) if scores_manifest.exists() else {}
    thresholds = {"max_ifd": cfg.max_ifd, "keep_high_ifd": cfg.keep_high_ifd, "ratio": cfg.ratio, "count": cfg.count,
                  "positives_to_keep": cfg.count if cfg.count is not None else share(cfg.ratio, len(positives)),
                  "negative_ratio": cfg.negative_ratio, "seed": cfg.seed, "order": cfg.order,
                  "negative_order": cfg.negative_order}
    manifest = provenance(
        cfg, [cfg.input, cfg.scores], kind="ifd_filter", output=str(out), output_sha256=sha256_file(staged(out)),
        histogram=str(histogram), model=scored_with.get("model"), prompt_format=scored_with.get("prompt_format"),
        max_length=scored_with.get("max_length"), variant=variant, tokens=tokens, thresholds=thresholds,
        totals=dict(Counter(fate)), counts=tally(rows, fate),
        ifd_above_max=[str(rows[i]["id"]) for i, v in ranked if v > cfg.max_ifd],
        unscored=[str(rows[i]["id"]) for i in positives if fate[i] == "unscored"], unusable=unusable,
        scores_manifest=str(scores_manifest) if scored_with else None,
    )
    write_json(out.with_name(out.name + ".manifest.json"), manifest)
    return manifest


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(FilterConfig, argv, prog="bioselect curate filter", description=__doc__.split("\n\n")[0])
    manifest = run_filter(cfg)
    for item in manifest["unusable"]:
        message = InputError(cfg.input, item["reason"] + "; dropped", line=item["line"], record=item["id"])
        print(f"warning: {message}", file=sys.stderr)
    if manifest["unscored"]:
        n_pos = sum(kinds.get("positive", {}).get(k, 0) for kinds in manifest["counts"].values()
                    for k in ("kept", "dropped"))
        print(f"warning: {cfg.scores}: no usable score for {len(manifest['unscored'])} of {n_pos} positive records "
              f"of {cfg.input}; they were dropped (listed under 'unscored' in the manifest)", file=sys.stderr)
    t = manifest["totals"]
    print(f"kept {t.get(KEPT, 0)} of {sum(t.values())} records -> {cfg.output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
