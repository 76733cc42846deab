"""QLoRA and 8-bit loading with bitsandbytes on the CPU, on a tiny random Llama (SmolLM2's tokenizer and chat
template): the quantised forward against a float model holding the dequantised weights, the NF4/FP4 and double
quantisation options reaching the loaded layers, ``tune train --load-in-4bit`` (loss, adapter, manifest, resume),
``--load-in-8bit``, ``tune generate`` on a 4-bit base with the adapter, and bad input (one line, exit code 2)."""

from __future__ import annotations

import doctest
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

from tests.tuning.conftest import build_tiny_llama
from tests.tuning.test_train import Interrupt, write_records
from tuning import quantization
from tuning.generation import load_model
from tuning.train import main as train_main
from tuning.train import train

bnb = pytest.importorskip("bitsandbytes", reason="pip install 'bioselect[quantization]'")

LAYERS_PER_BLOCK = 7  # q, k, v, o, gate, up, down


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny random Llama, 64 wide: bitsandbytes' CPU inference kernel packs 4-bit weights in blocks of 64 inputs
    (a 32-wide model trains in 4 bits but fails to generate)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-64"), hidden_size=64, intermediate_size=128)


def train_args(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["--model", str(model), "--train-files", str(data), "--output-dir", str(out), "--max-steps", "3",
            "--per-device-train-batch-size", "2", "--max-length", "128", "--lora-r", "4", "--lora-alpha", "8",
            "--logging-steps", "1", *extra]


def test_doctests():
    assert doctest.testmod(quantization).failed == 0


@pytest.mark.parametrize("quant_type, double_quant", [("nf4", True), ("fp4", False)])
def test_4bit_forward_is_the_float_model_with_dequantised_weights(tiny, quant_type, double_quant):
    from bitsandbytes.functional import dequantize_4bit
    from transformers import AutoModelForCausalLM

    config = quantization.bnb_config(True, False, quant_type, double_quant, "float32")
    q = load_model(str(tiny), quantization_config=config, device="cpu")
    layers = {n: m for n, m in q.named_modules() if isinstance(m, bnb.nn.Linear4bit)}
    assert len(layers) == 2 * LAYERS_PER_BLOCK == quantization.quantized_layers(q)
    for layer in layers.values():  # the options reach every layer
        assert layer.weight.quant_state.quant_type == quant_type
        assert layer.weight.quant_state.nested is double_quant
        assert layer.compute_dtype == torch.float32

    # independent reference: the float model with each linear weight replaced by bitsandbytes' dequantisation
    reference = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    original = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32).eval()
    for name, module in reference.named_modules():
        if name in layers:
            w = layers[name].weight
            module.weight.data = dequantize_4bit(w.data, w.quant_state).float()
    x = torch.randint(0, 1000, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref, orig = reference(input_ids=x).logits, original(input_ids=x).logits
    q.train()  # the training path: dequantise to the compute dtype, then a float32 matmul
    torch.testing.assert_close(q(input_ids=x).logits.detach(), ref, atol=1e-5, rtol=1e-5)
    q.eval()  # inference: CPUs with AVX512-BF16 run a packed bf16 kernel, close but not equal
    with torch.no_grad():
        served = q(input_ids=x).logits
    assert (served - ref).abs().max() < 1e-2
    assert (served - orig).abs().max() > 5e-2  # the check can fail: quantisation moves the logits this much


def test_a_4bit_load_with_bf16_compute_keeps_no_view_of_the_mapped_checkpoint(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    # the checkpoint in bfloat16, as real ones are: a bfloat16 load keeps its unquantised tensors as file views
    bf16 = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.bfloat16).save_pretrained(bf16)
    checkpoint = str(bf16 / "model.safetensors")

    def maps_checkpoint() -> bool:
        return any(line.rstrip().endswith(checkpoint) for line in open("/proc/self/maps"))

    config = quantization.bnb_config(True, False, "nf4", True, "bfloat16")
    kept = AutoModelForCausalLM.from_pretrained(bf16, dtype=torch.bfloat16, quantization_config=config,
                                                device_map={"": "cpu"})
    assert maps_checkpoint()  # what transformers leaves: the embedding is a view of the file
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = kept(x).logits
    embedding = kept.get_input_embeddings().weight.detach().clone()
    norms = sum(p.numel() * 2 for n, p in kept.named_parameters() if "norm" in n)
    # the embedding (tied with the head: one copy) and the norms; the 4-bit layers own their memory already
    assert quantization.release_mapped_checkpoint(kept) == embedding.numel() * 2 + norms
    assert kept.get_output_embeddings().weight is kept.get_input_embeddings().weight
    assert torch.equal(kept.get_input_embeddings().weight, embedding)
    with torch.no_grad():
        assert torch.equal(kept(x).logits, before)
    del kept
    assert not maps_checkpoint()
    assert quantization.release_mapped_checkpoint(torch.nn.Linear(2, 2)) == 0  # nothing mapped: nothing copied

    loaded = load_model(str(bf16), dtype="bfloat16", quantization_config=config, device="cpu")  # tune generate's
    assert not maps_checkpoint() and quantization.quantized_layers(loaded) == 2 * LAYERS_PER_BLOCK


def test_4bit_training_saves_the_adapter_and_records_the_quantisation(tiny, tmp_path, capsys):
    data = write_records(tmp_path / "train.jsonl", 8)
    out = tmp_path / "out"
    # an eval set too: evaluation switches the 4-bit layers to the inference kernel, and training must go on after
    assert train_main(train_args(tiny, data, out, "--eval-file", str(data), "--load-in-4bit", "true")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    t = manifest["training"]
    assert t["global_step"] == 3 and len(t["loss_curve"]) == 3
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in t["loss_curve"])
    assert t["eval_loss_before"] > 0 and t["eval_loss_after"] > 0
    assert manifest["quantization"] == {
        "method": "bitsandbytes", "bits": 4, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
        "bnb_4bit_compute_dtype": "float32", "bnb_4bit_quant_storage": "bfloat16",
        "quantized_layers": 2 * LAYERS_PER_BLOCK, "saved_quantized": False}
    assert manifest["config"]["load_in_4bit"] is True and "bitsandbytes" in manifest["versions"]

    from safetensors.torch import load_file

    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert len(lora_b) == 2 * LAYERS_PER_BLOCK
    assert any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: the adapter was trained


def test_4bit_gradients_are_the_same_after_an_evaluation(tiny, tmp_path):
    """Evaluating a 4-bit model (eval mode, no gradients) must not change the gradients of the next training step:
    bitsandbytes' CPU inference kernel, which an evaluation switches the layers to, has no backward."""
    from tuning.train import TrainConfig, build_trainer

    data = write_records(tmp_path / "train.jsonl", 4)
    cfg = TrainConfig(model=str(tiny), train_files=[str(data)], output_dir=str(tmp_path / "out"),
                      per_device_train_batch_size=4, lora_r=4, lora_alpha=8, lora_dropout=0.0, load_in_4bit=True)
    trainer, _ = build_trainer(cfg)
    model = trainer.model
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    for name, p in model.named_parameters():  # B starts at zero, which hides the gradient below it: make it not
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.1)

    def gradients() -> dict[str, torch.Tensor]:
        model.train()
        model.zero_grad()
        model(**batch).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = gradients()
    model.eval()
    with torch.no_grad():
        model(**batch)
    after = gradients()
    for name in before:
        torch.testing.assert_close(after[name], before[name], msg=name)


def test_4bit_training_resumes_from_its_checkpoint(tiny, tmp_path):
    from transformers import TrainerCallback

    class KillAfterFirstSave(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            raise Interrupt(f"killed at step {state.global_step}")

    data = write_records(tmp_path / "train.jsonl", 8)
    out = tmp_path / "out"
    args = train_args(tiny, data, out, "--save-steps", "2", "--max-steps", "4", "--load-in-4bit", "true")
    from curation.cli import parse_config
    from tuning.train import TrainConfig

    cfg, _ = parse_config(TrainConfig, args, prog="t")
    with pytest.raises(Interrupt, match="step 2"):
        train(cfg, callbacks=[KillAfterFirstSave()])
    assert (out / "checkpoint-2").is_dir() and not (out / "manifest.json").exists()
    assert train_main(args) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training"]["global_step"] == 4
    assert manifest["training"]["resumed_from"] == str(out / "checkpoint-2")
    assert manifest["quantization"]["bits"] == 4


def test_8bit_training_runs_on_the_cpu(tiny, tmp_path):
    data = write_records(tmp_path / "train.jsonl", 8)
    out = tmp_path / "out"
    assert train_main(train_args(tiny, data, out, "--load-in-8bit", "true")) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["quantization"] == {"method": "bitsandbytes", "bits": 8, "quantized_layers": 2 * LAYERS_PER_BLOCK,
                                           "saved_quantized": False}
    assert all(torch.isfinite(torch.tensor(loss)) for _, loss in manifest["training"]["loss_curve"])


def test_generate_on_a_4bit_base_with_the_adapter_gives_schema_valid_answers(tiny, tmp_path, capsys):
    pytest.importorskip("llguidance", reason="pip install 'bioselect[constrained]'")
    from curation.scoring import parse_output
    from tuning.generate import main as generate_main

    data = write_records(tmp_path / "train.jsonl", 6)
    adapter = tmp_path / "adapter"
    assert train_main(train_args(tiny, data, adapter, "--max-steps", "2", "--load-in-4bit", "true")) == 0
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    pred = tmp_path / "pred.jsonl"
    assert generate_main(["--model", str(tiny), "--adapter", str(adapter), "--input", str(data), "--output",
                          str(pred), "--labels", "Disease", "--max-new-tokens", "24", "--load-in-4bit", "true"]) == 0
    preds = [json.loads(line) for line in pred.read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in rows]
    for p, row in zip(preds, rows, strict=True):
        entities, status = parse_output(p["output"], ["Disease"])
        assert status == p["status"] == "ok", p["output"]
        assert all(name in row["input"] for _, name in entities)
    manifest = json.loads((tmp_path / "pred.jsonl.manifest.json").read_text())
    assert manifest["quantization"]["bits"] == 4 and manifest["quantization"]["bnb_4bit_compute_dtype"] == "float32"
    assert manifest["adapter"] == str(adapter) and manifest["counts"]["ok"] == len(rows)


def test_a_checkpoint_saved_in_4bit_trains_generates_and_is_not_merged_into(tiny, tmp_path, capsys, monkeypatch):
    """A model saved after a 4-bit load (a Hub ``bnb-4bit`` checkpoint) loads quantised without --load-in-4bit:
    training records it and keeps the 4-bit layers off the inference kernel, generation loads it as it was saved,
    and export refuses to merge into it."""
    pytest.importorskip("llguidance", reason="pip install 'bioselect[constrained]'")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuning.export import main as export_main
    from tuning.generate import main as generate_main

    saved = tmp_path / "tiny-bnb-4bit"
    config = quantization.bnb_config(True, False, "fp4", False, "float32")  # not the defaults: read from the file
    AutoModelForCausalLM.from_pretrained(tiny, quantization_config=config, device_map={"": "cpu"}).save_pretrained(
        saved)
    AutoTokenizer.from_pretrained(tiny).save_pretrained(saved)
    assert quantization.saved_quantization(str(saved)).bnb_4bit_quant_type == "fp4"
    assert quantization.saved_quantization(str(tiny)) is None
    # loaded, its packed weights and quantisation constants are views of the file until copied out
    loaded = AutoModelForCausalLM.from_pretrained(saved, device_map={"": "cpu"})
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = loaded(x).logits
    assert quantization.release_mapped_checkpoint(loaded) > 0
    assert not any(line.rstrip().endswith(str(saved / "model.safetensors")) for line in open("/proc/self/maps"))
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, before)
    del loaded

    data = write_records(tmp_path / "train.jsonl", 6)
    adapter = tmp_path / "adapter"
    reads = []  # each command reads the checkpoint's saved quantisation once
    read = quantization.saved_quantization
    monkeypatch.setattr(quantization, "saved_quantization", lambda model: reads.append(model) or read(model))
    # an evaluation first, then steps: the 4-bit layers must stay on the trainable path (keep_training_kernel)
    assert train_main(train_args(saved, data, adapter, "--max-steps", "2", "--eval-file", str(data))) == 0
    assert reads == [str(saved)]
    quant = json.loads((adapter / "manifest.json").read_text())["quantization"]
    assert (quant["bits"], quant["bnb_4bit_quant_type"], quant["bnb_4bit_use_double_quant"]) == (4, "fp4", False)
    assert quant["saved_quantized"] is True and quant["quantized_layers"] == 2 * LAYERS_PER_BLOCK
    pred = tmp_path / "pred.jsonl"
    assert generate_main(["--model", str(saved), "--adapter", str(adapter), "--input", str(data), "--output",
                          str(pred), "--labels", "Disease", "--max-new-tokens", "16"]) == 0
    assert reads == [str(saved)] * 2
    manifest = json.loads((tmp_path / "pred.jsonl.manifest.json").read_text())
    assert manifest["quantization"]["bnb_4bit_quant_type"] == "fp4" and manifest["counts"]["ok"] == 6
    capsys.readouterr()
    assert export_main(["--adapter", str(adapter), "--output", str(tmp_path / "merged"), "--merge", "true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{saved}: is saved quantised (bitsandbytes 4-bit)" in err, err
    assert not (tmp_path / "merged").exists()


def _falcon(tmp_path: Path) -> Path:
    """A tiny Falcon: its linear layers are ``FalconLinear`` (a subclass), which transformers does not quantise."""
    from transformers import FalconConfig, FalconForCausalLM

    folder = tmp_path / "falcon"
    FalconForCausalLM(FalconConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=4,
                                   vocab_size=128)).save_pretrained(folder)
    return folder


def _prequantised(tiny: Path, tmp_path: Path, quantization_config: dict | None = None) -> Path:
    """The tiny model's folder with a ``quantization_config`` in its config.json (GPTQ unless given)."""
    folder = tmp_path / "prequantised"
    shutil.copytree(tiny, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = quantization_config or {"quant_method": "gptq", "bits": 4, "group_size": 128}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("command", ["train", "generate"])
@pytest.mark.parametrize("case, message", [
    ("both", "--load-in-8bit: give --load-in-4bit or --load-in-8bit, not both"),
    ("quant_type", "--bnb-4bit-quant-type: must be one of nf4, fp4, not 'int4'"),
    ("compute_dtype", "--bnb-4bit-compute-dtype: must be one of float32, bfloat16, float16, not 'fp8'"),
    ("falcon", "bitsandbytes cannot quantise model type 'falcon'"),
    ("prequantised", "is already quantised (gptq); bitsandbytes cannot quantise it again: drop --load-in-4bit"),
    ("no_bitsandbytes", "--load-in-4bit: needs bitsandbytes, which is not installed: pip install "
                        "'bioselect[quantization]'"),
    ("saved_no_bitsandbytes", "(saved in bitsandbytes' 4-bit format): needs bitsandbytes, which is not installed"),
])
def test_bad_quantisation_input_is_one_line_and_exit_2(tiny, tmp_path, capsys, monkeypatch, command, case, message):
    from tuning.generate import main as generate_main

    data = write_records(tmp_path / "train.jsonl", 4)
    model, extra = tiny, ["--load-in-4bit", "true"]
    if case == "both":
        extra += ["--load-in-8bit", "true"]
    elif case == "quant_type":
        extra += ["--bnb-4bit-quant-type", "int4"]
    elif case == "compute_dtype":
        extra += ["--bnb-4bit-compute-dtype", "fp8"]
    elif case == "falcon":
        model = _falcon(tmp_path)
    elif case == "prequantised":
        model = _prequantised(tiny, tmp_path)
    elif case == "no_bitsandbytes":
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import bitsandbytes raises ImportError
    elif case == "saved_no_bitsandbytes":  # a checkpoint saved in 4 bits, without --load-in-4bit
        model, extra = _prequantised(tiny, tmp_path, {"quant_method": "bitsandbytes", "load_in_4bit": True}), []
        monkeypatch.setitem(sys.modules, "bitsandbytes", None)
    out = tmp_path / "out"
    capsys.readouterr()  # what building the inputs printed (save_pretrained's progress bar)
    if command == "train":
        rc = train_main(["--model", str(model), "--train-files", str(data), "--output-dir", str(out), *extra])
    else:
        rc = generate_main(["--model", str(model), "--input", str(data), "--output", str(out), "--unconstrained",
                            "--labels", "Disease",
                            *extra])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error: ") and "\n" not in err and message in err, err
    assert not out.exists()


def test_quantizable_layers_match_what_transformers_replaces(tiny):
    """The check's count (on a meta-device skeleton) equals the layers bitsandbytes replaced in a real load."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(tiny))
    loaded = load_model(str(tiny), quantization_config=quantization.bnb_config(True, False), device="cpu")
    replaced = sorted(n for n, m in loaded.named_modules() if isinstance(m, bnb.nn.Linear4bit))
    assert sorted(quantization.quantizable_layers(skeleton)) == replaced
