"""``bioselect mtl sru-report``: one markdown table of finished SRU-NER runs (their ``metrics.json``).

    bioselect mtl sru-report runs/sru/single_ncbi runs/sru/mtl_ncbi_bc5cdr_bc2gm --output runs/sru/table.md

One row per (run, dataset): training sentences and steps (the step kept by dev selection), dev F1, test precision,
recall and F1 in the disjoint view, test F1 in the merged view, and the run's wall time; then a table of test F1 per
entity type (disjoint view). Strict micro scores of the foundation scorer, in percent.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curation.io import InputError, atomic_write


def load_run(folder: str | Path) -> dict[str, Any]:
    """A run's ``metrics.json``; a folder without one raises :class:`InputError`."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        raise InputError(folder, "has no metrics.json (the run has not finished)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise InputError(path, f"is not JSON: {err}") from None


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


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    from curation.cli import run

    def _main(argv: Sequence[str] | None) -> int:
        p = argparse.ArgumentParser(prog="bioselect mtl sru-report", description=__doc__.split("\n\n")[0])
        p.add_argument("runs", nargs="+", help="Run folders (each with metrics.json).")
        p.add_argument("--output", help="Markdown file to write (printed when omitted).")
        args = p.parse_args(argv)
        text = markdown({Path(r).name: load_run(r) for r in args.runs})
        if args.output:
            with atomic_write(args.output) as f:
                f.write(text)
        else:
            print(text, end="")  # noqa: T201
        return 0

    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
