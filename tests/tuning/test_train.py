"""`bioselect tune train` on a tiny random Llama that borrows SmolLM2's tokenizer and chat template: completion-only
labels ending in the trained end-of-turn token, packing without cross-example attention, the even dataset mix,
resume, the output folder, clean failures on bad input, and two CPU processes under `accelerate launch`."""

from __future__ import annotations

import doctest
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch
import yaml

from curation.cli import parse_config
from curation.io import sha256_file
from tests.helpers import (
    REPO,
    free_port,
    one_torch_thread,  # noqa: F401 (autouse: the module's tests run on one torch thread)
    run_group,
)
from tuning import sft_data
from tuning.chat import render_prompt
from tuning.train import TrainConfig, build_trainer, main, train

DISEASES = ("asthma", "breast cancer", "diabetes", "ataxia telangiectasia", "gout")



def write_records(path: Path, n: int, dataset: str = "toy") -> Path:
    rows = []
    for i in range(n):
        name = DISEASES[i % len(DISEASES)]
        has = i % 3 != 2
        rows.append({"id": f"{dataset}/{i}", "instruction": "Extract diseases.",
                     "input": f"Patient {i} has {name}." if has else f"Patient {i} is well.",
                     "output": json.dumps([{"entity": "Disease", "name": name}]) if has else "[]",
                     "dataset": dataset, "task": "ner"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def config(model: Path, train_files, out: Path, **overrides) -> TrainConfig:
    files = [str(p) for p in (train_files if isinstance(train_files, list) else [train_files])]
    base = dict(model=str(model), train_files=files, output_dir=str(out), max_steps=2, per_device_train_batch_size=2,
                max_length=256, lora_r=4, lora_alpha=8, logging_steps=1, save_steps=100)
    return TrainConfig(**{**base, **overrides})


def test_labels_cover_the_completion_and_its_end_of_turn_token(tiny_model, tmp_path):
    data = write_records(tmp_path / "train.jsonl", 4)
    cfg = config(tiny_model, data, tmp_path / "out")
    trainer, _ = build_trainer(cfg)
    tok = trainer.processing_class
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    # EOS aligned with the template: the tokenizer and the generation config stop at <|im_end|>
    assert cfg.eos_token == tok.eos_token == "<|im_end|>"
    gen_eos = trainer.model.generation_config.eos_token_id
    assert eot in (gen_eos if isinstance(gen_eos, list) else [gen_eos])

    records = sft_data.load_records([str(data)])
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, rec in enumerate(records[:2]):
        # independent reference: the prompt generation renders (tuning.chat), tokenized on its own
        prompt = tok(render_prompt(tok, rec), add_special_tokens=False)["input_ids"]
        ids, labels = batch["input_ids"][i], batch["labels"][i]
        n = int(batch["attention_mask"][i].sum())
        assert ids[: len(prompt)].tolist() == prompt
        assert (labels[: len(prompt)] == -100).all()  # prompt masked
        assert labels[len(prompt): n].tolist() == ids[len(prompt): n].tolist()  # completion trained
        assert tok.decode(ids[len(prompt): n]) == rec["output"] + "<|im_end|>\n"
        assert eot in labels[len(prompt): n].tolist()  # the end-of-turn token is a target
        assert (labels[n:] == -100).all()  # padding masked


# the parts of Qwen3's chat template that handle thinking: a finished last assistant turn gets an empty think block,
# and the generation prompt gets one only in non-thinking mode
QWEN3_LIKE_TEMPLATE = (
    "{%- for m in messages %}{%- if m.role == 'assistant' and loop.last %}"
    "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n' + m.content + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}{%- endif %}")


def test_hybrid_reasoning_template_trains_and_prompts_in_non_thinking_mode(tiny_model, tmp_path):
    from transformers import AutoTokenizer

    model = tmp_path / "qwen3-like"
    shutil.copytree(tiny_model, model)
    tok = AutoTokenizer.from_pretrained(model)
    tok.chat_template = QWEN3_LIKE_TEMPLATE
    tok.save_pretrained(model)
    data = write_records(tmp_path / "train.jsonl", 4)
    trainer, _ = build_trainer(config(model, data, tmp_path / "out"))
    tok = trainer.processing_class
    rec = sft_data.load_records([str(data)])[0]
    prompt_text = render_prompt(tok, rec)
    assert prompt_text.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    # without the template variable the think block would sit in the completion, before the JSON
    plain = tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True)
    assert plain.endswith("assistant\n")
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    trained = tok.decode(labels[labels != -100])
    # the think block is prompt, not a target; SmolLM2's tokenizer (borrowed here) may merge the prompt's last "\n"
    # with the answer's first character, which Qwen's own tokenizer (newlines are separate pre-tokens) does not
    assert "think>" not in trained
    assert trained.lstrip("\n") == rec["output"] + "<|im_end|>\n"


def test_packing_keeps_examples_from_attending_to_each_other(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    data = write_records(tmp_path / "train.jsonl", 12)
    trainer, _ = build_trainer(config(tiny_model, data, tmp_path / "out", packing=True, max_steps=1))
    assert trainer.padding_free  # trl's bfd packing always runs padding-free
    row = trainer.train_dataset[0]
    assert len(row["seq_lengths"]) > 1
    batch = trainer.data_collator([row])
    assert "attention_mask" not in batch
    pos = batch["position_ids"][0]
    starts = (pos == 0).nonzero().flatten().tolist()
    assert len(starts) == len(row["seq_lengths"])
    assert (batch["labels"][0][starts] == -100).all()  # no example is trained to predict the next one's start

    # transformers turns position ids that restart into a block-diagonal causal mask (no flash attention needed)
    # when no attention mask and no KV cache are passed (training: trl sets use_cache=False): every packed example
    # gets the logits it gets alone
    bounds = [*starts, len(pos)]
    for attn in ("sdpa", "eager"):
        model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation=attn)
        with torch.no_grad():
            packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
            for a, b in zip(bounds, bounds[1:]):
                alone = model(input_ids=batch["input_ids"][:, a:b], use_cache=False).logits[0]
                torch.testing.assert_close(packed[a:b], alone, atol=1e-4, rtol=1e-4)
            # the check can fail: one causal sequence lets the second example see the first
            causal = model(input_ids=batch["input_ids"], use_cache=False).logits[0]
            assert not torch.allclose(causal[bounds[1]: bounds[2]], packed[bounds[1]: bounds[2]], atol=1e-4)

    # end to end through the trainer's own loss: the packed row's loss is the token-weighted mean of the examples'
    trainer.model.eval()
    with torch.no_grad():
        total = trainer.compute_loss(trainer.model, dict(batch)) * int((batch["labels"] != -100).sum())
        parts = 0.0
        for a, b in zip(bounds, bounds[1:]):
            one = trainer.data_collator([{"input_ids": row["input_ids"][a:b], "labels": row["labels"][a:b],
                                          "seq_lengths": [b - a]}])
            parts += trainer.compute_loss(trainer.model, dict(one)) * int((one["labels"] != -100).sum())
    torch.testing.assert_close(total, parts, atol=1e-3, rtol=1e-5)
    trainer.model.train()
    trainer.train()
    assert trainer.state.global_step == 1


def test_even_mix_draws_each_dataset_with_equal_probability():
    groups = {name: [{"dataset": name, "id": i} for i in range(size)] for name, size in (("small", 3), ("big", 500))}
    drawn = sft_data.even_mix(groups, 2000, seed=0)
    counts = sft_data.draw_counts(drawn)
    assert len(drawn) == 2000 and set(counts) == {"small", "big"}
    assert abs(counts["small"] - 1000) < 100  # binomial(2000, 1/2): sd 22
    assert sft_data.even_mix(groups, 2000, seed=0) == drawn
    assert sft_data.even_mix(groups, 2000, seed=1) != drawn
    # without replacement within a pass: the first 500 draws from 'big' are 500 distinct records
    big = [r["id"] for r in drawn if r["dataset"] == "big"]
    assert len(set(big[:500])) == min(500, len(big))
    assert doctest.testmod(sft_data).failed == 0


def test_even_mix_trains_a_fixed_number_of_steps_and_writes_the_output_folder(tiny_model, tmp_path):
    a = write_records(tmp_path / "a.jsonl", 2, dataset="A")
    b = write_records(tmp_path / "b.jsonl", 30, dataset="B")
    out = tmp_path / "out"
    cfg = config(tiny_model, [a, b], out, mix="even", max_steps=3, gradient_accumulation_steps=2,
                 report_to="tensorboard")
    manifest = train(cfg)

    pool = 3 * 2 * 2  # steps x batch x accumulation x 1 process
    data = manifest["data"]
    assert data["records"] == 32 and data["per_dataset"] == {"A": 2, "B": 30}
    assert data["trained_pool"] == pool
    expected = sft_data.even_mix(sft_data.group_by_dataset(sft_data.load_records([str(a), str(b)])), pool, seed=0)
    assert data["trained_pool_per_dataset"] == sft_data.draw_counts(expected)
    assert manifest["training"]["global_step"] == 3

    assert (out / "adapter_model.safetensors").is_file() and (out / "adapter_config.json").is_file()
    assert json.loads((out / "adapter_config.json").read_text())["r"] == 4
    assert list((out / "runs").rglob("events.out.tfevents.*"))
    reloaded, _ = parse_config(TrainConfig, ["--config", str(out / "train_config.yaml")], prog="t")
    assert reloaded == cfg and reloaded.eos_token == "<|im_end|>"
    written = json.loads((out / "manifest.json").read_text())
    assert written["inputs"] == {str(a): sha256_file(a), str(b): sha256_file(b)}
    assert written["base_model"] == str(tiny_model) and "git_commit" in written
    assert written["chat_template"]["end_of_turn"] == "<|im_end|>" and len(written["chat_template"]["sha256"]) == 64
    assert {"trl", "peft", "transformers"} <= set(written["versions"])
    assert written["training"]["final_train_loss"] > 0 and written["config"]["mix"] == "even"


class Interrupt(Exception):
    pass


def test_resume_from_the_last_checkpoint_reaches_the_same_step_count(tiny_model, tmp_path):
    from transformers import TrainerCallback

    class KillAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Interrupt(f"killed at step {state.global_step}")

    data = write_records(tmp_path / "train.jsonl", 8)
    out = tmp_path / "out"
    overrides = dict(max_steps=4, save_steps=2)
    with pytest.raises(Interrupt, match="step 2"):
        train(config(tiny_model, data, out, **overrides), callbacks=[KillAfterFirstSave()])
    assert (out / "checkpoint-2").is_dir() and not (out / "manifest.json").exists()

    args = ["--model", str(tiny_model), "--train-files", str(data), "--output-dir", str(out), "--max-steps", "4",
            "--save-steps", "2", "--per-device-train-batch-size", "2", "--lora-r", "4", "--lora-alpha", "8"]
    assert main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["global_step"] == 4
    assert manifest["training"]["resumed_from"] == str(out / "checkpoint-2")
    assert json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["global_step"] == 4
    # the step clock: two segments (from step 0, killed after step 2; from checkpoint 2), each step counted once
    rows = [json.loads(line) for line in (out / "step_times.jsonl").read_text().splitlines()]
    assert [r.get("begin", r.get("step")) for r in rows] == [0, 1, 2, 2, 3, 4]
    assert [("begin" in r) for r in rows] == [True, False, False, True, False, False]
    expected = (rows[2]["t"] - rows[0]["t"]) + (rows[5]["t"] - rows[3]["t"])
    assert manifest["training"]["train_step_seconds"] == pytest.approx(expected, abs=1e-3)


def test_a_resumed_even_mix_run_trains_the_same_adapter_as_an_uninterrupted_one(tiny_model, tmp_path):
    """The combination search's evaluations resume mid-training (``curate combos`` after kill -9): the resumed run
    must draw the same batches of the same even pool, so its adapter equals the uninterrupted run's."""
    from safetensors.torch import load_file
    from transformers import TrainerCallback

    class KillAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Interrupt(f"killed at step {state.global_step}")

    files = [write_records(tmp_path / "a.jsonl", 6, "a"), write_records(tmp_path / "b.jsonl", 9, "b")]
    overrides = dict(max_steps=4, save_steps=2, mix="even", seed=3)
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    train(config(tiny_model, files, whole, **overrides))
    with pytest.raises(Interrupt, match="step 2"):
        train(config(tiny_model, files, resumed, **overrides), callbacks=[KillAfterFirstSave()])
    start = load_file(str(resumed / "checkpoint-2" / "adapter_model.safetensors"))
    train(config(tiny_model, files, resumed, **overrides))
    assert json.loads((resumed / "manifest.json").read_text())["training"]["resumed_from"] == str(
        resumed / "checkpoint-2")
    a, b = (load_file(str(d / "adapter_model.safetensors")) for d in (whole, resumed))
    assert a.keys() == b.keys() == start.keys() and len(a) > 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    # the comparison can fail: the steps after the checkpoint the resumed run started from moved the weights
    assert any(not torch.allclose(start[n], b[n], rtol=0, atol=1e-6) for n in b)


def _no_template(tiny_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "no-template"
    shutil.copytree(tiny_model, folder)
    (folder / "chat_template.jinja").unlink()
    return folder


def _no_weights(tiny_model: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_model, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    return folder


@pytest.mark.parametrize("case, message", [
    ("empty", "file is empty"),
    ("blank_lines", "file is empty"),
    ("no_output", "record has no output"),
    ("blank_output", "empty output"),
    ("no_template", "no chat template"),
    ("no_weights", "no weights"),
    ("missing_model", "no such model folder"),
    ("even_without_steps", "--max-steps"),
])
def test_bad_input_is_one_line_and_exit_2_before_training(tiny_model, tmp_path, capsys, case, message):
    data = write_records(tmp_path / "train.jsonl", 4)
    model, extra = tiny_model, []
    if case == "empty":
        data.write_text("")
    elif case == "blank_lines":
        data.write_text("\n\n")
    elif case in ("no_output", "blank_output"):
        rows = [json.loads(line) for line in data.read_text().splitlines()]
        if case == "no_output":
            del rows[2]["output"]
        else:
            rows[2]["output"] = " "
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif case == "no_template":
        model = _no_template(tiny_model, tmp_path)
    elif case == "no_weights":
        model = _no_weights(tiny_model, tmp_path)
    elif case == "missing_model":
        model = tmp_path / "nowhere"
    elif case == "even_without_steps":
        extra = ["--mix", "even", "--max-steps", "-1"]
    out = tmp_path / "out"
    rc = main(["--model", str(model), "--train-files", str(data), "--output-dir", str(out), *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("error: ") and "\n" not in err and message in err
    if case in ("no_output", "blank_output"):
        assert ":3 (record toy/2)" in err
    assert not out.exists()


@pytest.mark.slow
def test_two_cpu_processes_under_accelerate_launch(tiny_model, tmp_path):
    a = write_records(tmp_path / "a.jsonl", 3, dataset="A")
    b = write_records(tmp_path / "b.jsonl", 9, dataset="B")
    out = tmp_path / "out"
    recipe = tmp_path / "run.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": str(tiny_model), "train_files": [str(a), str(b)], "output_dir": str(out), "mix": "even",
        "max_steps": 2, "per_device_train_batch_size": 2, "max_length": 128, "lora_r": 4, "lora_alpha": 8}))
    # `accelerate launch --cpu` starts one process unless MPI is set up; the torchrun launcher behind --multi_gpu
    # starts two, and ACCELERATE_USE_CPU makes each a CPU (gloo) DDP rank
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(free_port()),
           "-m", "tuning.train", "--config", str(recipe)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = run_group(cmd, cwd=REPO, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["world_size"] == 2 and manifest["training"]["global_step"] == 2
    assert manifest["data"]["trained_pool"] == 2 * 2 * 2  # steps x batch x processes
    assert proc.stdout.count("wrote adapter") == 1  # the main process reports, once


def test_a_prompt_longer_than_max_length_is_refused_where_trl_would_drop_it(tiny_model, tmp_path, capsys,
                                                                           monkeypatch):
    from transformers import AutoTokenizer

    data = write_records(tmp_path / "train.jsonl", 5)
    tok = AutoTokenizer.from_pretrained(tiny_model)
    records = sft_data.load_records([str(data)])
    prompt = [len(tok(render_prompt(tok, r), add_special_tokens=False)["input_ids"]) for r in records]
    longest = max(range(len(records)), key=prompt.__getitem__)
    assert prompt.count(prompt[longest]) == 1

    # one token of room for the longest prompt's answer: every example is kept, the long ones cut (by trl, to
    # max_length tokens), and the run counts them
    n = prompt[longest] + 1
    trainer, info = build_trainer(config(tiny_model, data, tmp_path / "a", max_length=n))
    assert len(trainer.train_dataset) == len(records)
    cut = sum(len(row["input_ids"]) == n for row in trainer.train_dataset)
    assert 0 < cut < len(records) and info["data"]["cut_to_max_length"] == {str(data): cut}
    assert f"{cut} of 5 examples are longer than max_length ({n} tokens)" in capsys.readouterr().err

    # no room: one line naming the record, exit code 2, before any model is loaded
    args = ["--model", str(tiny_model), "--train-files", str(data), "--output-dir", str(tmp_path / "b"),
            "--max-length", str(prompt[longest])]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"train.jsonl:{longest + 1} (record toy/{longest}): the prompt is {prompt[longest]} tokens" in err
    # the boundary is trl's: without the check, trl drops exactly that record
    monkeypatch.setattr(sft_data, "check_lengths", lambda path, tokenizer, max_length: (0, len(records)))
    trainer, _ = build_trainer(config(tiny_model, data, tmp_path / "c", max_length=prompt[longest]))
    assert len(trainer.train_dataset) == len(records) - 1


def test_trl_options_reach_the_trainer_and_the_old_names_warn(tiny_model, tmp_path, capsys):
    data = write_records(tmp_path / "train.jsonl", 4)
    args = ["--model", str(tiny_model), "--train-files", str(data), "--output-dir", str(tmp_path / "out"),
            "--optim", "sgd", "--max_grad_norm", "0.25", "--weight_decay", "0.1", "--lr", "0.003", "--batch-size", "3"]
    cfg, _ = parse_config(TrainConfig, args, prog="t")
    err = capsys.readouterr().err.splitlines()
    assert err == ["warning: lr (--lr) is now trl's learning_rate (--learning_rate); the old name goes in the next "
                   "release", "warning: batch_size (--batch_size) is now trl's per_device_train_batch_size "
                   "(--per_device_train_batch_size); the old name goes in the next release"]
    assert (cfg.learning_rate, cfg.per_device_train_batch_size, cfg.lr, cfg.batch_size) == (0.003, 3, None, None)
    assert cfg.report_to == [] and cfg.bf16 is False  # no tracker unless asked; bf16 only on a CUDA GPU
    trainer, _ = build_trainer(cfg)
    optimizer = trainer.create_optimizer()
    assert isinstance(optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["lr"] == 0.003 and trainer.args.max_grad_norm == 0.25
    assert {g["weight_decay"] for g in optimizer.param_groups} == {0.1, 0.0}  # biases and norms: no decay
    assert trainer.args.model_init_kwargs == {"dtype": "float32"} and cfg.model_init_kwargs is None
    recipe = cfg.recipe()
    assert recipe["optim"] == "sgd" and recipe["learning_rate"] == 0.003 and "lr" not in recipe


@pytest.mark.parametrize("args, message", [
    (["--optim", "nope"], "error: --optim: invalid choice: 'nope'"),
    (["--lr_scheduler_type", "nope"], "error: --lr-scheduler-type: invalid choice: 'nope'"),
    (["--report_to", "nope"], "error: --report-to: unknown integration 'nope'"),
    (["--eval_strategy", "steps"], "error: --eval-file: is needed to evaluate"),
])
def test_bad_trl_options_are_one_line(tiny_model, tmp_path, capsys, args, message):
    data = write_records(tmp_path / "train.jsonl", 4)
    assert main(["--model", str(tiny_model), "--train-files", str(data), "--output-dir", str(tmp_path / "out"),
                 *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
