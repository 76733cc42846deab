"""The encoder evaluator of the combination search on the real MiniLM and two real corpora, with tiny caps (skipped
where ../shared/data or the weights are absent)."""

from __future__ import annotations

import json

import pytest

from curation.combo_evaluators import find_corpora
from curation.combos import search
from mtl_baselines.token_mtl.combo_evaluator import EncoderEvaluator
from tests.helpers import offline_model, real_file

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("one_thread")]


def test_tiny_search_with_the_encoder_evaluator_on_ncbi_disease_and_bc5cdr(tmp_path):
    real_file("ner", "NCBI-disease", "train.tsv")
    real_file("ner", "BC5CDR", "train.tsv")
    model = offline_model("minilm-l6")
    if model is None:
        pytest.skip("real MiniLM weights not found (~/.cache/offline-models/minilm-l6; run `make models`)")
    corpora = find_corpora(["NCBI-disease", "bc5cdr"], real_file("ner"))
    assert list(corpora) == ["NCBI-disease", "BC5CDR"]
    ev = EncoderEvaluator(corpora, "NCBI-disease", str(model), max_train=16, steps=3, batch_size=4, max_length=64,
                          dev_size=16, device="cpu", seed=0, work_dir=tmp_path / "evals")
    ev.check()
    result = search(ev, list(corpora), target="NCBI-disease", budget=2, history_path=tmp_path / "h.jsonl",
                    settings=ev.settings())
    assert [sorted(m) for m, _ in result.history] == [["NCBI-disease"], ["BC5CDR", "NCBI-disease"]]
    assert all(0.0 <= s <= 1.0 for _, s in result.history) and not result.failures
    folder = tmp_path / "evals" / "NCBI-disease+BC5CDR"
    metrics = json.loads((folder / "metrics.json").read_text())
    # Disease is one label for both corpora; BC5CDR's Chemical is trained but never predicted on NCBI-disease
    assert metrics["labels"] == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease"]
    assert sum(metrics["drawn_per_dataset"].values()) == 12 and set(metrics["drawn_per_dataset"]) == set(corpora)
    assert metrics["steps"] == 3 and metrics["eval_sentences"] == {"dev": 16}
    labels = {s[2] for line in (folder / "pred_dev.jsonl").read_text().splitlines()
              for s in json.loads(line).get("spans", [])}
    assert labels <= {"Disease"}
    assert metrics["provenance"]["inputs"]  # hashes of the corpus files trained on


def test_tiny_search_with_the_lora_evaluator_end_to_end_on_smollm2(tmp_path, capsys):
    """The LoRA evaluator for real: `curate combos --evaluator lora` trains a LoRA adapter per mix on SmolLM2-135M
    (tune train --mix even), generates constrained JSON answers for NCBI-disease dev sentences (tune generate) and
    scores them with the foundation scorer; a second invocation resumes without re-evaluating."""
    from curation.combos_cli import main

    real_file("ner", "NCBI-disease", "train.tsv")
    real_file("ner", "BC5CDR", "train.tsv")
    model = offline_model("smollm2-135m")
    if model is None:
        pytest.skip("real SmolLM2-135M weights not found (~/.cache/offline-models/smollm2-135m; run `make models`)")
    out = tmp_path / "search"
    argv = ["--target", "NCBI-disease", "--datasets", "BC5CDR", "--data_root", str(real_file("ner")),
            "--evaluator", "lora", "--model", str(model), "--output", str(out), "--budget", "2", "--steps", "2",
            "--batch_size", "2", "--max_train", "16", "--max_length", "160", "--dev_size", "4",
            "--max_new_tokens", "40", "--no_test", "--threads", "2"]
    assert main(argv) == 0
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()[1:]]
    assert [sorted(h["mix"]) for h in history] == [["NCBI-disease"], ["BC5CDR", "NCBI-disease"]]
    assert all(0.0 <= h["score"] <= 1.0 for h in history)
    folder = out / "evals" / "NCBI-disease+BC5CDR"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["dev"]["f1"] == history[1]["score"]
    assert metrics["train_command"][:3] == ["bioselect", "tune", "train"] and "even" in metrics["train_command"]
    assert (folder / "adapter" / "adapter_config.json").is_file()
    preds = [json.loads(line) for line in (folder / "pred_dev.jsonl").read_text().splitlines()]
    assert len(preds) == 4
    for p in preds:  # constrained decoding: every finished answer parses as the schema's entity list
        assert p["status"] == "ok" or p["finish"] == "length"
        if p["finish"] == "stop":
            assert isinstance(json.loads(p["output"]), list)
    # the two datasets' training files were both drawn from (equal sampling), the adapter trained on both
    train_files = metrics["train_command"][metrics["train_command"].index("--train-files") + 1].split(",")
    assert sorted(p.split("/")[-1] for p in train_files) == ["BC5CDR.train.jsonl", "NCBI-disease.train.jsonl"]
    assert (out / "best_so_far.png").stat().st_size > 0
    [exposure] = json.loads((out / "result.json").read_text())["exposure"]  # NCBI-disease alone for its half: 1 step
    assert exposure["mix"] == ["BC5CDR", "NCBI-disease"] and exposure["target_steps"] == 1
    assert exposure["error"] is None and 0.0 <= exposure["target_dev"] <= 1.0
    capsys.readouterr()
    assert main(argv) == 0  # resumed: nothing evaluated again
    assert "[1]" not in capsys.readouterr().out
    assert len((out / "history.jsonl").read_text().splitlines()) == 3
