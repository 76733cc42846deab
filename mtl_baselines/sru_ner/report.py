"""``bioselect mtl sru-report``: one markdown table of finished SRU-NER runs (their ``metrics.json``).

    bioselect mtl sru-report runs/sru/single_ncbi runs/sru/mtl_ncbi_bc5cdr_bc2gm --output runs/sru/table.md

One row per (run, dataset): training sentences and steps (the step kept by dev selection), dev F1, test precision,
recall and F1 in the disjoint view, test F1 in the merged view, and the run's wall time; then a table of test F1 per
entity type (disjoint view). Strict micro scores of the foundation scorer, in percent.

``--nesting-gold FILE`` adds, for each run that has a dataset's test predictions, recall and precision by nesting
role (:func:`nesting_breakdown`): a mention inside another mention (``inner``), containing one (``outer``), or
neither (``flat``), which the micro F1 hides on nested corpora such as GENIA.

    bioselect mtl sru-report runs/sru/genia --nesting-gold ../shared/data/nested_ner/GENIA/test.jsonlines
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.io import Files, InputError, atomic_write


def load_run(folder: str | Path) -> dict[str, Any]:
    """A run's ``metrics.json``; a folder without one raises :class:`InputError`."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise InputError(folder, "has no metrics.json (the run has not finished)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not JSON: {err}") from None


def nesting_roles(spans: Sequence[tuple[int, int, str]]) -> dict[tuple[int, int, str], str]:
    """Each span's role among ``spans`` (any type): ``inner`` when another span covers it, else ``outer`` when it
    covers another, else ``flat``.

    >>> nesting_roles([(0, 9, "DNA"), (0, 4, "protein"), (12, 15, "RNA")])
    {(0, 9, 'DNA'): 'outer', (0, 4, 'protein'): 'inner', (12, 15, 'RNA'): 'flat'}
    """
    out = {}
    for s in spans:
        inner = any(o != s and o[0] <= s[0] and s[1] <= o[1] for o in spans)
        outer = any(o != s and s[0] <= o[0] and o[1] <= s[1] for o in spans)
        out[s] = "inner" if inner else "outer" if outer else "flat"
    return out


def nesting_breakdown(gold: Mapping[str, set], pred: Mapping[str, set]) -> dict[str, dict[str, float]]:
    """Recall of the gold mentions and precision of the predicted ones by nesting role (roles of predictions are
    taken among the predictions of their sentence); ``gold`` and ``pred`` map a record id to its (start, end, label)
    spans (strict match).

    >>> g = {"s": {(0, 9, "DNA"), (0, 4, "protein"), (12, 15, "RNA")}}
    >>> p = {"s": {(0, 9, "DNA"), (12, 15, "RNA"), (20, 22, "RNA")}}
    >>> b = nesting_breakdown(g, p)
    >>> b["inner"]["recall"], b["outer"]["recall"], b["flat"]["recall"], b["flat"]["precision"]
    (0.0, 1.0, 1.0, 0.6666666666666666)
    """
    tab = {role: [0, 0, 0, 0] for role in ("flat", "outer", "inner")}
    for rid, g in gold.items():
        p = pred.get(rid, set())
        for s, role in nesting_roles(sorted(g)).items():
            tab[role][0] += 1
            tab[role][1] += s in p
        for s, role in nesting_roles(sorted(p)).items():
            tab[role][2] += 1
            tab[role][3] += s in g
    return {role: {"gold": n, "recall": hit / n if n else 0.0, "predicted": m, "precision": ok / m if m else 0.0}
            for role, (n, hit, m, ok) in tab.items()}


def nesting_markdown(gold_file: str | Path, runs: Sequence[str | Path]) -> str:
    """The nesting table of every run that holds test predictions for ``gold_file``'s records."""
    from curation.readers import read_corpus

    gold_records = read_corpus(gold_file).records
    gold = {r.id: {(s.start, s.end, s.label) for s in r.spans} for r in gold_records}
    lines = [f"\nTest mentions by nesting role (gold: {gold_file}):\n",
             "| run | dataset | role | gold mentions | recall | predicted | precision |",
             "|---|---|---|---|---|---|---|"]
    for run in runs:
        for path in sorted(Path(run).glob("pred_test_*_disjoint.jsonl")):
            rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
            pred = {r["id"]: {tuple(s) for s in r.get("spans", [])} for r in rows}
            if set(pred) != set(gold):
                continue  # predictions of another corpus
            dataset = path.name.removeprefix("pred_test_").removesuffix("_disjoint.jsonl")
            for role, b in nesting_breakdown(gold, pred).items():
                lines.append(f"| {Path(run).name} | {dataset} | {role} | {b['gold']} | {_pct(b['recall'])} | "
                             f"{b['predicted']} | {_pct(b['precision'])} |")
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def markdown(runs: Mapping[str, Mapping[str, Any]]) -> str:
    """The two tables (see the module doc) for ``{run name: metrics}``."""
    lines = ["| run | dataset | train sentences | steps (kept) | dev F1 | test P | test R | test F1 | merged test F1 "
             "| seconds |", "|---|---|---|---|---|---|---|---|---|---|"]
    per_type: list[str] = []
    for name, m in runs.items():
        for d in m["datasets"]:
            t = m["test"]["disjoint"][d]
            lines.append(f"| {name} | {d} | {m['n_train'][d]} | {m['steps']} ({m.get('best_step', m['steps'])}) | "
                         f"{_pct(m['dev']['disjoint'][d]['f1'])} | {_pct(t['precision'])} | {_pct(t['recall'])} | "
                         f"**{_pct(t['f1'])}** | {_pct(m['test']['merged'][d]['f1'])} | {m['seconds']:.0f} |")
            per_type += [f"| {name} | {d} | {label} | {s['support']} | {_pct(s['f1'])} |"
                         for label, s in sorted(t.get("per_type", {}).items())]
    out = "\n".join(lines) + "\n"
    if per_type:
        out += ("\nTest F1 per entity type (disjoint view):\n\n| run | dataset | type | test mentions | F1 |\n"
                "|---|---|---|---|---|\n" + "\n".join(per_type) + "\n")
    return out


@dataclass
class ReportConfig:
    output: str | None = field(default=None, metadata={"help": "Markdown file to write (printed when omitted)."})
    nesting_gold: str | None = field(default=None, metadata={
        "help": "Gold test file: add recall/precision by nesting role."})
    runs: list[str] = field(init=False, default_factory=list)  # the positional arguments

    def files(self) -> Files:
        return Files(reads=[*self.runs, *(Path(r) / "metrics.json" for r in self.runs), self.nesting_gold],
                     writes=[self.output])


def _main(argv: Sequence[str] | None) -> int:
    from curation.cli import parse_config

    cfg, _ = parse_config(ReportConfig, argv, prog="bioselect mtl sru-report", description=__doc__.split("\n\n")[0],
                          positional={"runs": {"nargs": "+", "help": "Run folders (each with metrics.json)."}})
    text = markdown({Path(r).name: load_run(r) for r in cfg.runs})
    if cfg.nesting_gold:
        text += nesting_markdown(cfg.nesting_gold, cfg.runs)
    if cfg.output:
        with atomic_write(cfg.output) as f:
            f.write(text)
    else:
        print(text, end="")  # noqa: T201
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from curation.cli import run

    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
