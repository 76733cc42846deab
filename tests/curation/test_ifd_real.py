"""IFD with real weights: SmolLM2-135M on NCBI-disease records against a plain per-sample computation, and the
tokenizers of the Qwen2.5 homologous pair. Weights come from ../shared/models/fetch-models (``$OFFLINE_MODELS/NAME``
or ``~/.cache/offline-models/NAME``); tests skip when they are absent."""

from __future__ import annotations

import itertools
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from curation import ifd_scoring as S
from curation.ifd import main as ifd_main
from tests.helpers import fetch_command, one_torch_thread  # noqa: F401 (autouse: the module's tests run on one torch thread)

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[2]
NCBI_TRAIN = ROOT.parent / "shared" / "data" / "ner" / "NCBI-disease" / "train.tsv"


def offline_model(name: str) -> Path:
    for base in (os.environ.get("OFFLINE_MODELS"), Path.home() / ".cache" / "offline-models"):
        if base and (Path(base) / name / "config.json").is_file():
            return Path(base) / name
    pytest.skip(f"no {name} weights; run {fetch_command(name)}")


def ncbi_records(n: int) -> list[dict]:
    """The first ``n`` NCBI-disease training sentences as instruction records."""
    if not NCBI_TRAIN.is_file():
        pytest.skip(f"no corpus at {NCBI_TRAIN}")
    from curation.readers import read_corpus

    corpus = read_corpus(NCBI_TRAIN)
    corpus.records = corpus.records[:n]
    try:
        from curation.convert import convert_corpus
    except ImportError:
        import prompts

        instruction = prompts.instruction("ner", ["Disease"])
        return [{"id": r.id, "instruction": instruction, "input": r.text, "dataset": "NCBI-disease", "task": "ner",
                 "output": json.dumps([{"entity": s.label, "name": s.surface(r.text)} for s in r.sorted_spans()])}
                for r in corpus.records]
    return convert_corpus(corpus, task="ner")[:n]



@pytest.fixture(scope="module")
def smollm2():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = offline_model("smollm2-135m")
    return folder, AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder,
                                                                                              dtype=torch.float32).eval()


def per_sample(model, tok, rec: dict, prompt_format: str) -> tuple[float, float]:
    """Superfiltering's computation, one record at a time: full logits, loss over the response tokens."""
    if prompt_format == "plain":
        text = f"{rec['instruction']}\n{rec['input']}\n" if rec["input"] else f"{rec['instruction']}\n"
        prompt = tok(text)["input_ids"]
    else:
        content = f"{rec['instruction']}\n{rec['input']}" if rec["input"] else rec["instruction"]
        prompt = tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]
    ids = torch.tensor([prompt + tok(rec["output"], add_special_tokens=False)["input_ids"]])
    labels = ids.clone()
    labels[0, : len(prompt)] = -100
    alone = torch.tensor([tok(rec["output"])["input_ids"]])
    with torch.no_grad():
        loss_cond = model(ids, labels=labels).loss.item()
        logits = model(alone).logits[0]
    loss_uncond = F.cross_entropy(logits[:-1], alone[0, 1:]).item()
    return loss_cond, loss_uncond


@pytest.mark.parametrize("prompt_format,n", [("plain", 20), ("chat", 4)])
def test_smollm2_ifd_matches_per_sample(smollm2, tmp_path, prompt_format, n):
    folder, tok, model = smollm2
    records = ncbi_records(n)
    assert any(r["output"] == "[]" for r in records) and any(r["output"] != "[]" for r in records)
    data = tmp_path / "ncbi.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "scores.jsonl"
    args = ["--model", str(folder), "--input", str(data), "--output", str(out), "--prompt-format", prompt_format,
            "--batch-size", "8"]
    assert ifd_main(args) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    scored = {r["id"] for r in rows}
    skipped = json.loads((tmp_path / "scores.jsonl.manifest.json").read_text())["skipped"]
    # SmolLM2 adds no BOS, so "[]" alone is 2 tokens and is scored; nothing here is skipped
    assert [r["id"] for r in records] == [r["id"] for r in rows] and not skipped
    for rec, row in zip(records, rows):
        loss_cond, loss_uncond = per_sample(model, tok, rec, prompt_format)
        assert row["loss_cond"] == pytest.approx(loss_cond, abs=1e-4)
        assert row["loss_uncond"] == pytest.approx(loss_uncond, abs=1e-4)
        assert abs(row["ifd"] - math.exp(loss_cond) / math.exp(loss_uncond)) <= 1e-4
    assert len(scored) == n


def test_homologous_pair_shares_a_tokenizer():
    from transformers import AutoTokenizer

    weak = AutoTokenizer.from_pretrained(offline_model("qwen2.5-0.5b"))
    strong = AutoTokenizer.from_pretrained(offline_model("qwen2.5-1.5b"))
    samples = [r["input"] for r in ncbi_records(5)] + ['[{"entity": "Disease", "name": "colorectal cancer"}]']
    assert S.tokenizer_mismatch(weak, strong, samples, chat=True) == []
    smol = AutoTokenizer.from_pretrained(offline_model("smollm2-135m"))
    reasons = S.tokenizer_mismatch(smol, strong, samples, chat=True)
    assert any("vocabularies differ" in r for r in reasons) and any("chat templates render" in r for r in reasons)


def test_smollm2_content_scope_matches_per_sample(smollm2, tmp_path):
    """On SmolLM2 the content tokens of an NCBI-disease answer spell its mentions exactly (no quote merged into a
    mention), and the command's content losses equal a per-record computation over those tokens."""
    folder, tok, model = smollm2
    records = [r for r in ncbi_records(30) if r["output"] != "[]"][:8]
    data = tmp_path / "ncbi.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "scores.jsonl"
    assert ifd_main(["--model", str(folder), "--input", str(data), "--output", str(out), "--tokens", "content"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    for rec, row in zip(records, rows):
        names = [e["name"] for e in json.loads(rec["output"])]
        response = tok(rec["output"], add_special_tokens=False)["input_ids"]
        # independent of the JSON walker and the offset mapping: a regex for the names, decoded token lengths
        spans = [m.span(1) for m in re.finditer(r'"name": "((?:[^"\\]|\\.)*)"', rec["output"])]
        ends = list(itertools.accumulate(len(tok.decode(t)) for t in response))
        assert ends[-1] == len(rec["output"]) and len(spans) == len(names)
        mask = [any(a < e and b > s for s, e in spans) for a, b in zip([0, *ends[:-1]], ends)]
        ex = S.encode_records(tok, [rec], tokens="content")[0]
        assert "".join(tok.decode(response[j]) for j in ex.response_content) == "".join(names)
        assert [j for j, m in enumerate(mask) if m] == list(ex.response_content)
        prompt = tok(f"{rec['instruction']}\n{rec['input']}\n")["input_ids"]
        ids = torch.tensor(prompt + response)
        with torch.no_grad():
            nll = F.cross_entropy(model(ids[None]).logits[0, len(prompt) - 1 : -1], ids[len(prompt) :],
                                  reduction="none")
            nll_alone = F.cross_entropy(model(ids[None, len(prompt) :]).logits[0, :-1], ids[len(prompt) + 1 :],
                                        reduction="none")  # SmolLM2 adds no BOS: the response alone is its ids
        keep = torch.tensor(mask)
        assert row["loss_cond"] == pytest.approx(nll[keep].mean().item(), abs=1e-4)
        assert row["loss_uncond"] == pytest.approx(nll_alone[keep[1:]].mean().item(), abs=1e-4)
        assert row["n_content_tokens"] == int(keep.sum()) and row["tokens"] == "content"
