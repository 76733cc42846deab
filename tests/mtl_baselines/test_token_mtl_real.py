"""Token MTL on the real corpora and the real MiniLM encoder (skipped where they are absent)."""

from __future__ import annotations

import pytest
import torch

from curation.io import InputError
from curation.sample import sampling_order
from mtl_baselines.common import check_tokenizer, load_splits, load_tokenizer
from mtl_baselines.token_mtl.data import check_fraction, check_splits, collate, encode
from mtl_baselines.token_mtl.labels import IGNORE, bio_labels
from mtl_baselines.token_mtl.model import TokenMTL
from tests.helpers import offline_model, real_file

pytestmark = pytest.mark.real


def _minilm():
    folder = offline_model("minilm-l6")
    if folder is None:
        pytest.skip("real MiniLM weights not found (~/.cache/offline-models/minilm-l6; run `make models`)")
    return folder


def test_pk_relations_document_split():
    path = real_file("ner", "PK-relations", "dev.jsonl").parent
    splits = load_splits(path, (0.6, 0.2, 0.2), seed=0)
    assert [len(splits.train), len(splits.dev), len(splits.test)] == [298, 101, 101]
    docs = [{r.doc_id for r in getattr(splits, n)} for n in ("train", "dev", "test")]
    assert not (docs[0] & docs[1] or docs[0] & docs[2] or docs[1] & docs[2])
    assert check_splits(splits) == ["COMPARE", "PK", "RANGE", "UNITS", "VALUE"]
    # the study's PK ladder: COMPARE (10 training mentions) is lost at 10% and below, RANGE at 2.5%
    order = sampling_order(splits.train, 0)
    assert check_fraction(splits.train, 0.25, 0, order=order)[1] == []
    assert check_fraction(splits.train, 0.05, 0, True, order)[1] == ["COMPARE"]
    with pytest.raises(InputError, match="no mention of COMPARE"):
        check_fraction(splits.train, 0.05, 0, order=order)


@pytest.mark.parametrize("corpus", ["NCBI-disease", "BC5CDR"])
def test_crichton_corpora_keep_every_type_down_to_2_5_percent(corpus):
    real_file("ner", corpus, "train.tsv")
    splits = load_splits(real_file("ner", corpus))
    types = check_splits(splits)
    assert types == (["Disease"] if corpus == "NCBI-disease" else ["Chemical", "Disease"])
    for seed in range(3):
        order = sampling_order(splits.train, seed)
        for fraction in (1.0, 0.25, 0.05, 0.025):
            assert check_fraction(splits.train, fraction, seed, order=order)[1] == []


def test_minilm_forward_on_pk_sentences():
    folder = _minilm()
    tok = load_tokenizer(str(folder))
    with pytest.raises(InputError, match="tokenizer/encoder mismatch"):
        check_tokenizer(tok, 28996, "minilm", "a cased BioBERT-sized encoder")
    from transformers import AutoModel

    splits = load_splits(real_file("ner", "PK-relations", "dev.jsonl"))
    records = [r for r in splits.train if r.spans][:4]
    labels = bio_labels(splits.types)
    examples = encode(records, tok, labels, max_length=512)
    for r, e in zip(records, examples):
        assert sum(x != IGNORE for x in e["ner"]) == len(r.tokens)  # one labelled subword per word
        assert min(e["first"]) > 0
    torch.manual_seed(0)
    model = TokenMTL(AutoModel.from_pretrained(folder), num_labels=len(labels)).eval()
    batch = collate(examples, tok.pad_token_id)
    with torch.no_grad():
        out = model(batch["input_ids"], batch["attention_mask"])
    width = batch["input_ids"].shape[1]
    assert out["ner"].shape == (4, width, len(labels)) and out["mcls"].shape == (4, 4)
