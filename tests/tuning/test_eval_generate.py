"""`tune train --eval-generate` on a tiny random Llama (SmolLM2's tokenizer and chat template): the strict F1 it logs
equals `tune generate` + `bioselect evaluate` on the same checkpoint and records, the best checkpoint by strict F1 is
kept and loaded, the metrics of given answers are pinned by hand, and two processes under `accelerate launch` log
what one process logs."""

from __future__ import annotations

import doctest
import json
import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

import prompts
from tests.helpers import (
    REPO,
    free_port,
    one_torch_thread,  # noqa: F401 (autouse: the module's tests run on one torch thread)
    run_group,
)
from tuning import eval_generate, generation
from tuning.chat import render_prompt
from tuning.generation import Generated
from tuning.train import TrainConfig, train

DISEASES = ("asthma", "breast cancer", "diabetes", "ataxia telangiectasia", "gout")
METRICS = [f"eval_{m}" for m in eval_generate.METRICS]



def ner_records(n: int, dataset: str, start: int = 0) -> list[dict]:
    """NER instruction records in the converter's format (shipped template, gold spans); every third has none."""
    rows = []
    for i in range(start, start + n):
        name = DISEASES[i % len(DISEASES)]
        has = i % 3 != 2
        text = f"Patient {i} has {name}." if has else f"Patient {i} is well."
        rows.append({"id": f"{dataset}/{i}", "instruction": prompts.instruction("ner", ["Disease"]), "input": text,
                     "output": json.dumps([{"entity": "Disease", "name": name}]) if has else "[]",
                     "spans": [[text.index(name), text.index(name) + len(name), "Disease"]] if has else [],
                     "dataset": dataset, "task": "ner"})
    return rows


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_entries(history: list[dict]) -> dict[int, dict]:
    return {h["step"]: h for h in history if "eval_loss" in h}


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    """24 steps of LoRA with activation checkpointing, evaluated (loss and generation) every 6 steps, a checkpoint
    at each evaluation, the best by strict F1 loaded at the end."""
    w = tmp_path_factory.mktemp("eval-generate")
    data = write(w / "train.jsonl", ner_records(30, "toy"))
    dev = write(w / "dev.jsonl", ner_records(10, "dev", start=100))
    cfg = TrainConfig(model=str(tiny_model), train_files=[str(data)], output_dir=str(w / "out"), max_steps=24,
                      per_device_train_batch_size=4, max_length=256, lora_r=8, lora_alpha=16, lora_dropout=0.0,
                      learning_rate=0.02, lr_scheduler_type="constant", warmup_steps=0, logging_steps=6,
                      save_steps=6, eval_steps=6, save_total_limit=None, eval_file=str(dev), eval_generate=True,
                      eval_generate_max_records=8, eval_max_new_tokens=24, metric_for_best_model="strict_f1",
                      load_best_model_at_end=True, activation_checkpointing=True, disable_tqdm=True)
    manifest = train(cfg)
    state = json.loads((w / "out" / "checkpoint-24" / "trainer_state.json").read_text())
    return w, manifest, state


def test_logged_strict_f1_equals_tune_generate_then_bioselect_evaluate(run, tiny_model):
    from curation.evaluate import main as evaluate
    from tuning.generate import main as generate

    w, manifest, state = run
    sampled = manifest["eval_generate"]
    assert sampled["records"] == 8 and sampled["mode"] == "constrained"
    dev = [json.loads(line) for line in (w / "dev.jsonl").read_text().splitlines()]
    assert sampled["ids"] == [dev[i]["id"] for i in eval_generate.sample_indices(10, 8, seed=0)]
    sample = write(w / "sample.jsonl", [r for r in dev if r["id"] in sampled["ids"]])

    logged = eval_entries(state["log_history"])
    assert sorted(logged) == [0, 6, 12, 18, 24] and all(set(METRICS) <= set(h) for h in logged.values())
    f1 = {step: h["eval_strict_f1"] for step, h in logged.items()}
    best = max(f1, key=lambda s: (f1[s], -s))
    low = min((s for s in f1 if s), key=lambda s: (f1[s], s))
    assert f1[best] > 0 and f1[low] < f1[best], f1  # two checkpoints that answer differently
    for step in (best, low):
        pred, scores = w / f"pred-{step}.jsonl", w / f"eval-{step}.json"
        assert generate(["--model", str(tiny_model), "--adapter", str(w / "out" / f"checkpoint-{step}"),
                         "--input", str(sample), "--output", str(pred), "--max-new-tokens", "24",
                         "--batch-size", "8"]) == 0
        assert evaluate(["--gold", str(sample), "--pred", str(pred), "--output", str(scores),
                         "--bootstrap", "0"]) == 0
        result = json.loads(scores.read_text())
        micro, outputs = result["strict"]["micro"], result["outputs"]
        assert logged[step]["eval_strict_f1"] == pytest.approx(micro["f1"], abs=1e-12)
        assert logged[step]["eval_strict_precision"] == pytest.approx(micro["precision"], abs=1e-12)
        assert logged[step]["eval_strict_recall"] == pytest.approx(micro["recall"], abs=1e-12)
        assert logged[step]["eval_parse_error_rate"] == outputs["parse_error_rate"]
        assert logged[step]["eval_schema_error_rate"] == outputs["schema_error_rate"]


def test_the_best_checkpoint_by_strict_f1_is_kept_and_loaded(run):
    from safetensors.torch import load_file

    w, manifest, state = run
    f1 = {step: h["eval_strict_f1"] for step, h in eval_entries(state["log_history"]).items() if step}
    assert len(set(f1.values())) > 1, f1
    # transformers keeps the first checkpoint of the highest value (a later tie is not "greater")
    best = min(s for s in f1 if f1[s] == max(f1.values()))
    out = w / "out"
    assert state["best_model_checkpoint"] == str(out / f"checkpoint-{best}")
    assert state["best_metric"] == f1[best] and state["best_global_step"] == best
    assert manifest["training"]["best_model_checkpoint"] == str(out / f"checkpoint-{best}")
    # load_best_model_at_end: the adapter written at the end is the best checkpoint's, not the last one's
    final = load_file(out / "adapter_model.safetensors")
    kept = load_file(out / f"checkpoint-{best}" / "adapter_model.safetensors")
    last = load_file(out / "checkpoint-24" / "adapter_model.safetensors")
    assert final.keys() == kept.keys()
    assert all(torch.equal(final[k], kept[k]) for k in final)
    assert best == 24 or not all(torch.equal(final[k], last[k]) for k in final)


def test_metrics_of_given_answers_are_scored_and_logged(tiny_model, tmp_path, monkeypatch):
    """Generation replaced by answers the test chooses (three sets, one per evaluation); tokenisation, scoring,
    logging and best-model selection are the real ones, the numbers worked out by hand."""
    dev = ner_records(6, "dev", start=100)  # entities in 100, 102, 103, 105; none in 101, 104
    gold = {r["input"]: r["output"] for r in dev}
    answers = [
        {},  # every answer "[]": 0 TP, 4 FN
        gold,  # every answer right
        {"Patient 103 has ataxia telangiectasia.": "not json",  # parse error: its gold mention is missed
         "Patient 105 has asthma.": '[{"entity": "Gene", "name": "Patient"}]',  # not a Disease: schema error
         "Patient 101 is well.": '[{"entity": "Disease", "name": "well"}]',  # false positive
         "Patient 100 has asthma.": gold["Patient 100 has asthma."],
         "Patient 102 has diabetes.": gold["Patient 102 has diabetes."]},
    ]
    expected = [
        {"strict_precision": 0.0, "strict_recall": 0.0, "strict_f1": 0.0, "parse_error_rate": 0.0,
         "schema_error_rate": 0.0},
        {"strict_precision": 1.0, "strict_recall": 1.0, "strict_f1": 1.0, "parse_error_rate": 0.0,
         "schema_error_rate": 0.0},
        # TP 2 (100, 102), FP 1 (101), FN 2 (103, 105): P 2/3, R 1/2, F1 4/7
        {"strict_precision": 2 / 3, "strict_recall": 0.5, "strict_f1": 4 / 7, "parse_error_rate": 1 / 6,
         "schema_error_rate": 1 / 6},
    ]
    assert all(set(texts) <= set(gold) for texts in answers)
    calls = []

    def given(model, tokenizer, prompt_texts, grammars=None, batch_size=8, max_new_tokens=256, stats=None):
        calls.append((model.training, tokenizer.padding_side, len(prompt_texts), grammars is not None))
        texts = answers[(len(calls) - 1) % len(answers)]
        out = []
        for p in prompt_texts:
            record = next(r for r in dev if r["input"] in p)
            assert p == render_prompt(tokenizer, record)  # the prompt tune generate renders
            out.append(Generated(texts.get(record["input"], "[]"), 3, "stop"))
        return out

    monkeypatch.setattr(generation, "generate", given)
    data = write(tmp_path / "train.jsonl", ner_records(8, "toy"))
    out = tmp_path / "out"
    cfg = TrainConfig(model=str(tiny_model), train_files=[str(data)], output_dir=str(out), max_steps=2,
                      per_device_train_batch_size=2, max_length=256, lora_r=4, lora_alpha=8, logging_steps=1,
                      save_steps=1, eval_steps=1, eval_file=str(write(tmp_path / "dev.jsonl", dev)),
                      eval_generate=True, metric_for_best_model="eval_strict_f1", load_best_model_at_end=True,
                      disable_tqdm=True)
    manifest = train(cfg)
    # eval mode during generation (put back to train mode after), left padding, grammars: evaluations at steps 0, 1
    # and 2 (the last one is the end's, run inside the training loop by EvaluateAtEnd)
    assert calls == [(False, "left", 6, True)] * 3
    logged = eval_entries(json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())["log_history"])
    for step in (0, 1, 2):
        assert {k: logged[step][f"eval_{k}"] for k in eval_generate.METRICS} == pytest.approx(expected[step])
    assert manifest["training"]["best_model_checkpoint"] == str(out / "checkpoint-1")
    assert manifest["training"]["best_metric"] == 1.0
    assert manifest["eval_generate"]["ids"] == [r["id"] for r in dev]
    assert doctest.testmod(eval_generate).failed == 0


def test_eval_mode_is_restored_after_generating(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = write(tmp_path / "dev.jsonl", ner_records(3, "dev"))
    records = [json.loads(line) for line in path.read_text().splitlines()]
    sample = eval_generate.prepare_sample(str(path), records, 64, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    evaluator = eval_generate.GenerationEvaluator(sample, tokenizer, constrained=False, max_new_tokens=4)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).train()
    metrics = evaluator(model, tokenizer)
    assert model.training and tokenizer.padding_side == "right"
    assert set(metrics) == set(eval_generate.METRICS) and evaluator.mode == "unconstrained"
    model.eval()
    assert evaluator(model, tokenizer) == metrics and not model.training


@pytest.mark.slow
def test_two_processes_log_what_one_process_logs(run, tiny_model, tmp_path):
    """Each of two processes generates half the sample; the gathered counts give the strict F1 one process logs.
    The base is the run's best checkpoint merged into the tiny model, so the sample's F1 is not 0."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    w, manifest, _ = run
    merged = tmp_path / "merged"
    best = manifest["training"]["best_model_checkpoint"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    PeftModel.from_pretrained(base, best).merge_and_unload().save_pretrained(merged)
    AutoTokenizer.from_pretrained(best).save_pretrained(merged)
    options = {"model": str(merged), "train_files": [str(w / "train.jsonl")], "eval_file": str(w / "dev.jsonl"),
               "max_steps": 1, "per_device_train_batch_size": 2, "max_length": 256, "lora_r": 4, "lora_alpha": 8,
               "save_steps": 1, "eval_generate": True, "eval_generate_max_records": 8, "eval_max_new_tokens": 24,
               "disable_tqdm": True}
    train(TrainConfig(**options, output_dir=str(tmp_path / "one")))
    recipe = tmp_path / "two.yaml"
    recipe.write_text(yaml.safe_dump({**options, "output_dir": str(tmp_path / "two")}))
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()), "-m", "tuning.train", "--config", str(recipe)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO)}
    proc = run_group(cmd, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["training"]["world_size"] == 2

    def start(folder: str) -> dict:
        state = json.loads((tmp_path / folder / "checkpoint-1" / "trainer_state.json").read_text())
        return {k: eval_entries(state["log_history"])[0][k] for k in METRICS}

    one, two = start("one"), start("two")
    assert one["eval_strict_f1"] > 0
    assert two == one
