"""``--help`` renders for every command of ``bioselect`` (each in ``curation.cli.COMMANDS``, and each subcommand of
``bioselect data``), in process: it exits 0, names every option, and shows no argparse internals (a literal ``%`` in
a help string is formatted by argparse and prints the option's dict, or raises)."""

from __future__ import annotations

import argparse
import ast
import importlib

import pytest

from curation import cli
from curation.cli import COMMANDS
from curation.data import SUBCOMMANDS
from tests.helpers import REPO

WORDS = [list(words) for words in COMMANDS if words != ("data",)] + [["data", sub] for sub in SUBCOMMANDS]


def help_text(words: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*words, "--help"])
    out = capsys.readouterr()
    assert exit_.value.code == 0, out.err
    return out.out


def check_rendered(text: str) -> None:
    # a literal "%" formats argparse's own dict of the option into the text (its "option_strings" key); a plain "{'"
    # or "% " can be the help's own words (trl: "{'num_cycles': 1}", "~20%% slower" printed as "~20% slower")
    for internal in ("option_strings", "<argparse.", "%("):
        assert internal not in text, f"argparse internals in the help text ({internal!r}):\n{text}"


@pytest.mark.parametrize("words", WORDS, ids=" ".join)
def test_help_renders(words: list[str], capsys, monkeypatch):
    parsers: list[argparse.ArgumentParser] = []
    format_help = argparse.ArgumentParser.format_help

    def keep(self):
        parsers.append(self)
        return format_help(self)

    monkeypatch.setattr(argparse.ArgumentParser, "format_help", keep)
    text = help_text(words, capsys)
    assert text.startswith("usage: bioselect " + " ".join(words))
    check_rendered(text)
    options = [s for a in parsers[0]._actions for s in a.option_strings if s.startswith("--")]
    assert options and all(s in text for s in options)


def test_top_level_help_lists_every_command(capsys):
    assert cli.main(["--help"]) == 0
    text = capsys.readouterr().out
    for words, module in COMMANDS.items():
        assert f"{' '.join(words)}" in text and module in text
    assert cli.main(["data", "--help"]) == 0
    usage = capsys.readouterr().err
    assert all(sub in usage for sub in SUBCOMMANDS)


def test_the_check_sees_a_literal_percent():
    parser = argparse.ArgumentParser(prog="bioselect x")
    parser.add_argument("--a", help="about 20-30% slower")
    with pytest.raises(AssertionError, match="argparse internals"):
        check_rendered(parser.format_help())


def _runnable_modules() -> set[str]:
    """Modules of the packages that run as ``python -m MODULE`` (an ``if __name__ == "__main__":`` block)."""
    found = set()
    for package in ("prompts", "curation", "tuning", "mtl_baselines"):
        for path in (REPO / package).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            if any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in tree.body):
                found.add(".".join(path.relative_to(REPO).with_suffix("").parts))
    return found


def test_every_runnable_module_is_a_bioselect_command():
    """A command module added without its ``COMMANDS`` entry (or an entry whose module is gone) fails here."""
    assert _runnable_modules() - {"curation.cli"} == set(COMMANDS.values())
    for module in COMMANDS.values():
        assert callable(importlib.import_module(module).main), module
