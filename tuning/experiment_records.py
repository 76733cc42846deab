"""A study's records: what a finished study is, without its adapters and its data (``bioselect tune experiment
--export_records DIR``).

    bioselect tune experiment --config configs/bioselecttune_study_ncbi.yaml --export_records records/ncbi
    mkdir -p runs/bioselecttune_study/ncbi && cp -r records/ncbi/. runs/bioselecttune_study/ncbi/
    bioselect tune experiment --config configs/bioselecttune_study_ncbi.yaml     # rebuilds data, scores, selections

The records of a study folder are its settings and step log (``experiment.json``, ``shared_steps.json``), its report
(``report.md``, ``report.json``, ``results.csv``, the plots), and for every finished run its answers (``pred.jsonl``:
ids and generated text, no input text), its scores (``eval.json``), its step log and the manifests of its training
and selection (``adapter/manifest.json``: the resolved config, the loss curve, seconds and tokens, provenance), a few
hundred kB in all. ``records.json`` adds the sha256 of every data, score and selection file the runs were made from.

Copied into an empty study folder, the records make the same command rebuild what they leave out and nothing else: the
data and IFD steps and the selections run again (deterministic), while training, generation and scoring are skipped
because their outputs are there; the rebuilt files are checked against ``records.json`` (other data, another
scorer or another selection code would make other files: refused, exit code 2, before anything is reported). The
report is then written as it was, and new arms, ratios or seeds may be added to the study. The adapters are not in
the records: a restored run cannot be generated from again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from curation.io import InputError, atomic_folder, sha256_file, write_json

# files of the study folder and of each finished run that the records hold (when present)
STUDY_FILES = ("experiment.json", "shared_steps.json", "report.md", "report.json", "results.csv", "f1_vs_ratio.png",
               "train_loss.png")
RUN_FILES = ("eval.json", "pred.jsonl", "pred.jsonl.manifest.json", "steps.json", "adapter/manifest.json",
             "train.jsonl.manifest.json")
RECORDS = "records.json"
# IFD scores are floats whose last digits follow the torch thread count (BC5CDR, 1 vs 2 threads: up to 3e-6 apart,
# the same ranking), so their sha256 is recorded but not checked: they are checked through the selections made from
# them (each run's train.jsonl), which are the same bytes whenever the ranking is
UNCHECKED = ("scores/",)


def _hashed(out: Path, runs: Sequence[Any]) -> list[Path]:
    """The rebuilt files a study's runs were made from: its data and scores, and each run's selection."""
    files = sorted(p for sub in ("data", "scores") for p in (out / sub).glob("*.jsonl"))
    return files + [Path(r.folder) / "train.jsonl" for r in runs if (Path(r.folder) / "train.jsonl").is_file()]


def check_export_dest(out: Path, dest: str | Path) -> None:
    """Refuse a study folder without a study, and a records folder inside it or one that exists and holds anything."""
    if not (out / "experiment.json").is_file():
        raise InputError("--export_records", f"{out} holds no study to record")
    dest = Path(dest)
    if dest.resolve() == out.resolve() or out.resolve() in dest.resolve().parents:
        raise InputError("--export_records", f"{dest} is inside the study folder {out}; name a folder outside it")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise InputError("--export_records", f"{dest} exists and is not an empty folder; name a new one (records are "
                                             "never written over)")


def export_records(out: Path, runs: Sequence[Any], dest: str | Path) -> dict[str, Any]:
    """Write the records of study folder ``out`` (its finished ``runs``) to the new folder ``dest`` (refused when it
    exists and holds anything: nothing is written over) in one rename. Returns what ``records.json`` holds."""
    check_export_dest(out, dest)
    finished = [r for r in runs if (Path(r.folder) / "eval.json").is_file()]
    if not finished:
        raise InputError("--export_records", f"no finished run in {out}: nothing to record")
    hashes = {p.relative_to(out).as_posix(): sha256_file(p) for p in _hashed(out, finished)}
    record = {"runs": [r.key for r in finished], "sha256": hashes}
    with atomic_folder(dest) as tmp:
        copies = [name for name in STUDY_FILES if (out / name).is_file()]
        copies += [(Path(r.folder) / name).relative_to(out).as_posix() for r in finished for name in RUN_FILES
                   if (Path(r.folder) / name).is_file()]
        for name in copies:
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out / name, tmp / name)
        write_json(tmp / RECORDS, record)
    return record


def _read_records(path: Path, key: str) -> Any:
    """One field of a ``records.json`` (a clear error when it is not one)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))[key]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise InputError(path, f"not a records file ({type(err).__name__}: {err})") from None


def git_ignored(dest: str | Path) -> list[str]:
    """The files under ``dest`` that git would leave out of a commit (``git check-ignore``: e.g. a ``runs/`` rule
    that hides the records' ``runs/`` folder), as ``path (rule)`` lines; empty outside a git work tree or without
    git."""
    dest = Path(dest)
    files = sorted(p.resolve().as_posix() for p in dest.rglob("*") if p.is_file())
    try:
        done = subprocess.run(["git", "-C", str(dest), "check-ignore", "--verbose", "--stdin"], input="\n".join(files),
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    if done.returncode not in (0, 1):  # 128: not a git work tree
        return []
    lines = []
    for line in done.stdout.splitlines():  # SOURCE:LINENUM:PATTERN<TAB>PATH
        rule, _, path = line.partition("\t")
        lines.append(f"{Path(path).relative_to(dest.resolve()).as_posix()} ({rule})")
    return lines


def check_recorded_runs(out: Path) -> None:
    """Refuse a study folder whose ``records.json`` lists finished runs that are not there (records copied
    incompletely, e.g. committed under an ignore rule that hid their ``runs/`` folder): their training would start
    again unasked. Nothing runs; copy the records whole, or delete ``records.json`` to train those runs again."""
    path = out / RECORDS
    if not path.is_file():
        return
    keys = _read_records(path, "runs")
    lost = [k for k in keys if not (out / "runs" / k / "eval.json").is_file()]
    if lost:
        raise InputError(path, f"lists {len(lost)} finished run(s) whose files are not in {out / 'runs'} "
                               f"({', '.join(lost)}): the records were copied incompletely; copy them whole, or "
                               "delete records.json to train those runs again")


def check_records(out: Path) -> None:
    """Refuse a study folder rebuilt from records (``records.json``) whose rebuilt data or selections differ from the
    files the recorded runs were made from; files not rebuilt yet are not checked, IFD scores only through the
    selections (:data:`UNCHECKED`)."""
    path = out / RECORDS
    if not path.is_file():
        return
    hashes = _read_records(path, "sha256")
    for name, digest in sorted(hashes.items()):
        rebuilt = out / name
        if name.startswith(UNCHECKED):
            continue
        if rebuilt.is_file() and sha256_file(rebuilt) != digest:
            raise InputError(rebuilt, "differs from the file the recorded runs were made from (records.json): other "
                                      "data, scorer or selection code; rebuild in a new folder without the records")
