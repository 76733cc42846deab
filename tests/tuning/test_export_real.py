"""`bioselect tune export --merge` on the real SmolLM2-135M-Instruct: a LoRA adapter trained for 2 steps on real
NCBI-disease records, merged with ``--dtype float32``, gives the greedy answers of the base plus the adapter; the
default merge into SmolLM2's own bfloat16 is measured (how much of the update rounds away), not bounded."""

from __future__ import annotations

import json

import pytest

from curation.convert import convert_corpus
from curation.readers import read_corpus
from tests.helpers import offline_model, real_file
from tuning.chat import render_prompt
from tuning.export import main
from tuning.generation import generate, load_model, load_tokenizer
from tuning.train import TrainConfig, train

pytestmark = [pytest.mark.real, pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_smollm2_adapter_merged_gives_the_same_greedy_answers(tmp_path, capsys):
    from safetensors.torch import load_file

    model_dir = offline_model("smollm2-135m")
    if model_dir is None:
        pytest.skip("SmolLM2-135M-Instruct not found under ~/.cache/offline-models (make models)")
    records = convert_corpus(read_corpus(real_file("ner", "NCBI-disease", "train.tsv")), task="ner")[:16]
    test = [r for r in convert_corpus(read_corpus(real_file("ner", "NCBI-disease", "test.tsv")), task="ner")
            if r["output"] != "[]"][:3]
    train_file = tmp_path / "train.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    adapter = tmp_path / "adapter"
    train(TrainConfig(model=str(model_dir), train_files=[str(train_file)], output_dir=str(adapter), max_steps=2,
                      per_device_train_batch_size=4, max_length=256, learning_rate=1e-3, warmup_steps=0, lora_r=8,
                      lora_alpha=16, lora_dropout=0.0, save_steps=100, report_to="none"))
    out = tmp_path / "merged"
    assert main(["--adapter", str(adapter), "--output", str(out), "--merge", "true", "--dtype", "float32"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"

    tokenizer = load_tokenizer(str(out))
    prompts = [render_prompt(tokenizer, r) for r in test]
    reference = load_model(str(model_dir), str(adapter), device="cpu")  # float32 base + adapter, unmerged
    merged = load_model(str(out), device="cpu")
    want = [g.text for g in generate(reference, tokenizer, prompts, max_new_tokens=48)]
    assert [g.text for g in generate(merged, tokenizer, prompts, max_new_tokens=48)] == want
    del merged

    # the default keeps SmolLM2's own dtype, bfloat16; measured, not bounded: how much of the update survives
    # rounding, and the answers
    out16 = tmp_path / "merged-bf16"
    assert main(["--adapter", str(adapter), "--output", str(out16), "--merge", "true"]) == 0
    assert json.loads((out16 / "config.json").read_text())["dtype"] == "bfloat16"
    merged16 = load_file(out16 / "model.safetensors")
    base = load_file(model_dir / "model.safetensors")
    tensors = load_file(adapter / "adapter_model.safetensors")
    error = total = unchanged = count = 0.0
    for key in (k for k in tensors if ".lora_A." in k):
        module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        d = 16 / 8 * tensors[key.replace("lora_A", "lora_B")].float() @ tensors[key].float()
        kept = merged16[module + ".weight"].float() - base[module + ".weight"].float()
        error += float((kept - d).norm() ** 2)
        total += float(d.norm() ** 2)
        unchanged += float((kept == 0).sum())
        count += kept.numel()
    model16 = load_model(str(out16), device="cpu")
    got16 = [g.text for g in generate(model16, tokenizer, prompts, max_new_tokens=48)]
    with capsys.disabled():
        print(f"\nbfloat16 merge: ||kept - dW|| / ||dW|| = {(error / total) ** 0.5:.3f} over the adapted weights, "
              f"{unchanged / count:.1%} of them unchanged; greedy answers equal to the base + adapter on "
              f"{sum(a == b for a, b in zip(got16, want, strict=True))} of {len(want)} records")
