"""Class-balanced nested downsampling."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.readers import read_corpus
from curation.records import Record, Span
from curation.sample import LADDER, sample_indices, sample_records, strata_counts, stratum
from tests.helpers import real_file


def _corpus(pattern: list[tuple[str, ...]]) -> list[Record]:
    return [Record(id=str(i), text="x", spans=[Span(0, 1, t) for t in types], doc_id=f"d{i // 3}")
            for i, types in enumerate(pattern)]


def test_stratum_keys():
    assert stratum(Record(id="a", text="x")) == "-"
    assert stratum(Record(id="a", text="x", spans=[Span(0, 1, "B"), Span(0, 1, "A"), Span(0, 1, "B")])) == "A|B"
    assert stratum(Record(id="a", text="x", labels=["weak_advice"])) == "weak_advice"


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([(), ("A",), ("B",), ("A", "B")]), min_size=1, max_size=300),
       st.integers(0, 5))
def test_nested_and_balanced(pattern, seed):
    recs = _corpus(pattern)
    previous = None
    all_counts = strata_counts(recs)
    for frac in sorted(LADDER + (1.0,), reverse=True):
        idx = sample_indices(recs, frac, seed)
        assert len(idx) == round(frac * len(recs))
        assert idx == sorted(set(idx))
        if previous is not None:
            assert set(idx) <= previous
        previous = set(idx)
        kept = strata_counts([recs[i] for i in idx])
        for key, n in all_counts.items():
            assert abs(kept.get(key, 0) - len(idx) * n / len(recs)) < 1.0


def test_seed_changes_sample_and_is_deterministic():
    recs = _corpus([("A",), ()] * 50)
    assert sample_indices(recs, 0.3, 1) == sample_indices(recs, 0.3, 1)
    assert sample_indices(recs, 0.3, 1) != sample_indices(recs, 0.3, 2)


def test_document_unit_keeps_whole_documents():
    recs = _corpus([("A",), (), ()] * 20)
    kept = sample_records(recs, 0.5, seed=0, unit="document")
    docs = {r.doc_id for r in kept}
    assert len(docs) == 10
    assert all(sum(r.doc_id == d for r in kept) == 3 for d in docs)


def test_bad_fraction():
    with pytest.raises(ValueError, match="fraction"):
        sample_indices(_corpus([()]), 0.0, 0)


@pytest.mark.real
def test_real_jnlpba_type_mix_preserved():
    recs = read_corpus(real_file("ner", "JNLPBA", "train.tsv")).records
    full = strata_counts(recs)
    small = strata_counts(sample_records(recs, 0.05, seed=0))
    assert abs(sum(small.values()) - round(0.05 * len(recs))) == 0
    for key, n in full.items():
        assert abs(small.get(key, 0) - 0.05 * n) <= 1.0
    assert abs(small["-"] / sum(small.values()) - full["-"] / len(recs)) < 0.002
