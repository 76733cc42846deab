"""Dataset-combination search (curation.combos): enumeration against itertools, the initial design, the MLP search on
known surfaces, resume without re-evaluation, failed evaluations, history checks; the evaluators on a tiny random
BERT (encoder) and with tune train/generate stubbed (LoRA); `bioselect curate combos` end to end and its exit-2
paths."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from curation import combos
from curation.cli import parse_config
from curation.combo_evaluators import Evaluator, find_corpora
from curation.combos import (
    MLPEnsemble,
    all_mixes,
    bits_to_mix,
    choose_next,
    initial_design,
    mix_index,
    mix_to_bits,
    read_history,
    search,
    search_steps,
)
from curation.combos_cli import EVALUATORS, CombosConfig, build_evaluator
from curation.combos_cli import main as combos_main
from curation.io import InputError
from mtl_baselines.token_mtl.combo_evaluator import EncoderEvaluator
from tests.helpers import (
    REPO,
    one_torch_thread,  # noqa: F401 (autouse: the module's tests run on one torch thread)
)
from tuning.combo_evaluator import LoraEvaluator

# ---------------------------------------------------------------------------------------------------------------
# enumeration and design


@pytest.mark.parametrize("k", range(0, 8))
def test_all_mixes_matches_itertools(k):
    X = all_mixes(k)
    assert X.shape == (2**k, k) and X.dtype == np.uint8
    subsets = {frozenset(c) for r in range(k + 1) for c in itertools.combinations(range(k), r)}
    assert {frozenset(np.flatnonzero(row).tolist()) for row in X} == subsets
    assert len({row.tobytes() for row in X}) == 2**k  # no repeats
    if k:
        assert mix_index(X).tolist() == list(range(2**k))
        names = [f"d{j}" for j in range(k)]
        for row in X:
            mix = bits_to_mix(row, names, target="t")
            assert "t" in mix and (mix_to_bits(mix, names, target="t") == row).all()


def test_enumeration_and_prediction_stay_fast_at_k_20():
    start = time.process_time()  # CPU time: wall time on a shared machine measures the other jobs
    X = all_mixes(20)
    assert X.shape == (2**20, 20) and mix_index(X[[0, 5, -1]]).tolist() == [0, 5, 2**20 - 1]
    model = MLPEnsemble(20, members=5, seed=0).fit(X[:40], np.linspace(0, 1, 40))
    mean, spread = model.predict(X)
    assert mean.shape == spread.shape == (2**20,)
    assert time.process_time() - start < 20  # about 2 s of one core


def test_unknown_names_and_too_many_candidates():
    with pytest.raises(ValueError, match="unknown dataset"):
        mix_to_bits({"t", "zz"}, ["a", "b"], target="t")
    with pytest.raises(ValueError, match="2\\*\\*23"):
        search(lambda m: 0.0, [f"d{j}" for j in range(23)], budget=1)
    with pytest.raises(ValueError, match="repeat"):
        search(lambda m: 0.0, ["a", "a", "b"], budget=1)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7, 11, 16])
@pytest.mark.parametrize("kind", ["balanced", "single"])
def test_design_covers_every_auxiliary_and_starts_with_the_baseline(k, kind):
    for seed in range(5):
        d = initial_design(k, kind=kind, seed=seed)
        assert not d[0].any()  # the target-only baseline
        assert d[1:].any(axis=0).all()  # every auxiliary at least once
        assert len({r.tobytes() for r in d}) == len(d)  # distinct mixes
        if kind == "balanced" and len(d) > 2:
            counts = d[1:].sum(axis=0)
            assert counts.max() - counts.min() <= 1 + (len(d) - 1) % 2  # about half of the mixes each
    assert len(initial_design(11, kind="single")) == 12
    assert (initial_design(11, seed=3) == initial_design(11, seed=3)).all()
    for k in (1, 2, 5):
        without = initial_design(k, seed=0, baseline=False)
        assert without.sum(axis=1).min() > 0 and without.any(axis=0).all()  # no empty mix without a target


def test_choose_next_takes_the_best_untried_when_the_best_was_tried():
    mean, tried = np.array([0.1, 0.9, 0.5, 0.7]), np.array([False, True, False, False])
    assert choose_next(mean, np.zeros(4), tried) == (3, True)
    assert choose_next(mean, np.array([0, 0, 0.3, 0]), tried, beta=2.0) == (2, False)
    assert choose_next(mean, np.zeros(4), np.ones(4, bool)) == (-1, True)


def test_mlp_fits_an_additive_surface():
    rng = np.random.default_rng(0)
    X = all_mixes(6)
    w = rng.normal(size=6)
    y = X @ w
    rows = rng.choice(64, 20, replace=False)
    mean, _ = MLPEnsemble(6, members=3, seed=1).fit(X[rows], y[rows]).predict(X)
    assert int(np.argmax(mean)) == int(np.argmax(y))
    assert np.corrcoef(mean, y)[0, 1] > 0.95


# ---------------------------------------------------------------------------------------------------------------
# the loop


def surface(k: int, seed: int) -> np.ndarray:
    """Main effects, pairwise and third-order interactions (a small version of the benchmark's)."""
    rng = np.random.default_rng(seed)
    X = all_mixes(k).astype(float)
    f = X @ rng.normal(0, 1, k)
    f += np.einsum("ni,ij,nj->n", X, np.triu(rng.normal(0, 0.5, (k, k)) * (rng.random((k, k)) < 0.3), 1), X)
    i, j, m = rng.choice(k, 3, replace=False)
    return f + rng.normal(0, 0.5) * X[:, i] * X[:, j] * X[:, m]


class Counting:
    """An evaluator over a known surface that counts its calls."""

    def __init__(self, values: np.ndarray, names: list[str], fail: dict[int, str] | None = None):
        self.values, self.names, self.fail = values, names, fail or {}
        self.calls: list[frozenset] = []

    def __call__(self, mix: frozenset) -> float:
        self.calls.append(mix)
        what = self.fail.get(len(self.calls))
        if what == "raise":
            raise RuntimeError("CUDA out of memory (simulated)")
        if what == "nan":
            return float("nan")
        if what == "interrupt":
            raise KeyboardInterrupt
        return float(self.values[mix_index(mix_to_bits(mix, self.names, "t"))])


NAMES5 = [f"d{j}" for j in range(5)]


@pytest.mark.parametrize("seed", range(4))
def test_search_finds_the_optimum_of_a_small_known_surface(seed):
    values = surface(5, seed)
    ev = Counting(values, NAMES5)
    result = search(ev, ["t", *NAMES5], target="t", budget=20, seed=seed, patience=0)
    best = bits_to_mix(all_mixes(5)[int(np.argmax(values))], NAMES5, "t")
    assert result.best_mix == best and math.isclose(result.best_score, values.max())
    assert len(set(ev.calls)) == len(ev.calls) == len(result.history) <= 20  # nothing evaluated twice
    assert [m for m, _ in result.history] == ev.calls
    assert result.history[0][0] == frozenset({"t"})  # the baseline first


def test_stops_when_the_predicted_best_was_evaluated_or_the_budget_is_spent():
    values = surface(5, 0)
    paper = search(Counting(values, NAMES5), ["t", *NAMES5], target="t", budget=32, members=1, beta=0.0,
                   patience=1, design="single")
    assert paper.stopped_because == "converged" and len(paper.history) < 32
    assert paper.rows[-1].chosen_by != "untried"  # the paper's rule stops at the first repeat
    short = search(Counting(values, NAMES5), ["t", *NAMES5], target="t", budget=4, patience=0)
    assert short.stopped_because == "budget" and len(short.history) == 4
    every = search(Counting(np.array([0.0, 1.0, 2.0, 0.5]), ["d0", "d1"]), ["t", "d0", "d1"], target="t", budget=10,
                   patience=0)
    assert every.stopped_because == "exhausted" and len(every.history) == 4


def test_hours_budget_counts_recorded_evaluation_time(monkeypatch):
    clock = iter(range(0, 10_000, 25))  # every evaluation appears to take 25 s (two clock reads each)
    monkeypatch.setattr(combos.time, "perf_counter", lambda: float(next(clock)))
    result = search(lambda mix: float(len(mix)), ["t", *NAMES5], target="t", budget=30, hours=90 / 3600,
                    patience=0)
    assert result.stopped_because == "hours" and len(result.history) == 4  # 3 x 25 s < 90 s <= 4 x 25 s
    assert [r.seconds for r in result.rows] == [25.0] * 4


def test_without_a_target_the_empty_mix_is_never_evaluated():
    result = search(lambda mix: float(len(mix)), ["a", "b", "c"], budget=8, patience=0)
    assert frozenset() not in [m for m, _ in result.history]
    assert result.best_mix == frozenset({"a", "b", "c"}) and result.stopped_because == "exhausted"


def test_resume_re_evaluates_nothing_and_matches_an_uninterrupted_run(tmp_path):
    values = surface(5, 1)
    whole = search(Counting(values, NAMES5), ["t", *NAMES5], target="t", budget=12, seed=3, patience=0)

    path = tmp_path / "history.jsonl"
    first = Counting(values, NAMES5)
    part = search(first, ["t", *NAMES5], target="t", budget=7, seed=3, patience=0, history_path=path)
    assert len(first.calls) == 7 and part.stopped_because == "budget"
    again = Counting(values, NAMES5)
    done = search(again, ["t", *NAMES5], target="t", budget=7, seed=3, patience=0, history_path=path)
    assert again.calls == [] and done.history == part.history  # nothing left to do, nothing re-evaluated
    rest = Counting(values, NAMES5)
    resumed = search(rest, ["t", *NAMES5], target="t", budget=12, seed=3, patience=0, history_path=path)
    assert len(rest.calls) == 5 and not set(rest.calls) & set(first.calls)
    assert resumed.history == whole.history  # the same choices as without the interruption
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert lines[0]["kind"] == "header" and lines[0]["candidates"] == NAMES5 and len(lines) == 13


def test_a_crash_mid_search_loses_nothing(tmp_path):
    values = surface(5, 2)
    path = tmp_path / "h.jsonl"
    crashing = Counting(values, NAMES5, fail={6: "interrupt"})
    with pytest.raises(KeyboardInterrupt):
        search(crashing, ["t", *NAMES5], target="t", budget=10, patience=0, history_path=path)
    assert len(path.read_text().splitlines()) == 1 + 5  # header + the five finished evaluations
    with open(path, "a") as f:
        f.write('{"kind": "eval", "mix": ["t", "d')  # a line cut short by a crash while writing
    rest = Counting(values, NAMES5)
    resumed = search(rest, ["t", *NAMES5], target="t", budget=10, patience=0, history_path=path)
    assert len(rest.calls) == 5 and not set(rest.calls) & set(crashing.calls[:5])
    assert resumed.history == search(Counting(values, NAMES5), ["t", *NAMES5], target="t", budget=10,
                                     patience=0).history
    assert all(json.loads(x) for x in path.read_text().splitlines())


def test_failed_evaluations_are_recorded_and_the_search_goes_on(tmp_path):
    values = surface(5, 0)
    path = tmp_path / "h.jsonl"
    ev = Counting(values, NAMES5, fail={2: "raise", 5: "nan"})
    result = search(ev, ["t", *NAMES5], target="t", budget=10, patience=0, history_path=path)
    assert len(result.history) == 10 and result.stopped_because == "budget"
    assert math.isnan(result.history[1][1]) and math.isnan(result.history[4][1])
    assert set(result.failures) == {ev.calls[1], ev.calls[4]}
    assert "RuntimeError: CUDA out of memory" in result.failures[ev.calls[1]]
    assert "nan" in result.failures[ev.calls[4]]
    assert not math.isnan(result.best_score) and result.best_mix not in result.failures
    rows = [json.loads(x) for x in path.read_text().splitlines()[1:]]
    assert rows[1]["score"] is None and rows[1]["error"].startswith("RuntimeError")
    # resumed: the failed mixes are not tried again
    again = Counting(values, NAMES5)
    resumed = search(again, ["t", *NAMES5], target="t", budget=12, patience=0, history_path=path)
    assert len(again.calls) == 2 and not set(again.calls) & set(ev.calls)
    assert len(resumed.failures) == 2


def test_consecutive_failures_stop_the_search():
    def broken(mix):
        raise ValueError("no such adapter")

    result = search(broken, ["t", *NAMES5], target="t", budget=20)
    assert result.stopped_because == "failures" and len(result.history) == combos.MAX_CONSECUTIVE_FAILURES
    assert result.best_mix is None and math.isnan(result.best_score)


def test_a_history_from_another_search_is_refused_and_kept(tmp_path):
    path = tmp_path / "h.jsonl"
    search(Counting(surface(5, 0), NAMES5), ["t", *NAMES5], target="t", budget=4, history_path=path,
           settings={"steps": 150})
    before = path.read_bytes()
    with pytest.raises(InputError, match="made for target 't' and candidates \\[d0, d1, d2, d3, d4\\]"):
        search(lambda m: 0.0, ["t", "d0", "d1", "x"], target="t", budget=4, history_path=path)
    with pytest.raises(InputError, match="target 'd0'"):
        search(lambda m: 0.0, ["t", *NAMES5], target="d0", budget=4, history_path=path)
    with pytest.raises(InputError, match="other evaluator settings \\(steps: 150 -> 10\\)"):
        search(lambda m: 0.0, ["t", *NAMES5], target="t", budget=4, history_path=path, settings={"steps": 10})
    assert path.read_bytes() == before  # nothing lost
    # the candidate order does not matter
    same = search(lambda m: 0.0, ["t", *reversed(NAMES5)], target="t", budget=4, history_path=path,
                  settings={"steps": 150})
    assert len(same.history) == 4
    # a setting added after the history was written reads as the value it had then, and only that value
    with pytest.raises(InputError, match="\\(passes: None -> 1\\)"):
        search(lambda m: 0.0, ["t", *NAMES5], target="t", budget=4, history_path=path,
               settings={"steps": 150, "passes": 1})
    added = search(lambda m: 0.0, ["t", *NAMES5], target="t", budget=4, history_path=path,
                   settings={"steps": 150, "passes": 1}, added_settings={"passes": 1})
    assert len(added.history) == 4
    with pytest.raises(InputError, match="\\(passes: 1 -> 2\\)"):
        search(lambda m: 0.0, ["t", *NAMES5], target="t", budget=4, history_path=path,
               settings={"steps": 150, "passes": 2}, added_settings={"passes": 1})
    assert path.read_bytes() == before
    other = tmp_path / "other.jsonl"
    other.write_text('{"id": 1}\n')
    with pytest.raises(InputError, match="first line must be its header"):
        read_history(other, "t", NAMES5)


def test_search_steps_yields_each_new_row():
    state: dict = {}
    seen = [r.n for r in search_steps(lambda m: float(len(m)), ["t", "a", "b"], "t", budget=3, patience=0,
                                      state=state)]
    assert seen == [1, 2, 3] and state["stopped_because"] == "budget"


def test_plot_writes_a_png(tmp_path):
    ev = Counting(surface(5, 0), NAMES5, fail={3: "nan"})
    result = search(ev, ["t", *NAMES5], target="t", budget=8, patience=0)
    combos.plot_best_so_far(result, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = result.best_so_far()
    assert all(b >= a for a, b in zip(best, best[1:]))


# ---------------------------------------------------------------------------------------------------------------
# tiny corpora and encoder for the evaluators and the command

DRUGS = ["aspirin", "ibuprofen", "cisplatin"]
DISEASES = [["headache"], ["nausea"], ["renal", "failure"]]
GENES = ["brca1", "tp53"]
FILLER = ["the", "patient", "took", "and", "caused", "was", "no", "effect", "seen", "with", "."]
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *DRUGS, "headache", "nausea", "renal", "failure", *GENES,
         *FILLER]


def _sentence(rng: random.Random, kind: str) -> list[tuple[str, str]]:
    d = rng.choice(DISEASES)
    disease = [(w, ("B-" if i == 0 else "I-") + "Disease") for i, w in enumerate(d)]
    if kind == "T":  # target: Disease only
        return [("the", "O"), ("patient", "O"), ("was", "O"), *disease, (".", "O")]
    if kind == "A":  # Chemical and Disease
        return [(rng.choice(DRUGS), "B-Chemical"), ("caused", "O"), *disease, (".", "O")]
    return [(rng.choice(GENES), "B-Gene"), ("was", "O"), ("seen", "O"), (".", "O")]  # Gene


def write_corpus(folder: Path, kind: str, n: int = 12) -> Path:
    folder.mkdir(parents=True)
    for split, seed in (("train", 0), ("dev", 1), ("test", 2)):
        rng = random.Random(seed)
        blocks = ["\n".join(f"{w}\t{t}" for w, t in _sentence(rng, kind)) for _ in range(n)]
        (folder / f"{split}.tsv").write_text("\n\n".join(blocks) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "ner"  # the task's folder name, as under ../shared/data
    for name, kind in (("Target", "T"), ("Aux-A", "A"), ("aux_b", "B")):
        write_corpus(root / name, kind)
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    ids = {t: i for i, t in enumerate(VOCAB)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
        ("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])])
    folder = tmp_path_factory.mktemp("tiny-bert")
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=24, max_position_embeddings=32)).save_pretrained(folder)
    return folder


def test_find_corpora_resolves_names_case_insensitively_and_rejects_unknown_ones(data_root):
    found = find_corpora(["target", "AUX-A", str(data_root / "aux_b")], data_root)
    assert list(found) == ["Target", "Aux-A", "aux_b"]
    with pytest.raises(InputError, match="unknown dataset 'BC9'.*known: Aux-A, Target, aux_b"):
        find_corpora(["Target", "BC9"], data_root)
    with pytest.raises(InputError, match="named twice"):
        find_corpora(["Target", "TARGET"], data_root)


def test_encoder_evaluator_trains_a_fixed_number_of_steps_and_predicts_target_labels_only(data_root, tiny_model,
                                                                                          tmp_path):
    corpora = find_corpora(["Target", "Aux-A", "aux_b"], data_root)
    ev = EncoderEvaluator(corpora, "Target", str(tiny_model), max_train=8, steps=3, batch_size=4, lr=1e-3,
                          max_length=32, dev_size=6, device="cpu", work_dir=tmp_path)
    ev.check()
    mix = frozenset({"Target", "Aux-A", "aux_b"})
    m = ev.train_and_score(mix)
    assert m["steps"] == 3 and m["train_pool"] == 12 and sum(m["drawn_per_dataset"].values()) == 12
    assert m["labels"] == ["O", "B-Chemical", "I-Chemical", "B-Disease", "I-Disease", "B-Gene", "I-Gene"]
    assert m["eval_sentences"] == {"dev": 6} and 0.0 <= m["dev"]["f1"] <= 1.0
    assert ev(mix) == m["dev"]["f1"]  # deterministic for a seed on CPU
    folder = tmp_path / "Target+Aux-A+aux_b"
    preds = [json.loads(x) for x in (folder / "pred_dev.jsonl").read_text().splitlines()]
    assert {s[2] for p in preds for s in p.get("spans", [])} <= {"Disease"}
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["settings"]["steps"] == 3 and "git_commit" in metrics["provenance"]
    both = ev.test_score(mix)
    assert both["dev"]["f1"] == m["dev"]["f1"] and both["eval_sentences"]["test"] == 12
    with pytest.raises(ValueError, match="must include the target"):
        ev(frozenset({"Aux-A"}))
    # the saved dev predictions' per-record counts: one per dev sentence, summing to the recorded score's counts
    task, counts = ev.dev_counts(mix)
    assert task == "ner" and len(counts) == 6
    assert [sum(c[i] for c in counts) for i in range(3)] == [m["dev"]["tp"], m["dev"]["fp"], m["dev"]["fn"]]
    assert ev.dev_counts(frozenset({"Target"})) is None  # not evaluated


def test_lora_evaluator_builds_the_even_mix_command_and_scores_generated_answers(data_root, tmp_path, monkeypatch):
    from tuning import generate, train

    calls = {}

    def fake_train(cfg):
        calls["train"] = cfg
        Path(cfg.output_dir).mkdir(parents=True)
        (Path(cfg.output_dir) / "adapter_config.json").write_text("{}")
        return {}

    def fake_generate(cfg):
        calls.setdefault("generate", []).append(cfg)
        rows = [json.loads(x) for x in Path(cfg.input).read_text().splitlines()]
        # a perfect answer for the first half of the records, an empty one for the rest
        out = [{"id": r["id"], "output": r["output"] if i < len(rows) // 2 else "[]"} for i, r in enumerate(rows)]
        Path(cfg.output).write_text("".join(json.dumps(o) + "\n" for o in out))
        return {}

    monkeypatch.setattr(train, "train", fake_train)
    monkeypatch.setattr(generate, "generate_file", fake_generate)
    corpora = find_corpora(["Target", "Aux-A"], data_root)
    model = tmp_path / "model"
    model.mkdir()
    ev = LoraEvaluator(corpora, "Target", str(model), work_dir=tmp_path / "w", max_train=6, steps=7, batch_size=2,
                       dev_size=8, constrained=False)
    f1 = ev(frozenset({"Target", "Aux-A"}))
    cfg = calls["train"]
    assert cfg.mix == "even" and cfg.max_steps == 7 and cfg.per_device_train_batch_size == 2 and cfg.report_to == []
    # a killed evaluation resumes from its last checkpoint (every save_steps, 25 by default, at most every step)
    assert cfg.resume_from_checkpoint == "auto" and cfg.save_steps == 7
    assert sorted(Path(p).name for p in cfg.train_files) == ["Aux-A.train.jsonl", "Target.train.jsonl"]
    assert [len(Path(p).read_text().splitlines()) for p in sorted(cfg.train_files)] == [6, 6]
    gen = calls["generate"][0]
    assert not gen.constrained and gen.adapter.endswith("Target+Aux-A/adapter") and gen.max_new_tokens == 256
    dev = [json.loads(x) for x in (tmp_path / "w" / "data" / "Target.dev.jsonl").read_text().splitlines()]
    assert len(dev) == 8 and dev[0]["id"].startswith("Target/")
    n_gold = sum(len(r["spans"]) for r in dev)
    found = sum(len(r["spans"]) for r in dev[:4])
    assert math.isclose(f1, 2 * found / (found + n_gold))  # precision 1, recall found / gold
    metrics = json.loads((tmp_path / "w" / "Target+Aux-A" / "metrics.json").read_text())
    assert metrics["train_command"][:3] == ["bioselect", "tune", "train"] and "--mix" in metrics["train_command"]
    assert metrics["generate_commands"]["dev"][:3] == ["bioselect", "tune", "generate"]
    assert "--unconstrained" in metrics["generate_commands"]["dev"]
    # a second evaluation of the same mix reuses the adapter; the test set is scored whole
    calls.pop("train")
    scores = ev.test_score(frozenset({"Target", "Aux-A"}))
    assert "train" not in calls and 0 <= scores["test"]["f1"] <= 1
    # accumulation: the same optimizer steps from smaller forward passes, always in the settings
    assert ev.settings()["gradient_accumulation_steps"] == 1 and cfg.gradient_accumulation_steps == 1
    accumulated = LoraEvaluator(corpora, "Target", str(model), work_dir=tmp_path / "w2", max_train=6, steps=7,
                                batch_size=1, gradient_accumulation_steps=2, dev_size=8, constrained=False)
    accumulated(frozenset({"Target"}))
    cfg = calls["train"]
    assert (cfg.max_steps, cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (7, 1, 2)
    checkpointed = LoraEvaluator(corpora, "Target", str(model), work_dir=tmp_path / "w3", max_train=6, steps=7,
                                 dev_size=8, constrained=False, save_steps=3)
    checkpointed(frozenset({"Target"}))
    assert calls["train"].save_steps == 3 and "save_steps" not in checkpointed.settings()
    with pytest.raises(InputError, match="--save-steps"):
        LoraEvaluator(corpora, "Target", str(model), work_dir=tmp_path / "w4", save_steps=0)
    assert accumulated.settings()["gradient_accumulation_steps"] == 2


def test_lora_evaluator_stops_on_bad_generation_input_and_on_ctrl_c(data_root, tmp_path, monkeypatch):
    from tuning import generate, train

    def fake_train(cfg):
        Path(cfg.output_dir).mkdir(parents=True)
        (Path(cfg.output_dir) / "adapter_config.json").write_text("{}")

    monkeypatch.setattr(train, "train", fake_train)
    model = tmp_path / "model"
    model.mkdir()
    ev = LoraEvaluator(find_corpora(["Target", "Aux-A"], data_root), "Target", str(model), work_dir=tmp_path / "w",
                       max_train=6, steps=2, dev_size=8, constrained=False)
    # the real generate_file: the model folder is empty, which it refuses before loading anything
    with pytest.raises(InputError, match="no config.json"):
        ev(frozenset({"Target"}))
    assert not (tmp_path / "w" / "Target" / "pred_dev.jsonl").exists()

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "generate_file", interrupted)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C stops the search, not just this evaluation
        ev(frozenset({"Target"}))


def test_evaluators_are_found_by_name_and_follow_the_protocol(data_root, tmp_path):
    corpora = find_corpora(["Target", "Aux-A"], data_root)
    built = {name: build_evaluator(name, corpora, "Target", str(tmp_path), work_dir=tmp_path, steps=5, seed=3)
             for name in EVALUATORS}
    assert type(built["encoder"]) is EncoderEvaluator and type(built["lora"]) is LoraEvaluator
    for name, ev in built.items():
        assert ev.settings()["evaluator"] == name and ev.settings()["steps"] == 5 and ev.settings()["seed"] == 3
        assert all(callable(getattr(ev, m, None)) for m in ("settings", "check", "__call__", "test_score"))
        assert {m for m in vars(Evaluator) if not m.startswith("_") or m == "__call__"} <= set(dir(ev))
    with pytest.raises(ValueError, match="must be one of encoder, lora"):
        build_evaluator("svm", corpora, "Target", str(tmp_path))


# ---------------------------------------------------------------------------------------------------------------
# the command


def _argv(data_root: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return ["--target", "target", "--datasets", "Aux-A,aux_b", "--data-root", str(data_root), "--model", str(model),
            "--output", str(out), "--steps", "2", "--batch-size", "4", "--max-train", "8", "--dev-size", "6",
            "--max-length", "32", "--device", "cpu", "--budget", "3", *extra]


def test_command_runs_writes_its_outputs_and_resumes(data_root, tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    assert combos_main(_argv(data_root, tiny_model, out)) == 0
    printed = capsys.readouterr().out
    assert "[1] Target (alone): dev F1" in printed and "stopped: budget after 3 evaluations" in printed
    result = json.loads((out / "result.json").read_text())
    assert result["evaluations"] == 3 and result["target"] == "Target" and result["candidates"] == ["Aux-A", "aux_b"]
    assert [t["role"] for t in result["tests"]][-1].endswith("target only") and "git_commit" in result["provenance"]
    assert result["evaluator_settings"]["steps"] == 2
    assert (out / "best_so_far.png").is_file() and "| # | mix |" in (out / "result.md").read_text()
    # the equal-exposure control: the target alone for the target's share of the best mix with an auxiliary, then
    # of the best mix of every other size
    mixes = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()[1:]]
    best = max((r for r in mixes if len(r["mix"]) > 1), key=lambda r: r["score"])
    exposure = result["exposure"]
    assert exposure == json.loads((out / "exposure.json").read_text())
    assert exposure[0]["mix"] == sorted(best["mix"]) and exposure[0]["mix_dev"] == best["score"]
    assert sorted(len(r["mix"]) for r in exposure) == sorted({len(r["mix"]) for r in mixes if len(r["mix"]) > 1})
    for row in exposure:
        assert row["target_steps"] == max(1, round(2 / len(row["mix"]))) and 0 <= row["target_dev"] <= 1
        assert (out / "evals" / f"exposure-{row['target_steps']}" / "Target").is_dir()
        assert f"| {row['target_steps']} | {100 * row['target_dev']:.2f} | " in (out / "result.md").read_text()
    assert printed.count("equal exposure:") == len(exposure)
    n_tests = len((out / "test.jsonl").read_text().splitlines())
    history = (out / "history.jsonl").read_text()
    # the record alone (history, test scores, control) in an empty folder, as after a lost disk: nothing is retrained
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("history.jsonl", "test.jsonl", "exposure.json"):
        shutil.copyfile(out / name, moved / name)
    assert combos_main(_argv(data_root, tiny_model, moved)) == 0
    assert not [p.name for p in (moved / "evals").glob("*") if p.name != "data"]  # no evaluation's folder
    again = json.loads((moved / "result.json").read_text())
    assert (again["history"], again["tests"], again["exposure"]) == (result["history"], result["tests"], exposure)
    # run again with a larger budget: the three evaluations and the test scores are not repeated
    assert combos_main(_argv(data_root, tiny_model, out, "--budget", "4")) == 0
    lines = (out / "history.jsonl").read_text().splitlines()
    assert (out / "history.jsonl").read_text().startswith(history) and len(lines) == 1 + 4
    assert len({tuple(json.loads(x)["mix"]) for x in lines[1:]}) == 4
    assert len((out / "test.jsonl").read_text().splitlines()) >= n_tests
    made = (out / "exposure.json").stat().st_mtime_ns, (out / "exposure.json").read_bytes()
    assert combos_main(_argv(data_root, tiny_model, out, "--budget", "4")) == 0  # nothing new: the control is read
    assert ((out / "exposure.json").stat().st_mtime_ns, (out / "exposure.json").read_bytes()) == made
    assert json.loads((out / "result.json").read_text())["exposure"] == json.loads(made[1])
    (out / "exposure.json").write_text('{"mix": ')  # not what the command writes: refused, kept, nothing retrained
    capsys.readouterr()
    assert combos_main(_argv(data_root, tiny_model, out, "--budget", "4")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{out / 'exposure.json'}: not the JSON this command writes" in err, err
    assert (out / "exposure.json").read_text() == '{"mix": '


class _Rows:
    def __init__(self, scores):
        self.rows = [combos.Row(n=i, mix=frozenset(m), bits="", score=s) for i, (m, s) in enumerate(scores)]


def test_exposure_control_covers_every_mix_size_and_reuses_target_scores(tmp_path, monkeypatch):
    import logging

    from curation import combos_cli

    calls = []
    # per-record [tp, fp, fn] of 4 dev sentences: the mixes' (micro F1 2*2 / (2*2 + 1 + 1) = 2/3) and the target
    # alone's (2*1 / (2*1 + 2 + 2) = 1/3) once trained
    mix_counts = [[1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]
    alone_counts = [[1, 0, 0], [0, 1, 1], [0, 1, 0], [0, 0, 1]]

    class Fake:  # the target alone's dev score: its steps / 100
        def __init__(self, corpora, target, model, steps, **options):
            self.steps, self.work_dir = steps, options["work_dir"]

        def __call__(self, mix):
            calls.append((sorted(mix), self.steps, self.work_dir.name))
            return self.steps / 100

        def dev_counts(self, mix):
            return ("re", alone_counts) if (["T"], self.steps, self.work_dir.name) in calls else None

    class Search:
        def dev_counts(self, mix):
            return ("re", mix_counts) if len(mix) == 3 else None

    monkeypatch.setattr(combos_cli, "build_evaluator", lambda name, corpora, target, model, **o:
                        Fake(corpora, target, model, **o))
    cfg = CombosConfig(target="T", datasets=["A", "B", "C"], model="m", output=str(tmp_path / "out"), steps=120)
    result = _Rows([({"T"}, 0.5), ({"T", "A"}, 0.1), ({"T", "A", "B"}, 0.3), ({"T", "C"}, 0.2),
                    ({"T", "B", "C"}, 0.25), ({"T", "A", "B", "C"}, math.nan)])
    result.rows[-1].error = "boom"  # a failed evaluation is no mix's best
    path, log = tmp_path / "exposure.json", logging.getLogger("test")
    rows = combos_cli.exposure_control(cfg, {}, "T", 120, result, path, log, Search())
    # the best mix with an auxiliary first (3 datasets: 40 target steps), then the best of size 2 (60 steps)
    assert [(r["mix"], r["mix_dev"], r["target_steps"], r["target_dev"]) for r in rows] == [
        (["A", "B", "T"], 0.3, 40, 0.4), (["C", "T"], 0.2, 60, 0.6)]
    assert calls == [(["T"], 40, "exposure-40"), (["T"], 60, "exposure-60")]
    assert json.loads(path.read_text()) == rows
    # the paired dev interval where both sides' dev answers are there (the size-3 mix's only)
    paired = rows[0]["paired"]
    assert paired["diff"] == pytest.approx(2 / 3 - 1 / 3) and paired["records"] == 4
    assert paired["ci"][0] <= paired["diff"] <= paired["ci"][1] and 0 <= paired["p_le_0"] <= 1
    assert rows[1]["paired"] is None
    table = combos_cli.markdown({"target": "T", "best_mix": ["T"], "best_score": 0.5, "evaluations": 5,
                                 "stopped_because": "budget", "history": []}, [], rows)
    lo, hi = paired["ci"]  # the table's difference is the recorded scores' (0.3 - 0.4), then the paired interval
    assert f"| -10.00 ({100 * lo:+.2f} to {100 * hi:+.2f}) |" in table and "| 60 | 60.00 | -40.00 |" in table
    # without the search's evaluator the recorded interval of the same mix is kept
    assert combos_cli.exposure_control(cfg, {}, "T", 120, result, path, log)[0]["paired"] == paired
    # again: read, nothing trained; a new best mix of a size already controlled reuses the target's score
    assert combos_cli.exposure_control(cfg, {}, "T", 120, result, path, log, Search()) == rows and len(calls) == 2
    result.rows.append(combos.Row(n=9, mix=frozenset({"T", "B"}), bits="", score=0.22))
    again = combos_cli.exposure_control(cfg, {}, "T", 120, result, path, log)
    assert again[1]["mix"] == ["B", "T"] and again[1]["target_dev"] == 0.6 and len(calls) == 2
    assert json.loads(path.read_text()) == again
    # the best mix's size only
    cfg.exposure_per_size = False
    assert [r["target_steps"] for r in combos_cli.exposure_control(cfg, {}, "T", 120, result, tmp_path / "b.json",
                                                                      log)] == [40]
    # a file of the single row written before every size was controlled: its score is reused
    path.write_text(json.dumps({"mix": ["C", "T"], "mix_dev": 0.2, "steps": 120, "target_steps": 60,
                                "target_dev": 0.55, "error": None, "seconds": 1.0}))
    cfg.exposure_per_size = True
    rows = combos_cli.exposure_control(cfg, {}, "T", 120, result, path, log)
    assert [r["target_dev"] for r in rows] == [0.4, 0.55] and calls[-1] == (["T"], 40, "exposure-40")
    # another step budget: nothing of the file is reused
    calls.clear()
    combos_cli.exposure_control(cfg, {}, "T", 60, result, path, log)
    assert calls == [(["T"], 20, "exposure-20"), (["T"], 30, "exposure-30")]
    # no mix with an auxiliary: no control
    assert combos_cli.exposure_control(cfg, {}, "T", 120, _Rows([({"T"}, 0.5)]), tmp_path / "c.json", log) == []
    path.write_text('[{"mix": ["T"]}]')
    with pytest.raises(InputError, match="not the JSON this command writes"):
        combos_cli.exposure_control(cfg, {}, "T", 120, result, path, log)


def test_command_refuses_a_history_of_another_dataset_list(data_root, tiny_model, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    history = out / "history.jsonl"
    history.write_text(json.dumps({"kind": "header", "format": combos.FORMAT, "target": "Target",
                                   "candidates": ["Aux-A", "BC2GM"], "settings": {}}) + "\n"
                       + json.dumps({"kind": "eval", "mix": ["Target"], "score": 0.5}) + "\n")
    before = history.read_bytes()
    assert combos_main(_argv(data_root, tiny_model, out)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "made for target 'Target' and candidates [Aux-A, BC2GM]" in err and "[Aux-A, aux_b]" in err
    assert history.read_bytes() == before and not (out / "result.json").exists()


@pytest.mark.parametrize("change, message", [
    (["--datasets", "Aux-A,BC9"], "--datasets: unknown dataset 'BC9'"),
    (["--target", "nope"], "--target: unknown dataset 'nope'"),
    (["--evaluator", "svm"], "--evaluator: must be one of encoder, lora"),
    (["--datasets", "target"], "--datasets: name at least one auxiliary"),
    (["--budget", "0"], "--budget: must be >= 1"),
    (["--design", "grid"], "--design: must be one of balanced, single"),
    (["--gradient-accumulation-steps", "0"], "--gradient-accumulation-steps: must be >= 1"),
    (["--save-steps", "0"], "--save-steps: must be >= 1"),
    (["--evaluator", "encoder", "--gradient-accumulation-steps", "2"],
     "--gradient-accumulation-steps: applies to the lora evaluator only"),
])
def test_command_bad_input_is_one_line_and_exit_2(data_root, tiny_model, tmp_path, capsys, change, message):
    argv = _argv(data_root, tiny_model, tmp_path / "run")
    for flag, value in zip(change[::2], change[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert combos_main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run" / "history.jsonl").exists()


def test_bioselect_curate_combos_dispatches_to_this_command(tmp_path, capsys):
    from curation import cli

    assert cli.COMMANDS[("curate", "combos")] == "curation.combos_cli"
    # the dispatcher reaches this command's own parser and checks: an evaluator that is not in its table is refused
    argv = ["curate", "combos", "--target", "t", "--datasets", "a", "--model", "m", "--output", str(tmp_path / "r"),
            "--evaluator", "svm"]
    assert cli.main(argv) == 2
    assert capsys.readouterr().err == "error: --evaluator: must be one of encoder, lora, not 'svm'\n"


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("combos_*.yaml")), ids=lambda p: p.name)
def test_recipes_parse_into_the_config(recipe):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# ") and f"--config configs/{recipe.name}" in first
    cfg, _ = parse_config(CombosConfig, ["--config", str(recipe)], prog="test")
    assert cfg.target and len(cfg.datasets) == 4 and cfg.output.startswith("runs/")
    assert cfg.evaluator in recipe.name
    if cfg.data_root.startswith("runs/"):  # corpora the recipe's header tells how to make with `data split`
        made = [d for d in (f"{cfg.data_root}/{cfg.target}", *cfg.datasets) if d.startswith("runs/")]
        assert all(f"--output {d}\n" in recipe.read_text() for d in made), made


def test_every_evaluator_has_a_recipe_that_selects_it():
    chosen = {parse_config(CombosConfig, ["--config", str(p)], prog="test")[0].evaluator
              for p in (REPO / "configs").glob("combos_*.yaml")}
    assert chosen == set(EVALUATORS)


def write_re_corpus(folder: Path, n: int = 8) -> Path:
    """An RE corpus (records JSONL per split): "DRUG caused DISEASE ." with an ADE relation in two of three."""
    from curation.records import Record, Relation, Span

    folder.mkdir(parents=True)
    for split, seed in (("train", 0), ("dev", 1), ("test", 2)):
        rng = random.Random(seed)
        rows = []
        for i in range(n):
            drug, disease = rng.choice(DRUGS), " ".join(rng.choice(DISEASES))
            text = f"{drug} caused {disease} ."
            spans = [Span(0, len(drug), "Chemical"), Span(len(drug) + 8, len(drug) + 8 + len(disease), "Disease")]
            rel = [Relation(0, 1, "ADE")] if i % 3 != 2 else []
            rows.append(Record(id=str(i), text=text, spans=spans, relations=rel).to_dict())
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_lora_evaluator_scores_an_re_target_trained_with_an_ner_auxiliary(tmp_path, monkeypatch):
    """One evaluation end to end on a tiny random Llama: each dataset converted with its own task, the RE target's
    dev answers generated and scored by strict F1 of (head, relation, tail), as bioselect evaluate scores them."""
    from curation.evaluate import main as evaluate
    from tests.tuning.conftest import build_tiny_llama

    root = tmp_path / "data"
    target = write_re_corpus(root / "re" / "DDI-toy")
    aux = write_corpus(root / "ner" / "Aux-A", "A", n=8)
    model = build_tiny_llama(tmp_path / "llama")
    ev = LoraEvaluator({"DDI-toy": target, "Aux-A": aux}, "DDI-toy", str(model), work_dir=tmp_path / "w",
                       max_train=6, steps=2, batch_size=2, dev_size=4, max_new_tokens=24, constrained=True,
                       train_args=["--lora-r", "4", "--lora-alpha", "8", "--max-length", "256"])
    assert ev.settings()["tasks"] == {"DDI-toy": "re", "Aux-A": "ner"} and ev.settings()["negative_ratio"] == 1.0
    ev.check()
    mix = frozenset({"DDI-toy", "Aux-A"})
    score = ev(mix)
    data = tmp_path / "w" / "data"
    tasks = {p.name: {json.loads(x)["task"] for x in p.read_text().splitlines()} for p in data.glob("*.jsonl")}
    assert tasks == {"DDI-toy.train.jsonl": {"re"}, "DDI-toy.dev.jsonl": {"re"}, "Aux-A.train.jsonl": {"ner"}}
    folder = tmp_path / "w" / "DDI-toy+Aux-A"
    manifest = json.loads((folder / "adapter" / "manifest.json").read_text())
    assert manifest["data"]["per_task"] == {"re": 6, "ner": 6} and manifest["training"]["global_step"] == 2
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["dev"]["metric"] == "strict_f1" and metrics["dev"]["f1"] == score
    assert evaluate(["--gold", str(data / "DDI-toy.dev.jsonl"), "--pred", str(folder / "pred_dev.jsonl"),
                     "--output", str(tmp_path / "eval.json"), "--bootstrap", "0"]) == 0
    reference = json.loads((tmp_path / "eval.json").read_text())
    assert reference["task"] == "re" and score == reference["strict"]["micro"]["f1"]
    task, counts = ev.dev_counts(mix)  # what the equal-exposure control's paired interval resamples
    micro = reference["strict"]["micro"]
    assert task == "re" and len(counts) == 4
    assert [sum(c[i] for c in counts) for i in range(3)] == [micro["tp"], micro["fp"], micro["fn"]]
    assert ev.dev_counts(frozenset({"DDI-toy"})) is None
    # constrained answers type heads and tails with the target's entity types only (the default 'target')
    assert ev.settings()["argument_types"] == "target"
    command = metrics["generate_commands"]["dev"]
    assert command[command.index("--entity-types"):][:3] == ["--entity-types", "Chemical", "Disease"]
    generated = json.loads((folder / "pred_dev.jsonl.manifest.json").read_text())["config"]
    assert generated["entity_types"] == ["Chemical", "Disease"] and generated["roles"] is None
    # scoring the test set reuses the dev answers this config made (finished, with their manifest) ...
    from tuning import generate

    made, real = [], generate.generate_file
    monkeypatch.setattr(generate, "generate_file", lambda cfg: made.append(Path(cfg.output).name) or real(cfg))
    dev_bytes = (folder / "pred_dev.jsonl").read_bytes()
    manifest_path = folder / "pred_dev.jsonl.manifest.json"  # as tune generate wrote it before --repetition-penalty
    recorded = json.loads(manifest_path.read_text())
    del recorded["config"]["repetition_penalty"]
    manifest_path.write_text(json.dumps(recorded))
    both = ev.test_score(mix)
    assert made == ["pred_test.jsonl"] and both["dev"]["f1"] == score and 0 <= both["test"]["f1"] <= 1
    assert (folder / "pred_dev.jsonl").read_bytes() == dev_bytes
    # ... but not answers of another decoding budget, nor those of an adapter written after them
    ev_longer = LoraEvaluator({"DDI-toy": target, "Aux-A": aux}, "DDI-toy", str(model), work_dir=tmp_path / "w",
                              max_train=6, steps=2, batch_size=2, dev_size=4, max_new_tokens=25, constrained=True,
                              train_args=["--lora-r", "4", "--lora-alpha", "8", "--max-length", "256"])
    ev_longer(mix)
    assert made == ["pred_test.jsonl", "pred_dev.jsonl"]
    weights = folder / "adapter" / "adapter_model.safetensors"
    later = (folder / "pred_dev.jsonl.manifest.json").stat().st_mtime + 10
    os.utime(weights, (later, later))
    ev_longer(mix)
    assert made == ["pred_test.jsonl", "pred_dev.jsonl", "pred_dev.jsonl"]


def test_lora_evaluator_argument_types_are_a_setting_of_re_and_ee_targets_only(tmp_path):
    """'target' lists the RE target's head/tail entity types for tune generate; 'free' lists none; histories made
    before the option read as 'free' (they resume under 'free', are refused under 'target'); an NER target has no
    such setting, so its older histories resume unchanged."""
    root = tmp_path / "data"
    re_target = write_re_corpus(root / "re" / "DDI-toy")
    aux = write_corpus(root / "ner" / "Aux-A", "A", n=8)
    model = tmp_path / "model"
    model.mkdir()
    corpora = {"DDI-toy": re_target, "Aux-A": aux}

    def build(target, **kw):
        return LoraEvaluator(corpora, target, str(model), work_dir=tmp_path / "w", max_train=6, dev_size=4, **kw)

    typed, free = build("DDI-toy"), build("DDI-toy", argument_types="free")
    assert typed.typed_argv() == ["--entity-types", "Chemical", "Disease"] and free.typed_argv() == []
    assert build("DDI-toy", constrained=False).typed_argv() == []
    assert typed.ADDED_SETTINGS["argument_types"] == "free" and "argument_types" not in LoraEvaluator.ADDED_SETTINGS
    old = {k: v for k, v in free.settings().items() if k != "argument_types"}  # a history from before the option
    history = tmp_path / "history.jsonl"
    history.write_text(json.dumps({"kind": "header", "format": combos.FORMAT, "target": "DDI-toy",
                                   "candidates": ["Aux-A"], "settings": old}) + "\n")
    assert read_history(history, "DDI-toy", ["Aux-A"], free.settings(), free.ADDED_SETTINGS) == []
    with pytest.raises(InputError, match="argument_types: 'free' -> 'target'"):
        read_history(history, "DDI-toy", ["Aux-A"], typed.settings(), typed.ADDED_SETTINGS)
    ner = build("Aux-A")
    assert "argument_types" not in ner.settings() and "argument_types" not in ner.ADDED_SETTINGS
    assert ner.typed_argv() == []
    with pytest.raises(InputError, match="--argument-types: must be one of target, free"):
        build("DDI-toy", argument_types="gold")


def test_negative_ratio_thins_the_negatives_of_each_training_sample_only(tmp_path):
    """A share of each capped training sample's negatives (RE: no relation, whatever its entities; NER: no mention)
    is kept with every positive, in corpus order; the dev set every mix is scored on stays whole."""
    from curation.combo_evaluators import Corpora

    root = tmp_path / "data"
    paths = {"DDI-toy": write_re_corpus(root / "re" / "DDI-toy", n=12), "Aux-A": write_corpus(root / "ner" / "Aux-A",
                                                                                                "A", n=8)}
    with open(paths["Aux-A"] / "train.tsv", "a", encoding="utf-8") as f:  # 5 sentences without a mention
        f.write("".join(f"\nnothing\tO\nhere\tO\n{k}\tO\n" for k in range(5)))
    tasks = {"DDI-toy": "re", "Aux-A": "ner"}
    full, half, none = (Corpora(paths, "DDI-toy", 0, 0, 0, tasks, negative_ratio=r) for r in (1.0, 0.5, 0.0))
    for name, what in (("DDI-toy", "relations"), ("Aux-A", "spans")):
        every = [r.id for r in full.train(name)]
        positives = [r.id for r in full.train(name) if getattr(r, what)]
        negatives = [i for i in every if i not in positives]
        assert len(negatives) >= 2 and positives, name  # the toy corpora hold both
        assert [r.id for r in none.train(name)] == positives
        kept = [r.id for r in half.train(name)]
        assert set(positives) <= set(kept) and len(set(kept) - set(positives)) == len(negatives) // 2
        assert kept == [i for i in every if i in kept]
    assert [r.id for r in half.eval_records("dev")] == [r.id for r in full.eval_records("dev")]
    assert len(full.eval_records("dev")) == 12


def test_a_corpus_whose_task_cannot_be_read_and_an_encoder_on_re_are_refused(tmp_path, capsys):
    from curation.combos_cli import main

    root = tmp_path / "data"
    write_re_corpus(root / "re" / "DDI-toy")
    write_corpus(root / "ner" / "Aux-A", "A")
    write_corpus(root / "misc" / "Odd", "T")
    argv = ["--datasets", str(root / "ner" / "Aux-A"), "--model", str(tmp_path), "--output", str(tmp_path / "out")]
    assert main(["--target", "Odd", "--data-root", str(root / "misc"), *argv, "--evaluator", "lora"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot tell the corpus's task: it sits in 'misc'" in err
    assert main(["--target", "DDI-toy", "--data-root", str(root / "re"), "--datasets",
                 str(root / "ner" / "Aux-A"), "--model", str(tmp_path), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "encoder evaluator tags entities (NER) only" in err
