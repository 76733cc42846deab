"""`bioselect tune experiment`: the study plan (arms x rho x seeds), resume, workers sharing a folder, refusal of a
folder of other settings, the auto arm's choice of rho, the report's paired comparisons, and the whole study on a
tiny random Llama."""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from curation.io import run_lock
from tests.helpers import mlflow_store, one_torch_thread  # noqa: F401 (autouse: the module's tests run on one torch thread)
from tuning import experiment as E

SENTENCES = [
    ("Familial adenomatous polyposis is rare .", "B I I O O O"),
    ("We studied the APC gene .", "O O O O O O"),
    ("Breast cancer and ovarian cancer cluster .", "B I O B I O O"),
    ("No mutation was found .", "O O O O O"),
    ("Ataxia is a feature .", "B O O O O"),
    ("Samples were sequenced twice .", "O O O O O"),
    ("Gout and diabetes were recorded .", "B O B O O O"),
    ("The cohort was large .", "O O O O O"),
    ("Hemophilia A affects men .", "B I O O O"),
    ("Data were pooled .", "O O O O"),
    ("Renal failure followed sepsis .", "B I O B O"),
    ("All patients consented .", "O O O O"),
]


@pytest.fixture()
def corpus(tmp_path) -> Path:
    """Twelve IOB2 sentences, six with Disease mentions."""
    lines = []
    for text, tags in SENTENCES:
        for word, tag in zip(text.split(), tags.split(), strict=True):
            lines.append(f"{word}\t{'O' if tag == 'O' else tag + '-Disease'}")
        lines.append("")
    path = tmp_path / "tiny.tsv"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_config(tmp_path: Path, corpus: Path, **overrides) -> E.ExperimentConfig:
    base = dict(model="m", train=str(corpus), test=str(corpus), output_dir=str(tmp_path / "study"),
                arms=["zero-shot", "lora-full", "lora-ifd", "lora-random"], train_fraction=1.0, test_fraction=1.0,
                bootstrap=50)
    return E.ExperimentConfig(**{**base, **overrides})


def fake_call(calls: list[str], good: tuple[str, ...] = ("lora-ifd",), fail: str | None = None):
    """Runs the data, filter and evaluate commands for real and fakes the model steps (training fails in runs whose
    folder contains ``fail``): generation copies the gold answers for
    runs whose folder names an arm in ``good`` and answers ``[]`` elsewhere; IFD scores are the records' order."""
    import importlib

    def call(step: E.Step) -> int:
        where = step.done
        calls.append(f"{step.name} {where}")
        if fail and fail in where and step.module == "tuning.train":
            return 2
        argv = list(step.argv)
        path = Path(step.done)
        path.parent.mkdir(parents=True, exist_ok=True)
        if step.module in ("curation.data", "curation.evaluate", "curation.filter"):
            return importlib.import_module(step.module).main(argv)
        source = Path(argv[argv.index("--input") + 1]) if "--input" in argv else None
        rows = [json.loads(line) for line in source.read_text().splitlines()] if source else []
        if step.module == "curation.ifd":
            path.write_text("".join(json.dumps({"id": r["id"], "ifd": (k + 1) / (len(rows) + 1),
                                                "variant": "ppl_ratio"}) + "\n" for k, r in enumerate(rows)))
        elif step.module == "tuning.generate":
            copy = any(f"/runs/{arm}/" in where for arm in good)
            path.write_text("".join(json.dumps({"id": r["id"], "output": r["output"] if copy else "[]"}) + "\n"
                                    for r in rows))
        elif step.module == "tuning.train":
            files = [argv[argv.index("--train_files") + 1]]
            path.write_text(json.dumps({"config": {"train_files": files}, "training": {
                "global_step": 3, "train_runtime_s": 2.0, "train_tokens": 100, "epochs": 3.0}}))
        else:
            path.write_text("{}\n")
        return 0

    return call


def test_plan_feeds_each_step_its_predecessor(tmp_path, corpus, capsys):
    cfg = make_config(tmp_path, corpus, seeds=[0, 1], ratios=[0.5, 0.25], ladder_seeds=[1])
    shared = E.shared_steps(cfg)
    assert [s.name for s in shared] == ["convert train", "convert test", "sample train", "sample test", "score main"]
    assert "--positives_only" in shared[-1].argv  # negatives kept at random need no scores
    runs = {r.key: r for r in E.plan(cfg)}
    assert list(runs) == ["zero-shot", "lora-full/seed-0", "lora-ifd/rho-0.5/seed-0", "lora-random/rho-0.5/seed-0",
                          "lora-full/seed-1", "lora-ifd/rho-0.5/seed-1", "lora-random/rho-0.5/seed-1",
                          "lora-ifd/rho-0.25/seed-1", "lora-random/rho-0.25/seed-1"]
    select, train, generate, evaluate = runs["lora-random/rho-0.25/seed-1"].steps

    def arg(step, name):
        return step.argv[step.argv.index(name) + 1]

    assert arg(select, "--input") == shared[2].done and arg(select, "--scores") == shared[-1].done
    assert (arg(select, "--order"), arg(select, "--ratio"), arg(select, "--seed")) == ("random", "0.25", "1")
    assert arg(train, "--train_files") == select.done and arg(train, "--num_train_epochs") == "3.0"
    assert "--max_steps" not in train.argv  # epochs: a smaller curated set takes fewer steps
    assert arg(generate, "--adapter") == str(Path(train.done).parent) and arg(generate, "--input") == shared[3].done
    assert arg(evaluate, "--pred") == generate.done
    full_train = runs["lora-full/seed-0"].steps[0]
    assert full_train.name == "train" and arg(full_train, "--train_files") == shared[2].done
    equal = E.plan(replace(cfg, max_steps=7))[2].steps[1]
    assert arg(equal, "--max_steps") == "7" and "--num_train_epochs" not in equal.argv
    assert "--gradient_accumulation_steps" not in train.argv and "--packing" not in train.argv
    accumulated = E.plan(replace(cfg, batch_size=4, gradient_accumulation_steps=2))[2].steps[1]
    assert (arg(accumulated, "--per_device_train_batch_size"), arg(accumulated, "--gradient_accumulation_steps")) \
        == ("4", "2")
    by_ifd = E.shared_steps(replace(cfg, negative_order="ifd"))[-1]
    assert "--positives_only" not in by_ifd.argv
    laddered = E.plan(replace(cfg, arms=["lora-full", "lora-ifd", "lora-random-matched"], ladder_seeds=None,
                              seeds=[0], ratios=[0.5, 0.25], ladder_arms=["lora-ifd"]))
    assert [r.key for r in laddered] == ["lora-full/seed-0", "lora-ifd/rho-0.5/seed-0",
                                         "lora-random-matched/rho-0.5/seed-0", "lora-ifd/rho-0.25/seed-0"]
    matched = replace(cfg, arms=["lora-ifd", "lora-random-matched"], ladder_seeds=None, seeds=[3], ratios=[0.5])
    matched_select = next(r for r in E.plan(matched) if r.arm == "lora-random-matched").steps[0]
    assert (arg(matched_select, "--order"), arg(matched_select, "--seed")) == ("matched", "3")
    assert arg(matched_select, "--scores") == shared[-1].done  # the main IFD scores: it matches lora-ifd's pick
    content = replace(cfg, arms=["lora-ifd", "lora-ifd-content"], ladder_seeds=None, seeds=[0], ratios=[0.5])
    scoring = {s.name: s for s in E.shared_steps(content)}
    assert arg(scoring["score content"], "--tokens") == "content" and "--tokens" not in scoring["score main"].argv
    content_select = next(r for r in E.plan(content) if r.arm == "lora-ifd-content").steps[0]
    assert arg(content_select, "--scores") == scoring["score content"].done

    # every train step's options are tune train's current ones (no deprecated name, nothing unknown)
    from curation.cli import parse_config
    from tuning.train import TrainConfig

    capsys.readouterr()
    for study in (cfg, replace(cfg, max_steps=7), replace(cfg, gradient_accumulation_steps=3),
                  replace(cfg, packing=True)):
        for step in (s for r in E.plan(study) for s in r.steps if s.module == "tuning.train"):
            trained, _ = parse_config(TrainConfig, list(step.argv), prog="t")
            assert trained.per_device_train_batch_size == study.batch_size and trained.learning_rate == study.lr
            assert trained.gradient_accumulation_steps == study.gradient_accumulation_steps
            assert trained.packing is study.packing  # every arm alike
    assert capsys.readouterr().err == ""


def test_resume_runs_only_what_is_missing_and_reports(tmp_path, corpus, capsys):
    cfg = make_config(tmp_path, corpus)
    calls: list[str] = []
    code, _ = E.run_experiment(cfg, fake_call(calls, fail="lora-random"))
    assert code == 2 and "step 'lora-random/rho-0.5/seed-0: train' exited with code 2" in capsys.readouterr().err
    calls.clear()
    code, record = E.run_experiment(cfg, fake_call(calls))
    assert code == 0
    assert [c.split()[0] for c in calls] == ["train", "generate", "evaluate"]  # lora-random's select was done
    assert record["missing"] == [] and set(record["runs"][2]) >= {"strict_f1", "strict_f1_lo", "train_records"}
    out = tmp_path / "study"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["run"] for r in rows] == ["zero-shot", "lora-full/seed-0", "lora-ifd/rho-0.5/seed-0",
                                        "lora-random/rho-0.5/seed-0"]
    f1 = {r["run"]: float(r["strict_f1"]) for r in rows}
    assert f1["lora-ifd/rho-0.5/seed-0"] == 1.0 and f1["zero-shot"] == 0.0  # gold copied vs [] everywhere
    # the selected set: half of the six positives (the highest fake IFD: the latest records) plus all six negatives
    kept = [json.loads(x) for x in (out / "runs/lora-ifd/rho-0.5/seed-0/train.jsonl").read_text().splitlines()]
    assert len(kept) == 9 and sum(r["output"] != "[]" for r in kept) == 3
    assert [r["id"].rsplit("/", 1)[1] for r in kept if r["output"] != "[]"] == ["6", "8", "10"]
    ifd_row = next(r for r in rows if r["run"] == "lora-ifd/rho-0.5/seed-0")
    assert (ifd_row["train_records"], ifd_row["train_positives"], ifd_row["train_negatives"]) == ("9", "3", "6")
    assert float(ifd_row["tokens_per_s"]) == 50.0 and float(ifd_row["seconds_per_epoch"]) == pytest.approx(2 / 3)
    report = json.loads((out / "report.json").read_text())
    diff = next(d for d in report["comparisons"] if (d["a"], d["b"]) == ("lora-ifd", "lora-random"))
    assert diff["diff"] == pytest.approx(1.0) and diff["ci"] == [1.0, 1.0]
    assert "| lora-ifd | lora-random | 0.5 | seed 0 | 100.00 |" in (out / "report.md").read_text()
    assert (out / "f1_vs_ratio.png").stat().st_size > 0
    saved = json.loads((out / "experiment.json").read_text())
    assert saved["settings"]["epochs"] == 3.0 and saved["provenance"]["config"]["train"] == str(corpus)
    calls.clear()
    assert E.run_experiment(cfg, fake_call(calls))[0] == 0 and calls == []


def test_the_matched_control_keeps_the_ifd_selections_mention_count(tmp_path, corpus):
    from collections import Counter

    cfg = make_config(tmp_path, corpus, arms=["lora-ifd", "lora-random-matched"], seeds=[0, 1])
    code, record = E.run_experiment(cfg, fake_call([]))
    assert code == 0 and record["missing"] == []
    out = tmp_path / "study"

    def sizes(run):
        kept = [json.loads(x) for x in (out / "runs" / run / "train.jsonl").read_text().splitlines()]
        return Counter(len(json.loads(r["output"])) for r in kept)

    for seed in (0, 1):
        assert sizes(f"lora-random-matched/rho-0.5/seed-{seed}") == sizes(f"lora-ifd/rho-0.5/seed-{seed}")
    manifest = json.loads((out / "runs/lora-random-matched/rho-0.5/seed-0/train.jsonl.manifest.json").read_text())
    assert manifest["config"]["order"] == "matched"
    report = json.loads((out / "report.json").read_text())
    pairs = {(d["a"], d["b"]) for d in report["comparisons"] if d["seeds"] == "seeds 0,1"}
    assert ("lora-ifd", "lora-random-matched") in pairs
    diff = next(d for d in report["comparisons"] if (d["a"], d["b"]) == ("lora-ifd", "lora-random-matched"))
    assert diff["diff"] == pytest.approx(1.0)  # the fake lora-ifd copies the gold, the matched control answers []


def test_a_run_another_worker_holds_is_skipped_and_reported_missing(tmp_path, corpus, capsys):
    cfg = make_config(tmp_path, corpus, arms=["zero-shot", "lora-ifd"])
    held = E.run_folder(cfg, "lora-ifd", 0.5, 0)
    calls: list[str] = []
    with run_lock(held) as free:
        assert free
        code, record = E.run_experiment(cfg, fake_call(calls))
    assert code == 0 and record["missing"] == ["lora-ifd/rho-0.5/seed-0"]
    assert record["held_by_other_workers"] == ["lora-ifd/rho-0.5/seed-0"]
    assert not any("lora-ifd" in c for c in calls)
    assert "Not finished (1):** lora-ifd/rho-0.5/seed-0" in (tmp_path / "study" / "report.md").read_text()
    code, record = E.run_experiment(cfg, fake_call(calls))  # the lock is free again: the run is done now
    assert code == 0 and record["missing"] == [] and record["tuned_beats_zero_shot"] is True


def test_other_settings_are_refused_and_new_seeds_and_arms_join(tmp_path, corpus, capsys):
    cfg = make_config(tmp_path, corpus, arms=["zero-shot", "lora-ifd"])
    E.run_experiment(cfg, fake_call([]))
    calls: list[str] = []
    with pytest.raises(E.InputError, match="other settings .*epochs"):
        E.run_experiment(replace(cfg, epochs=1.0), fake_call(calls))
    assert calls == []
    argv = ["--model", "m", "--train", cfg.train, "--test", cfg.test, "--output_dir", cfg.output_dir,
            "--train_fraction", "1", "--test_fraction", "1", "--bootstrap", "50", "--epochs", "2"]
    assert E.main(argv) == 2
    assert "experiment.json: this folder holds a study with other settings" in capsys.readouterr().err
    # a folder made before a setting existed reads as holding its default: still this study, another value is not
    saved = json.loads((tmp_path / "study" / "experiment.json").read_text())
    del saved["settings"]["gradient_accumulation_steps"]
    (tmp_path / "study" / "experiment.json").write_text(json.dumps(saved))
    assert E.run_experiment(cfg, fake_call(calls))[0] == 0 and calls == []
    with pytest.raises(E.InputError, match="other settings .*gradient_accumulation_steps"):
        E.run_experiment(replace(cfg, gradient_accumulation_steps=2), fake_call(calls))
    code, record = E.run_experiment(replace(cfg, arms=["zero-shot", "lora-ifd", "lora-random"], seeds=[0, 1]),
                                    fake_call(calls))
    assert code == 0 and len(record["runs"]) == 5
    assert {re.search(r"/runs/(.*?/seed-\d+)/", c).group(1) for c in calls} == {
        "lora-ifd/rho-0.5/seed-1", "lora-random/rho-0.5/seed-0", "lora-random/rho-0.5/seed-1"}
    report = json.loads((tmp_path / "study" / "report.json").read_text())
    pooled = [d for d in report["comparisons"] if d["seeds"] == "seeds 0,1"]
    assert {(d["a"], d["b"]) for d in pooled} == {("lora-ifd", "lora-random"), ("lora-ifd", "zero-shot"),
                                                 ("lora-random", "zero-shot")}


def test_records_rebuild_the_report_without_training_and_refuse_other_data(tmp_path, corpus, capsys):
    cfg = make_config(tmp_path, corpus, arms=["zero-shot", "lora-ifd", "lora-random"])
    out, records = tmp_path / "study", tmp_path / "records"
    held = E.run_folder(cfg, "lora-random", 0.5, 0)
    with run_lock(held):  # lora-random is not finished when the records are written
        assert E.run_experiment(cfg, fake_call([]))[0] == 0
    calls: list[str] = []
    code, record = E.run_experiment(replace(cfg, export_records=str(records)), fake_call(calls))
    assert code == 0 and calls == []  # exporting trains nothing
    assert record["missing"] == ["lora-random/rho-0.5/seed-0"]
    kept = sorted(p.relative_to(records).as_posix() for p in records.rglob("*") if p.is_file())
    ifd = "runs/lora-ifd/rho-0.5/seed-0/"
    assert {f"{ifd}pred.jsonl", f"{ifd}eval.json", f"{ifd}adapter/manifest.json", "runs/zero-shot/eval.json",
            "experiment.json", "report.md", "records.json"} <= set(kept)
    assert not any(k.startswith(("data/", "scores/", "runs/lora-random/")) or k.endswith("train.jsonl")
                   for k in kept)
    hashes = json.loads((records / "records.json").read_text())["sha256"]
    assert set(hashes) == {"data/train.jsonl", "data/test.jsonl", "data/train_subset.jsonl",
                           "data/test_subset.jsonl", "scores/main.jsonl", f"{ifd}train.jsonl"}
    assert E.main(["--model", "m", "--train", cfg.train, "--test", cfg.test, "--output_dir", cfg.output_dir,
                   "--train_fraction", "1", "--test_fraction", "1", "--bootstrap", "50",
                   "--export_records", str(records)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err  # records are never written over

    # the study folder is lost; the records copied into a new one rebuild data, scores and selections, nothing else
    before = (out / "results.csv").read_text()
    shutil.move(out, tmp_path / "lost")
    shutil.copytree(records, out)
    calls.clear()
    code, record = E.run_experiment(cfg, fake_call(calls))
    ran = [(c.split()[0], c.split()[-1]) for c in calls]
    assert [name for name, _ in ran if "/runs/lora-random/" not in _] == [
        "convert", "convert", "sample", "sample", "score", "select"]  # lora-ifd: select again, no train/generate
    assert {name for name, where in ran if "/runs/lora-random/" in where} == {"select", "train", "generate",
                                                                             "evaluate"}
    assert code == 0 and record["missing"] == []
    rows = (out / "results.csv").read_text().splitlines()
    assert [r for r in rows if "lora-random" not in r] == before.splitlines()  # the recorded runs as they were

    # records copied without a recorded run's files (a `runs/` ignore rule kept them out of a commit): refused before
    # any step, rather than training that run again unasked
    shutil.rmtree(out)
    shutil.copytree(records, out, ignore=shutil.ignore_patterns("seed-0"))
    calls.clear()
    assert E.main(["--model", "m", "--train", cfg.train, "--test", cfg.test, "--output_dir", cfg.output_dir,
                   "--train_fraction", "1", "--test_fraction", "1", "--bootstrap", "50", "--arms", "zero-shot",
                   "lora-ifd", "lora-random"]) == 2
    err = capsys.readouterr().err
    assert "lists 1 finished run(s) whose files are not in" in err and "(lora-ifd/rho-0.5/seed-0)" in err
    assert not (out / "data").exists()  # nothing ran

    # rebuilt from other data: refused before anything trains or is reported
    shutil.rmtree(out)
    shutil.copytree(records, out)
    corpus.write_text(corpus.read_text().replace("Gout\tB-Disease", "Gout\tO"))
    calls.clear()
    with pytest.raises(E.InputError, match="differs from the file the recorded runs were made from"):
        E.run_experiment(cfg, fake_call(calls))
    assert not any(c.startswith(("train", "generate", "select")) for c in calls)
    assert not (out / "runs/lora-random/rho-0.5/seed-0/pred.jsonl").exists()


def test_records_check_data_and_selections_byte_for_byte_and_scores_through_the_selections(tmp_path):
    from curation.io import sha256_file
    from tuning.experiment_records import check_records

    files = {"data/train.jsonl": "a\n", "scores/main.jsonl": '{"ifd": 0.1491708199724416}\n',
             "runs/lora-ifd/rho-0.5/seed-0/train.jsonl": "b\n"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "records.json").write_text(json.dumps(
        {"runs": [], "sha256": {name: sha256_file(tmp_path / name) for name in files}}))
    check_records(tmp_path)
    (tmp_path / "scores/main.jsonl").write_text('{"ifd": 0.1491708139188086}\n')  # another thread count's digits
    check_records(tmp_path)
    for name in ("runs/lora-ifd/rho-0.5/seed-0/train.jsonl", "data/train.jsonl"):
        (tmp_path / name).write_text("other\n")
        with pytest.raises(E.InputError, match=f"{name}: differs from the file the recorded runs were made from"):
            check_records(tmp_path)
        (tmp_path / name).write_text(files[name])


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_git_ignored_names_the_records_files_a_commit_would_leave_out(tmp_path):
    import subprocess

    from tuning.experiment_records import git_ignored

    records = tmp_path / "records"
    for name in ("report.md", "runs/zero-shot/eval.json", "runs/lora-ifd/rho-0.5/seed-0/pred.jsonl"):
        (records / name).parent.mkdir(parents=True, exist_ok=True)
        (records / name).write_text("{}")
    assert git_ignored(records) == []  # not in a git work tree
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert git_ignored(records) == []  # nothing ignored
    (tmp_path / ".gitignore").write_text(".venv/\nruns/\n")
    assert git_ignored(records) == ["runs/lora-ifd/rho-0.5/seed-0/pred.jsonl (.gitignore:2:runs/)",
                                    "runs/zero-shot/eval.json (.gitignore:2:runs/)"]
    (tmp_path / ".gitignore").write_text("/runs/\n")  # anchored at the top: the records' runs/ are kept
    assert git_ignored(records) == []


def test_auto_arm_trains_the_final_adapter_at_the_rho_dev_prefers(tmp_path, corpus):
    cfg = make_config(tmp_path, corpus, arms=["lora-ifd-auto"], dev=str(corpus), dev_fraction=1.0,
                      ratios=[0.5, 0.25])
    calls: list[str] = []
    code, record = E.run_experiment(cfg, fake_call(calls, good=("lora-ifd-auto",)))
    assert code == 0
    choice = json.loads((tmp_path / "study/runs/lora-ifd-auto/seed-0/choice.json").read_text())
    assert choice["ratio"] == 0.25  # both dev runs score 1.0: the smaller rho wins the tie
    final_select = next(c for c in calls if c.startswith("select ") and "dev-rho" not in c)
    assert final_select.endswith("lora-ifd-auto/seed-0/train.jsonl")
    assert record["runs"][0]["ratio"] == 0.25 and record["missing"] == []


@pytest.mark.parametrize(("option", "value", "message"), [
    ("--arms", "few-shot", "expected distinct arms"), ("--train_fraction", "0", "must be in (0, 1]"),
    ("--ratios", "1.5", "expected distinct shares in (0, 1]"), ("--ratios", "0", "expected distinct shares"),
    ("--seeds", "-1", "expected distinct seeds"), ("--epochs", "0.5", "must be at least 1"),
    ("--arms", "lora-ifd-other", "needs a scoring model of another family"),
    ("--arms", "lora-ifd-auto", "picks rho on a dev corpus"),
    ("--negative_order", "ifd --arms lora-ifd-content", "empty answer has no content tokens"),
    ("--ladder_seeds", "5", "must be among --seeds"), ("--ladder_arms", "lora-full", "expected ratio arms among"),
    ("--train", "missing.tsv", "no such file"), ("--max_steps", "0", "at least 1"),
    ("--gradient_accumulation_steps", "0", "must be at least 1, got 0"),
    ("--task", "re", "--task is re, but the corpus holds no relations"), ("--task", "xx", "must be one of"),
    ("--task", "tc --negative_order ifd", "does not apply to tc"),
    ("--export_records", "records", "holds no study to record"),
    ("--entity_types", "Disease", "applies to --task re only (this study's task is ner)"),
    ("--roles", "Drug", "applies to --task ee only"),
    ("--task", "re --entity_types Drug Drug", "expected distinct names, got ['Drug', 'Drug']")])
def test_bad_options_exit_2_before_any_step(tmp_path, corpus, capsys, option, value, message):
    argv = {"--model": "m", "--train": str(corpus), "--test": str(corpus), "--output_dir": str(tmp_path / "run"),
            option: value}
    assert E.main([w for k, v in argv.items() for w in (k, *v.split(" "))]) == 2  # a value may hold two options
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.fixture()
def tc_corpus(tmp_path) -> Path:
    """Twelve sentences of a records JSONL, one class each: eight 'advice', four 'none'."""
    from curation.records import Record

    rows = [Record(id=str(i), text=f"Sentence {i} {'should be followed' if i % 3 else 'was observed'} .",
                   labels=["advice" if i % 3 else "none"]).to_dict() for i in range(12)]
    path = tmp_path / "tc.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_tc_study_pairs_macro_f1_and_has_no_negatives(tmp_path, tc_corpus):
    from sklearn.metrics import f1_score

    cfg = make_config(tmp_path, tc_corpus, task="tc")
    calls: list[str] = []
    copy_gold = fake_call(calls)

    def call(step: E.Step) -> int:  # lora-random answers the majority class everywhere
        if step.module == "tuning.generate" and "/runs/lora-random/" in step.done:
            argv = list(step.argv)
            rows = [json.loads(x) for x in Path(argv[argv.index("--input") + 1]).read_text().splitlines()]
            Path(step.done).parent.mkdir(parents=True, exist_ok=True)
            Path(step.done).write_text("".join(json.dumps({"id": r["id"], "output": '{"label": "advice"}'}) + "\n"
                                               for r in rows))
            return 0
        return copy_gold(step)

    code, record = E.run_experiment(cfg, call)
    assert code == 0 and record["missing"] == []
    out = tmp_path / "study"
    kept = (out / "runs/lora-ifd/rho-0.5/seed-0/train.jsonl").read_text().splitlines()
    assert len(kept) == 6  # rho of all twelve records: a TC answer is never a negative
    rows = {r["run"]: r for r in csv.DictReader((out / "results.csv").open())}
    gold = ["advice" if i % 3 else "none" for i in range(12)]
    expected = f1_score(gold, ["advice"] * 12, average="macro", labels=["advice", "none"])
    assert float(rows["lora-random/rho-0.5/seed-0"]["label_macro_f1"]) == pytest.approx(expected)
    assert float(rows["lora-ifd/rho-0.5/seed-0"]["label_macro_f1"]) == 1.0
    assert float(rows["lora-random/rho-0.5/seed-0"]["accuracy"]) == pytest.approx(8 / 12)
    report = json.loads((out / "report.json").read_text())
    assert (report["task"], report["metric"]) == ("tc", "label_macro_f1")
    diff = next(d for d in report["comparisons"] if (d["a"], d["b"]) == ("lora-ifd", "lora-random"))
    assert diff["diff"] == pytest.approx(1 - expected) and diff["ci"][0] <= diff["diff"] <= diff["ci"][1]
    assert "macro F1 mean" in (out / "report.md").read_text()


def test_whole_study_on_a_tiny_model(tiny_model, tmp_path, corpus, capsys):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        argv = ["--model", str(tiny_model), "--train", str(corpus), "--test", str(corpus), "--output_dir",
                str(tmp_path / "run"), "--arms", "zero-shot", "lora-ifd", "lora-random", "--seeds", "0", "1",
                "--train_fraction", "1", "--test_fraction", "0.5", "--epochs", "1", "--batch_size", "4",
                "--lora_r", "4", "--lora_alpha", "8", "--max_new_tokens", "12", "--bootstrap", "20"]
        assert E.main(argv) == 0
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    run = tmp_path / "run"
    for name in ("scores/main.jsonl", "runs/lora-ifd/rho-0.5/seed-1/adapter/adapter_model.safetensors",
                 "runs/lora-random/rho-0.5/seed-0/train.jsonl.manifest.json", "runs/zero-shot/pred.jsonl",
                 "report.md", "results.csv", "f1_vs_ratio.png", "train_loss.png"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader((run / "results.csv").open()))
    assert len(rows) == 5 and all(r["records"] == "6" for r in rows)
    ifd = next(r for r in rows if r["run"] == "lora-ifd/rho-0.5/seed-0")
    # one epoch over at most 3 of the 6 positives (the random model's IFD may exceed 1) and the 6 negatives, in 4s
    n = int(ifd["train_records"])
    assert ifd["train_negatives"] == "6" and 1 <= int(ifd["train_positives"]) <= 3 and int(ifd["steps"]) == -(-n // 4)
    assert float(ifd["tokens_per_s"]) > 0 and float(ifd["seconds_per_epoch"]) > 0
    record = json.loads((run / "experiment.json").read_text())
    steps = json.loads((run / "runs/lora-ifd/rho-0.5/seed-0/steps.json").read_text())
    assert set(steps) == {f"lora-ifd/rho-0.5/seed-0: {s}" for s in ("select", "train", "generate", "evaluate")}
    assert all(s["command"].startswith("bioselect ") for s in steps.values())
    assert record["missing"] == [] and out.rstrip().splitlines()[-1].startswith("strict F1: zero-shot ")
    assert "| lora-ifd | lora-random | 0.5 | seeds 0,1 |" in (run / "report.md").read_text()


@pytest.mark.slow
def test_two_process_launch_runs_the_study_once(tiny_model, tmp_path, corpus):
    """Under `accelerate launch` the processes are one worker: scoring and training are sharded over both, every
    other step runs once on the main process, and one report is written."""
    import os
    import sys

    from tests.helpers import REPO, free_port, run_group

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "tuning.experiment",
           "--model", str(tiny_model), "--train", str(corpus), "--test", str(corpus), "--output_dir", str(out),
           "--arms", "zero-shot", "lora-ifd", "--train_fraction", "1", "--test_fraction", "0.5", "--epochs", "1",
           "--batch_size", "2", "--lora_r", "4", "--lora_alpha", "8", "--max_new_tokens", "12", "--bootstrap", "20"]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    done = run_group(cmd, timeout=600, cwd=REPO, env={**env, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "scores/main.jsonl.manifest.json").read_text())["num_processes"] == 2
    train = json.loads((out / "runs/lora-ifd/rho-0.5/seed-0/adapter/manifest.json").read_text())
    assert train["training"]["world_size"] == 2
    assert done.stdout.count("[experiment] zero-shot: generate") == 1  # the main process alone generates
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert [r["run"] for r in rows] == ["zero-shot", "lora-ifd/rho-0.5/seed-0"]


def test_mlflow_holds_one_run_per_study_run_with_its_training_and_test_scores(tiny_model, tmp_path, corpus,
                                                                              monkeypatch):
    """`--report_to mlflow` into a local SQLite store, read back through MLflow's client: one MLflow run per study
    run, named by its key; the tuned run holds transformers' training loss and the study's test scores (equal to
    results.csv); a study started again after a run lost its scores logs into the same MLflow run, once."""
    client = mlflow_store(tmp_path, monkeypatch, "study-test")
    out = tmp_path / "run"
    argv = ["--model", str(tiny_model), "--train", str(corpus), "--test", str(corpus), "--output_dir", str(out),
            "--arms", "zero-shot", "lora-full", "--train_fraction", "1", "--test_fraction", "0.5", "--epochs", "1",
            "--batch_size", "4", "--lora_r", "4", "--lora_alpha", "8", "--max_new_tokens", "12", "--bootstrap", "20",
            "--report_to", "mlflow"]
    assert E.main(argv) == 0
    experiment = client.get_experiment_by_name("study-test")

    def runs():
        return {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}

    assert set(runs()) == {"zero-shot", "lora-full/seed-0"}
    rows = {r["run"]: r for r in csv.DictReader((out / "results.csv").open())}
    for name, run in runs().items():
        assert run.info.status == "FINISHED" and run.data.tags["bioselect.arm"] == rows[name]["arm"]
        assert run.data.metrics["test_strict_f1"] == pytest.approx(float(rows[name]["strict_f1"]))
    tuned = runs()["lora-full/seed-0"]
    assert tuned.data.metrics["steps"] == float(rows["lora-full/seed-0"]["steps"])  # 12 records / 4 = 3 steps
    losses = client.get_metric_history(tuned.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3] and "zero-shot" not in {m.key for m in losses}
    assert tuned.data.params["lora_r"] == "4"  # transformers' callback logged into the study's run

    # the tuned run loses its scores; the study started again scores it and logs into the same MLflow run, once
    folder = out / "runs" / "lora-full" / "seed-0"
    for name in ("pred.jsonl", "eval.json", "mlflow_logged.json"):
        (folder / name).unlink()
    assert E.main(argv) == 0
    assert E.main([*argv, "--report_only", "true"]) == 0
    again = runs()
    assert set(again) == {"zero-shot", "lora-full/seed-0"}
    assert again["lora-full/seed-0"].info.run_id == tuned.info.run_id
    assert len(client.get_metric_history(tuned.info.run_id, "test_strict_f1")) == 2  # scored twice
    assert len(client.get_metric_history(again["zero-shot"].info.run_id, "test_strict_f1")) == 1


@pytest.fixture()
def ee_corpus(tmp_path) -> Path:
    """Twelve sentences of a records JSONL: six with one Adverse_event (trigger, Drug and Effect arguments), six
    without events (their answer is [], a negative)."""
    from curation.records import Event, Record, Span

    rows = []
    for i in range(12):
        if i % 2:
            rows.append(Record(id=str(i), text=f"Sentence {i} .").to_dict())
            continue
        text = f"Drug{i} caused rash{i} ."
        d, e = len(f"Drug{i}"), len(f"Drug{i} caused")
        spans = [Span(d + 1, e, "Trigger"), Span(0, d, "Drug"), Span(e + 1, e + 1 + len(f"rash{i}"), "Effect")]
        rows.append(Record(id=str(i), text=text, spans=spans,
                           events=[Event("Adverse_event", 0, (("Drug", 1), ("Effect", 2)))]).to_dict())
    path = tmp_path / "ee.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_an_ee_study_scores_argument_classification_and_keeps_its_negatives(tmp_path, ee_corpus):
    """lora-ifd answers the gold events, lora-random drops every Effect argument: argument classification P 1, R 1/2,
    F1 2/3 by hand; the ratio arms keep rho of the six sentences with events plus all six without."""
    cfg = make_config(tmp_path, ee_corpus, task="ee")
    calls: list[str] = []
    copy_gold = fake_call(calls)

    def call(step: E.Step) -> int:
        if step.module == "tuning.generate" and "/runs/lora-random/" in step.done:
            argv = list(step.argv)
            rows = [json.loads(x) for x in Path(argv[argv.index("--input") + 1]).read_text().splitlines()]
            answers = []
            for r in rows:
                events = json.loads(r["output"])
                for event in events:
                    event["arguments"].pop("Effect")
                answers.append({"id": r["id"], "output": json.dumps(events)})
            Path(step.done).parent.mkdir(parents=True, exist_ok=True)
            Path(step.done).write_text("".join(json.dumps(a) + "\n" for a in answers))
            return 0
        return copy_gold(step)

    code, record = E.run_experiment(cfg, call)
    assert code == 0 and record["missing"] == []
    out = tmp_path / "study"
    kept = [json.loads(x) for x in (out / "runs/lora-ifd/rho-0.5/seed-0/train.jsonl").read_text().splitlines()]
    assert len(kept) == 9 and sum(r["output"] == "[]" for r in kept) == 6  # 3 of 6 positives, every negative
    rows = {r["run"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert float(rows["lora-ifd/rho-0.5/seed-0"]["argument_classification_f1"]) == 1.0
    random = rows["lora-random/rho-0.5/seed-0"]
    assert float(random["argument_classification_p"]) == 1.0 and float(random["argument_classification_r"]) == 0.5
    assert float(random["argument_classification_f1"]) == pytest.approx(2 / 3)
    assert float(rows["lora-full/seed-0"]["argument_classification_f1"]) == 0.0  # [] everywhere: nothing found
    # answers [] counted beside the gold's: lora-full answered [] to all 12, the others to the 6 gold negatives
    assert [(rows[k]["empty_answers"], rows[k]["gold_empty"]) for k in
            ("lora-full/seed-0", "lora-ifd/rho-0.5/seed-0", "lora-random/rho-0.5/seed-0")] == [("12", "6"), ("6", "6"),
                                                                                              ("6", "6")]
    assert "| 12 (gold 6) |" in (out / "report.md").read_text()
    report = json.loads((out / "report.json").read_text())
    assert (report["task"], report["metric"]) == ("ee", "argument_classification_f1")
    diff = next(d for d in report["comparisons"] if (d["a"], d["b"]) == ("lora-ifd", "lora-random"))
    assert diff["diff"] == pytest.approx(1 / 3) and diff["ci"][0] <= diff["diff"] <= diff["ci"][1]


def test_a_resumed_run_reports_rates_from_its_step_clock_and_none_without_it(tmp_path):
    from tuning.experiment_report import _training

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    train_file = tmp_path / "train.jsonl"
    train_file.write_text(json.dumps({"id": "1", "output": "[]"}) + "\n")

    def manifest(**training):
        (adapter / "manifest.json").write_text(json.dumps({"config": {"train_files": [str(train_file)]}, "training": {
            "global_step": 30, "epochs": 3.0, "train_tokens": 6000, "train_runtime_s": 40.0, **training}}))
        return _training(tmp_path)

    clocked = manifest(resumed_from="checkpoint-25", train_step_seconds=120.0)
    assert clocked["resumed"] and clocked["train_seconds"] == 120.0
    assert clocked["tokens_per_s"] == 50.0 and clocked["seconds_per_epoch"] == 40.0
    unclocked = manifest(resumed_from="checkpoint-25", train_step_seconds=None)  # the runtime of the last part only
    assert unclocked["train_seconds"] == 40.0 and unclocked["tokens_per_s"] is None
    whole = manifest(resumed_from=None, train_step_seconds=None)
    assert whole["tokens_per_s"] == 150.0 and not whole["resumed"]


@pytest.fixture()
def re_corpus(tmp_path) -> Path:
    """Six sentences of a records JSONL: four with a Drug-Effect 'causes' relation, two without."""
    from curation.records import Record, Relation, Span

    rows = []
    for i in range(6):
        if i % 3 == 2:
            rows.append(Record(id=str(i), text=f"Sentence {i} .").to_dict())
            continue
        text = f"Drug{i} caused rash{i} ."
        e = len(f"Drug{i} caused")
        spans = [Span(0, len(f"Drug{i}"), "Drug"), Span(e + 1, e + 1 + len(f"rash{i}"), "Effect")]
        rows.append(Record(id=str(i), text=text, spans=spans, relations=[Relation(0, 1, "causes")]).to_dict())
    path = tmp_path / "re.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_entity_types_and_roles_reach_generation_and_must_cover_the_corpus(tmp_path, re_corpus, ee_corpus, capsys):
    """An RE study's --entity_types (an EE study's --roles) constrain every generate step: tune generate parses them
    from the step's command line; a list that leaves out a type (role) the corpus uses is refused before any step."""
    from curation.cli import parse_config
    from tuning.generate import GenerateConfig

    for corpus, task, option, names in ((re_corpus, "re", "entity_types", ["Drug", "Effect", "Gene"]),
                                        (ee_corpus, "ee", "roles", ["Drug", "Effect"])):
        cfg = make_config(tmp_path, corpus, task=task, output_dir=str(tmp_path / task), **{option: names})
        generate = [s for r in E.plan(cfg) for s in r.steps if s.module == "tuning.generate"]
        assert len(generate) == len(E.plan(cfg))  # one per run, zero-shot included
        for step in generate:
            parsed, _ = parse_config(GenerateConfig, list(step.argv), prog="bioselect tune generate")
            assert getattr(parsed, option) == names
            assert (parsed.entity_types, parsed.roles) == ((names, None) if task == "re" else (None, names))

    argv = ["--model", "m", "--train", str(re_corpus), "--test", str(re_corpus), "--task", "re",
            "--output_dir", str(tmp_path / "run"), "--entity_types", "Drug", "Gene"]
    assert E.main(argv) == 2
    err = capsys.readouterr().err
    assert "its relations use 'Effect', which --entity_types does not list" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    argv = ["--model", "m", "--train", str(ee_corpus), "--test", str(ee_corpus), "--task", "ee",
            "--output_dir", str(tmp_path / "run"), "--roles", "Effect"]
    assert E.main(argv) == 2
    assert "its events use 'Drug', which --roles does not list" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
