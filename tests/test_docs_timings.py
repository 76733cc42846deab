"""A timing in README.md, docs/*.md or a config's opening comment cites the results file that measured it.

A paragraph (text between blank lines, code left out) or a config's opening comment block that states a duration
(``517 s``, ``7.5 min``, ``2 h``, ``6 ms``) must name an existing file under docs/results/, which holds the command,
the machine and its load; a timing no results file backs is dropped instead, so the docs cannot go stale silently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))
DURATION = re.compile(r"(?<![\w.])\d[\d,.]*(?:\s?-\s?\d[\d,.]*)?[\s-]?(?:ms|s|sec|seconds?|min|minutes?|h|hours?)\b")
CITATION = re.compile(r"results/([\w./-]+\.md)")


def paragraphs(path: Path) -> list[tuple[int, str]]:
    """(first line, text) of each paragraph of prose, or of a config's opening comment block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".yaml":
        end = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
        return [(1, "\n".join(lines[:end]))]
    out: list[tuple[int, str]] = []
    block: list[str] = []
    start, fence = 1, False
    for i, line in enumerate([*lines, ""], 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence or line.startswith("    ") and not block:
            continue
        if line.strip():
            start = i if not block else start
            block.append(line)
        elif block:
            out.append((start, "\n".join(block)))
            block = []
    return out


def uncited_timings(path: Path) -> list[str]:
    found = []
    for line, text in paragraphs(path):
        timings = DURATION.findall(re.sub(r"`[^`]*`", "", text))  # not in code: `0.5 exp(-s) L + 0.5 s`
        cited = [c for c in CITATION.findall(text) if (REPO / "docs" / "results" / c).is_file()]
        if timings and not cited:
            found.append(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{line}: {timings}")
    return found


@pytest.mark.parametrize("path", DOCS + CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_timings_cite_a_results_file(path: Path):
    uncited = uncited_timings(path)
    assert not uncited, "timings without a docs/results/ file in their paragraph:\n" + "\n".join(uncited)


def test_the_check_finds_an_uncited_timing(tmp_path):
    doc = tmp_path / "guide.md"
    doc.write_text("Intro.\n\nA step takes about 30 s here,\nso 150 steps take ~75 min.\n\n"
                   "The smoke run took 7.5 min ([results/token_mtl_smoke.md](results/token_mtl_smoke.md)).\n\n"
                   "Not a timing: `--seeds 3` s, 150 steps of 16, r 16.\n\n"
                   "A 15-minute demo (docs/results/no_such_file.md).\n\n    wall 2,050 s  # code\n")
    assert uncited_timings(doc) == ["guide.md:3: ['30 s', '75 min']", "guide.md:10: ['15-minute']"]
