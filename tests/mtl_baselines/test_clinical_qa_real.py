"""Clinical QA on the real corpora (BioRED, COVID-QA, BioASQ) and the real MiniLM encoder; skipped where absent.

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/mtl_baselines/test_clinical_qa_real.py``
"""

from __future__ import annotations

import pytest
import torch

from mtl_baselines.clinical_qa.data import encode_windows, load_qa
from mtl_baselines.clinical_qa.metrics import span_scores
from mtl_baselines.clinical_qa.model import ClinicalQA
from mtl_baselines.clinical_qa.trainer import best_span, gold_answers
from tests.helpers import offline_model, real_file

pytestmark = [pytest.mark.real, pytest.mark.usefixtures("one_thread")]


def _minilm():
    folder = offline_model("minilm-l6")
    if folder is None:
        pytest.skip("real MiniLM weights not found (~/.cache/offline-models/minilm-l6; run `make models`)")
    return folder


@pytest.fixture(scope="module")
def biored():
    real_file("re", "BioRED", "Train.PubTator")
    return load_qa(real_file("re", "BioRED"), ratios=(0.8, 0.1, 0.1), seed=0)


def test_templated_biored_set(biored):
    c = biored.counts
    assert c["questions"] == 15901 and c["self_relations"] == 4
    assert (c["train_documents"], c["dev_documents"], c["test_documents"]) == (474, 60, 59)  # 7 abstracts: no relation
    assert (len(biored.train), len(biored.dev), len(biored.test)) == (12731, 1667, 1503)
    assert biored.categories == ["chemical", "disease", "gene", "variant"]
    docs = [{r.doc_id for r in getattr(biored, n)} for n in ("train", "dev", "test")]
    assert not (docs[0] & docs[1] or docs[0] & docs[2] or docs[1] & docs[2])
    multi = sum(len(r.labels) > 1 for r in biored.train)
    assert 0.1 < multi / len(biored.train) < 0.2  # the untyped templates make multi-label questions
    for r in biored.dev[:200]:
        assert r.spans and all(s.surface(r.text).strip() for s in r.spans)


def test_covid_qa_offsets_are_fixed_and_counted():
    qa = load_qa(real_file("qa", "COVID-QA", "200423_covidQA.json"), ratios=(0.8, 0.1, 0.1), seed=0)
    assert qa.counts["questions"] == 1380 and qa.counts["offsets_fixed"] == 234  # 196 off by one + 38 in doc 2684
    assert qa.counts["questions_without_usable_answer"] == 0 and qa.categories == []
    assert len(qa.train) + len(qa.dev) + len(qa.test) == 1380
    assert not {r.doc_id for r in qa.train} & {r.doc_id for r in qa.test}


def test_bioasq_split_keeps_a_question_in_one_split():
    qa = load_qa(real_file("qa", "BioASQ-factoid-squad", "dev.json"), ratios=(0.8, 0.1, 0.1), seed=0)
    assert qa.counts["questions"] == 1809 and qa.counts["offsets_fixed"] == 0
    texts = [{r.question for r in getattr(qa, n)} for n in ("train", "dev", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])


def test_minilm_windows_point_at_the_gold_answers(biored):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(_minilm())
    windows, questions, counts = encode_windows(biored.dev[:200], tok, biored.categories, max_length=384, stride=128)
    assert counts["multi_window_questions"] > 50 and "answer_in_no_window" not in counts
    best = {}
    for w in windows:  # oracle logits on each window's target recover a gold answer
        if w["start"] == 0:
            continue
        n = len(w["input_ids"])
        start, end = torch.full((n,), -5.0), torch.full((n,), -5.0)
        start[w["start"]], end[w["end"]] = 5.0, 5.0
        _, a, b = best_span(start, end, torch.tensor([o is not None for o in w["offsets"]]), 30)
        r = questions[w["q"]]
        best[r.id] = r.text[w["offsets"][a][0] : w["offsets"][b][1]]
    # a mention that starts or ends inside a word (BioRED marks "P120T" inside "sP120T") cannot be one exactly
    assert span_scores(best, {r.id: gold_answers(r) for r in questions})["exact_match"] > 0.99
    covid = load_qa(real_file("qa", "COVID-QA", "200423_covidQA.json"), caps=(5, 0, 0))
    windows, questions, counts = encode_windows(covid.train, tok, [], max_length=384, stride=128)
    assert counts["windows"] / counts["questions"] > 5 and "answer_in_no_window" not in counts  # full articles


def test_minilm_split_at_three_layers_computes_minilm():
    from transformers import AutoModel, AutoTokenizer

    folder = _minilm()
    tok = AutoTokenizer.from_pretrained(folder)
    enc = tok(["Which chemical is associated with fever?"] * 2, ["Aspirin lowered fever.", "Fever fell."],
              padding=True, return_tensors="pt")
    plain = AutoModel.from_pretrained(folder).eval()
    model = ClinicalQA(AutoModel.from_pretrained(folder), num_categories=4).eval()
    assert (model.depth, model.shared_layers) == (6, 3)
    with torch.no_grad():
        want = plain(**enc).last_hidden_state
        h = model.shared(**enc).last_hidden_state
        for task in ("qa", "cls"):
            got = model.branches[task](inputs_embeds=h, attention_mask=enc["attention_mask"]).last_hidden_state
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
        out = model(enc["input_ids"], enc["attention_mask"], enc["token_type_ids"])
    assert out["category"].shape == (2, 4) and out["start"].shape == enc["input_ids"].shape
