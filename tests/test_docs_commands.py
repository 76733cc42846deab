"""Every command line the documentation shows is accepted as written.

Collected from README.md, docs/*.md (not docs/results/, whose commands record how a result was made) and the
opening comment of every config under configs/ (its first line, the command that runs it, and any other line of it
that is a command); a new doc or config joins by being there. In Markdown, shell code blocks (fenced as ``bash``,
``sh``, ``shell``, ``console`` or without a language, or indented by four spaces) and inline code spans are read; a
line or span is a command when its program, after ``VAR=value`` assignments and ``nice -n N``, is ``bioselect``,
``python``, ``accelerate`` or ``make``. A trailing ``\\`` continues a line, ``# ...`` ends it; in a config's
comment the command ends at `` (``. ``|``, ``&&``, ``||`` and ``;`` between words split a line into commands that
are checked one by one.

What is checked, without running anything heavy:

* ``bioselect WORDS``: WORDS name a command of ``curation.cli.COMMANDS`` (``bioselect data`` one of its
  subcommands). ``python -m MODULE``: MODULE is a command module (another module must be importable);
  ``python SCRIPT.py``: the script's argparse parser accepts the arguments. ``accelerate launch OPTS -m MODULE
  ARGS``: accelerate's own launch parser accepts OPTS, a ``--config_file`` loads with accelerate's loader, and
  MODULE ARGS is checked as ``python -m MODULE ARGS``. ``make TARGET``: TARGET is a target of the Makefile.
* The command's own parser (the one its ``main`` builds) gets the arguments: every option is accepted, every value
  has the option's type, required options are present, a ``--config`` file loads into the command's dataclass
  (every key a field) and the dataclass's own checks pass. The command stops right after parsing.
* Placeholders stand for values: an upper-case word (``PATH``, ``OUT.jsonl``, ``NAME=PATH``, ``DIR_OR_HUB_ID``) or
  a path with ``...`` (``.../split/test.jsonl``). Strings take them as they are; a number or a choice takes the
  option's default. Files are not checked, options are: bad input that names a file instead of an option (no such
  file, a corpus folder that is absent here) is accepted.
* ``[...]`` is optional: the command is checked without it and with each ``|``-separated alternative in it; a value
  ``a|b`` is tried as ``a`` and as ``b``; a ``--config`` value with ``*`` is tried with every file it matches.
* ``...`` as an option's value is a placeholder; after the values of a multi-value option it means more values;
  anywhere else it means options left out, and then required options are not checked (nor the dataclass's checks,
  which need them). ``--config RECIPE`` (a placeholder) is dropped in the same way: the recipe gives the rest.
* An inline span that only names a command, at most with switches (``bioselect curate``, ``bioselect tune
  generate --constrained``), refers to it in prose: the command and the switches must exist.
* Cheap commands run for real: ``bioselect data ...``, ``bioselect evaluate`` and ``bioselect tune evaluate``, with
  placeholders replaced by tests/assets/tiny_ncbi.tsv (inputs) or files in a temporary folder (outputs), in a
  temporary working folder that sees configs/ and ../shared (one folder per doc, so a command reads what the
  commands before it wrote); they must exit 0. A command that reads ../shared, or runs/ files written from it, runs
  only where ../shared is.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib
import importlib.util
import io
import itertools
import os
import re
import runpy
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from curation.cli import COMMANDS
from tests.helpers import ASSETS, REPO, SHARED

DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
PROGRAMS = {"bioselect", "python", "python3", "accelerate", "make"}
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
SEPARATORS = {"|", "||", "&&", ";"}
RUN_FOR_REAL = {"curation.data", "curation.evaluate", "tuning.compare"}
OUTPUT_DESTS = {"output", "json", "output_dir"}
PLACEHOLDER = re.compile(r"[A-Z][A-Z0-9_]*(=[A-Z][A-Z0-9_]*)?(\.[a-z]+)?(\.\.\.)?")


@dataclass(frozen=True)
class DocCommand:
    where: str  # FILE:LINE
    text: str
    inline: bool = False


# ---------------------------------------------------------------------------------------------------------------
# collecting


def markdown_commands(path: Path) -> list[DocCommand]:
    """The command lines of one Markdown file: shell code blocks, indented code and inline code spans."""
    rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    lines = path.read_text(encoding="utf-8").splitlines()
    prose = list(lines)
    code: list[tuple[int, str]] = []
    fence: str | None = None
    indented = False
    for i, line in enumerate(lines):
        m = re.match(r"\s*```(\w*)", line)
        if fence is not None:
            prose[i] = ""
            if m:
                fence = None
            elif fence in SHELL_LANGS:
                code.append((i + 1, line))
            continue
        if m:
            fence, prose[i] = m.group(1), ""
            continue
        previous_blank = i == 0 or not lines[i - 1].strip()
        indented = line.startswith("    ") and (indented or previous_blank)
        if indented:
            code.append((i + 1, line))
            prose[i] = ""
    out: list[DocCommand] = []
    pending: tuple[int, str] | None = None
    for lineno, line in code:
        text = line.strip()
        if pending is not None:
            lineno, text = pending[0], pending[1] + " " + text
            pending = None
        if text.endswith("\\"):
            pending = (lineno, text[:-1].rstrip())
            continue
        if is_command(text, comments=True):
            out.append(DocCommand(f"{rel}:{lineno}", text))
    text = "\n".join(prose)
    for m in re.finditer(r"`([^`]+)`", text):
        span = " ".join(m.group(1).replace("\\|", "|").split())
        if is_command(span, comments=False):
            out.append(DocCommand(f"{rel}:{text.count(chr(10), 0, m.start()) + 1}", span, inline=True))
    return out


def config_commands(path: Path) -> list[DocCommand]:
    """The first line of a config (the command that runs it) and any other line of its opening comment that is a
    command (``#   bioselect data convert ...`` to make its data)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0].startswith("# "), f"{path}: the first line is not a comment giving the command"
    out = []
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        text = re.split(r"\s+\(", line[1:].strip())[0]
        if i == 0 or is_command(text, comments=True):
            out.append(DocCommand(f"{path.relative_to(REPO)}:{i + 1}", text))
    return out


def commands_of(path: Path) -> list[DocCommand]:
    return config_commands(path) if path.suffix == ".yaml" else markdown_commands(path)


def split_words(text: str, comments: bool) -> list[str]:
    try:
        return shlex.split(text, comments=comments)
    except ValueError:
        return text.split()


def strip_prefix(words: list[str]) -> list[str]:
    """Drop ``VAR=value`` assignments and ``nice -n N`` in front of the program."""
    words = list(words)
    while words:
        if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\S*", words[0]):
            words.pop(0)
        elif words[0] == "nice":
            words.pop(0)
            if words and words[0] == "-n":
                words = words[2:]
            elif words and re.fullmatch(r"-n?\d+", words[0]):
                words.pop(0)
        else:
            break
    return words


def is_command(text: str, comments: bool) -> bool:
    words = strip_prefix(split_words(text, comments))
    return bool(words) and words[0] in PROGRAMS


def variants(text: str, comments: bool) -> list[list[str]]:
    """The concrete argument lists of one command line: split at shell separators, optional groups and value
    alternatives expanded, ``--config`` globs matched."""
    words = split_words(text, comments)
    items: list[str | list[list[str]]] = []  # a word, or an optional group's alternatives
    i = 0
    while i < len(words):
        w = words[i]
        if w.startswith("[") and w != "[":
            group, w = [], w[1:]
            while True:
                end = w.endswith("]")
                w = w[:-1] if end else w
                if w:
                    group.append(w)
                if end or i + 1 == len(words):
                    break
                i += 1
                w = words[i]
            alternatives: list[list[str]] = [[]]
            for g in group:
                if g == "|":
                    alternatives.append([])
                else:
                    alternatives[-1].append(g)
            items.append(alternatives)
        else:
            items.append(w)
        i += 1
    parts: list[list] = [[]]
    for item in items:
        if isinstance(item, str) and item in SEPARATORS:
            parts.append([])
        else:
            parts[-1].append(item)
    out: list[list[str]] = []
    for part in parts:
        base = [w for w in part if isinstance(w, str)]
        if not strip_prefix(base) or strip_prefix(base)[0] not in PROGRAMS:
            continue
        cases = [base]
        for k, item in enumerate(part):
            if not isinstance(item, str):
                pos = sum(isinstance(w, str) for w in part[:k])
                cases += [base[:pos] + alt + base[pos:] for alt in item]
        for case in cases:
            case = strip_prefix(case)
            options = []
            for j, w in enumerate(case):
                if j and case[j - 1] == "--config" and "*" in w:
                    options.append(sorted(str(p.relative_to(REPO)) for p in REPO.glob(w)) or [w])
                elif "|" in w and not w.startswith("-"):
                    options.append(w.split("|"))
                else:
                    options.append([w])
            out.extend(list(c) for c in itertools.product(*options))
    return out


# ---------------------------------------------------------------------------------------------------------------
# checking


class Parsed(BaseException):  # noqa: N818 - a signal, not an error: the command's parser accepted its arguments
    """Raised by the patched parsers once the arguments are parsed, so that the command stops there."""


class Failed(Exception):
    pass


def is_placeholder(value: str) -> bool:
    return "..." in value or PLACEHOLDER.fullmatch(value) is not None


@dataclass
class Plan:
    """How the patched parsers treat the next command: ``run`` lets it go on with placeholders turned into files
    under ``folder``; otherwise it stops after parsing."""

    run: bool = False
    folder: Path | None = None
    elided: bool = False


def placeholder_value(action: argparse.Action, value: str, plan: Plan) -> str:
    if not is_placeholder(value):
        return value
    if action.choices:
        return str(next(iter(action.choices)))
    if action.type is not None:
        try:
            action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):  # a number or a switch's value: its default
            default = action.default
            return str(default) if default is not None and not isinstance(default, (list, tuple)) else "1"
    if not plan.run:
        return action.dest.upper() if value == "..." else value  # `--input ... --output ...` are two files
    if action.dest in OUTPUT_DESTS:
        name = value.split("/")[-1].strip(".") or "out"
        return str(plan.folder / name.lower())
    asset = str(ASSETS / "tiny_ncbi.tsv")
    return value.split("=")[0] + "=" + asset if "=" in value else asset


def prepare(parser: argparse.ArgumentParser, args: list[str], plan: Plan) -> list[str]:
    """``args`` with placeholders replaced; ``...`` standing for left-out options marks the plan elided."""
    actions = parser._option_string_actions
    positionals = [a for a in parser._actions if not a.option_strings]
    out: list[str] = []
    i = 0
    while i < len(args):
        w = args[i]
        name = w.split("=", 1)[0]
        if w.startswith("-") and name in actions:
            action = actions[name]
            if "=" in w:
                out.append(name + "=" + placeholder_value(action, w.split("=", 1)[1], plan))
                i += 1
                continue
            out.append(w)
            i += 1
            if action.nargs == 0:
                continue
            many = action.nargs in ("+", "*") or isinstance(action.nargs, int) and action.nargs > 1
            while i < len(args) and not args[i].startswith("-"):
                if args[i] == "..." and many and out[-1] != w:
                    i += 1  # more values
                    continue
                out.append(placeholder_value(action, args[i], plan))
                i += 1
                if not many:
                    break
        elif w == "...":
            plan.elided = True
            i += 1
        else:
            action = positionals[0] if positionals else argparse.Action([], "positional")
            out.append(placeholder_value(action, w, plan))
            i += 1
    return out


@contextlib.contextmanager
def patched_parsers(plan: Plan):
    """Route every parser a command builds (trl's TrlParser, plain argparse) through :func:`prepare`."""
    from trl import TrlParser

    from curation.io import InputError

    original = TrlParser.parse_args_into_dataclasses
    plain = argparse.ArgumentParser.parse_args

    def trl_parse(self, args=None, *rest, **kwargs):
        # curation.cli.parse_config has read --config (a placeholder one was dropped by `call`) into the defaults
        args = prepare(self, list(args), plan)
        if plan.elided:
            for action in self._actions:
                action.required = False
            _, rest_args = self.parse_known_args(args)
            if rest_args:
                raise Failed(f"arguments not accepted: {rest_args}")
            raise Parsed
        try:
            out = original(self, args, *rest, **kwargs)
        except InputError as err:
            if err.path.startswith("-") or plan.run:
                raise
            raise Parsed from None  # a file the command would read: not checked here
        if plan.run:
            return out
        if kwargs.get("return_remaining_strings") and out[-1]:
            raise Failed(f"arguments not accepted: {out[-1]}")
        raise Parsed

    def plain_parse(self, args=None, namespace=None):
        args = prepare(self, list(sys.argv[1:] if args is None else args), plan)
        if plan.elided:
            for action in self._actions:
                action.required = False
        out = plain(self, args, namespace)
        if plan.run:
            return out
        raise Parsed

    environ = dict(os.environ)
    TrlParser.parse_args_into_dataclasses = trl_parse
    argparse.ArgumentParser.parse_args = plain_parse
    try:
        yield
    finally:
        TrlParser.parse_args_into_dataclasses = original
        argparse.ArgumentParser.parse_args = plain
        os.environ.clear()
        os.environ.update(environ)  # a config's `env:` block sets variables


def call(target, args: list[str], plan: Plan) -> None:
    """Call a command's ``main(args)`` (or run a script) under the patched parsers; raise :class:`Failed` unless its
    parser accepted the arguments (and, when the plan runs it, unless it exits 0)."""
    err, out = io.StringIO(), io.StringIO()
    if "--config" in args:  # `--config RECIPE`: the recipe gives the rest
        k = args.index("--config")
        if k + 1 < len(args) and is_placeholder(args[k + 1]):
            args = args[:k] + args[k + 2:]
            plan.elided = True
    try:
        with patched_parsers(plan), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            if isinstance(target, Path):
                saved = sys.argv
                sys.argv = [str(target), *args]
                try:
                    runpy.run_path(str(target), run_name="__main__")
                finally:
                    sys.argv = saved
                rc = 0
            else:
                rc = target(args)
    except Parsed:
        return
    except SystemExit as e:
        raise Failed(f"exit {e.code}: {err.getvalue().strip()[-600:]}") from None
    except Failed:
        raise
    except Exception as e:  # noqa: BLE001 - any other error is a finding, reported with the command
        raise Failed(f"{type(e).__name__}: {e}") from None
    if not plan.run or rc not in (0, None):
        raise Failed(f"exit {rc}: {err.getvalue().strip()[-600:]}")


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return {m.group(1) for m in re.finditer(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M)}


def needs_shared(args: list[str]) -> bool:
    """Reads ../shared, or runs/ files that an earlier command wrote from it."""
    return any("../shared" in a or a.startswith("runs/") for a in args)


def check(argv: list[str], inline: bool, folder: Path) -> str | None:
    """Check one argument list (program first); return what ran for real, if anything. Raises :class:`Failed`."""
    program, args = argv[0], argv[1:]
    if program == "make":
        targets = [a for a in args if not a.startswith("-") and "=" not in a]
        missing = sorted(set(targets) - makefile_targets())
        if missing:
            raise Failed(f"no Makefile target {missing}")
        return None
    if program == "accelerate":
        return check_accelerate(args, inline, folder)
    if program in ("python", "python3"):
        if args[:1] == ["-m"] and len(args) > 1:
            return check_module(args[1], args[2:], inline, folder)
        if args and args[0].endswith(".py"):
            script = REPO / args[0]
            if not script.is_file():
                raise Failed(f"no script {args[0]}")
            call(script, args[1:], Plan())
            return None
        raise Failed("python without -m MODULE or a script")
    if args in ([], ["..."]):
        return None  # the program itself named in prose
    for n in (2, 1):
        key = tuple(args[:n])
        if key in COMMANDS:
            return check_module(COMMANDS[key], args[n:], inline, folder, words=key)
    if inline and args and any(k[:len(args)] == tuple(args) for k in COMMANDS):
        return None  # `bioselect curate`: a group of commands named in prose
    raise Failed(f"no command 'bioselect {' '.join(args[:2])}'")


def check_accelerate(args: list[str], inline: bool, folder: Path) -> str | None:
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.commands.launch import launch_command_parser

    if args[:1] != ["launch"]:
        raise Failed("accelerate without launch")
    args = args[1:]
    k = next((i for i, a in enumerate(args) if a in ("-m", "--module")), None)
    if k is None or k + 1 >= len(args):
        if not inline:
            raise Failed("accelerate launch without -m MODULE")
        ours, module, rest = args, None, []  # accelerate's options named in prose
    else:
        ours, module, rest = args[:k], args[k + 1], args[k + 2:]
    parser = launch_command_parser()
    plan = Plan()
    prepared = prepare(parser, ours, plan)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            ns = parser.parse_args([*prepared, "-m", module or "x"])
    except SystemExit:
        raise Failed(f"accelerate launch: {err.getvalue().strip()[-400:]}") from None
    if ns.config_file:
        if not (REPO / ns.config_file).is_file():
            raise Failed(f"no accelerate config {ns.config_file}")
        load_config_from_file(str(REPO / ns.config_file))
    if module is None or is_placeholder(module):
        return None
    return check_module(module, rest, inline, folder)


def check_module(module: str, args: list[str], inline: bool, folder: Path, words: tuple[str, ...] = ()) -> str | None:
    if is_placeholder(module):
        return None
    if module not in COMMANDS.values():
        if importlib.util.find_spec(module) is None:
            raise Failed(f"no module {module}")
        return None
    main = importlib.import_module(module).main
    if module == "curation.data":
        from curation.data import SUBCOMMANDS

        if not args and inline:
            return None
        if not args or args[0] not in SUBCOMMANDS:
            raise Failed(f"bioselect data needs one of {SUBCOMMANDS}")
    named_only = inline and all(a.startswith("-") for a in args[1 if module == "curation.data" else 0:])
    plan = Plan(elided=named_only)
    call(main, args, plan)
    if plan.elided or module not in RUN_FOR_REAL:
        return None
    if needs_shared(args) and not SHARED.is_dir():
        return None
    out = folder / f"run{len(list(folder.iterdir()))}"
    out.mkdir()
    call(main, args, Plan(run=True, folder=out))
    return " ".join(["bioselect", *words, *args]) if words else module


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A working folder like the repository root (configs/, Makefile, ../shared) whose writes stay in tmp_path."""
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("configs", "Makefile", "tests"):
        (root / name).symlink_to(REPO / name)
    if SHARED.is_dir():
        (tmp_path / "shared").symlink_to(SHARED)
    monkeypatch.chdir(root)
    return root


def check_all(commands: list[DocCommand], folder: Path) -> tuple[list[str], list[str]]:
    failures, ran = [], []
    for cmd in commands:
        for argv in variants(cmd.text, comments=not cmd.inline):
            try:
                what = check(argv, cmd.inline, folder)
            except Failed as e:
                failures.append(f"{cmd.where}: `{' '.join(argv)}`: {e}")
            else:
                if what:
                    ran.append(what)
    return failures, ran


@pytest.mark.parametrize("path", DOCS + CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_documented_commands_are_accepted(path: Path, workdir: Path, tmp_path: Path):
    commands = commands_of(path)
    out = tmp_path / "out"
    out.mkdir()
    failures, _ = check_all(commands, out)
    assert not failures, f"{len(failures)} of {len(commands)} commands in {path.name} fail:\n" + "\n".join(failures)


def test_readme_and_guides_show_commands():
    """The collector finds the commands where they are (a change to it that finds nothing must not pass)."""
    counts = {p.name: len(commands_of(p)) for p in DOCS}
    assert counts["README.md"] >= 20 and counts["curation.md"] >= 5 and counts["training.md"] >= 5
    assert all(commands_of(p) for p in CONFIGS)


# ---------------------------------------------------------------------------------------------------------------
# the checker itself: it finds what it is meant to find

GOOD_AND_BAD = """\
# A guide

```bash
bioselect data convert PATH --task ner --output OUT.jsonl   # runs on the tiny asset
bioselect evaluate --gold GOLD --pred PRED \\
    --output OUT.json
bioselect evaluate --gold GOLD --pred PRED
bioselect data convert PATH --task ner --output OUT.jsonl --no-such-option 3
bioselect tune generate --model M --input IN.jsonl --output PRED.jsonl --batch-size many
```

```python
bioselect is not a shell command here
```

    bioselect curate frobnicate --input IN.jsonl

Inline: `bioselect tune train --config configs/nope.yaml`, `bioselect curate`, `make no-such-target`,
`bioselect tune generate --constrained`, `bioselect tune train ... --mix even --max-steps N`,
`accelerate launch --config_file configs/accelerate/ddp.yaml --num_procs 2 -m tuning.train --config RECIPE`,
`python -m tuning.train --config FILE.yaml`, `bioselect tune generate [--adapter A | --bogus B] --model M --input I
--output O`, `bioselect mtl sru --config {bad}`.
"""


def test_the_checker_rejects_what_a_user_could_not_run(workdir, tmp_path):
    doc = tmp_path / "guide.md"
    bad = tmp_path / "bad.yaml"
    bad.write_text("corpora: ncbi=../shared/data/ner/NCBI-disease\nmodel: m\noutput: runs/x\nno_such_field: 1\n")
    doc.write_text(GOOD_AND_BAD.format(bad=bad))
    commands = markdown_commands(doc)
    assert [c.text.split()[:3] for c in commands if not c.inline][:2] == [["bioselect", "data", "convert"],
                                                                         ["bioselect", "evaluate", "--gold"]]
    assert "bioselect is not a shell command here" not in [c.text for c in commands]
    out = tmp_path / "out"
    out.mkdir()
    failures, ran = check_all(commands, out)
    text = "\n".join(failures)
    assert ran == ["bioselect data convert PATH --task ner --output OUT.jsonl",
                   "bioselect evaluate --gold GOLD --pred PRED --output OUT.json"]
    expected = [
        ("guide.md:7:", "--output: is required"),
        ("guide.md:8:", "--no-such-option"),
        ("guide.md:9:", "--batch-size"),
        ("guide.md:16:", "no command 'bioselect curate frobnicate'"),
        ("guide.md:18:", "configs/nope.yaml"),
        ("guide.md:18:", "no Makefile target ['no-such-target']"),
        ("guide.md:20:", "--num_procs"),
        ("guide.md:21:", "--bogus"),
        ("guide.md:22:", "no_such_field"),
    ]
    for where, what in expected:
        assert any(f.startswith(where) and what in f for f in failures), (where, what, text)
    assert len(failures) == len(expected), text


def test_variants_expand_options_alternatives_and_separators():
    assert variants("bioselect curate ifd --model M [--prompt-format plain|chat] # note", comments=True) == [
        ["bioselect", "curate", "ifd", "--model", "M"],
        ["bioselect", "curate", "ifd", "--model", "M", "--prompt-format", "plain"],
        ["bioselect", "curate", "ifd", "--model", "M", "--prompt-format", "chat"]]
    assert variants("OMP_NUM_THREADS=1 nice -n 19 make test && make demo", comments=True) == [["make", "test"],
                                                                                            ["make", "demo"]]
    recipes = variants("bioselect tune train --config configs/tune_*.yaml", comments=False)
    assert len(recipes) == len(glob.glob(str(REPO / "configs" / "tune_*.yaml"))) >= 4
