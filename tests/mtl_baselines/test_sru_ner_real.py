"""SRU-NER's action scheme on the real GENIA nested NER dev and test files: every mention round-trips."""

from __future__ import annotations

import pytest

from curation.readers import read_corpus
from mtl_baselines.sru_ner.actions import crossing_pairs, decode, encode, to_steps
from mtl_baselines.sru_ner.data import token_mentions
from tests.helpers import real_file

# mention counts of the files (../shared/data/README.md)
GENIA = {"dev": 4714, "test": 5119}


@pytest.mark.real
@pytest.mark.parametrize("split", sorted(GENIA))
def test_every_genia_mention_round_trips(split):
    corpus = read_corpus(real_file("nested_ner", "GENIA", f"{split}.jsonlines"))
    mentions = crossing = nested = 0
    for r in corpus:
        gold = sorted(token_mentions(r))
        crossing += len(crossing_pairs(gold))
        nested += sum(1 for a in gold for b in gold if a != b and a[0] <= b[0] and b[1] <= a[1])
        if crossing_pairs(gold):
            continue
        flat = encode(gold, len(r.tokens))
        assert decode(flat) == gold, r.id
        assert decode(to_steps(flat), len(r.tokens)) == gold, r.id
        mentions += len(gold)
    print(f"GENIA {split}: {mentions} mentions round-trip ({nested} nested pairs), {crossing} crossing pairs")
    assert crossing == 0 and mentions == GENIA[split]
    assert nested > 0
