"""`bioselect tune export` on a tiny random Llama (SmolLM2's tokenizer and chat template) and adapters trained on it
with `tune train`: the merged model against the base plus the adapter (weights against W + (alpha/r) B A computed
here, logits, greedy answers), loaded by transformers alone, its dtype kept; the adapter exported as it is; the model
card's metadata and evaluation table; a QLoRA adapter merged into the full-precision base; bad input."""

from __future__ import annotations

import doctest
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from curation.io import sha256_file
from tests.tuning.conftest import build_tiny_llama
from tests.tuning.test_train import write_records
from tuning import export as export_module
from tuning.chat import render_prompt
from tuning.export import main
from tuning.generation import generate, load_model, load_tokenizer
from tuning.train import main as train_main

pytestmark = pytest.mark.usefixtures("one_thread")

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def train_adapter(model: Path, data: Path, out: Path, *extra: str) -> Path:
    # a large learning rate, so that three steps move the adapter's B away from zero and the merge changes outputs
    assert train_main(["--model", str(model), "--train-files", str(data), "--output-dir", str(out), "--max-steps",
                       "3", "--per-device-train-batch-size", "2", "--max-length", "128", "--learning-rate", "0.05",
                       "--warmup-steps", "0",
                       "--lora-r", "4", "--lora-alpha", "8", "--lora-dropout", "0", "--report-to", "none",
                       *extra]) == 0
    return out


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory) -> tuple[Path, Path]:
    """A LoRA adapter trained for 3 steps on the tiny Llama, and its training file (module-wide, read-only)."""
    folder = tmp_path_factory.mktemp("adapter")
    data = write_records(folder / "train.jsonl", 6)
    return train_adapter(tiny_model, data, folder / "adapter"), data


def prompts_of(data: Path, tokenizer) -> list[str]:
    return [render_prompt(tokenizer, json.loads(line)) for line in data.read_text().splitlines()[:4]]


def logits(model, tokenizer, prompts: list[str]) -> torch.Tensor:
    enc = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**enc).logits[enc["attention_mask"].bool()]


def answers(model, tokenizer, prompts: list[str]) -> list[str]:
    return [g.text for g in generate(model, tokenizer, prompts, max_new_tokens=12)]


def delta(adapter: Path, module: str) -> torch.Tensor:
    """(alpha / r) B A of one module, from the adapter's saved tensors and config (the reference for a merge)."""
    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    tensors = load_file(adapter / "adapter_model.safetensors")
    a = tensors[f"base_model.model.{module}.lora_A.weight"].float()
    b = tensors[f"base_model.model.{module}.lora_B.weight"].float()
    return config["lora_alpha"] / config["r"] * b @ a


def card_metadata(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text()
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def test_doctests():
    assert doctest.testmod(export_module).failed == 0


def test_merged_model_is_the_base_plus_the_adapter_and_loads_alone(tiny_model, trained, tmp_path, capsys):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    adapter, data = trained
    out = tmp_path / "merged"
    assert main(["--adapter", str(adapter), "--output", str(out), "--merge", "true"]) == 0
    assert "merged model (float32)" in capsys.readouterr().out

    names = {p.name for p in out.iterdir()}
    assert not names & {*ADAPTER_FILES, "adapter_model.bin"}  # a plain transformers model
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja", "README.md",
            "manifest.json"} <= names
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary folder was renamed
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"  # the tiny base's own dtype

    merged = AutoModelForCausalLM.from_pretrained(out).eval()  # transformers alone, no peft
    assert not any("lora" in n for n, _ in merged.named_parameters())
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    # independent reference: every adapted weight is W + (alpha/r) B A, computed here from the saved tensors
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F32"}
    for module in ("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.down_proj"):
        d = delta(adapter, module)
        assert d.abs().max() > 1e-3  # the adapter was trained: the check can fail
        w = merged.get_submodule(module).weight
        torch.testing.assert_close(w, base.get_submodule(module).weight + d, atol=1e-6, rtol=1e-6)

    tokenizer = load_tokenizer(str(out))
    prompts = prompts_of(data, tokenizer)
    peft_model = load_model(str(tiny_model), str(adapter), device="cpu")
    reference = logits(peft_model, tokenizer, prompts)
    torch.testing.assert_close(logits(merged, tokenizer, prompts), reference, atol=1e-5, rtol=1e-5)
    assert (logits(base, tokenizer, prompts) - reference).abs().max() > 0.1  # the adapter changes the logits
    assert answers(merged, tokenizer, prompts) == answers(peft_model, tokenizer, prompts)

    meta, body = card_metadata(out)
    assert meta["base_model"] == str(tiny_model) and meta["library_name"] == "transformers"
    assert meta["datasets"] == [str(data)] and meta["dataset_sha256"] == {str(data): sha256_file(data)}
    assert "merged" in meta["tags"] and "qlora" not in meta["tags"]
    assert f"bioselect tune export --adapter {adapter} --output {out} --merge true" in body
    assert "The merged weights are float32" in body and "No evaluation" in body
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["training_manifest"] == json.loads((adapter / "manifest.json").read_text())
    assert manifest["inputs"][str(adapter / "adapter_model.safetensors")] == sha256_file(
        adapter / "adapter_model.safetensors")
    assert manifest["config"]["merge"] is True and manifest["dtype"] == "float32" and "git_commit" in manifest


def test_a_bfloat16_base_is_merged_and_saved_in_bfloat16(tiny_model, trained, tmp_path):
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    adapter, _ = trained
    base = tmp_path / "tiny-bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model).to(torch.bfloat16).save_pretrained(base)
    load_tokenizer(str(tiny_model)).save_pretrained(base)
    assert json.loads((base / "config.json").read_text())["dtype"] == "bfloat16"
    out = tmp_path / "merged"
    assert main(["--adapter", str(adapter), "--model", str(base), "--output", str(out), "--merge", "true"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    with safe_open(out / "model.safetensors", framework="pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    merged = AutoModelForCausalLM.from_pretrained(out, dtype="auto")
    original = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    assert merged.dtype == torch.bfloat16
    module = "model.layers.0.self_attn.q_proj"
    w0 = original.get_submodule(module).weight.float()
    d = delta(adapter, module)
    expected = w0 + d
    # bfloat16 keeps 8 significant bits: W + bf16(d), rounded, is within 2^-9 |d| + 2^-9 |W + bf16(d)| of the exact
    # sum, which is below 2^-8 (|d| + |W + d|)
    w = merged.get_submodule(module).weight.float()
    assert ((w - expected).abs() <= (d.abs() + expected.abs()) * 2**-8).all()
    assert (w != w0).float().mean() > 0.5  # most weights moved: the check can fail
    meta, body = card_metadata(out)
    assert meta["base_model"] == str(base) and "The merged weights are bfloat16" in body

    # --dtype float32 keeps the whole update: W (bfloat16, exact in float32) + d
    out32 = tmp_path / "merged32"
    assert main(["--adapter", str(adapter), "--model", str(base), "--output", str(out32), "--merge", "true",
                 "--dtype", "float32"]) == 0
    w32 = AutoModelForCausalLM.from_pretrained(out32, dtype="auto").get_submodule(module).weight
    assert w32.dtype == torch.float32
    torch.testing.assert_close(w32, expected, atol=1e-6, rtol=1e-6)
    assert "The merged weights are float32 (--dtype); the base model's own dtype is bfloat16" in card_metadata(
        out32)[1]


def test_the_adapter_is_exported_as_it_is_and_gives_the_same_outputs(tiny_model, trained, tmp_path):
    adapter, data = trained
    out = tmp_path / "exported"
    assert main(["--adapter", str(adapter), "--output", str(out)]) == 0
    for name in ADAPTER_FILES[1:]:
        assert sha256_file(out / name) == sha256_file(adapter / name)
    assert json.loads((out / "adapter_config.json").read_text()) == json.loads(
        (adapter / "adapter_config.json").read_text())
    assert (out / "chat_template.jinja").read_text() == (adapter / "chat_template.jinja").read_text()
    assert not (out / "model.safetensors").exists()

    tokenizer = load_tokenizer(str(tiny_model), str(out))
    prompts = prompts_of(data, tokenizer)
    reloaded = load_model(str(tiny_model), str(out), device="cpu")
    original = load_model(str(tiny_model), str(adapter), device="cpu")
    assert torch.equal(logits(reloaded, tokenizer, prompts), logits(original, tokenizer, prompts))
    assert answers(reloaded, tokenizer, prompts) == answers(original, tokenizer, prompts)

    meta, body = card_metadata(out)
    assert meta["library_name"] == "peft" and "merged" not in meta["tags"]
    assert meta["dataset_sha256"] == {str(data): sha256_file(data)}
    assert "PeftModel.from_pretrained" in body
    # an exported adapter exports again, its training manifest kept
    again = tmp_path / "again"
    assert main(["--adapter", str(out), "--output", str(again)]) == 0
    assert card_metadata(again)[0]["dataset_sha256"] == {str(data): sha256_file(data)}


def _run_with_eval(adapter: Path, data: Path, run: Path, made_with: Path) -> Path:
    """``run/adapter`` (a copy of ``adapter``) and ``run/eval.json`` of predictions whose manifest names
    ``made_with``, as ``tune experiment`` lays a run out; the predictions are the gold answers."""
    from curation.evaluate import main as evaluate_main

    shutil.copytree(adapter, run / "adapter")
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    for r in rows:  # the gold offsets the scorer needs
        names = [e["name"] for e in json.loads(r["output"])]
        r["spans"] = [[r["input"].index(n), r["input"].index(n) + len(n), "Disease"] for n in names]
    (run / "gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "pred.jsonl").write_text("".join(json.dumps({"id": r["id"], "output": r["output"]}) + "\n"
                                            for r in rows))
    (run / "pred.jsonl.manifest.json").write_text(json.dumps({"adapter": str(made_with)}))
    assert evaluate_main(["--gold", str(run / "gold.jsonl"), "--pred", str(run / "pred.jsonl"), "--output",
                          str(run / "eval.json"), "--bootstrap", "0"]) == 0
    return run / "adapter"


def test_the_card_shows_the_evaluation_of_this_adapter(trained, tmp_path, capsys):
    adapter, data = trained
    run = tmp_path / "run"
    run.mkdir()
    copy = _run_with_eval(adapter, data, run, made_with=run / "adapter")
    capsys.readouterr()
    out = tmp_path / "exported"
    assert main(["--adapter", str(copy), "--output", str(out)]) == 0
    assert f"evaluation from {run / 'eval.json'}" in capsys.readouterr().out
    _, body = card_metadata(out)
    assert f"From `{run / 'eval.json'}`." in body
    assert "| strict | 100.00 | 100.00 | 100.00 |" in body  # the predictions are the gold answers
    assert json.loads((out / "manifest.json").read_text())["evaluation"] == str(run / "eval.json")

    # an eval.json beside the adapter whose predictions another adapter made is not this adapter's
    other = tmp_path / "other"
    other.mkdir()
    copy = _run_with_eval(adapter, data, other, made_with=adapter)
    out = tmp_path / "exported-other"
    assert main(["--adapter", str(copy), "--output", str(out)]) == 0
    assert "No evaluation was given or found" in card_metadata(out)[1]

    # --eval FILE.md goes in as it is
    md = tmp_path / "table.md"
    md.write_text("| model | F1 |\n|---|---:|\n| this | 12.34 |\n")
    out = tmp_path / "exported-md"
    assert main(["--adapter", str(copy), "--output", str(out), "--eval", str(md)]) == 0
    assert "| this | 12.34 |" in card_metadata(out)[1]


def test_a_failed_write_leaves_no_output_and_no_temporary_folder(trained, tmp_path, capsys, monkeypatch):
    import errno

    adapter, _ = trained

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(export_module, "model_card", full)
    out = tmp_path / "exported"
    assert main(["--adapter", str(adapter), "--output", str(out)]) == 2
    assert "no space left on device" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_qlora_adapter_is_merged_into_the_full_precision_base(tmp_path, tmp_path_factory, capsys):
    pytest.importorskip("bitsandbytes", reason="pip install 'bioselect[quantization]'")
    from transformers import AutoModelForCausalLM

    from tuning import quantization

    # 64 wide: bitsandbytes' CPU inference kernel packs 4-bit weights in blocks of 64 inputs
    tiny = build_tiny_llama(tmp_path_factory.mktemp("tiny-llama-64"), hidden_size=64, intermediate_size=128)
    data = write_records(tmp_path / "train.jsonl", 6)
    adapter = train_adapter(tiny, data, tmp_path / "adapter", "--load-in-4bit", "true")
    assert json.loads((adapter / "manifest.json").read_text())["quantization"]["bits"] == 4
    out = tmp_path / "merged"
    assert main(["--adapter", str(adapter), "--output", str(out), "--merge", "true"]) == 0

    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny).eval()
    module = "model.layers.1.self_attn.v_proj"
    d = delta(adapter, module)  # the adapter was saved in bfloat16 (trl's choice for a quantised base)
    assert d.abs().max() > 1e-3
    torch.testing.assert_close(merged.get_submodule(module).weight, base.get_submodule(module).weight + d,
                               atol=1e-6, rtol=1e-6)

    tokenizer = load_tokenizer(str(out))
    prompts = prompts_of(data, tokenizer)
    full = load_model(str(tiny), str(adapter), device="cpu")  # the float32 base plus the adapter
    torch.testing.assert_close(logits(merged, tokenizer, prompts), logits(full, tokenizer, prompts), atol=1e-5,
                               rtol=1e-5)
    assert answers(merged, tokenizer, prompts) == answers(full, tokenizer, prompts)
    # what training saw, the 4-bit base plus the adapter, differs by the base's quantisation error (measured, and
    # reported in docs/training.md, not bounded here)
    four_bit = load_model(str(tiny), str(adapter), device="cpu",
                          quantization_config=quantization.bnb_config(True, False, compute_dtype="float32"))
    gap = (logits(merged, tokenizer, prompts) - logits(four_bit, tokenizer, prompts)).abs()
    print(f"merged (float32) vs 4-bit base + adapter: max |logit difference| {gap.max():.4f}, mean {gap.mean():.4f}")

    meta, body = card_metadata(out)
    assert "qlora" in meta["tags"] and meta["library_name"] == "transformers"
    assert "trained on a 4-bit (nf4) quantised base (QLoRA)" in body
    assert "merged into the unquantised base, not into quantised weights" in body


@pytest.fixture
def folders(tiny_model, trained, tmp_path) -> dict[str, Path]:
    adapter, _ = trained
    no_config = tmp_path / "no_config"
    shutil.copytree(adapter, no_config)
    (no_config / "adapter_config.json").unlink()
    no_weights = tmp_path / "no_weights"
    shutil.copytree(adapter, no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    lost_base = tmp_path / "lost_base"
    shutil.copytree(adapter, lost_base)
    config = json.loads((lost_base / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "moved")
    (lost_base / "adapter_config.json").write_text(json.dumps(config))
    wider = build_tiny_llama(tmp_path / "wider", hidden_size=64, intermediate_size=128)
    renamed = tmp_path / "renamed_base"  # another base that the adapter's config does not name: only shapes tell
    shutil.copytree(wider, renamed)
    full = tmp_path / "full"
    full.mkdir()
    (full / "old.txt").write_text("x")
    return {"adapter": adapter, "base": tiny_model, "no_config": no_config, "no_weights": no_weights,
            "lost_base": lost_base, "wider": wider, "full": full, "missing": tmp_path / "missing"}


@pytest.mark.parametrize("argv, names, message", [
    ("--adapter {missing}", "{missing}", "no such adapter folder"),
    ("--adapter {no_config}", "{no_config}", "not a PEFT adapter folder (no adapter_config.json)"),
    ("--adapter {no_weights}", "{no_weights}", "adapter folder has no weights"),
    ("--adapter {lost_base}", "{missing}", "no such model folder"),
    ("--adapter {adapter} --model {missing}", "{missing}", "no such model folder"),
    ("--adapter {adapter} --model {wider}", "{adapter}", "(hidden_size 32), but the model has hidden_size 64"),
    ("--adapter {adapter} --output {full}", "{full}", "exists and is not empty"),
    ("--adapter {adapter} --output {adapter}", "{adapter}", "is an input of this command"),
    ("--adapter {adapter} --output {adapter}/merged", "{adapter}/merged", "is inside"),
    ("--adapter {adapter} --output {base}/merged", "{base}/merged", "is inside"),
    ("--adapter {adapter} --load-in-4bit true", "--load-in-4bit", "a quantised output cannot be merged into"),
    ("--adapter {adapter} --dtype float32", "--dtype", "give --merge true"),
])
def test_bad_input_is_one_line_and_exit_2_with_nothing_written(folders, tmp_path, capsys, argv, names, message):
    if "{lost_base}" in argv:
        names = str(tmp_path / "moved")
    args = argv.format(**folders).split()
    out = tmp_path / "out"
    if "--output" not in args:
        args += ["--output", str(out)]
    if "--load-in-4bit" in argv:  # with --merge: the refusal the QLoRA issue asks for
        args += ["--merge", "true"]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {names.format(**folders)}") and "\n" not in err and message in err, repr(err)
    assert not out.exists()
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before  # nothing written anywhere


def test_an_adapter_for_another_base_of_the_same_config_fields_is_refused_by_its_shapes(folders, tmp_path, capsys):
    """The adapter's recorded base is renamed away; the base given has other widths: the tensor shapes tell."""
    config = json.loads((folders["lost_base"] / "adapter_config.json").read_text())
    assert not os.path.exists(config["base_model_name_or_path"])
    out = tmp_path / "out"
    assert main(["--adapter", str(folders["lost_base"]), "--model", str(tmp_path / "renamed_base"), "--output",
                 str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {folders['lost_base']}: adapter does not fit the model") and "in_features" in err
    assert not out.exists()
