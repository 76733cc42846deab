"""`bioselect tune generate` on real weights and the real NCBI-disease test set: every constrained answer of
SmolLM2-135M-Instruct (never trained on the format) is valid, and the grammar accepts every gold answer under the
real tokenizers."""

from __future__ import annotations

import json

import pytest

from curation.convert import convert_corpus
from curation.io import write_jsonl
from curation.readers.iob import read_iob
from curation.scoring import parse_output
from tests.helpers import fetch_command, offline_model, real_file
from tuning.generate import main

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def ncbi_rows() -> list[dict]:
    return convert_corpus(read_iob(real_file("ner", "NCBI-disease", "test.tsv")), "ner")


@pytest.fixture
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CPU: one thread avoids OpenMP contention
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", ["smollm2-135m", "qwen2.5-0.5b"])
def test_grammar_accepts_gold_answers_under_real_tokenizers(name, ncbi_rows):
    llguidance = pytest.importorskip("llguidance", reason="pip install 'bioselect[constrained]'")
    folder = offline_model(name)
    if folder is None:
        pytest.skip(f"{name} not found under ~/.cache/offline-models (run {fetch_command(name)})")
    from tuning.constrained import answer_grammars, ll_tokenizer
    from tuning.generation import load_tokenizer

    tokenizer = load_tokenizer(str(folder))
    ll_tok = ll_tokenizer(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    rows = [r for r in ncbi_rows if r["output"] != "[]"][:60]
    for row, grammar in zip(rows, answer_grammars(tokenizer, [r["input"] for r in rows], [["Disease"]] * len(rows)),
                            strict=True):
        m = llguidance.LLMatcher(ll_tok, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
        ids = tokenizer(row["output"], add_special_tokens=False)["input_ids"]
        assert m.try_consume_tokens(ids) == len(ids) and m.is_accepting(), row["output"]


def test_smollm2_constrained_answers_on_ncbi_are_all_valid(tmp_path, capsys, ncbi_rows, one_torch_thread):
    pytest.importorskip("llguidance", reason="pip install 'bioselect[constrained]'")
    folder = offline_model("smollm2-135m")
    if folder is None:
        pytest.skip("smollm2-135m not found under ~/.cache/offline-models (run `make models`)")
    rows = ncbi_rows[:8]
    src, out = tmp_path / "ncbi8.jsonl", tmp_path / "pred.jsonl"
    write_jsonl(src, rows)
    assert main(["--model", str(folder), "--input", str(src), "--output", str(out), "--batch-size", "8",
                 "--max-new-tokens", "48"]) == 0
    preds = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["id"] for p in preds] == [r["id"] for r in rows]
    for pred, row in zip(preds, rows, strict=True):
        entities, status = parse_output(pred["output"], ["Disease"])
        assert status == pred["status"] == "ok", pred["output"]
        assert all(name in row["input"] for _, name in entities)
        for start, end, label in pred["spans"]:
            assert label == "Disease" and row["input"][start:end] in {n for _, n in entities}
    manifest = json.loads((tmp_path / "pred.jsonl.manifest.json").read_text())
    assert manifest["counts"]["ok"] == 8 and manifest["mode"] == "constrained"
    assert "ok 8, parse errors 0, schema errors 0" in capsys.readouterr().out
