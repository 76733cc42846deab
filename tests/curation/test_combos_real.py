"""The encoder evaluator of the combination search on the real MiniLM and two real corpora, with tiny caps (skipped
where ../shared/data or the weights are absent)."""

from __future__ import annotations

import json

import pytest
import torch

from curation.combo_evaluators import EncoderEvaluator, find_corpora
from curation.combos import search
from tests.helpers import offline_model, real_file

pytestmark = pytest.mark.real


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
