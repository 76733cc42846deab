"""The ``bioselect`` console script: a thin dispatcher to the command modules.

    bioselect data stats ../shared/data/ner/NCBI-disease/test.tsv
    bioselect data convert ../shared/data/ner/NCBI-disease/test.tsv --task ner --output runs/ncbi_test.jsonl
    bioselect evaluate --gold GOLD --pred PRED --output runs/eval.json

Every command is also a module (``python -m curation.data stats ...``, ``python -m curation.evaluate ...``), so
``accelerate launch -m MODULE`` works. The table below maps subcommands to modules; modules are imported only
when their command runs, so this file imports nothing from the other packages at load time.
"""

from __future__ import annotations

import functools
import importlib
import sys
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import fields
from typing import Any

# subcommand words -> module with a ``main(argv) -> int``
COMMANDS: dict[tuple[str, ...], str] = {
    ("data",): "curation.data",
    ("evaluate",): "curation.evaluate",
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
    ("tune", "export"): "tuning.export",
}

EXIT_INPUT_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


def parse_config(config_cls: type, argv: Sequence[str] | None, prog: str, positional: dict[str, dict] | None = None,
                 description: str | None = None) -> tuple[Any, dict[str, Any]]:
    """Parse ``argv`` into ``config_cls`` with trl's parser (``--config run.yaml`` sets fields, flags override).

    ``positional`` adds positional arguments (name -> argparse kwargs); a positional named like a field of the
    config that is not an ``__init__`` argument (``field(init=False)``) is stored on the config, the others are
    returned in a dict beside it. Every mistake is an :class:`~curation.io.InputError` (one line, exit code 2): an
    unknown option, a bad value, a missing, malformed or unreadable config file, a key in it that no option takes or
    whose value has the wrong type. When the config declares its paths (``files()`` returning
    :class:`~curation.io.Files`), :func:`~curation.io.check_files` refuses here, before anything is read, an output
    that is one of the inputs and an output that cannot be where it is declared.
    """
    from trl import TrlParser

    from curation.io import InputError, check_files

    parser = TrlParser(config_cls, prog=prog, description=description)
    for name, kwargs in (positional or {}).items():
        parser.add_argument(name, **kwargs)
    parser.add_argument("--config", metavar="YAML", help="Option values from a YAML file (flags override them).")
    parser.error = _argparse_error  # argparse prints usage and exits; one line and exit code 2 instead
    args = list(sys.argv[1:] if argv is None else argv)
    config_path = _pop_config(args)
    if config_path is not None:
        parser.set_defaults_with_config(**read_config_file(config_path, config_cls, parser))
    cfg, *namespace, remaining = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True,
                                                                    look_for_args_file=False)
    if remaining:
        option = next((a for a in remaining if a.startswith("-")), remaining[0])
        raise InputError(option, "no such option (see --help)" if option.startswith("-") else
                         f"unexpected argument (remaining: {' '.join(remaining)})")
    late = {f.name for f in fields(config_cls) if not f.init}
    extra = {k: v for ns in namespace for k, v in vars(ns).items() if k != "config"}
    for name in late & set(extra):
        setattr(cfg, name, extra.pop(name))
    files = getattr(cfg, "files", None)
    if files is not None:
        check_files(files())
    return cfg, extra


def _pop_config(args: list[str]) -> str | None:
    """Remove ``--config PATH`` (or ``--config=PATH``) from ``args``; return PATH."""
    from curation.io import InputError

    for i, arg in enumerate(args):
        if arg == "--config":
            if i + 1 == len(args):
                raise InputError("--config", "needs a YAML file")
            del args[i]
            return args.pop(i)
        if arg.startswith("--config="):
            return args.pop(i).split("=", 1)[1]
    return None


def _argparse_error(message: str) -> None:
    from curation.io import InputError

    def name(option: str) -> str:  # "--prompt_format/--prompt-format" -> "--prompt-format"
        spellings = option.split("/")
        return next((s for s in spellings if "_" not in s), spellings[0])

    if message.startswith("argument "):  # "argument --ratio: invalid float value: 'x'"
        option, _, what = message[len("argument "):].partition(": ")
        raise InputError(name(option), what)
    if message.startswith("the following arguments are required: "):
        missing = [name(m) for m in message.split(": ", 1)[1].split(", ")]
        raise InputError(", ".join(missing), "is required" if len(missing) == 1 else "are required")
    raise InputError("arguments", message)


def read_config_file(path: str, config_cls: type, parser) -> dict[str, Any]:
    """The option values of a YAML config file, checked: every key names an option of the command (or a positional
    argument, or ``env``: environment variables to set) and every value has its option's type."""
    import difflib
    import os

    import yaml

    from curation.io import InputError, read_text

    text = read_text(path)
    try:
        values = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "context_mark", None) or getattr(err, "problem_mark", None)  # where the bad node opens
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise InputError(path, f"not valid YAML: {problem}", line=mark.line + 1 if mark else None) from None
    if not isinstance(values, dict):
        raise InputError(path, f"must be a YAML mapping of option: value, not a {type(values).__name__}")

    def line_of(key: str) -> int | None:
        return next((n for n, line in enumerate(text.splitlines(), 1) if line.split(":")[0].strip() == key), None)

    env = values.pop("env", {})
    if not isinstance(env, dict):
        raise InputError(path, "'env' must map environment variable names to values", line=line_of("env"))
    dests = {a.dest for a in parser._actions if a.dest not in ("help", "config")}
    hints = typing.get_type_hints(config_cls)
    out = {}
    for key, value in values.items():
        key = str(key)
        if key not in dests:
            close = difflib.get_close_matches(key.replace("-", "_"), sorted(dests), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise InputError(path, f"unknown key {key!r}: no option of {parser.prog} takes it{hint}",
                             line=line_of(key))
        if key in hints:
            value, problem = _coerce(value, hints[key])
            if problem:
                raise InputError(path, f"{key}: {problem}", line=line_of(key))
        out[key] = value
    for name, value in env.items():
        os.environ[str(name)] = str(value)
    return out


def _coerce(value: Any, hint: Any) -> tuple[Any, str | None]:
    """``value`` (from YAML) fitted to the field type ``hint``, and what is wrong with it (None when it fits).

    >>> _coerce(3, int | None), _coerce("3", int)[1], _coerce(0.5, str), _coerce(["a", 1], list[str])
    ((3, None), "expected int, got '3'", ('0.5', None), (['a', '1'], None))
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None, None
        options = [a for a in args if a is not type(None)]
        problems = []
        for option in options:
            fitted, problem = _coerce(value, option)
            if problem is None:
                return fitted, None
            problems.append(problem)
        return value, problems[0]
    if origin is typing.Literal:
        return (value, None) if value in args else (value, f"expected one of {', '.join(map(repr, args))}, got "
                                                            f"{value!r}")
    if origin is list:
        if isinstance(value, str):
            return value, None  # a comma list; the config splits it
        if not isinstance(value, list):
            return value, f"expected a list, got {value!r}"
        item = args[0] if args else Any
        fitted = [_coerce(v, item) for v in value]
        problem = next((p for _, p in fitted if p), None)
        return [v for v, _ in fitted], problem
    if hint is bool:
        return (value, None) if isinstance(value, bool) else (value, f"expected true or false, got {value!r}")
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return (value, None) if ok else (value, f"expected int, got {value!r}")
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return (float(value), None) if ok else (value, f"expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value), None
        return (value, None) if isinstance(value, str) else (value, f"expected text, got {value!r}")
    return value, None


def run(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run a command's ``main`` and turn the ways it can fail on its input into one line on stderr, no traceback:

    * bad input (:class:`~curation.io.InputError`, also raised by config checks as ``InputError("--option", "what
      is wrong")``) and outputs that cannot be written (:class:`~curation.io.OutputError`, any other ``OSError``):
      ``error: PATH: what is wrong``, exit code 2;
    * Ctrl-C (SIGINT): exit code 130. Outputs are left as a kill would leave them: finished ones in place, the one
      being written not at all, partial results meant for resuming (``curate ifd``'s) kept.
    """
    from curation.io import InputError, os_error_line

    try:
        return int(main(argv) or 0)
    except InputError as err:
        _error(str(err))
        return EXIT_INPUT_ERROR
    except OSError as err:
        _error(os_error_line(err))
        return EXIT_INPUT_ERROR
    except KeyboardInterrupt:
        _error("interrupted (SIGINT); the output being written was not written, finished ones are in place")
        return EXIT_INTERRUPTED


def _error(message: str) -> None:
    print("error: " + " ".join(message.split("\n")), file=sys.stderr, flush=True)


def _usage() -> str:
    lines = ["usage: bioselect COMMAND ...", "", "commands:"]
    for words, module in COMMANDS.items():
        lines.append(f"  {' '.join(words):<18} python -m {module}")
    return "\n".join(lines)


def _run_module(module: str, argv: Sequence[str]) -> int:
    return importlib.import_module(module).main(argv)


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
            # run() here too: a Ctrl-C while the command's modules are imported is one line as well
            return run(functools.partial(_run_module, COMMANDS[key]), argv[n:])
    print(f"bioselect: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}", file=sys.stderr)
    return EXIT_INPUT_ERROR


if __name__ == "__main__":
    sys.exit(main())
