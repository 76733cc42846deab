"""`tune train` on records of every task: an even mix of NER, RE, EE and TC datasets trains and its manifest counts
the records per dataset and task; `--eval-generate` on TC records logs the task's main metric (macro F1), equal to
`tune generate` + `bioselect evaluate` on the same checkpoint, and selects the best checkpoint by it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import prompts
from tests.helpers import one_torch_thread  # noqa: F401 (autouse: the module's tests run on one torch thread)
from tuning import eval_generate
from tuning.train import TrainConfig, train

DRUGS = ("aspirin", "warfarin", "ibuprofen", "heparin")
EFFECTS = ("rash", "bleeding", "nausea", "fever")



def task_records(task: str, n: int, dataset: str, start: int = 0) -> list[dict]:
    """Instruction records of ``task`` in the converter's format; every third RE/EE record has an empty answer."""
    rows = []
    for i in range(start, start + n):
        drug, effect = DRUGS[i % 4], EFFECTS[(i // 4) % 4]
        text = f"{drug} caused {effect} in patient {i}." if i % 3 != 2 else f"Patient {i} took {drug}."
        if task == "ner":
            labels, out = ["Drug"], [{"entity": "Drug", "name": drug}]
        elif task == "re":
            labels = ["ADE"]
            out = [{"head": drug, "relation": "ADE", "tail": effect}] if i % 3 != 2 else []
        elif task == "ee":
            labels = ["Adverse_event"]
            out = ([{"event": "Adverse_event", "trigger": "caused", "arguments": {"Treatment": [drug],
                                                                               "Effect": [effect]}}]
                   if i % 3 != 2 else [])
        else:
            labels, out = ["ade", "no_ade"], {"label": "ade" if i % 3 != 2 else "no_ade"}
        row = {"id": f"{dataset}/{i}", "instruction": prompts.instruction(task, labels), "input": text,
               "output": json.dumps(out), "dataset": dataset, "task": task}
        if task == "ner":
            row["spans"] = [[text.index(drug), text.index(drug) + len(drug), "Drug"]]
        rows.append(row)
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(model: Path, train_files, out: Path, **overrides) -> TrainConfig:
    base = dict(model=str(model), train_files=[str(f) for f in train_files], output_dir=str(out),
                per_device_train_batch_size=2, max_length=256, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                logging_steps=1, save_steps=1000, disable_tqdm=True, report_to="none")
    return TrainConfig(**{**base, **overrides})


def test_an_even_mix_of_four_tasks_trains_and_the_manifest_counts_datasets_and_tasks(tiny_model, tmp_path):
    sizes = {"ner": 3, "re": 5, "ee": 4, "tc": 7}
    mixed = write(tmp_path / "mixed.jsonl", [r for task, n in sizes.items()
                                            for r in task_records(task, n, f"{task}-set")])
    manifest = train(config(tiny_model, [mixed], tmp_path / "out", mix="even", max_steps=6))
    data = manifest["data"]
    assert data["per_dataset"] == {f"{t}-set": n for t, n in sizes.items()}
    assert data["per_task"] == sizes
    assert data["trained_pool"] == 12 and sum(data["trained_pool_per_task"].values()) == 12
    by_task = {t: data["trained_pool_per_dataset"].get(f"{t}-set", 0) for t in sizes}
    assert by_task == data["trained_pool_per_task"] | {t: 0 for t in sizes if t not in data["trained_pool_per_task"]}
    assert manifest["training"]["global_step"] == 6
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "out" / "adapter_config.json").is_file()


def test_eval_generate_on_tc_logs_macro_f1_equal_to_generate_then_evaluate(tiny_model, tmp_path):
    from curation.evaluate import main as evaluate
    from tuning.generate import main as generate

    data = write(tmp_path / "train.jsonl", task_records("tc", 24, "toy"))
    dev = write(tmp_path / "dev.jsonl", task_records("tc", 6, "dev", start=100))
    out = tmp_path / "out"
    manifest = train(config(tiny_model, [data], out, max_steps=12, per_device_train_batch_size=4,
                            learning_rate=0.02, lr_scheduler_type="constant", warmup_steps=0, save_steps=4,
                            eval_steps=4, save_total_limit=None, eval_file=str(dev), eval_generate=True,
                            eval_max_new_tokens=12, metric_for_best_model="label_macro_f1",
                            load_best_model_at_end=True))
    assert manifest["eval_generate"]["task"] == "tc" and manifest["eval_generate"]["mode"] == "constrained"
    assert manifest["eval_generate"]["metrics"] == list(eval_generate.task_metrics("tc"))
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    logged = {h["step"]: h for h in state["log_history"] if "eval_loss" in h}
    assert all({f"eval_{m}" for m in eval_generate.task_metrics("tc")} <= set(h) for h in logged.values())
    for step in (4, 12):
        pred, scores = tmp_path / f"pred-{step}.jsonl", tmp_path / f"eval-{step}.json"
        assert generate(["--model", str(tiny_model), "--adapter", str(out / f"checkpoint-{step}"), "--input",
                         str(dev), "--output", str(pred), "--max-new-tokens", "12", "--batch-size", "8"]) == 0
        assert evaluate(["--gold", str(dev), "--pred", str(pred), "--output", str(scores), "--bootstrap", "0"]) == 0
        result = json.loads(scores.read_text())
        assert logged[step]["eval_label_macro_f1"] == pytest.approx(result["label"]["macro"]["f1"], abs=1e-12)
        assert logged[step]["eval_label_f1"] == pytest.approx(result["label"]["micro"]["f1"], abs=1e-12)
        assert logged[step]["eval_accuracy"] == pytest.approx(result["accuracy"]["value"], abs=1e-12)
        assert logged[step]["eval_schema_error_rate"] == result["outputs"]["schema_error_rate"]
    macro = {s: h["eval_label_macro_f1"] for s, h in logged.items() if s}
    assert max(macro.values()) > 0, macro  # the adapter learns to answer, so the check compares numbers
    best = min(s for s in macro if macro[s] == max(macro.values()))
    assert state["best_model_checkpoint"] == str(out / f"checkpoint-{best}")


def test_a_metric_the_eval_tasks_do_not_log_and_a_mixed_eval_file_are_refused(tiny_model, tmp_path, capsys):
    from tuning.train import main

    data = write(tmp_path / "train.jsonl", task_records("re", 4, "toy"))
    dev = write(tmp_path / "dev.jsonl", task_records("re", 3, "dev"))
    argv = ["--model", str(tiny_model), "--train-files", str(data), "--output-dir", str(tmp_path / "o"),
            "--eval-file", str(dev), "--eval-generate", "true", "--max-steps", "1"]
    assert main([*argv, "--metric-for-best-model", "label_macro_f1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --metric-for-best-model: 'label_macro_f1' is not logged for the re records")
    assert len(err.splitlines()) == 1
    mixed = write(tmp_path / "mixed.jsonl", task_records("re", 2, "a") + task_records("tc", 2, "b"))
    assert main([*argv[:-4], "--eval-file", str(mixed), "--eval-generate", "true", "--max-steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {mixed}:3") and "one eval file per task" in err
    assert not (tmp_path / "o").exists()
