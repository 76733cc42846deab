"""QLoRA on the real SmolLM2-135M-Instruct with real NCBI-disease records, on the CPU: ``tune train --load-in-4bit``
quantises every linear layer of the 30 blocks, trains (finite loss, adapter saved), is killed after its first
checkpoint and resumes from it, and ``tune generate --load-in-4bit`` with the adapter answers schema-valid JSON."""

from __future__ import annotations

import json

import pytest
import torch

from curation.cli import parse_config
from curation.convert import convert_corpus
from curation.readers import read_corpus
from curation.scoring import parse_output
from tests.helpers import offline_model, real_file
from tests.tuning.test_train import Interrupt
from tuning.train import TrainConfig, train
from tuning.train import main as train_main

pytestmark = [pytest.mark.real, pytest.mark.slow]
bnb = pytest.importorskip("bitsandbytes", reason="pip install 'bioselect[quantization]'")


def test_qlora_on_smollm2_trains_resumes_and_generates_valid_answers(tmp_path, capsys):
    pytest.importorskip("llguidance", reason="pip install 'bioselect[constrained]'")
    from transformers import TrainerCallback

    from tuning.generate import main as generate_main

    model = offline_model("smollm2-135m")
    if model is None:
        pytest.skip("SmolLM2-135M-Instruct not found under ~/.cache/offline-models (make models)")
    train_rows = convert_corpus(read_corpus(real_file("ner", "NCBI-disease", "train.tsv")), task="ner")[:8]
    test_rows = convert_corpus(read_corpus(real_file("ner", "NCBI-disease", "test.tsv")), task="ner")[:4]
    train_file, test_file = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train_file.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    test_file.write_text("".join(json.dumps(r) + "\n" for r in test_rows))

    class KillAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Interrupt(f"killed at step {state.global_step}")

    out = tmp_path / "qlora"
    args = ["--model", str(model), "--train-files", str(train_file), "--output-dir", str(out), "--max-steps", "2",
            "--save-steps", "1", "--per-device-train-batch-size", "2", "--max-length", "192",
            "--learning-rate", "5e-4", "--logging-steps", "1", "--load-in-4bit", "true"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: one thread is as fast and does not starve the other jobs
    try:
        cfg, _ = parse_config(TrainConfig, args, prog="t")
        with pytest.raises(Interrupt, match="step 1"):
            train(cfg, callbacks=[KillAfterFirstSave()])
        assert train_main(args) == 0
        manifest = json.loads((out / "manifest.json").read_text())
        pred = tmp_path / "pred.jsonl"
        assert generate_main(["--model", str(model), "--adapter", str(out), "--input", str(test_file), "--output",
                              str(pred), "--max-new-tokens", "48", "--load-in-4bit", "true"]) == 0
    finally:
        torch.set_num_threads(threads)

    t = manifest["training"]
    assert t["global_step"] == 2 and t["resumed_from"] == str(out / "checkpoint-1")
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in t["loss_curve"])
    # SmolLM2-135M: 30 blocks of q, k, v, o, gate, up, down; the tied output head stays unquantised
    assert manifest["quantization"]["quantized_layers"] == 30 * 7
    assert manifest["quantization"]["bnb_4bit_quant_type"] == "nf4"
    assert (out / "adapter_model.safetensors").is_file()

    preds = [json.loads(line) for line in pred.read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in test_rows]
    for p, row in zip(preds, test_rows, strict=True):
        entities, status = parse_output(p["output"], ["Disease"])
        assert status == p["status"] == "ok", p["output"]
        assert all(name in row["input"] for _, name in entities)
    assert json.loads((tmp_path / "pred.jsonl.manifest.json").read_text())["quantization"]["bits"] == 4
