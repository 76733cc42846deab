"""Clinical QA baseline on tiny project-written assets and tiny random BERTs: the templated question builder, the
split by document, the emrQA reader, windows with a document stride, the loss and metrics against hand
computation, the partly shared encoder, and the commands end to end (resume and bad input included).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q tests/mtl_baselines/test_clinical_qa.py``
"""

from __future__ import annotations

import doctest
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch import nn

from curation.cli import parse_config
from curation.io import InputError
from curation.records import Record, Span
from mtl_baselines.clinical_qa import data, losses, metrics, model, study, trainer
from mtl_baselines.clinical_qa.config import StudyConfig, TrainConfig
from mtl_baselines.clinical_qa.data import (
    TEMPLATES,
    cap_questions,
    encode_windows,
    load_qa,
    read_emrqa,
    split_documents,
)
from mtl_baselines.clinical_qa.losses import QALoss, class_weights
from mtl_baselines.clinical_qa.metrics import category_scores, exact_match, span_scores, token_f1
from mtl_baselines.clinical_qa.model import ClinicalQA
from mtl_baselines.clinical_qa.study import main as study_main
from mtl_baselines.clinical_qa.train import main as train_main
from mtl_baselines.clinical_qa.trainer import predict
from tests.helpers import ASSETS, REPO

pytestmark = pytest.mark.usefixtures("one_thread")

QA_ASSETS = ASSETS / "clinical_qa"
PUBTATOR = QA_ASSETS / "tiny.PubTator"
EMRQA = QA_ASSETS / "tiny_emrqa.json"
SQUAD = ASSETS / "readers" / "covid_squad.json"
THIRDS = (0.34, 0.33, 0.33)  # 3 documents with questions -> 1 / 1 / 1


def tiny_tokenizer(texts: list[str]):
    """A lower-casing WordPiece tokenizer whose vocabulary is every word and punctuation mark of ``texts``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "token_type_ids", "attention_mask"])


def tiny_bert(vocab_size: int, layers: int = 4, seed: int = 0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=layers,
                                num_attention_heads=2, intermediate_size=37, max_position_embeddings=128))


def _asset_texts() -> list[str]:
    qs = load_qa(PUBTATOR, ratios=THIRDS)
    return [r.text for r in qs.train + qs.dev + qs.test] + [t.question for t in TEMPLATES] + \
        [r.question for r in qs.train + qs.dev + qs.test]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-bert")
    tok = tiny_tokenizer(_asset_texts())
    tok.save_pretrained(folder)
    tiny_bert(len(tok)).save_pretrained(folder)
    return folder


def test_doctests():
    for module in (metrics, data, losses, model, trainer, study):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


# ---------------------------------------------------------------------------------------------------------------
# templated BioRED questions, split, caps


def test_template_builder_on_tiny_pubtator():
    qs = load_qa(PUBTATOR, ratios=THIRDS, seed=0)
    by_id = {r.id: r for r in qs.train + qs.dev + qs.test}
    assert qs.counts["questions"] == len(by_id) == 41
    assert qs.counts["self_relations"] == 1  # 102: GJB2 Association GJB2
    assert qs.categories == sorted(qs.categories, key=["chemical", "disease", "gene", "variant"].index)

    def answers(qid):
        r = by_id[qid]
        return r.question, r.labels, [s.surface(r.text) for s in r.spans], {s.label for s in r.spans}

    # untyped: every related concept, all its mentions, multi-label categories
    assert answers("101:associated:D1") == ("What is associated with fever?", ["chemical", "gene"],
                                            ["Aspirin", "BRCA1", "Aspirin", "aspirin", "BRCA1"], {"chemical", "gene"})
    # typed: one question per answer category, naming it
    assert answers("101:associated_typed:D1:gene") == ("Which gene is associated with fever?", ["gene"],
                                                       ["BRCA1", "BRCA1"], {"gene"})
    # relation-specific templates take only their relation types; the anchor is the concept's first mention
    assert answers("101:negative:C1") == ("What is negatively correlated with Aspirin?", ["disease"],
                                          ["fever", "fever"], {"disease"})
    assert answers("101:compared:C2")[:3] == ("What is Ibuprofen compared with?", ["chemical"],
                                              ["Aspirin", "Aspirin", "aspirin"])
    assert answers("103:cotreatment:C4")[:2] == ("What is given together with Metformin?", ["chemical"])
    assert answers("102:associated_typed:D2:variant")[0] == "Which sequence variant is associated with hearing loss?"
    # 104 has no relation, 102's self relation makes no question, organisms and cell lines answer nothing here
    assert not any(r.doc_id == "104" for r in by_id.values())
    assert not any(q.startswith("102:associated:G3") for q in by_id)
    assert Counter(r.meta["template"] for r in by_id.values()) == Counter(
        {"associated_typed": 17, "associated": 11, "negative": 5, "binds": 2, "compared": 2, "cotreatment": 2,
         "positive": 2})


def test_split_is_deterministic_and_document_disjoint():
    ids = [f"doc{i}" for i in range(100)]
    a = split_documents(ids, (0.8, 0.1, 0.1), seed=3)
    assert a == split_documents(list(reversed(ids)), (0.8, 0.1, 0.1), seed=3)
    assert Counter(a.values()) == {"train": 80, "dev": 10, "test": 10}
    assert a != split_documents(ids, (0.8, 0.1, 0.1), seed=4)
    with pytest.raises(ValueError, match="three positive shares"):
        split_documents(ids, (0.9, 0.1, 0.0), seed=0)
    one, two = load_qa(PUBTATOR, ratios=THIRDS, seed=0), load_qa(PUBTATOR, ratios=THIRDS, seed=0)
    for name in ("train", "dev", "test"):
        assert [r.id for r in getattr(one, name)] == [r.id for r in getattr(two, name)]
    docs = [{r.doc_id for r in getattr(one, n)} for n in ("train", "dev", "test")]
    assert all(len(d) == 1 for d in docs) and len(set.union(*docs)) == 3


def test_caps_are_seeded_samples_in_order():
    recs = [Record(id=str(i), text="") for i in range(50)]
    kept = cap_questions(recs, 10, seed=1)
    assert len(kept) == 10 and [int(r.id) for r in kept] == sorted(int(r.id) for r in kept)
    assert kept == cap_questions(recs, 10, seed=1) and cap_questions(recs, 0, 1) == recs
    capped = load_qa(PUBTATOR, ratios=THIRDS, seed=0, caps=(5, 2, 0))
    assert (len(capped.train), len(capped.dev)) == (5, 2) and capped.counts["train_questions_before_cap"] > 5


# ---------------------------------------------------------------------------------------------------------------
# emrQA and SQuAD input, bad input counted


def test_emrqa_reader_on_its_published_layout():
    c = read_emrqa(EMRQA)
    got = {r.id: (r.question, r.labels, [s.surface(r.text) for s in r.spans], r.doc_id) for r in c.records}
    assert got == {
        "note-1:0:0": ("What is the dosage of lisinopril?", ["dosage"], ["10 mg"], "note-1"),
        "note-1:0:1": ("How much lisinopril does the patient take?", ["dosage"], ["10 mg"], "note-1"),
        "q-why": ("Why is the patient on lisinopril?", ["problem"], ["hypertension"], "note-1"),
        "q-meds:0": ("What medications does the patient take?", ["medication"], ["lisinopril", "Metformin"],
                     "note-1"),
        "q-test": ("What test showed pneumonia?", ["relations"], ["Chest x-ray"], "note-2"),
    }
    # token index off by one (Metformin) and a case mismatch (LISINOPRIL) repaired; aspirin is not in the note;
    # the yes/no answer has no text, the complex one a list; one paraphrase is empty
    assert c.meta == {"answers": 8, "answers_complex": 1, "answers_empty": 1, "answers_fixed": 2,
                      "answers_unmatched": 1, "empty_questions": 1, "questions_without_answer": 3}
    ev = {r.id: [s.surface(r.text) for s in r.spans] for r in read_emrqa(EMRQA, answer="evidence").records}
    assert ev["q-yes"] == ["Metformin was held ."]
    assert ev["q-why"] == ["Patient started on lisinopril 10 mg daily for hypertension ."]


def test_emrqa_and_squad_through_load_qa(tmp_path):
    assert data.detect_qa_format(EMRQA) == "emrqa" and data.detect_qa_format(SQUAD) == "squad"
    assert data.detect_qa_format(PUBTATOR) == "biored" and data.detect_qa_format(QA_ASSETS) == "biored"
    em = load_qa(EMRQA, ratios=(0.5, 0.25, 0.25))  # two notes: one in train, one in dev
    assert [{r.doc_id for r in getattr(em, n)} for n in ("train", "dev", "test")] in (
        [{"note-1"}, {"note-2"}, set()], [{"note-2"}, {"note-1"}, set()])
    assert em.categories == sorted({lab for r in em.train for lab in r.labels})
    sq = load_qa(SQUAD)
    # COVID-QA's misplaced offset (" Masks reduce" one character late) repaired, "vaccines" not in the context
    assert (sq.counts["offsets_fixed"], sq.counts["questions_without_usable_answer"]) == (1, 1)
    assert sq.categories == [] and len(sq.train + sq.dev + sq.test) == 2
    bad = tmp_path / "bad.json"
    bad.write_text('{"data": [{"title": "x"}]}')
    with pytest.raises(InputError, match="paragraphs"):
        load_qa(bad)


def test_bad_records_are_counted_not_fatal():
    text = "aspirin caused headache"
    recs = [
        Record(id="ok", text=text, question="what caused headache?", spans=[Span(0, 7, "chemical")],
               labels=["chemical"]),
        Record(id="empty-q", text=text, question="   ", spans=[Span(0, 7, "chemical")]),
        Record(id="no-q", text=text, spans=[Span(0, 7, "chemical")]),
        Record(id="outside", text=text, question="what?", spans=[Span(20, 40, "chemical")]),
        Record(id="mixed", text=text, question="what caused it?", spans=[Span(50, 60, "x"), Span(15, 23, "x")],
               labels=["disease", "unknown"]),
        Record(id="no-answer", text=text, question="what?"),
        Record(id="no-text", text="  ", question="what?", spans=[Span(0, 1, "x")]),
        Record(id="long-q", text=text, question=" ".join(["what"] * 40) + " caused headache?",
               spans=[Span(0, 7, "chemical")]),
    ]
    tok = tiny_tokenizer([text, "what caused it ?"])
    windows, kept, counts = encode_windows(recs, tok, ["chemical", "disease"], max_length=32, stride=4,
                                           max_question_length=8)
    assert [r.id for r in kept] == ["ok", "mixed", "long-q"]
    assert counts == {"answer_span_outside_context": 2, "empty_context": 1, "empty_question": 2,
                      "labels_outside_category_set": 1, "multi_window_questions": 0, "no_usable_answer": 2,
                      "question_truncated": 1, "questions": 3, "windows": 3}
    assert windows[1]["labels"] == [0.0, 1.0] and len(kept[2].question.split()) == 8


# ---------------------------------------------------------------------------------------------------------------
# windows with a document stride


class Oracle(nn.Module):
    """A span 'model' whose start/end logits are high on two given token ids in the context."""

    tasks = ("qa",)

    def __init__(self, first: int, last: int):
        super().__init__()
        self.first, self.last = first, last
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        assert token_type_ids is not None  # the question/context segments reach the model
        return {"start": (input_ids == self.first).float() * 10, "end": (input_ids == self.last).float() * 10}


def _long_context(n_words: int, answer: list[str], at: int) -> tuple[str, Span]:
    words = [f"w{i}" for i in range(n_words)]
    words[at : at + len(answer)] = answer
    text = " ".join(words)
    start = text.index(" ".join(answer))
    return text, Span(start, start + len(" ".join(answer)), "chemical")


@pytest.mark.parametrize("at", [3, 117, 28, 29, 30])  # early, late, and across the first window's end
def test_stride_windows_recover_an_answer_in_a_long_context(at):
    text, span = _long_context(150, ["acetyl", "salicylic", "acid"], at)
    rec = Record(id="q", text=text, question="which drug ?", spans=[span], labels=["chemical"])
    tok = tiny_tokenizer([text, "which drug ?"])
    windows, kept, counts = encode_windows([rec], tok, ["chemical"], max_length=40, stride=10)
    assert counts["windows"] == len(windows) > 5 and counts["multi_window_questions"] == 1
    assert "answer_in_no_window" not in counts
    hits = [w for w in windows if w["start"] > 0]
    assert hits
    for w in hits:  # every window holding the answer points at it exactly
        assert text[w["offsets"][w["start"]][0] : w["offsets"][w["end"]][1]] == "acetyl salicylic acid"
    for w in windows:  # the context parts of consecutive windows overlap by the stride
        assert all(o is None or 0 <= o[0] < o[1] <= len(text) for o in w["offsets"])
    oracle = Oracle(tok.convert_tokens_to_ids("acetyl"), tok.convert_tokens_to_ids("acid"))
    pred = predict(oracle, windows, kept, [], batch_size=3, pad_id=0, max_answer_length=5)
    assert pred[0]["answer"] == "acetyl salicylic acid"
    assert (pred[0]["start"], pred[0]["end"]) == (span.start, span.end)
    # a longest-answer cap below the answer's length forbids it
    short = predict(oracle, windows, kept, [], batch_size=3, pad_id=0, max_answer_length=2)
    assert short[0]["answer"] != "acetyl salicylic acid"


def test_negative_windows_can_be_thinned_for_training():
    text, span = _long_context(150, ["aspirin"], 100)
    rec = Record(id="q", text=text, question="which drug ?", spans=[span], labels=["chemical"])
    tok = tiny_tokenizer([text, "which drug ?"])
    full, _, c_full = encode_windows([rec], tok, ["chemical"], max_length=40, stride=10)
    thin, _, c_thin = encode_windows([rec], tok, ["chemical"], max_length=40, stride=10, negative_windows=1)
    positives = sum(w["start"] > 0 for w in full)
    assert len(thin) == positives + 1 and c_thin["negative_windows_dropped"] == len(full) - positives - 1
    assert c_thin["windows"] == len(thin) and c_full["windows"] == len(full)
    assert "negative_windows_dropped" not in c_full


# ---------------------------------------------------------------------------------------------------------------
# losses and metrics against hand computation


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(x) for x in logits))


def _bce(x: float, y: float) -> float:
    p = 1 / (1 + math.exp(-x))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def test_combined_loss_equals_the_hand_formula():
    start = [[0.2, 1.5, -0.3, 0.0], [1.0, 0.1, 0.4, -2.0]]
    end = [[0.0, 0.3, 2.0, -1.0], [0.5, 0.5, 0.1, 0.2]]
    cat = [[0.8, -1.2, 0.1], [-0.4, 2.0, 0.3]]
    batch = {"start": torch.tensor([1, 0]), "end": torch.tensor([2, 0]),
             "labels": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])}
    out = {"start": torch.tensor(start), "end": torch.tensor(end), "category": torch.tensor(cat)}
    w = class_weights([5, 1, 2], 6)
    raw = [6 / (3 * 5), 6 / (3 * 1), 6 / (3 * 2)]
    assert w == pytest.approx([r / (sum(raw) / 3) for r in raw])
    l_qa = (sum(_ce(start[i], int(batch["start"][i])) for i in range(2)) / 2
            + sum(_ce(end[i], int(batch["end"][i])) for i in range(2)) / 2) / 2
    l_i = [sum(_bce(cat[b][c], float(batch["labels"][b][c])) for b in range(2)) / 2 for c in range(3)]
    expected = 0.7 * l_qa + 1.3 * sum(wi * li for wi, li in zip(w, l_i))
    total, parts = QALoss(("qa", "cls"), w, lambda_qa=0.7, lambda_cls=1.3)(out, batch)
    assert float(total) == pytest.approx(expected, rel=1e-6)
    assert float(parts["qa"]) == pytest.approx(l_qa, rel=1e-6)
    qa_only, _ = QALoss(("qa",), [], lambda_qa=0.7)(out, batch)
    cls_only, _ = QALoss(("cls",), w, lambda_cls=1.3)(out, batch)
    assert float(qa_only) == pytest.approx(0.7 * l_qa, rel=1e-6)
    assert float(cls_only) == pytest.approx(expected - 0.7 * l_qa, rel=1e-6)


def test_span_metrics_against_hand_values():
    assert exact_match("The Aspirin.", ["aspirin"]) == 1.0
    assert exact_match("aspirin tablets", ["aspirin"]) == 0.0
    # pred "low dose aspirin" vs gold "aspirin dose": overlap {aspirin, dose} = 2; P 2/3, R 1 -> F1 0.8
    assert token_f1("low dose aspirin", ["aspirin dose", "ibuprofen"]) == pytest.approx(0.8)
    assert token_f1("", ["x"]) == 0.0 and token_f1("the", ["a"]) == 1.0  # both normalise to nothing
    s = span_scores({"a": "renal failure", "b": "acute renal failure", "c": "nothing"},
                    {"a": ["Renal failure"], "b": ["renal failure"], "c": ["x y"], "d": ["z"]})
    assert s == {"exact_match": pytest.approx(1 / 4), "f1": pytest.approx((1 + 0.8 + 0 + 0) / 4), "n": 4}


def test_category_metrics_against_hand_values():
    labels = ["chemical", "disease", "gene"]
    gold = [["chemical"], ["chemical", "disease"], ["gene"], ["disease"], ["chemical"]]
    pred = [["chemical"], ["chemical"], ["chemical"], ["disease", "gene"], ["chemical"]]
    s = category_scores(gold, pred, labels)
    # chemical: tp 3 fp 1 fn 0 -> P 3/4 R 1 F 6/7, support 3; disease: tp 1 fn 1 -> F 2/3, support 2;
    # gene: tp 0 fp 1 fn 1 -> F 0, support 1
    f = {"chemical": 6 / 7, "disease": 2 / 3, "gene": 0.0}
    assert {k: v["f1"] for k, v in s["per_label"].items()} == pytest.approx(f)
    assert s["weighted_f1"] == pytest.approx((3 * 6 / 7 + 2 * 2 / 3 + 0) / 6)
    assert s["macro_f1"] == pytest.approx(sum(f.values()) / 3)
    assert s["accuracy"] == pytest.approx(2 / 5)  # questions 1 and 5
    assert s["micro_f1"] == pytest.approx(2 * 4 / (2 * 4 + 2 + 2))  # tp 4, fp 2, fn 2
    single = category_scores([["a"], ["b"], ["b"]], [["a"], ["a"], ["b"]], ["a", "b"])
    assert single["accuracy"] == pytest.approx(2 / 3)
    assert single["weighted_f1"] == pytest.approx((1 * (2 / 3) + 2 * (2 / 3)) / 3)


# ---------------------------------------------------------------------------------------------------------------
# the partly shared encoder


@pytest.mark.parametrize("depth", [3, 4])
def test_split_encoder_computes_the_plain_encoder_at_every_split_point(depth):
    from transformers import BertModel

    ref = tiny_bert(50, layers=depth).eval()
    x = torch.randint(5, 50, (2, 9))
    mask = torch.ones_like(x)
    mask[1, 6:] = 0
    with torch.no_grad():
        want = ref(input_ids=x, attention_mask=mask).last_hidden_state
    n_layer = sum(p.numel() for p in ref.encoder.layer[0].parameters())
    plain = sum(p.numel() for p in ref.parameters()) - sum(p.numel() for p in ref.pooler.parameters())
    for k in range(depth + 1):
        enc = BertModel(ref.config)
        enc.load_state_dict(ref.state_dict())
        m = ClinicalQA(enc, 3, shared_layers=k).eval()
        with torch.no_grad():
            h = m.shared(input_ids=x, attention_mask=mask).last_hidden_state
            for task in ("qa", "cls"):
                out = m.branches[task](inputs_embeds=h, attention_mask=mask).last_hidden_state if k < depth else h
                torch.testing.assert_close(out, want)
        heads = sum(p.numel() for p in m.heads.parameters())
        assert sum(p.numel() for p in m.parameters()) == plain + (depth - k) * n_layer + heads
    assert ClinicalQA(tiny_bert(50, layers=depth), 3).shared_layers == depth // 2
    single = ClinicalQA(tiny_bert(50, layers=depth), 0, tasks=("qa",))
    assert single.shared_layers == depth and len(single.branches) == 0 and list(single.heads) == ["qa"]
    with pytest.raises(ValueError, match="shared_layers must be in"):
        ClinicalQA(tiny_bert(50, layers=depth), 3, shared_layers=depth + 1)


def test_heads_have_the_paper_shapes_and_tasks_get_their_own_gradients():
    m = ClinicalQA(tiny_bert(50, layers=4), 5, shared_layers=2)
    linear = {t: [x.out_features for x in m.heads[t] if isinstance(x, nn.Linear)] for t in ("qa", "cls")}
    assert linear == {"qa": [512, 256, 2], "cls": [512, 256, 128, 5]}
    x = torch.randint(5, 50, (3, 7))
    out = m(x, torch.ones_like(x))
    assert out["start"].shape == out["end"].shape == (3, 7) and out["category"].shape == (3, 5)
    out["category"].sum().backward()  # the category loss alone
    assert all(p.grad is None for p in m.branches["qa"].parameters())
    assert all(p.grad is None for p in m.heads["qa"].parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.shared.encoder.layer.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.branches["cls"].parameters())


def test_optimizer_puts_the_heads_at_their_own_rate_and_biases_without_decay():
    from mtl_baselines.clinical_qa.trainer import param_groups

    m = ClinicalQA(tiny_bert(50, layers=2), 3, shared_layers=1)
    groups = param_groups(m, lr=1e-4, weight_decay=0.01, head_lr=1e-3)
    head = {id(p) for p in m.heads.parameters()}
    for g in groups:
        assert {id(p) in head for p in g["params"]} == {g["lr"] == 1e-3}
        assert g["weight_decay"] == (0.01 if all(p.ndim >= 2 for p in g["params"]) else 0.0)
    assert sum(len(g["params"]) for g in groups) == len(list(m.parameters()))
    assert {g["lr"] for g in param_groups(m, 1e-4, 0.01)} == {1e-4}


# ---------------------------------------------------------------------------------------------------------------
# commands end to end on a tiny random BERT


def _args(model_dir: Path, out: Path, **kw) -> list[str]:
    base = {"corpus": PUBTATOR, "model": model_dir, "output": out, "split": "0.34,0.33,0.33", "max_length": 48,
            "doc_stride": 16, "max_question_length": 16, "batch_size": 4, "lr": 1e-3, "max_steps": 4,
            "dev_evals": 2, "log_every": 0}
    return [x for k, v in (base | kw).items() for x in (f"--{k}", str(v))]


def test_train_command_end_to_end_and_reproducible(tiny_model, tmp_path, capsys):
    assert train_main(_args(tiny_model, tmp_path / "a", variant="mtl", seed=1)) == 0
    printed = capsys.readouterr().out
    assert "EM" in printed and "category accuracy" in printed
    m = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert (m["variant"], m["tasks"], m["steps"], m["encoder_layers"], m["shared_layers"]) == (
        "mtl", ["qa", "cls"], 4, 4, 2)
    assert {"exact_match", "f1", "accuracy", "weighted_f1"} <= set(m["test"])
    assert m["data"]["self_relations"] == 1 and m["encoding"]["train"]["questions"] == m["n_train_questions"]
    assert len(m["dev_curve"]) == 2 and m["provenance"]["inputs"]
    history = [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert len(history) == 4 and {"loss", "loss_qa", "loss_cls", "lr"} <= set(history[0])
    preds = [json.loads(x) for x in (tmp_path / "a" / "pred_test.jsonl").read_text().splitlines()]
    assert len(preds) == m["test"]["n"] and {"answer", "start", "end", "categories", "gold_answers"} <= set(preds[0])
    # same seed, same predictions, bit for bit on CPU
    assert train_main(_args(tiny_model, tmp_path / "b", variant="mtl", seed=1)) == 0
    assert (tmp_path / "a" / "pred_test.jsonl").read_text() == (tmp_path / "b" / "pred_test.jsonl").read_text()
    assert train_main(_args(tiny_model, tmp_path / "c", variant="cls_only", seed=1, max_steps=2)) == 0
    c = json.loads((tmp_path / "c" / "metrics.json").read_text())
    assert "f1" not in c["test"] and "weighted_f1" in c["test"] and c["shared_layers"] == 4


def test_study_writes_a_table_and_resumes(tiny_model, tmp_path, capsys):
    out = tmp_path / "study"
    args = _args(tiny_model, out, variants="mtl,qa_only", seeds=2, max_steps=2, dev_evals=1)
    assert study_main(args) == 0
    summary = (out / "summary.md").read_text()
    assert "| mtl | 2 |" in summary and "| qa_only | 2 |" in summary and " ± " in summary
    assert len(json.loads((out / "results.json").read_text())) == 4
    assert (out / "split" / "train.jsonl").is_file()
    capsys.readouterr()
    assert study_main(args) == 0
    assert capsys.readouterr().out.count("finished earlier") == 4
    assert study_main(_args(tiny_model, out, variants="mtl,qa_only", seeds=2, max_steps=3, dev_evals=1)) == 2
    assert "other settings (max_steps)" in capsys.readouterr().err


@pytest.mark.parametrize("extra, message", [
    ({"variant": "both"}, "--variant"),
    ({"doc_stride": 40}, "--doc-stride"),
    ({"templates": "associated,why"}, "unknown template"),
    ({"corpus": SQUAD}, "no answer categories"),
    ({"split": "0.5,0.25,0.25"}, "the dev split has no usable question"),
    ({"shared_layers": 9}, "must be in [0, 4] for the 4-layer encoder"),
])
def test_bad_options_exit_2_with_one_line(tiny_model, tmp_path, capsys, extra, message):
    assert train_main(_args(tiny_model, tmp_path / "x", **extra)) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_recipes_parse_into_their_configs():
    recipes = sorted((REPO / "configs").glob("qa_*.yaml"))
    assert {p.name for p in recipes} >= {"qa_study_biored.yaml", "qa_train_biored.yaml"}
    for path in recipes:
        first = path.read_text().splitlines()[0]
        assert first.startswith("# ") and f"--config configs/{path.name}" in first
        cls = StudyConfig if path.name.startswith("qa_study") else TrainConfig
        cfg, _ = parse_config(cls, ["--config", str(path)], prog="test")
        assert cfg.output.startswith("runs/")
