"""Token MTL baseline on tiny random BERTs: label derivation, losses against hand formulas, bit-for-bit
reproducibility, the study command end to end (resume included), and clean failures on bad input."""

from __future__ import annotations

import csv
import doctest
import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from curation.cli import main as cli_main
from curation.cli import parse_config
from curation.io import InputError
from curation.records import Record, Span, join_tokens
from mtl_baselines import common, engine
from mtl_baselines.common import check_tokenizer, load_splits, load_tokenizer
from mtl_baselines.token_mtl import analysis, data, labels, losses
from mtl_baselines.token_mtl.config import StudyConfig, TrainConfig
from mtl_baselines.token_mtl.data import check_fraction, check_splits, encode
from mtl_baselines.token_mtl.labels import (
    bio_labels,
    has_entity,
    mention_count_class,
    multi_token_classes,
    word_tags,
)
from mtl_baselines.token_mtl.losses import MTLLoss, parse_variant, per_class_token_losses, uncertainty_loss
from mtl_baselines.token_mtl.model import TokenMTL
from mtl_baselines.token_mtl.study import main as study_main
from mtl_baselines.token_mtl.trainer import param_groups, run_one

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = Path(__file__).resolve().parents[2]

# ---------------------------------------------------------------------------------------------------------------
# tiny corpus, tokenizer and encoder, all written by the test

DRUGS = ["aspirin", "ibuprofen", "cisplatin", "warfarin"]
DISEASES = [["headache"], ["nausea"], ["renal", "failure"], ["severe", "headaches"]]
FILLER = ["the", "patient", "took", "and", "caused", "was", "no", "effect", "seen", "with", "."]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "##s", *DRUGS, "headache", "nausea", "renal", "failure",
         "severe", "gene", "brca1", *FILLER]


def _sentence(rng: random.Random, gene: bool = False) -> tuple[list[str], list[str]]:
    kind = rng.randrange(4)
    if gene:
        return ["brca1", "caused", "headache", "."], ["B-Gene", "O", "B-Disease", "O"]
    if kind == 0:
        d = rng.choice(DISEASES)
        return [rng.choice(DRUGS), "caused", *d, "."], ["B-Chemical", "O", "B-Disease"] + ["I-Disease"] * (
            len(d) - 1) + ["O"]
    if kind == 1:
        return ["the", "patient", "took", rng.choice(DRUGS), "."], ["O", "O", "O", "B-Chemical", "O"]
    if kind == 2:
        return ["no", "effect", "was", "seen", "."], ["O"] * 5
    d1, d2 = rng.sample(DISEASES, 2)
    return ([rng.choice(DRUGS), "and", rng.choice(DRUGS), "caused", *d1, "and", *d2, "."],
            ["B-Chemical", "O", "B-Chemical", "O", "B-Disease"] + ["I-Disease"] * (len(d1) - 1) + ["O", "B-Disease"]
            + ["I-Disease"] * (len(d2) - 1) + ["O"])


def write_iob(path: Path, n: int, seed: int, gene: bool = False) -> None:
    rng = random.Random(seed)
    blocks = []
    for i in range(n):
        toks, tags = _sentence(rng, gene=gene and i == 0)
        blocks.append("\n".join(f"{t}\t{g}" for t, g in zip(toks, tags)))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def tiny_tokenizer(vocab: list[str] = VOCAB):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_encoder(vocab_size: int, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=37, max_position_embeddings=64))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bert")
    tiny_tokenizer().save_pretrained(folder)
    tiny_encoder(len(VOCAB)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("corpora") / "tiny"
    folder.mkdir()
    for name, n, seed in (("train", 40, 1), ("devel", 12, 2), ("test", 12, 3)):
        write_iob(folder / f"{name}.tsv", n, seed)
    return folder


def run_cfg(model: Path, **kw) -> TrainConfig:
    base = dict(model=str(model), corpus="unused", output="unused", epochs=2, batch_size=8, lr=1e-3,
                grad_cosine_every=2, dev_evals=2)
    return TrainConfig(**(base | kw))


# ---------------------------------------------------------------------------------------------------------------
# labels


def _record(words: list[str], spans: list[tuple[int, int, str]]) -> Record:
    text, offsets = join_tokens(words)
    return Record(id="r", text=text, tokens=words, token_offsets=offsets,
                  spans=[Span(offsets[a][0], offsets[b - 1][1], lab) for a, b, lab in spans])


@pytest.mark.parametrize("words, spans, mt, b, m", [
    ("no effect was seen .".split(), [], [0, 0, 0, 0, 0], 0, 0),
    ("aspirin caused renal failure .".split(), [(0, 1, "Chemical"), (2, 4, "Disease")], [1, 0, 2, 2, 0], 1, 2),
    ("CL was 5 L / h".split(), [(0, 1, "PK")], [1, 0, 0, 0, 0, 0], 1, 1),
    ("CL 5 L / h and t1/2 3 h".split(),
     [(0, 1, "PK"), (1, 2, "VALUE"), (2, 5, "UNITS"), (6, 7, "PK"), (7, 8, "VALUE"), (8, 9, "UNITS")],
     [1, 1, 2, 2, 2, 0, 1, 1, 1], 1, 3),
    ("a b c".split(), [(0, 1, "X"), (1, 2, "X"), (2, 3, "Y")], [1, 1, 1], 1, 3),
])
def test_auxiliary_labels_on_crafted_sentences(words, spans, mt, b, m):
    tags = word_tags(_record(words, spans))
    assert multi_token_classes(tags) == mt
    assert has_entity(len(spans)) == b and mention_count_class(len(spans)) == m


def test_adjacent_entities_of_one_type_stay_apart():
    # B-X B-X: two single-token entities, not one multi-token entity
    assert multi_token_classes(["B-X", "B-X", "I-X", "O"]) == [1, 2, 2, 0]


def test_word_tags_reject_misaligned_and_nested_spans():
    r = _record(["renal", "failure"], [(0, 2, "Disease")])
    r.spans.append(Span(0, 3, "Disease"))
    with pytest.raises(ValueError, match="does not align"):
        word_tags(r)
    r.spans[-1] = Span(0, 5, "Organ")
    with pytest.raises(ValueError, match="overlaps"):
        word_tags(r)


def test_first_subword_alignment_with_a_real_wordpiece_split():
    tok = tiny_tokenizer()
    r = _record(["severe", "headaches", "with", "aspirin"], [(0, 2, "Disease"), (3, 4, "Chemical")])
    ex = encode([r], tok, bio_labels(["Chemical", "Disease"]), max_length=32)[0]
    pieces = tok.convert_ids_to_tokens(ex["input_ids"])
    assert pieces == ["[CLS]", "severe", "headache", "##s", "with", "aspirin", "[SEP]"]
    lab = bio_labels(["Chemical", "Disease"])  # O B-Chemical I-Chemical B-Disease I-Disease
    assert ex["ner"] == [-100, lab.index("B-Disease"), lab.index("I-Disease"), -100, 0, lab.index("B-Chemical"), -100]
    assert ex["mtcls"] == [-100, 2, 2, -100, 0, 1, -100]
    assert (ex["bcls"], ex["mcls"], ex["first"]) == (1, 2, [1, 2, 4, 5])
    cut = encode([r], tok, lab, max_length=4)[0]  # [CLS] severe headache [SEP]: "with", "aspirin" cut off
    assert cut["first"] == [1, 2, -1, -1] and cut["ner"] == [-100, 3, 4, -100]


def test_doctests():
    for module in (labels, losses, data, analysis, common, engine):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---------------------------------------------------------------------------------------------------------------
# losses against the formula by hand


def test_uncertainty_loss_equals_the_hand_formula():
    L, s = [0.7, 1.2, 0.3], [0.1, -0.5, 0.2]
    expected = sum(math.exp(-si) * li + si / 2 for li, si in zip(L, s))
    assert float(uncertainty_loss(torch.tensor(L), torch.tensor(s))) == pytest.approx(expected, rel=1e-6)
    masked = float(uncertainty_loss(torch.tensor(L), torch.tensor(s), torch.tensor([True, False, True])))
    assert masked == pytest.approx(expected - (math.exp(0.5) * 1.2 - 0.25), rel=1e-6)
    # classification form: d/ds [exp(-s) L + s/2] = 0 at s = log(2L)
    s_star = torch.tensor([math.log(2 * 0.7)], requires_grad=True)
    uncertainty_loss(torch.tensor([0.7]), s_star).backward()
    assert abs(float(s_star.grad)) < 1e-6


def _fixed_batch():
    torch.manual_seed(0)
    logits = {"ner": torch.randn(2, 4, 5), "mtcls": torch.randn(2, 4, 3), "bcls": torch.randn(2, 2),
              "mcls": torch.randn(2, 4)}
    batch = {"ner": torch.tensor([[-100, 1, 2, 0], [-100, 0, 0, -100]]),
             "mtcls": torch.tensor([[-100, 2, 2, 0], [-100, 0, 0, -100]]),
             "bcls": torch.tensor([1, 0]), "mcls": torch.tensor([1, 0])}
    return logits, batch


def _ce(logits, target):
    """Mean cross-entropy by hand: -log softmax at the target, skipping -100."""
    lg, t = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    terms = [-(lg[i, t[i]] - torch.logsumexp(lg[i], 0)) for i in range(len(t)) if t[i] != -100]
    return sum(terms) / len(terms)


@pytest.mark.parametrize("variant", ["single", "heuristic", "uw_sym", "uw_asym", "uw_class"])
def test_mtl_loss_variants_match_hand_computation(variant):
    logits, batch = _fixed_batch()
    base, heads = parse_variant(variant)
    label_class = [0, 1, 1, 2, 2]  # O, B-A, I-A, B-B, I-B -> classes O, A, B
    loss_fn = MTLLoss(base, heads, label_class, ["O", "A", "B"], {"ner": 1.0, "mtcls": 0.5, "bcls": 0.25,
                                                                  "mcls": 2.0})
    with torch.no_grad():
        loss_fn.log_vars.copy_(torch.linspace(-0.3, 0.4, len(loss_fn.log_vars)))
    total, raw = loss_fn(logits, batch)
    L = {h: float(_ce(logits[h], batch[h])) for h in heads}
    for h in heads:
        assert float(raw[h]) == pytest.approx(L[h], rel=1e-5)
    s = loss_fn.log_vars.tolist()
    uw = lambda li, si: math.exp(-si) * li + si / 2
    if variant == "single":
        expected = L["ner"]
    elif variant == "heuristic":
        expected = L["ner"] + 0.5 * L["mtcls"] + 0.25 * L["bcls"] + 2.0 * L["mcls"]
    elif variant == "uw_sym":
        assert loss_fn.log_var_names == ["ner", "mtcls", "bcls", "mcls"]
        expected = sum(uw(L[h], si) for h, si in zip(heads, s))
    elif variant == "uw_asym":
        assert loss_fn.log_var_names == ["mtcls", "bcls", "mcls"]
        expected = L["ner"] + sum(uw(L[h], si) for h, si in zip(heads[1:], s))
    else:
        assert loss_fn.log_var_names == ["ner:O", "ner:A", "ner:B", "mtcls", "bcls", "mcls"]
        # tokens by gold class: O -> (0,3), (1,1), (1,2); A -> (0,1), (0,2); B -> none (masked out)
        lg = logits["ner"]
        tok = lambda b, t: float(-(lg[b, t, batch["ner"][b, t]] - torch.logsumexp(lg[b, t], 0)))
        per_class = [(tok(0, 3) + tok(1, 1) + tok(1, 2)) / 3, (tok(0, 1) + tok(0, 2)) / 2]
        expected = uw(per_class[0], s[0]) + uw(per_class[1], s[1]) + sum(
            uw(L[h], si) for h, si in zip(heads[1:], s[3:]))
    assert float(total.detach()) == pytest.approx(expected, rel=1e-5)


def test_per_class_losses_average_within_class():
    logits, batch = _fixed_batch()
    out, present = per_class_token_losses(logits["ner"], batch["ner"], torch.tensor([0, 1, 1, 2, 2]), 3)
    assert present.tolist() == [True, True, False] and float(out[2]) == 0.0


def test_variant_names():
    assert parse_variant("uw_class-no_mtcls-no_mcls") == ("uw_class", ("ner", "bcls"))
    for bad in ("uw", "single-no_bcls", "uw_sym-no_ner", "uw_sym-no_bcls-no_bcls", "uw_sym-bcls"):
        with pytest.raises(ValueError):
            parse_variant(bad)


# ---------------------------------------------------------------------------------------------------------------
# model, optimizer, tokenizer checks


def test_model_heads_and_shapes():
    model = TokenMTL(tiny_encoder(len(VOCAB)), num_labels=5)
    ids = torch.randint(5, len(VOCAB), (2, 7))
    out = model(ids, torch.ones_like(ids))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"ner": (2, 7, 5), "mtcls": (2, 7, 3), "bcls": (2, 2),
                                                           "mcls": (2, 4)}
    single = TokenMTL(tiny_encoder(len(VOCAB)), num_labels=5, heads=("ner",))
    assert list(single(ids, torch.ones_like(ids))) == ["ner"]
    with pytest.raises(ValueError):
        TokenMTL(tiny_encoder(len(VOCAB)), num_labels=5, heads=("bcls",))


def test_log_vars_have_their_own_group_without_weight_decay():
    model = TokenMTL(tiny_encoder(len(VOCAB)), num_labels=5)
    loss_fn = MTLLoss("uw_sym", losses.HEADS)
    groups = param_groups(model, loss_fn, weight_decay=0.01, log_var_lr=0.02)
    group = [g for g in groups if g["name"] == "log_vars"][0]
    assert group["params"] == [loss_fn.log_vars] and group["weight_decay"] == 0.0 and group["lr"] == 0.02
    assert group["constant_lr"] and not any(g.get("constant_lr") for g in groups if g["name"] != "log_vars")
    assert [g["name"] for g in param_groups(model, MTLLoss("single", ("ner",)), 0.01, 0.02)] \
        == ["model", "model_no_decay"]


def test_tokenizer_encoder_mismatch(tiny_model, tmp_path):
    tok = tiny_tokenizer()
    with pytest.raises(InputError, match=f"tokenizer/encoder mismatch: tiny has {len(VOCAB)} tokens but the "
                                         "encoder enc embeds only 20"):
        check_tokenizer(tok, 20, "tiny", "enc")
    other = tmp_path / "other-tokenizer"
    tiny_tokenizer(VOCAB[:6] + list(reversed(VOCAB[6:]))).save_pretrained(other)  # same size, other ids
    with pytest.raises(InputError, match="vocabulary differs from the tokenizer shipped with"):
        load_tokenizer(str(tiny_model), str(other))
    assert len(load_tokenizer(str(tiny_model))) == len(VOCAB)


# ---------------------------------------------------------------------------------------------------------------
# splits and pre-training checks


def test_document_split_of_a_single_file(tmp_path):
    rng = random.Random(0)
    path = tmp_path / "pk" / "dev.jsonl"
    path.parent.mkdir()
    rows = []
    for i in range(60):
        words, tags = _sentence(rng)
        text, offsets = join_tokens(words)
        from curation.bio import bio_to_spans

        spans = [[offsets[a][0], offsets[b - 1][1], lab] for a, b, lab in bio_to_spans(tags)]
        rows.append(json.dumps({"id": f"s{i}", "text": text, "tokens": words, "token_offsets": offsets,
                                "spans": spans, "doc_id": f"d{i // 3}"}))
    path.write_text("\n".join(rows) + "\n")
    for where in (path, path.parent):  # the file, or a folder holding one file
        splits = load_splits(where, (0.6, 0.2, 0.2), seed=3)
        docs = [{r.doc_id for r in getattr(splits, n)} for n in ("train", "dev", "test")]
        assert [len(d) for d in docs] == [12, 4, 4] and not (docs[0] & docs[1] or docs[0] & docs[2] or
                                                               docs[1] & docs[2])
        assert "document-level split of dev.jsonl" in splits.how and "seed 3" in splits.how
    assert check_splits(splits) == ["Chemical", "Disease"]
    assert [r.id for r in load_splits(path, (0.6, 0.2, 0.2), 3).test] == [r.id for r in splits.test]
    assert [r.id for r in load_splits(path, (0.6, 0.2, 0.2), 4).test] != [r.id for r in splits.test]


def test_fraction_checks(tiny_corpus):
    splits = load_splits(tiny_corpus)
    idx, missing = check_fraction(splits.train, 0.5, seed=0)
    assert len(idx) == 20 and missing == []
    with pytest.raises(InputError, match="keeps 0 of 40 training sentences: nothing to train on"):
        check_fraction(splits.train, 0.01, seed=0)
    mixed = [Record(id=str(i), text="x", spans=[Span(0, 1, "A" if i < 30 else "B")]) for i in range(40)]
    with pytest.raises(InputError, match=r"keeps 1 of 40 training sentences and no mention of B \(10 in the full "
                                         r"split\): too few sentences to keep class balance"):
        check_fraction(mixed, 0.025, seed=0)
    assert check_fraction(mixed, 0.025, seed=0, allow_missing_types=True)[1] == ["B"]
    sparse = [Record(id=str(i), text="x", spans=[Span(0, 1, "A")] * (i >= 30)) for i in range(40)]
    with pytest.raises(InputError, match="and no entity mention: too few sentences to keep class balance"):
        check_fraction(sparse, 0.025, seed=0, allow_missing_types=True)


# ---------------------------------------------------------------------------------------------------------------
# training


def test_seeded_tiny_run_is_reproducible_bit_for_bit(tiny_model, tiny_corpus, tmp_path):
    splits = load_splits(tiny_corpus)
    types = check_splits(splits)
    tok = load_tokenizer(str(tiny_model))
    cfg = run_cfg(tiny_model)
    runs = [run_one(cfg, splits, types, "uw_class", 1.0, 0, tmp_path / name, tok) for name in ("a", "b")]
    for name in ("history.jsonl", "grad_cosine.jsonl", "pred_dev.jsonl", "pred_test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert runs[0]["test"] == runs[1]["test"] and runs[0]["log_vars_final"] == runs[1]["log_vars_final"]
    other = run_one(cfg, splits, types, "uw_class", 1.0, 1, tmp_path / "c", tok)
    assert (tmp_path / "c" / "history.jsonl").read_bytes() != (tmp_path / "a" / "history.jsonl").read_bytes()
    # every step logs the log-variances; they move; the loss goes down on this easy corpus
    history = [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert len(history) == runs[0]["steps"] == 10 and all("log_var_ner:Chemical" in h for h in history)
    assert history[0]["log_var_mtcls"] == 0.0 and history[-1]["log_var_mtcls"] != 0.0
    assert history[-1]["loss_ner"] < history[0]["loss_ner"]
    assert set(other["grad_cosine_mean"]) == {"ner/mtcls", "ner/bcls", "ner/mcls", "mtcls/bcls", "mtcls/mcls",
                                              "bcls/mcls"}


# ---------------------------------------------------------------------------------------------------------------
# the study command


def test_study_end_to_end_and_resume(tiny_model, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "study"
    argv = ["mtl", "study", "--corpus", str(tiny_corpus), "--model", str(tiny_model), "--output", str(out),
            "--fractions", "1,0.5", "--seeds", "2", "--variants", "single,uw_sym,uw_class", "--ablation", "uw_sym",
            "--epochs", "1", "--batch-size", "8", "--lr", "1e-3", "--dev-evals", "1", "--grad-cosine-every", "2"]
    assert cli_main(argv) == 0
    first = capsys.readouterr().out
    assert "1 corpora x 18 runs; 0 finished, 18 to run" in first
    corpus_dir = out / "tiny"
    with open(corpus_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 18 and {r["variant"] for r in rows} == {
        "single", "uw_sym", "uw_class", "uw_sym-no_mtcls", "uw_sym-no_bcls", "uw_sym-no_mcls"}
    assert {(r["fraction"], r["n_train"]) for r in rows} == {("1.0", "40"), ("0.5", "20")}
    for name in ("f1_vs_fraction.png", "per_class_f1.png", "log_vars_uw_sym.png", "log_vars_uw_class.png",
                 "grad_cosine.png", "per_class.csv", "grad_cosine.csv", "summary.md", "split/test.jsonl"):
        assert (corpus_dir / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "Data efficiency" in summary and "Auxiliary-task ablation" in summary and "ner/mtcls" in summary
    study = json.loads((out / "study.json").read_text())
    assert set(study["data_efficiency"]["tiny"]) >= {"single", "uw_sym", "uw_class"}
    # the span files are scored by the foundation's evaluate command to the same numbers
    run = corpus_dir / "runs" / "uw_sym" / "f0.5" / "s1"
    metrics = json.loads((run / "metrics.json").read_text())
    # the end-of-training NER loss column: the raw NER loss of the last 10% of the logged steps (at least one)
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    tail = history[-max(1, -(-len(history) // 10)):]
    row = next(r for r in rows if (r["variant"], r["fraction"], r["seed"]) == ("uw_sym", "0.5", "1"))
    assert float(row["ner_loss_end"]) == pytest.approx(sum(h["loss_ner"] for h in tail) / len(tail), rel=1e-12)
    assert cli_main(["evaluate", "--gold", str(tiny_corpus / "test.tsv"), "--pred", str(run / "pred_test.jsonl"),
                     "--output", str(tmp_path / "eval.json"), "--bootstrap", "0"]) == 0
    evaluated = json.loads((tmp_path / "eval.json").read_text())
    assert evaluated["strict"]["micro"]["f1"] == metrics["test"]["f1"]
    # resume: nothing is retrained
    mtime = (run / "metrics.json").stat().st_mtime_ns
    capsys.readouterr()
    assert cli_main(argv) == 0
    again = capsys.readouterr().out
    assert "18 finished, 0 to run" in again and again.count("finished earlier") == 18
    assert (run / "metrics.json").stat().st_mtime_ns == mtime
    # resuming with other training settings is refused before anything trains
    assert cli_main([*argv[:-2], "--grad-cosine-every", "3"]) == 2
    assert "was made with other settings (grad_cosine_every)" in capsys.readouterr().err
    # --report-only with a third seed: trains nothing, reports the finished runs and lists the nine missing ones
    assert cli_main([*argv, "--seeds", "3", "--report-only"]) == 0
    assert (run / "metrics.json").stat().st_mtime_ns == mtime
    assert not (corpus_dir / "runs" / "single" / "f1" / "s2").exists()
    study = json.loads((out / "study.json").read_text())
    assert len(study["missing_runs"]) == 9 and "tiny single fraction 1 seed 2" in study["missing_runs"]
    summary = (out / "summary.md").read_text()
    assert "9 of 27 planned runs not finished yet" in summary
    assert "| tiny | 1 | " in summary and "(2 seeds)" not in summary.split("## tiny")[0]  # every cell has 2 seeds
    assert "| single | 1 | 40 | 2 |" in summary  # two finished seeds of three


def test_study_skips_a_run_another_worker_holds(tiny_model, tiny_corpus, tmp_path, capsys):
    import fcntl

    from curation.io import run_lock

    out = tmp_path / "study"
    argv = ["mtl", "study", "--corpus", str(tiny_corpus), "--model", str(tiny_model), "--output", str(out),
            "--fractions", "0.5", "--seeds", "2", "--variants", "single", "--epochs", "1", "--batch-size", "8",
            "--dev-evals", "1"]
    held = out / "tiny" / "runs" / "single" / "f0.5" / "s0"
    with run_lock(held) as free:
        assert free
        with run_lock(held) as again:  # a second open file of the same lock, as another process would hold
            assert not again
        assert cli_main(argv) == 0
    text = capsys.readouterr().out
    assert "tiny single fraction 0.5 seed 0: running in another process, skipped" in text
    assert not (held / "metrics.json").exists() and (held.parent / "s1" / "metrics.json").is_file()
    assert json.loads((out / "study.json").read_text())["missing_runs"] == ["tiny single fraction 0.5 seed 0"]
    with open(held / ".lock") as f:  # released: the kernel lets a new holder in
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert cli_main(argv) == 0
    assert "1 finished, 1 to run" in capsys.readouterr().out and (held / "metrics.json").is_file()


def test_train_command_single_run(tiny_model, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["mtl", "train", "--corpus", str(tiny_corpus), "--model", str(tiny_model), "--output", str(out),
            "--variant", "uw_asym-no_mcls", "--fraction", "0.5", "--seed", "2", "--epochs", "1", "--dev-evals", "1"]
    assert cli_main(argv) == 0
    printed = capsys.readouterr().out
    assert "tiny uw_asym-no_mcls fraction 0.5 seed 2 test: P " in printed and "20 training sentences" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["heads"] == ["ner", "mtcls", "bcls"] and list(metrics["log_vars_final"]) == ["mtcls", "bcls"]
    assert metrics["settings"]["epochs"] == 1 and metrics["provenance"]["config"]["variant"] == "uw_asym-no_mcls"
    for bad, message in ((["--fraction", "0"], "--fraction: must be in (0, 1]"),
                         (["--variant", "single-no_bcls"], "no auxiliary head to drop"),
                         (["--heuristic-weights", "ner=1,foo=2"], "unknown head 'foo'"),
                         (["--split", "0.5,0.5"], "--split: needs three positive shares")):
        assert cli_main([*argv, *bad]) == 2
        assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# bad input: clear messages, exit 2, nothing trained


def _study(argv_extra: list[str], model: Path, corpus: Path, out: Path) -> int:
    return study_main(["--corpus", str(corpus), "--model", str(model), "--output", str(out), "--seeds", "1",
                       "--variants", "single", "--epochs", "1", *argv_extra])


def test_bad_input_fails_before_training(tiny_model, tiny_corpus, tmp_path, capsys):
    out = tmp_path / "out"
    small = tmp_path / "small-encoder"
    tiny_tokenizer().save_pretrained(small)
    tiny_encoder(len(VOCAB) - 10).save_pretrained(small)
    assert _study(["--fractions", "1"], small, tiny_corpus, out) == 2
    assert "tokenizer/encoder mismatch" in capsys.readouterr().err

    differ = tmp_path / "differ"
    differ.mkdir()
    for name in ("train", "devel"):
        (differ / f"{name}.tsv").write_text((tiny_corpus / f"{name}.tsv").read_text())
    write_iob(differ / "test.tsv", 6, 5, gene=True)
    assert _study(["--fractions", "1"], tiny_model, differ, out) == 2
    assert "labels differ between train and test: test has Gene which train lacks" in capsys.readouterr().err

    assert _study(["--fractions", "1,0.01"], tiny_model, tiny_corpus, out) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --fractions: fraction 0.01 (seed 0) keeps 0 of 40 training sentences")

    assert _study(["--fractions", "1", "--variants", "single,uw_magic"], tiny_model, tiny_corpus, out) == 2
    assert "unknown variant 'uw_magic'" in capsys.readouterr().err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------------------------
# every shipped recipe parses into its dataclass


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("mtl_*.yaml")), ids=lambda p: p.name)
def test_configs_parse(path):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# ") and "bioselect mtl " in first and "--config configs/" + path.name in first
    cls = StudyConfig if "mtl study" in first else TrainConfig
    cfg, _ = parse_config(cls, ["--config", str(path)], prog="test")
    import yaml

    assert set(yaml.safe_load(path.read_text())) <= set(cls.__dataclass_fields__)
    assert cfg.model and cfg.output.startswith("runs/")


def test_configs_exist():
    names = {p.name for p in (REPO / "configs").glob("mtl_*.yaml")}
    assert {"mtl_study_real.yaml", "mtl_study_smoke.yaml"} <= names


def test_hand_cross_entropy_helper_agrees_with_torch():
    logits, batch = _fixed_batch()
    assert float(_ce(logits["ner"], batch["ner"])) == pytest.approx(
        float(F.cross_entropy(logits["ner"].reshape(-1, 5), batch["ner"].reshape(-1), ignore_index=-100)))
