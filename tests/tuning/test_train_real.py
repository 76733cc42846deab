"""LoRA on the real SmolLM2-135M-Instruct for a few steps on real NCBI-disease records: the completion loss falls,
and the saved adapter reloads with peft and gives the lower loss."""

from __future__ import annotations

import json

import pytest
import torch

from curation.convert import convert_corpus
from curation.readers import read_corpus
from tests.helpers import offline_model, real_file
from tuning.chat import prompt_completion, render_prompt
from tuning.train import TrainConfig, train


def completion_loss(model, tokenizer, records) -> float:
    """Mean NLL of the completion tokens (answer + end-of-turn), computed independently of trl."""
    nll, n = 0.0, 0
    for rec in records:
        pc = prompt_completion(rec)
        full = tokenizer.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=False)
        ids = tokenizer(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
        start = len(tokenizer(render_prompt(tokenizer, rec), add_special_tokens=False)["input_ids"])
        labels = ids.clone()
        labels[:, :start] = -100
        with torch.no_grad():
            logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
        target = labels[0, 1:]
        nll += torch.nn.functional.cross_entropy(logits, target, ignore_index=-100, reduction="sum").item()
        n += int((target != -100).sum())
    return nll / n


@pytest.mark.real
@pytest.mark.slow
def test_lora_on_smollm2_lowers_the_completion_loss_and_reloads(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = offline_model("smollm2-135m")
    if model_dir is None:
        pytest.skip("SmolLM2-135M-Instruct not found under ~/.cache/offline-models (make models)")
    corpus = read_corpus(real_file("ner", "NCBI-disease", "train.tsv"))
    records = convert_corpus(corpus, task="ner")[:32]
    assert any(r["output"] == "[]" for r in records) and any(r["output"] != "[]" for r in records)
    train_file, eval_file = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in records[:4]))  # one eval batch

    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is as fast and does not starve the other jobs
    try:
        cfg = TrainConfig(model=str(model_dir), train_files=[str(train_file)], eval_file=str(eval_file),
                          output_dir=str(out), max_steps=2, per_device_train_batch_size=4, max_length=256,
                          learning_rate=1e-3, warmup_steps=0, lora_r=8, lora_alpha=16, lora_dropout=0.0,
                          logging_steps=1, save_steps=100)
        manifest = train(cfg)
        t = manifest["training"]
        assert t["global_step"] == 2
        assert t["eval_loss_after"] < t["eval_loss_before"]

        tokenizer = AutoTokenizer.from_pretrained(out)  # saved beside the adapter, EOS = end of turn
        assert tokenizer.eos_token == "<|im_end|>"
        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)  # as trained (the file is bf16)
        before = completion_loss(base, tokenizer, records[:4])
        tuned = PeftModel.from_pretrained(base, out)
        after = completion_loss(tuned, tokenizer, records[:4])
    finally:
        torch.set_num_threads(threads)
    # the trainer's eval loss (one batch: a token mean) is the completion loss computed by hand
    assert before == pytest.approx(t["eval_loss_before"], rel=1e-3)
    assert after == pytest.approx(t["eval_loss_after"], rel=1e-3)
    assert after < before
