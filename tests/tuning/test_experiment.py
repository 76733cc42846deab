"""`bioselect tune experiment`: the step plan, resume, refusal of a folder made with another config, the
zero-shot check, and the whole chain (convert -> curate -> train -> generate -> evaluate) on a tiny random Llama."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.helpers import ASSETS
from tuning import experiment as E


def fake_call(calls: list[str], f1: dict[str, float] | None = None, fail: str | None = None):
    """A step runner that writes each step's output file (and, for evaluate, a comparison with the given F1s)."""

    def call(step: E.Step) -> int:
        calls.append(step.name)
        if step.name == fail:
            return 2
        path = Path(step.done)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"model": arm, "strict_f1": value} for arm, value in (f1 or {}).items()]
        path.write_text(json.dumps({"rows": rows}) if step.name == "evaluate" else "{}\n")
        return 0

    return call


def make_config(tmp_path: Path, **overrides) -> E.ExperimentConfig:
    base = dict(model="m", train=str(ASSETS / "tiny_ncbi.tsv"), test=str(ASSETS / "tiny_ncbi.tsv"),
                output_dir=str(tmp_path / "run"), arms=["zero-shot", "lora-subset", "lora-ifd"])
    return E.ExperimentConfig(**{**base, **overrides})


def test_plan_orders_steps_and_feeds_each_its_predecessor(tmp_path):
    steps = E.plan(make_config(tmp_path))
    assert [s.name for s in steps] == [
        "convert train", "convert test", "sample train", "sample test", "curate", "train lora-subset",
        "train lora-ifd", "generate zero-shot", "generate lora-subset", "generate lora-ifd", "evaluate"]
    by = {s.name: s for s in steps}
    assert by["curate"].argv[by["curate"].argv.index("--input") + 1] == by["sample train"].done
    ifd_train = by["train lora-ifd"].argv
    assert ifd_train[ifd_train.index("--train_files") + 1] == by["curate"].done
    subset_train = by["train lora-subset"].argv
    assert subset_train[subset_train.index("--train_files") + 1] == by["sample train"].done
    # same steps for both tuned arms: BioSelectTune compares data, not training length
    assert ifd_train[ifd_train.index("--max_steps") + 1] == subset_train[subset_train.index("--max_steps") + 1]
    assert "--adapter" not in by["generate zero-shot"].argv
    assert by["generate lora-ifd"].argv[by["generate lora-ifd"].argv.index("--adapter") + 1].endswith("lora-ifd")
    assert by["evaluate"].command().startswith("bioselect tune evaluate --gold ")


def test_resume_skips_finished_steps(tmp_path, capsys):
    cfg = make_config(tmp_path)
    calls: list[str] = []
    code, record = E.run_experiment(cfg, fake_call(calls, fail="train lora-ifd"))
    assert code == 2 and calls[-1] == "train lora-ifd"
    assert "train lora-ifd" not in record["steps"] and "train lora-subset" in record["steps"]
    assert "step 'train lora-ifd' exited with code 2" in capsys.readouterr().err
    calls.clear()
    f1 = {"zero-shot": 0.1, "lora-subset": 0.3, "lora-ifd": 0.4}
    code, record = E.run_experiment(cfg, fake_call(calls, f1))
    assert code == 0
    assert calls == ["train lora-ifd", "generate zero-shot", "generate lora-subset", "generate lora-ifd", "evaluate"]
    assert record["strict_f1"] == f1 and record["tuned_beats_zero_shot"] is True
    saved = json.loads((tmp_path / "run" / "experiment.json").read_text())
    assert set(saved["steps"]) == {s.name for s in E.plan(cfg)}
    assert saved["provenance"]["config"]["max_steps"] == cfg.max_steps
    calls.clear()
    assert E.run_experiment(cfg, fake_call(calls, f1))[0] == 0 and calls == []


def test_require_better_fails_when_tuning_does_not_help(tmp_path, capsys):
    cfg = make_config(tmp_path, require_better=True)
    code, record = E.run_experiment(cfg, fake_call([], {"zero-shot": 0.2, "lora-subset": 0.5, "lora-ifd": 0.2}))
    assert code == 1 and record["tuned_beats_zero_shot"] is False
    out = capsys.readouterr()
    assert "strict F1: zero-shot 20.00, lora-subset 50.00 (+30.00 over zero-shot), lora-ifd 20.00" in out.out
    assert "does not beat the zero-shot" in out.err


def test_folder_of_another_config_is_refused(tmp_path, capsys):
    cfg = make_config(tmp_path)
    E.run_experiment(cfg, fake_call([], {"zero-shot": 0.0, "lora-subset": 0.1, "lora-ifd": 0.1}))
    calls: list[str] = []
    with pytest.raises(E.InputError, match="another config .*max_steps"):
        E.run_experiment(replace(cfg, max_steps=99), fake_call(calls))
    assert calls == []
    argv = ["--model", "m", "--train", cfg.train, "--test", cfg.test, "--output_dir", cfg.output_dir,
            "--max_steps", "99"]
    assert E.main(argv) == 2
    assert "experiment.json: this folder holds a run with another config" in capsys.readouterr().err


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--arms", "few-shot", "expected distinct arms"), ("--train_fraction", "0", "must be in (0, 1]"),
    ("--train", "missing.tsv", "no such file"), ("--max_steps", "0", "at least 1")])
def test_bad_options_exit_2_before_any_step(tmp_path, capsys, option, value, message):
    argv = {"--model": "m", "--train": str(ASSETS / "tiny_ncbi.tsv"), "--test": str(ASSETS / "tiny_ncbi.tsv"),
            "--output_dir": str(tmp_path / "run"), option: value}
    assert E.main([x for kv in argv.items() for x in kv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_whole_chain_on_a_tiny_model(tiny_model, tmp_path, capsys):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["--model", str(tiny_model), "--train", str(ASSETS / "tiny_ncbi.tsv"), "--test",
                str(ASSETS / "tiny_ncbi.tsv"), "--output_dir", str(tmp_path / "run"), "--arms", "zero-shot",
                "lora-subset", "lora-ifd", "--train_fraction", "1", "--test_fraction", "1", "--max_steps", "2",
                "--batch_size", "2", "--lora_r", "4", "--lora_alpha", "8", "--max_new_tokens", "12",
                "--bootstrap", "20"]
        assert E.main(argv) == 0
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    run = tmp_path / "run"
    for name in ("train_ifd.jsonl", "train_ifd.jsonl.manifest.json", "comparison.md", "comparison.png",
                 "train_loss.png", "adapters/lora-ifd/adapter_model.safetensors", "pred_lora-subset.jsonl"):
        assert (run / name).exists(), name
    record = json.loads((run / "experiment.json").read_text())
    assert set(record["strict_f1"]) == {"zero-shot", "lora-subset", "lora-ifd"}
    assert all(s["seconds"] >= 0 and s["command"].startswith("bioselect ") for s in record["steps"].values())
    assert out.rstrip().splitlines()[-1].startswith("strict F1: zero-shot ")
    table = (run / "comparison.md").read_text()
    assert all(f"| {arm} | 3 |" in table for arm in ("zero-shot", "lora-subset", "lora-ifd"))
    ifd_lines = (run / "train_ifd.jsonl").read_text().splitlines()
    subset_lines = (run / "train_subset.jsonl").read_text().splitlines()
    assert 0 < len(ifd_lines) <= len(subset_lines)
