"""SRU-NER on tiny random BERTs: the action scheme (doctests, round-trip property), crossing-span policies, the
model's shapes, the loss-masking rule by hand, and batched decoding against one sentence at a time."""

from __future__ import annotations

import doctest

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from curation.records import Record, Span, join_tokens
from mtl_baselines.sru_ner import actions, data, model, report
from mtl_baselines.sru_ner.actions import (
    action_vocab,
    crossing_pairs,
    decode,
    encode,
    resolve_crossing,
    to_steps,
)
from mtl_baselines.sru_ner.data import collate, encode_example, supervised_mask
from mtl_baselines.sru_ner.model import SRUNER, action_loss, steps_to_mentions

pytestmark = pytest.mark.usefixtures("one_thread")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##s", "il", "-", "2", "gene", "expression", "in", "t",
         "cells", "nf", "kappa", "b", "site", "binds", "the", "human", "promoter", "of", "."]


def test_doctests():
    for module in (actions, model, data, report):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---------------------------------------------------------------------------------------------------------------
# action scheme


@st.composite
def nested_mentions(draw):
    n = draw(st.integers(1, 12))
    raw = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, n), st.sampled_from("ABC")), max_size=10))
    spans = [(min(a, b - 1), max(a + 1, b), t) for a, b, t in raw]
    kept, _ = resolve_crossing(spans, "drop")
    return n, kept


@settings(max_examples=150, deadline=None)
@given(nested_mentions())
def test_encode_decode_round_trip(case):
    n, mentions = case
    flat = encode(mentions, n)
    assert flat.count("SH") == n and flat[-1] == "EOA"
    assert decode(flat) == sorted(mentions)
    steps = to_steps(flat)
    assert sum(len(s) for s in steps) == len(flat)  # packing loses no action (a step never repeats one)
    assert decode(steps) == sorted(mentions) == decode(steps, n)
    assert all(s[-1] in ("SH", "EOA") or "SH" not in s for s in steps)


def test_paper_ordering_longest_tr_first_shortest_re_first():
    # "NF - kappa B site": DNA (0, 5), DNA (2, 4) "kappa B", protein (0, 4) "NF - kappa B"
    flat = encode([(0, 5, "DNA"), (2, 4, "DNA"), (0, 4, "protein")], 5)
    assert flat == ["TR(DNA)", "TR(protein)", "SH", "SH", "TR(DNA)", "SH", "RE(DNA)", "RE(protein)", "SH",
                    "RE(DNA)", "SH", "EOA"]
    same_start = encode([(0, 1, "A"), (0, 3, "A"), (0, 2, "A")], 3)
    assert same_start[:4] == ["TR(A)", "TR(A)", "TR(A)", "RE(A)"]  # three opens, the shortest closes first


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 10), st.lists(st.tuples(st.integers(0, 9), st.integers(1, 10), st.sampled_from("AB")),
                                    max_size=8), st.sampled_from(["split", "drop"]))
def test_crossing_policies_leave_no_crossing_and_lose_nothing_silently(n, raw, policy):
    spans = [(min(a, b - 1), max(a + 1, b), t) for a, b, t in raw]
    kept, notes = resolve_crossing(spans, policy)
    assert not crossing_pairs(kept)
    if policy == "drop":
        assert len(kept) + len(notes) == len(spans)
    else:  # every word a mention covered is still covered by a piece of that type
        covered = {(i, t) for s, e, t in spans for i in range(s, e)}
        assert covered == {(i, t) for s, e, t in kept for i in range(s, e)}
    assert bool(notes) == bool(crossing_pairs(spans))


def test_crossing_spans_are_reported_with_the_sentence_id():
    from curation.io import InputError

    text, off = join_tokens(["a", "b", "c", "d"])
    r = Record(id="s9", text=text, tokens=list("abcd"), token_offsets=off,
               spans=[Span(0, 5, "X"), Span(2, 7, "X")])
    kept, notes = data.clean_mentions(r, "split")
    assert kept == [(0, 3, "X"), (1, 3, "X"), (3, 4, "X")]
    assert notes == ["sentence s9: (1, 4, X) crosses (0, 3, X): split into (1, 3) + (3, 4)"]
    with pytest.raises(InputError, match="s9"):
        data.clean_mentions(r, "error")


# ---------------------------------------------------------------------------------------------------------------
# model on a tiny random BERT


def tiny_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(WORDS)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_encoder(seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=64))


TYPES = ["a_DNA", "a_protein", "b_cell_type"]
SENTENCES = [
    (["IL-2", "gene", "expression", "in", "T", "cells"], [(0, 2, "a_DNA"), (0, 1, "a_protein")],
     ["a_DNA", "a_protein"]),
    (["NF-kappa", "B", "site", "binds"], [(0, 3, "a_DNA"), (0, 2, "a_protein")], ["a_DNA", "a_protein"]),
    (["the", "human", "T", "cells", "."], [(1, 4, "b_cell_type")], ["b_cell_type"]),
    (["promoter", "of", "IL-2", "genes", "in", "human", "T", "cells", "."], [(2, 4, "a_DNA")], ["a_DNA", "a_protein"]),
]


def _record(words, mentions):
    text, off = join_tokens(words)
    return Record(id=" ".join(words), text=text, tokens=words, token_offsets=off,
                  spans=[Span(off[s][0], off[e - 1][1], t) for s, e, t in mentions])


def _examples():
    tok = tiny_tokenizer()
    return [encode_example(_record(w, m), m, tok, TYPES, own, 64) for w, m, own in SENTENCES], tok


def _model(seed=0, slot_dim=16):
    torch.manual_seed(seed)
    return SRUNER(tiny_encoder(seed), len(action_vocab(TYPES)), slot_dim=slot_dim, latents=3, max_distance=4,
                  dropout=0.0).eval()


def test_word_embeddings_max_pool_each_words_subwords():
    ex, tok = _examples()
    pieces = tok.convert_ids_to_tokens(ex[0]["input_ids"])
    assert pieces[:6] == ["[CLS]", "il", "-", "2", "gene", "expression"]
    assert ex[0]["word_index"][:6] == [-1, 0, 0, 0, 1, 2]
    m = _model()
    b = collate(ex[:1], tok.pad_token_id, len(action_vocab(TYPES)))
    hidden = m.encoder(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).last_hidden_state
    words = model.max_pool_words(hidden, b["word_index"], 6)
    assert torch.equal(words[0, 0], hidden[0, 1:4].amax(0)) and torch.equal(words[0, 1], hidden[0, 4])


def test_forward_shapes_and_loss_backward():
    ex, tok = _examples()
    a = len(action_vocab(TYPES))
    b = collate(ex, tok.pad_token_id, a)
    m = _model().train()
    logits = m(b["input_ids"], b["attention_mask"], b["word_index"], b["gold"], b["n_words"])
    assert logits.shape == (4, b["gold"].shape[1], a) == b["gold"].shape
    assert b["step_mask"].sum(1).tolist() == [len(e["steps"]) for e in ex]
    loss = action_loss(logits, b["gold"], b["step_mask"], b["supervised"])
    loss.backward()
    assert torch.isfinite(loss) and m.cell.d1.grad is not None
    assert m.encoder.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_loss_masking_rule_by_hand_on_two_datasets():
    # dataset a annotates a_DNA, a_protein; dataset b annotates b_cell_type. A sentence of a never learns b's actions.
    ex, tok = _examples()
    vocab = action_vocab(TYPES)
    b = collate(ex, tok.pad_token_id, len(vocab))
    m = _model()
    logits = m(b["input_ids"], b["attention_mask"], b["word_index"], b["gold"], b["n_words"]).detach()
    logits.requires_grad_(True)
    loss = action_loss(logits, b["gold"], b["step_mask"], b["supervised"])
    (grad,) = torch.autograd.grad(loss, logits)
    unsup = ~b["supervised"].unsqueeze(1).expand_as(grad)
    assert torch.all(grad[unsup] == 0)  # other datasets' actions: own probabilities as targets, no gradient
    # the loss does not change when an a-sentence is given b's annotations for its b actions: they are masked out
    gold2 = b["gold"].clone()
    gold2[0, :, vocab.index("TR(b_cell_type)")] = 1.0
    assert torch.equal(action_loss(logits, gold2, b["step_mask"], b["supervised"]), loss)
    # by hand: BCE against gold on supervised actions, against p on the others (deferred SH where p fires)
    p = torch.sigmoid(logits.detach())
    target = torch.where(~unsup, b["gold"], p)
    defer = ((p > 0.5) & unsup).any(-1) & (b["gold"][..., 0] > 0)
    target[..., 0] = torch.where(defer, p[..., 0], target[..., 0])
    bce = -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean(-1)
    hand = (bce * b["step_mask"]).sum() / b["step_mask"].sum()
    assert loss.item() == pytest.approx(hand.item(), rel=1e-5)
    # and a supervised action does get a gradient
    assert grad[0, 0, vocab.index("TR(a_DNA)")] != 0


def test_batched_generation_equals_one_sentence_at_a_time():
    ex, tok = _examples()
    vocab = action_vocab(TYPES)
    m = _model(seed=3)
    with torch.no_grad():  # random weights: no early EOA, and action biases near 0.5 so decoding emits mentions
        m.head[-1].bias[1] = -20.0
        m.head[-1].bias[2:] += 0.3
    b = collate(ex, tok.pad_token_id, len(vocab))
    batched = m.generate(b["input_ids"], b["attention_mask"], b["word_index"], b["n_words"])
    single = []
    for e in ex:
        one = collate([e], tok.pad_token_id, len(vocab))
        single += m.generate(one["input_ids"], one["attention_mask"], one["word_index"], one["n_words"])
    assert batched == single
    for steps, e in zip(batched, ex):
        assert sum(0 in s for s in steps) == e["n_words"]  # every word shifted once, then stop
        steps_to_mentions(steps, vocab, e["n_words"])
    assert any(len(s) > 1 for steps in batched for s in steps)  # decoding is not trivially SH-only


def test_teacher_forced_logits_do_not_depend_on_batch_padding():
    ex, tok = _examples()
    a = len(action_vocab(TYPES))
    m = _model(seed=1)
    b = collate(ex, tok.pad_token_id, a)
    with torch.no_grad():
        full = m(b["input_ids"], b["attention_mask"], b["word_index"], b["gold"], b["n_words"])
        for i, e in enumerate(ex):
            one = collate([e], tok.pad_token_id, a)
            alone = m(one["input_ids"], one["attention_mask"], one["word_index"], one["gold"], one["n_words"])
            assert torch.allclose(full[i, : len(e["steps"])], alone[0], atol=1e-5)


def test_supervised_mask():
    assert supervised_mask(TYPES, ["b_cell_type"]) == [True, True, False, False, True, False, False, True]


# ---------------------------------------------------------------------------------------------------------------
# the command end to end on two tiny partially annotated corpora


def _write_iob(path, rows):
    path.write_text("\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(ws, ts)) for ws, ts in rows) + "\n")


def test_train_command_end_to_end(tmp_path, capsys):
    import json

    from mtl_baselines.sru_ner.train import main

    folder = tmp_path / "tiny-bert"
    tiny_tokenizer().save_pretrained(folder)
    tiny_encoder().save_pretrained(folder)
    a_rows = [(["IL-2", "gene", "expression", "."], ["B-DNA", "I-DNA", "O", "O"]),
              (["NF-kappa", "B", "site", "binds", "."], ["B-DNA", "I-DNA", "I-DNA", "O", "O"])]
    b_rows = [(["human", "T", "cells", "."], ["B-cell_type", "I-cell_type", "I-cell_type", "O"]),
              (["T", "cells", "binds", "IL-2", "."], ["B-cell_type", "I-cell_type", "O", "O", "O"])]
    for name, rows in (("a", a_rows), ("b", b_rows)):
        (tmp_path / name).mkdir()
        for split in ("train", "devel", "test"):
            _write_iob(tmp_path / name / f"{split}.tsv", rows)
    out = tmp_path / "run"
    rc = main(["--corpora", f"a={tmp_path / 'a'},b={tmp_path / 'b'}", "--model", str(folder), "--output", str(out),
               "--steps", "3", "--batch_size", "2", "--slot_dim", "16", "--device", "cpu"])
    assert rc == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["types"] == ["a_DNA", "b_cell_type"] and set(m["test"]) == {"disjoint", "merged"}
    assert set(m["test"]["disjoint"]) == {"a", "b"} and len((out / "history.jsonl").read_text().splitlines()) == 3
    assert "b test merged: P" in capsys.readouterr().out
    assert main(["--corpora", "a", "--model", str(folder), "--output", str(out)]) == 2
    assert "NAME=PATH" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# partial views of a corpus, training on dev minus a holdout, checkpoint selection


def _genia_lines(n_docs, sents_per_doc=2):
    import json

    rows = []
    for d in range(n_docs):
        for s in range(sents_per_doc):
            words = ["IL-2", "gene", "expression", "in", "T", "cells"]
            mentions = [{"start": 0, "end": 2, "entity_type": "DNA", "text": "IL-2 gene"},
                        {"start": 0, "end": 1, "entity_type": "protein", "text": "IL-2"}][: 1 + (d + s) % 2]
            rows.append(json.dumps({"tokens": words, "doc_id": f"d{d}", "sent_id": f"d{d}.s{s}",
                                    "entity_mentions": mentions}))
    return "\n".join(rows) + "\n"


def test_dev_holdout_trains_on_dev_minus_whole_held_out_documents(tmp_path):
    from curation.io import InputError
    from mtl_baselines.common import load_splits

    (tmp_path / "dev.jsonlines").write_text(_genia_lines(10))
    (tmp_path / "test.jsonlines").write_text(_genia_lines(3))
    with pytest.raises(InputError, match="--dev-holdout"):
        load_splits(tmp_path)
    s = load_splits(tmp_path, dev_holdout=0.2, seed=1)
    assert (len(s.train), len(s.dev), len(s.test)) == (16, 4, 6)
    assert not {r.doc_id for r in s.train} & {r.doc_id for r in s.dev}
    assert sorted(r.id for r in s.train + s.dev) == sorted(r.id for r in load_splits(tmp_path, dev_holdout=0.5).train
                                                          + load_splits(tmp_path, dev_holdout=0.5).dev)
    assert "minus 0.2 of its documents" in s.how and s.sources[1].endswith("test.jsonlines")
    assert [r.id for r in load_splits(tmp_path, dev_holdout=0.2, seed=1).dev] == [r.id for r in s.dev]


def test_restrict_splits_keeps_types_everywhere_and_cuts_disjoint_train_parts(tmp_path):
    from curation.io import InputError
    from mtl_baselines.common import load_splits
    from mtl_baselines.sru_ner.data import restrict_splits

    (tmp_path / "dev.jsonlines").write_text(_genia_lines(12))
    (tmp_path / "test.jsonlines").write_text(_genia_lines(3))
    s = load_splits(tmp_path, dev_holdout=0.25)
    a, b = (restrict_splits(s, ["protein"], (k, 2), seed=0) for k in (1, 2))
    assert sorted(r.id for r in a.train + b.train) == sorted(r.id for r in s.train)
    assert not {r.doc_id for r in a.train} & {r.doc_id for r in b.train}
    for part in (a.train, a.dev, a.test):
        assert {sp.label for r in part for sp in r.spans} == {"protein"}
    assert len(a.test) == len(s.test) and "types kept: protein" in a.how and "train part 1/2" in a.how
    assert restrict_splits(s).train == s.train
    with pytest.raises(InputError, match="no entity type Chemical"):
        restrict_splits(s, ["Chemical"])


def _tiny_run(tmp_path, *extra):
    from mtl_baselines.sru_ner.train import main

    folder = tmp_path / "tiny-bert"
    if not folder.exists():
        tiny_tokenizer().save_pretrained(folder)
        tiny_encoder().save_pretrained(folder)
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "dev.jsonlines").write_text(_genia_lines(8))
        (tmp_path / "a" / "test.jsonlines").write_text(_genia_lines(2))
    return main(["--corpora", f"a={tmp_path / 'a'}", "--model", str(folder), "--slot_dim", "16", "--device", "cpu",
                 "--batch_size", "4", "--dev_holdout", "0.25", *extra])


def test_checkpoint_selection_restores_the_best_dev_step(tmp_path):
    import json

    out = tmp_path / "sel"
    assert _tiny_run(tmp_path, "--output", str(out), "--steps", "24", "--eval_every", "3", "--head_lr", "0.02",
                     "--encoder_lr", "0.001", "--dropout", "0") == 0
    m = json.loads((out / "metrics.json").read_text())
    curve = [p["dev_mean_f1"] for p in m["dev_curve"]]
    assert [p["step"] for p in m["dev_curve"]] == list(range(3, 25, 3))
    assert max(curve) > 0 and len(set(curve)) > 1  # the curve moves, so choosing a step matters
    assert m["best_step"] == m["dev_curve"][curve.index(max(curve))]["step"]
    # the dev predictions written after training come from the restored model: same score as at the chosen step
    assert m["dev"]["disjoint"]["a"]["f1"] == pytest.approx(max(curve))
    last = tmp_path / "last"
    assert _tiny_run(tmp_path, "--output", str(last), "--steps", "24", "--head_lr", "0.02", "--encoder_lr", "0.001",
                     "--dropout", "0") == 0
    m_last = json.loads((last / "metrics.json").read_text())
    assert m_last["best_step"] == 24 and m_last["dev_curve"] == []
    assert m_last["dev"]["disjoint"]["a"]["f1"] == pytest.approx(curve[-1])


def test_partial_view_flags_are_checked(tmp_path, capsys):
    assert _tiny_run(tmp_path, "--output", str(tmp_path / "x"), "--types", "zz=DNA") == 2
    assert "not one of --corpora" in capsys.readouterr().err
    assert _tiny_run(tmp_path, "--output", str(tmp_path / "x"), "--train_parts", "a=3/2") == 2
    assert "K/N" in capsys.readouterr().err
    assert _tiny_run(tmp_path, "--output", str(tmp_path / "x"), "--types", "a=RNA") == 2
    assert "no entity type RNA" in capsys.readouterr().err


def test_report_tabulates_finished_runs_and_refuses_unfinished_ones(tmp_path, capsys):
    import json

    from mtl_baselines.sru_ner.report import main as report

    out = tmp_path / "run"
    assert _tiny_run(tmp_path, "--output", str(out), "--steps", "2") == 0
    m = json.loads((out / "metrics.json").read_text())
    capsys.readouterr()
    assert report([str(out)]) == 0
    text = capsys.readouterr().out
    f1 = 100 * m["test"]["disjoint"]["a"]["f1"]
    assert f"| run | a | {m['n_train']['a']} | 2 (2) |" in text and f"**{f1:.2f}**" in text
    assert "| run | a | DNA |" in text
    assert report([str(tmp_path / "missing")]) == 2
    assert "has no metrics.json" in capsys.readouterr().err
    assert report([str(out), "--output", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == text
    assert report([str(out), "--nesting-gold", str(tmp_path / "a" / "test.jsonlines")]) == 0
    nesting = capsys.readouterr().out.split("by nesting role")[1]
    # the tiny test file: 2 documents x 2 sentences; "IL-2 gene" holds "IL-2" in the two sentences with (d + s) odd
    assert "| run | a | outer | 2 |" in nesting and "| run | a | inner | 2 |" in nesting
    assert "| run | a | flat | 2 |" in nesting
