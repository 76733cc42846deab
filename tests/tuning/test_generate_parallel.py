"""`bioselect tune generate` over several processes and after a kill: two processes under `accelerate launch` write
the bytes one process writes, a run killed with SIGKILL resumes from its partial folder and ends with the bytes of an
uninterrupted run, and a partial folder of other settings is refused."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import prompts
from curation.io import write_jsonl
from tests.helpers import (
    REPO,
    free_port,
    one_torch_thread,  # noqa: F401 (autouse: the module's tests run on one torch thread)
    run_group,
)
from tuning.generate import PARTS, SETTINGS, GenerateConfig, generate_file, main

WORDS = ["BRCA1", "mutations", "cause", "breast", "and", "ovarian", "cancer", "in", "T", "-", "cell", "leukaemia",
         "(", "ALL", ")", ",", "patients", "with", "Huntington", "disease", "."]



@pytest.fixture
def input_file(tmp_path) -> Path:
    """Eleven NER records of 1 to 30 words (prompts of different lengths, so the batches pad)."""
    rng = random.Random(0)
    rows = [{"id": f"s{i}", "instruction": prompts.instruction("ner", ["Disease"]),
             "input": " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 30))), "output": "[]",
             "dataset": "toy", "task": "ner"} for i in range(11)]
    path = tmp_path / "in.jsonl"
    write_jsonl(path, rows)
    return path


def subprocess_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def one_line_error(capsys, argv) -> str:
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


@pytest.mark.slow
def test_two_processes_write_the_bytes_one_process_writes(tiny_model, tmp_path, input_file):
    pytest.importorskip("llguidance", reason="llguidance is not installed: pip install 'bioselect[constrained]'")
    args = ["--model", str(tiny_model), "--input", str(input_file), "--batch-size", "2", "--max-new-tokens", "24"]
    one = tmp_path / "one.jsonl"
    assert main([*args, "--output", str(one)]) == 0
    two = tmp_path / "two.jsonl"
    # --multi_gpu: the torchrun launcher starts both processes; ACCELERATE_USE_CPU makes each a CPU (gloo) rank
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "tuning.generate", *args, "--output", str(two)]
    proc = run_group(cmd, timeout=600, cwd=REPO, env={**subprocess_env(), "ACCELERATE_USE_CPU": "true"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert two.read_bytes() == one.read_bytes()
    assert len({json.loads(line)["output"] for line in one.read_text().splitlines()}) > 1  # not all alike
    manifest = json.loads(Path(f"{two}.manifest.json").read_text())
    assert manifest["num_processes"] == 2 and manifest["resumed"] == 0
    assert manifest["generated_per_process"] == [6, 5]  # 6 batches of 2, 2, 2, 2, 2, 1 dealt out in turn
    assert json.loads(Path(f"{one}.manifest.json").read_text())["generated_per_process"] == [11]
    assert not Path(f"{two}{PARTS}").exists()
    assert proc.stdout.count("records") == 1  # the main process reports, once


def test_a_killed_run_resumes_where_it_stopped(tiny_model, tmp_path, input_file, capsys):
    # unconstrained answers of a random model rarely stop: every record costs the whole budget, so the run is
    # still going when its first records are on disk
    args = ["--model", tiny_model, "--input", input_file, "--unconstrained", "--batch-size", "1",
            "--max-new-tokens", "160"]
    whole = tmp_path / "whole.jsonl"
    assert main([str(a) for a in [*args, "--output", whole]]) == 0

    out = tmp_path / "out" / "pred.jsonl"
    part = Path(f"{out}{PARTS}") / "rank-0.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "tuning.generate", *map(str, args), "--output", str(out)],
                            cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    while not (part.exists() and part.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-2000:]
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    finished = part.read_bytes().count(b"\n")
    assert 1 <= finished < 11, "the run ended before it was killed"
    expected = whole.read_text().splitlines()
    with part.open("ab") as f:  # a line cut by the kill, as a kill inside a write leaves it
        f.write(expected[0].encode()[:25])
    folder = {p.name: p.read_bytes() for p in part.parent.iterdir()}

    capsys.readouterr()  # the reference run's progress bars
    # a rerun with other settings, another model or another input is refused and touches nothing
    other_model = tmp_path / "other-model"
    shutil.copytree(tiny_model, other_model)
    other_input = tmp_path / "other.jsonl"
    other_input.write_text("".join(input_file.read_text().splitlines(keepends=True)[:-1]))
    for change, what in ((["--max-new-tokens", "8"], "max_new_tokens"), (["--model", other_model], "model"),
                         (["--input", other_input], "input_sha256"), (["--batch-size", "2"], "batch_size"),
                         (["--repetition-penalty", "1.3"], "repetition_penalty")):
        line = one_line_error(capsys, [*args, *change, "--output", out])
        assert f"({what})" in line and SETTINGS in line, line
    assert {p.name: p.read_bytes() for p in part.parent.iterdir()} == folder and not out.exists()

    assert main([str(a) for a in [*args, "--output", out]]) == 0
    assert "resumed" in capsys.readouterr().out
    assert out.read_bytes() == whole.read_bytes()
    manifest = json.loads(Path(f"{out}.manifest.json").read_text())
    assert manifest["resumed"] == finished and manifest["generated_per_process"] == [11 - finished]
    assert manifest["counts"]["records"] == 11
    assert not part.parent.exists()


def test_length_sorting_pads_less_and_changes_no_answer(tiny_model, tmp_path, input_file):
    from transformers import AutoTokenizer

    from tuning.chat import render_prompt

    outs, manifests = {}, {}
    for sort in (True, False):
        outs[sort] = tmp_path / f"sort-{sort}.jsonl"
        manifests[sort] = generate_file(GenerateConfig(
            model=str(tiny_model), input=str(input_file), output=str(outs[sort]), unconstrained=True,
            batch_size=4, max_new_tokens=6, sort_by_length=sort))
    assert outs[True].read_bytes() == outs[False].read_bytes()
    # the padding share by hand: consecutive records in input order, or longest first
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    lengths = [len(tokenizer(render_prompt(tokenizer, json.loads(line)), add_special_tokens=False)["input_ids"])
               for line in input_file.read_text().splitlines()]
    for sort, order in ((False, lengths), (True, sorted(lengths, reverse=True))):
        groups = [order[k:k + 4] for k in range(0, len(order), 4)]
        pad = sum(max(g) - n for g in groups for n in g)
        assert manifests[sort]["padding_share"] == round(pad / sum(max(g) * len(g) for g in groups), 4)
    assert manifests[True]["padding_share"] < manifests[False]["padding_share"]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_input_is_refused(tiny_model, tmp_path, capsys, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content)
    line = one_line_error(capsys, ["--model", tiny_model, "--input", path, "--output", tmp_path / "o" / "p.jsonl"])
    assert "empty" in line and not (tmp_path / "o").exists()


def test_a_partial_folder_line_the_run_did_not_write_is_refused(tmp_path):
    from curation.io import InputError
    from tuning.generate import read_parts

    parts = tmp_path / f"pred.jsonl{PARTS}"
    parts.mkdir()
    (parts / SETTINGS).write_text(json.dumps({"model": "m"}))
    (parts / "rank-0.jsonl").write_text('{"id": "a", "output": "[]"}\n{"id": "b", "out')  # the second cut by a kill
    assert read_parts(parts, {"model": "m"}) == {"a": '{"id": "a", "output": "[]"}'}
    (parts / "rank-1.jsonl").write_text('{"id": "c", "output": "[]"}\n["no id"]\n')
    with pytest.raises(InputError, match=r"rank-1.jsonl:2: not a prediction line; delete .* to start again"):
        read_parts(parts, {"model": "m"})
