"""The ``bioselect`` console script: a thin dispatcher to the command modules.

    bioselect data stats ../shared/data/ner/NCBI-disease/test.tsv
    bioselect data convert ../shared/data/ner/NCBI-disease/test.tsv --task ner --output runs/ncbi_test.jsonl
    bioselect evaluate --gold GOLD --pred PRED --output runs/eval.json

Every command is also a module (``python -m curation.data stats ...``, ``python -m tuning.evaluate ...``), so
``accelerate launch -m MODULE`` works. The table below maps subcommands to modules; modules are imported only
when their command runs, so this file imports nothing from the other packages at load time.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

# subcommand words -> module with a ``main(argv) -> int``
COMMANDS: dict[tuple[str, ...], str] = {
    ("data",): "curation.data",
    ("evaluate",): "tuning.evaluate",
    ("curate", "ifd"): "curation.ifd",
    ("curate", "filter"): "curation.filter",
    ("curate", "run"): "curation.pipeline",
    ("curate", "combos"): "curation.combos_cli",
    ("mtl", "train"): "mtl_baselines.token_mtl.train",
    ("mtl", "study"): "mtl_baselines.token_mtl.study",
    ("mtl", "sru"): "mtl_baselines.sru_ner.train",
    ("mtl", "sru-report"): "mtl_baselines.sru_ner.report",
    ("mtl", "qa"): "mtl_baselines.clinical_qa.train",
    ("mtl", "qa-study"): "mtl_baselines.clinical_qa.study",
    ("tune", "train"): "tuning.train",
    ("tune", "generate"): "tuning.generate",
    ("tune", "evaluate"): "tuning.compare",
    ("tune", "experiment"): "tuning.experiment",
}

EXIT_INPUT_ERROR = 2


def parse_config(config_cls: type, argv: Sequence[str] | None, prog: str, positional: dict[str, dict] | None = None,
                 description: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Parse ``argv`` into ``config_cls`` with trl's parser (``--config run.yaml`` sets fields, flags override).

    ``positional`` adds positional arguments (name -> argparse kwargs) that are returned in a dict beside the config.
    """
    from trl import TrlParser

    parser = TrlParser(config_cls, prog=prog, description=description)
    for name, kwargs in (positional or {}).items():
        parser.add_argument(name, **kwargs)
    try:
        out = parser.parse_args_and_config(list(argv) if argv is not None else None)
    except ValueError as err:  # trl raises ValueError for arguments that no field takes
        if "not used" not in str(err):
            raise
        from curation.io import InputError

        raise InputError(prog, str(err).replace("\n", " ")) from None
    cfg = out[0]
    extra = vars(out[1]) if len(out) > 1 else {}
    known = {f.name for f in fields(config_cls)}
    return cfg, {k: v for k, v in extra.items() if k not in known and k != "config"}


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main``; bad input (:class:`~curation.io.InputError`, also raised by config checks as
    ``InputError("--option", "what is wrong")``) becomes one line on stderr and exit code 2, no traceback."""
    from curation.io import InputError

    try:
        return int(main(argv) or 0)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_INPUT_ERROR


def _usage() -> str:
    lines = ["usage: bioselect COMMAND ...", "", "commands:"]
    for words, module in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} python -m {module}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else EXIT_INPUT_ERROR
    if argv[0] == "--version":
        from curation.io import package_version

        print(f"bioselect {package_version()}")
        return 0
    for n in (2, 1):
        key = tuple(argv[:n])
        if key in COMMANDS:
            module = importlib.import_module(COMMANDS[key])
            return module.main(argv[n:])
    print(f"bioselect: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return EXIT_INPUT_ERROR


if __name__ == "__main__":
    sys.exit(main())
