"""`bioselect tune generate` with tiny random models: constrained answers are always valid (a random model is the
adversarial case for a constraint), batching does not change greedy answers, the unconstrained mode reports its
failures, and bad input exits with code 2 before anything is generated or written."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import prompts
from curation.convert import convert_corpus
from curation.io import InputError, write_jsonl
from curation.readers.iob import read_iob
from curation.scoring import parse_output
from tests.helpers import (
    ASSETS,
    offline_model,
    one_torch_thread,  # noqa: F401 (autouse: the module's tests run on one torch thread)
)
from tuning import constrained as constrained_module
from tuning import generation as generation_module
from tuning.chat import render_prompt
from tuning.constrained import (
    answer_grammars,
    close_truncated,
    lark_literal,
    mention_candidates,
    ner_grammar,
    require_llguidance,
    untokenizable,
)
from tuning.generate import GenerateConfig, generate_file, main
from tuning.generation import (
    GenerationStats,
    adapter_mismatch,
    generate,
    instruction_labels,
    load_tokenizer,
    prediction_row,
)

SMOL = offline_model("smollm2-135m")
needs_tokenizer = pytest.mark.skipif(
    SMOL is None, reason="SmolLM2 tokenizer not found under ~/.cache/offline-models/smollm2-135m (run `make models`)")
LABELS = ["Chemical", "Disease"]
# words a random input is drawn from: quotes, backslashes, braces, tabs, non-ASCII letters and punctuation
WORDS = ["BRCA1", "\U00040000", "breast", "cancer", "IL-2R", "T", "-", "cell", "(", ")", ",", ".", 'say "hi"',
         "C:\\path", "{x}", "[1]", "tab\there", "naïve", "β-catenin", "5'", "Na+/K+", "–", "αβ", "a\\\"b", "x}]"]


def random_text(rng: random.Random) -> str:
    seps = [" ", " ", " ", "  ", "\n", "\t"]
    return "".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(rng.randint(0, 14))).strip()


def records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": f"r{i}", "instruction": prompts.instruction("ner", LABELS), "input": random_text(rng),
             "output": "[]", "dataset": "toy", "task": "ner"} for i in range(n)]


def assert_valid(rec: dict, text: str) -> None:
    entities, status = parse_output(text, LABELS)
    assert status == "ok", text
    for label, name in entities:
        assert label in LABELS and name in rec["input"], (name, rec["input"])



# ---- pure functions ----------------------------------------------------------------------------------------------

def test_doctests():
    import doctest

    for module in (constrained_module, generation_module):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


def test_mention_candidates_cover_every_gold_mention_of_the_asset():
    for rec in read_iob(ASSETS / "tiny_ncbi.tsv").records:
        names = set(mention_candidates(rec.text))
        assert {s.surface(rec.text) for s in rec.spans} <= names
        assert all(name in rec.text and name == name.strip() for name in names)


def test_mention_candidates_length_limit():
    assert mention_candidates("a b c d", max_pieces=1) == ["a", "b", "c", "d"]
    assert "a b c d" in mention_candidates("a b c d", max_pieces=4)
    assert "a b c d" not in mention_candidates("a b c d", max_pieces=3)
    assert mention_candidates("") == []


@pytest.mark.parametrize("content", ['a "q" b', "back\\slash", "tab\tnew\nline", "ü β – \u2028", "\x00\x1f"])
def test_lark_literal_is_the_json_escaped_content(content):
    escaped = json.loads(lark_literal(content))  # the text the grammar matches
    assert json.loads(f'"{escaped}"') == content


def test_close_truncated():
    full = '[{"entity": "Disease", "name": "x"}]'
    assert close_truncated(full) == full
    assert close_truncated("") == "[]" and close_truncated("[") == "[]"
    assert close_truncated('[{"entity": "Disease", "name": "x"}, {') == full
    assert close_truncated('[{"entity": "Disease", "name": "x"}, {"entity": "Disease", "name": "y\\"}') == full


def test_untokenizable_characters_are_never_in_names(tokenizer):
    text = "x \U00040000y z"
    skip = untokenizable(tokenizer, text)
    assert skip == {"\U00040000"}
    assert mention_candidates(text, skip=skip) == ["x", "y", "y z", "z"]


def test_instruction_labels():
    assert instruction_labels(prompts.instruction("ner", ["Gene"])) == ["Gene"]
    assert instruction_labels("Find the diseases.") is None


def test_prediction_row_spans_come_from_generated_names_only():
    rec = {"id": "s", "input": "asthma and cancer", "spans": [[0, 6, "Disease"], [11, 17, "Disease"]]}
    gen = generation_module.Generated('[{"entity": "Disease", "name": "cancer"}, {"entity": "Disease", '
                                      '"name": "flu"}]', 20, "stop")
    row = prediction_row(rec, gen, ["Disease"])
    assert row["spans"] == [[11, 17, "Disease"]] and row["unplaced"] == 1 and row["status"] == "ok"
    bad = prediction_row(rec, generation_module.Generated("Disease: cancer", 5, "stop"), ["Disease"])
    assert bad["spans"] == [] and bad["status"] == "parse_error"


def test_adapter_mismatch_on_embeddings_and_full_parameters():
    import torch

    model = torch.nn.Module()
    model.emb = torch.nn.Embedding(10, 4)
    model.head = torch.nn.Linear(4, 10)
    ok = {"base_model.model.emb.lora_embedding_A": [2, 10], "base_model.model.emb.lora_embedding_B": [4, 2],
          "base_model.model.head.weight": [10, 4]}
    assert adapter_mismatch(ok, model) is None
    assert "num_embeddings 12" in adapter_mismatch({"base_model.model.emb.lora_embedding_A": [2, 12]}, model)
    assert "shape [12, 4]" in adapter_mismatch({"base_model.model.head.weight": [12, 4]}, model)


def test_missing_llguidance_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "llguidance", None)
    with pytest.raises(ImportError, match=r"bioselect\[constrained\]"):
        require_llguidance()


# ---- grammar against the real tokenizer ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    if SMOL is None:
        pytest.skip("SmolLM2 tokenizer not found under ~/.cache/offline-models/smollm2-135m (run `make models`)")
    return load_tokenizer(str(SMOL))


@pytest.fixture(scope="module")
def ll_tok(tokenizer):
    pytest.importorskip("llguidance", reason="llguidance is not installed: pip install 'bioselect[constrained]'")
    return constrained_module.ll_tokenizer(tokenizer, len(tokenizer), [tokenizer.eos_token_id])


def matcher(ll_tok, grammar: str):
    import llguidance

    m = llguidance.LLMatcher(ll_tok, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
    assert not m.is_error(), m.get_error()
    return m


def accepts(ll_tok, tokenizer, grammar: str, answer: str) -> bool:
    m = matcher(ll_tok, grammar)
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    return m.try_consume_tokens(ids) == len(ids) and m.is_accepting()


def test_grammar_accepts_every_gold_answer_and_nothing_off_format(tokenizer, ll_tok):
    corpus = read_iob(ASSETS / "tiny_ncbi.tsv")
    for row in convert_corpus(corpus, "ner"):
        grammar = ner_grammar(row["input"], ["Disease"])
        assert accepts(ll_tok, tokenizer, grammar, row["output"]), row["output"]
    grammar = ner_grammar("BRCA1 mutations cause breast cancer .", ["Disease"])
    assert accepts(ll_tok, tokenizer, grammar, '[{"entity": "Disease", "name": "breast cancer"}]')
    for wrong in ('[{"entity": "Gene", "name": "BRCA1"}]',  # type outside the label set
                  '[{"entity": "Disease", "name": "ovarian cancer"}]',  # not in the input
                  '[{"entity": "Disease", "name": "reast cancer"}]',  # not at a piece boundary
                  '[{"entity":"Disease","name":"cancer"}]',  # not the training format's separators
                  '[{"name": "cancer", "entity": "Disease"}]',
                  '[{"entity": "Disease", "name": "cancer"},]',
                  '[{"entity": "Disease", "name": ""}]'):
        assert not accepts(ll_tok, tokenizer, grammar, wrong), wrong


@settings(max_examples=40, deadline=None)
@given(text=st.text(min_size=0, max_size=40), seed=st.integers(0, 2**32 - 1))
def test_any_path_through_the_masks_is_a_valid_answer(tokenizer, ll_tok, text, seed):
    """A walk that picks uniformly among allowed tokens (the worst model there is) ends in a valid answer whose names
    are substrings of the input, when it stops by itself or when it is cut and closed."""
    import numpy as np

    m = matcher(ll_tok, ner_grammar(text, LABELS, skip=untokenizable(tokenizer, text)))
    rng = np.random.default_rng(seed)
    ids: list[int] = []
    for _ in range(60):
        if m.is_stopped():
            break
        bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8), bitorder="little")
        allowed = np.flatnonzero(bits[:len(tokenizer)])
        assert len(allowed) > 0
        token = int(rng.choice(allowed))
        assert m.consume_token(token)
        ids.append(token)
    answer = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    entities, status = parse_output(close_truncated(answer), LABELS)
    assert status == "ok", answer
    assert all(name in text for _, name in entities)


# ---- generation with tiny random models ----------------------------------------------------------------------------

def tiny_llama(tokenizer, seed: int = 0, hidden: int = 32):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                         intermediate_size=64, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(tokenizer)


def run_generate(model, tokenizer, recs, constrained: bool, batch_size: int, max_new_tokens: int = 40):
    grammars = answer_grammars(tokenizer, [r["input"] for r in recs], [LABELS] * len(recs)) if constrained else None
    prompts_ = [render_prompt(tokenizer, r) for r in recs]
    return generate(model, tokenizer, prompts_, grammars, batch_size=batch_size, max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_model_constrained_answers_are_always_valid(tokenizer, ll_tok, seed):
    model = tiny_llama(tokenizer, seed=seed)
    recs = records(16, seed=seed)
    out = run_generate(model, tokenizer, recs, constrained=True, batch_size=8, max_new_tokens=48)
    for rec, gen in zip(recs, out, strict=True):
        assert_valid(rec, gen.text)
        row = prediction_row(rec, gen, LABELS)
        assert all(rec["input"][s:e] for s, e, _ in row["spans"])
        assert gen.finish in ("stop", "length") and 0 < gen.n_new_tokens <= 48


def test_answers_cut_by_the_token_budget_are_closed(tokenizer, ll_tok, tiny):
    recs = records(8, seed=5)
    out = run_generate(tiny, tokenizer, recs, constrained=True, batch_size=8, max_new_tokens=6)
    for rec, gen in zip(recs, out, strict=True):
        assert_valid(rec, gen.text)
        assert gen.text == "[]" or gen.finish == "stop"
    assert any(g.finish == "length" for g in out)


def test_batched_greedy_equals_one_at_a_time(tokenizer, ll_tok, tiny):
    recs = records(10, seed=7)
    for constrained in (True, False):
        batched = run_generate(tiny, tokenizer, recs, constrained, batch_size=4, max_new_tokens=24)
        single = run_generate(tiny, tokenizer, recs, constrained, batch_size=1, max_new_tokens=24)
        assert [g.text for g in batched] == [g.text for g in single]
        assert [g.n_new_tokens for g in batched] == [g.n_new_tokens for g in single]


def test_stats_count_tokens_and_constraint_time(tokenizer, ll_tok, tiny):
    recs = records(4, seed=3)
    stats = GenerationStats()
    grammars = answer_grammars(tokenizer, [r["input"] for r in recs], [LABELS] * len(recs))
    out = generate(tiny, tokenizer, [render_prompt(tokenizer, r) for r in recs], grammars, 4, 16, stats)
    assert stats.new_tokens == sum(g.n_new_tokens for g in out) and stats.steps <= 16
    assert 0 < stats.constraint_seconds < stats.seconds and stats.tokens_per_second > 0


# ---- the command ---------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tokenizer, tiny) -> Path:
    folder = tmp_path_factory.mktemp("tiny-llama")
    tiny.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def adapters(tmp_path_factory, tokenizer, model_dir) -> dict[str, Path]:
    """A LoRA adapter for the tiny model, one for a wider model recorded under its real base folder, and one for a
    wider model whose recorded base cannot be found (only its weights tell it apart)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    root = tmp_path_factory.mktemp("adapters")
    out = {}
    for name, base, hidden in (("fits", model_dir, 32), ("other", None, 48), ("other_unknown_base", None, 48)):
        if base is None:
            base = root / f"base-{name}"
            tiny_llama(tokenizer, hidden=hidden).save_pretrained(base)
        lm = AutoModelForCausalLM.from_pretrained(base)
        peft_model = get_peft_model(lm, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
        peft_model.save_pretrained(root / name)
        if name == "other_unknown_base":
            cfg_path = root / name / "adapter_config.json"
            cfg = json.loads(cfg_path.read_text())
            cfg["base_model_name_or_path"] = "some-org/some-model"
            cfg_path.write_text(json.dumps(cfg))
        out[name] = root / name
    return out


@pytest.fixture
def input_file(tmp_path) -> Path:
    rows = convert_corpus(read_iob(ASSETS / "tiny_ncbi.tsv"), "ner")
    path = tmp_path / "in.jsonl"
    write_jsonl(path, rows)
    return path


def run_cli(args, capsys) -> tuple[int, str]:
    rc = main([str(a) for a in args])
    return rc, capsys.readouterr().err


def test_cli_constrained_writes_valid_predictions_in_input_order(tmp_path, capsys, model_dir, input_file, ll_tok):
    out = tmp_path / "pred" / "pred.jsonl"
    rc, _ = run_cli(["--model", model_dir, "--input", input_file, "--output", out, "--batch-size", "2",
                     "--max-new-tokens", "24"], capsys)
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    inputs = [json.loads(line) for line in input_file.read_text().splitlines()]
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]
    for row, rec in zip(rows, inputs, strict=True):
        assert row["status"] == "ok" and set(row) >= {"id", "output", "spans", "n_new_tokens", "finish"}
        entities, _ = parse_output(row["output"], ["Disease"])
        assert all(name in rec["input"] for _, name in entities)
        assert len(row["spans"]) + row["unplaced"] == len(entities)
    manifest = json.loads((tmp_path / "pred" / "pred.jsonl.manifest.json").read_text())
    assert manifest["mode"] == "constrained" and manifest["counts"]["ok"] == len(rows)
    assert manifest["counts"]["parse_error"] == manifest["counts"]["schema_error"] == 0
    assert manifest["batch_size"] == 2 and manifest["max_new_tokens"] == 24 and manifest["labels"] == ["Disease"]
    assert str(input_file) in manifest["inputs"]
    # the scorer reads the predictions as they are
    from curation.evaluate import main as evaluate

    assert evaluate(["--gold", str(ASSETS / "tiny_ncbi.tsv"), "--pred", str(out), "--output",
                     str(tmp_path / "eval.json"), "--bootstrap", "0"]) == 0


def test_repetition_penalty_reaches_decoding_and_keeps_answers_valid(tmp_path, capsys, model_dir, input_file, ll_tok,
                                                                     monkeypatch):
    """The penalty reaches transformers' generate (whose processor comes before the grammar's mask: every answer
    still parses and names input words only), changes the penalised scores, and is recorded; 1 is the default."""
    from transformers.generation.utils import GenerationMixin

    seen, original = [], GenerationMixin.generate

    def spy(self, *args, **kwargs):
        seen.append(kwargs["generation_config"].repetition_penalty)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(GenerationMixin, "generate", spy)
    outs = {}
    for penalty in (1.0, 1e6):
        outs[penalty] = tmp_path / f"pred-{penalty}.jsonl"
        rc, _ = run_cli(["--model", model_dir, "--input", input_file, "--output", outs[penalty], "--batch-size", "2",
                         "--max-new-tokens", "24", "--repetition-penalty", str(penalty)], capsys)
        assert rc == 0
    assert set(seen) == {1.0, 1e6}
    rows = {p: [json.loads(line) for line in out.read_text().splitlines()] for p, out in outs.items()}
    inputs = [json.loads(line) for line in input_file.read_text().splitlines()]
    for row, rec in zip(rows[1e6], inputs, strict=True):
        assert row["status"] == "ok", row
        entities, _ = parse_output(row["output"], ["Disease"])
        assert all(name in rec["input"] for _, name in entities)
    # a huge penalty makes every token already in the prompt or answer the least likely: the answers change
    assert [r["output"] for r in rows[1.0]] != [r["output"] for r in rows[1e6]]
    manifest = json.loads(Path(f"{outs[1e6]}.manifest.json").read_text())
    assert manifest["config"]["repetition_penalty"] == 1e6


def test_cli_unconstrained_reports_failures(tmp_path, capsys, model_dir, input_file):
    out = tmp_path / "pred.jsonl"
    rc, _ = run_cli(["--model", model_dir, "--input", input_file, "--output", out, "--unconstrained",
                     "--max-new-tokens", "12"], capsys)
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(r["status"] in ("parse_error", "schema_error") and r["spans"] == [] for r in rows)
    counts = json.loads(Path(f"{out}.manifest.json").read_text())["counts"]
    assert counts["parse_error"] + counts["schema_error"] == len(rows) and counts["ok"] == 0


def test_generate_file_is_the_library_call_of_the_command(tmp_path, capsys, model_dir, input_file):
    out = tmp_path / "pred.jsonl"
    cfg = GenerateConfig(model=str(model_dir), input=str(input_file), output=str(out), unconstrained=True,
                         max_new_tokens=6, batch_size=3)
    manifest = generate_file(cfg)
    assert capsys.readouterr().out == ""  # printing is the command's business
    assert manifest == json.loads(Path(f"{out}.manifest.json").read_text())
    n_records = len(input_file.read_text().splitlines())
    assert manifest["counts"]["records"] == len(out.read_text().splitlines()) == n_records
    assert manifest["mode"] == "unconstrained" and manifest["batch_size"] == 3
    # the command and the function write the same predictions
    rc, _ = run_cli(["--model", model_dir, "--input", input_file, "--output", tmp_path / "cli.jsonl",
                     "--unconstrained", "--max-new-tokens", "6", "--batch-size", "3"], capsys)
    assert rc == 0 and (tmp_path / "cli.jsonl").read_text() == out.read_text()
    # a config built in Python gets the command's refusal to write over an input
    with pytest.raises(InputError, match="is an input of this command"):
        generate_file(GenerateConfig(model=str(model_dir), input=str(input_file), output=str(input_file),
                                     unconstrained=True))


def test_cli_with_adapter(tmp_path, capsys, model_dir, input_file, adapters, ll_tok):
    out = tmp_path / "pred.jsonl"
    rc, err = run_cli(["--model", model_dir, "--adapter", adapters["fits"], "--input", input_file, "--output", out,
                       "--max-new-tokens", "8"], capsys)
    assert rc == 0, err
    assert json.loads(Path(f"{out}.manifest.json").read_text())["adapter"] == str(adapters["fits"])


def no_template_dir(tmp_path: Path, model_dir: Path) -> Path:
    folder = tmp_path / "no-template"
    folder.mkdir()
    for f in model_dir.iterdir():
        if f.name != "chat_template.jinja":
            (folder / f.name).write_bytes(f.read_bytes())
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


def no_weights_dir(tmp_path: Path, model_dir: Path) -> Path:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    for f in model_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            (folder / f.name).write_bytes(f.read_bytes())
    return folder


@pytest.mark.parametrize("case", ["no_chat_template", "no_weights", "adapter_other_base", "adapter_other_weights",
                                  "not_an_adapter", "bad_jsonl", "missing_field", "duplicate_id", "unknown_labels",
                                  "both_modes", "no_such_model"])
def test_cli_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path, capsys, model_dir, input_file, adapters,
                                                                 case):
    model, extra = model_dir, []
    if case == "no_chat_template":
        model = no_template_dir(tmp_path, model_dir)
    elif case == "no_weights":
        model = no_weights_dir(tmp_path, model_dir)
    elif case == "adapter_other_base":
        extra = ["--adapter", adapters["other"]]
    elif case == "adapter_other_weights":
        extra = ["--adapter", adapters["other_unknown_base"]]
    elif case == "not_an_adapter":
        extra = ["--adapter", tmp_path]
    elif case == "bad_jsonl":
        input_file.write_text(input_file.read_text() + "{not json\n")
    elif case == "missing_field":
        input_file.write_text(json.dumps({"id": "x", "instruction": "Find."}) + "\n")
    elif case == "duplicate_id":
        first = input_file.read_text().splitlines()[0]
        input_file.write_text(f"{first}\n{first}\n")
    elif case == "unknown_labels":
        input_file.write_text(json.dumps({"id": "x", "instruction": "Find diseases.", "input": "flu"}) + "\n")
    elif case == "both_modes":
        extra = ["--constrained", "--unconstrained"]
    elif case == "no_such_model":
        model = tmp_path / "nowhere"
    out = tmp_path / "out" / "pred.jsonl"
    rc, err = run_cli(["--model", model, "--input", input_file, "--output", out, *extra], capsys)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert not (tmp_path / "out").exists()
    expected = {"no_chat_template": "chat template", "no_weights": "no weights", "adapter_other_base": "hidden_size",
                "adapter_other_weights": "does not fit", "not_an_adapter": "adapter_config.json",
                "bad_jsonl": "invalid JSON", "missing_field": "'input'", "duplicate_id": "duplicate id",
                "unknown_labels": "--labels", "both_modes": "not both", "no_such_model": "no such model"}[case]
    assert expected in lines[0]


def test_labels_option_overrides_the_instruction(tmp_path, capsys, model_dir, ll_tok):
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps({"id": "x", "instruction": "Find diseases.", "input": "flu and cold"}) + "\n")
    out = tmp_path / "pred.jsonl"
    rc, err = run_cli(["--model", model_dir, "--input", path, "--output", out, "--labels", "Disease",
                       "--max-new-tokens", "16"], capsys)
    assert rc == 0, err
    row = json.loads(out.read_text())
    assert row["status"] == "ok" and json.loads(Path(f"{out}.manifest.json").read_text())["labels"] == ["Disease"]


@pytest.mark.parametrize("text", ["\x7f", "a\x7fb", "x\x85y"])
def test_control_characters_compile_and_match(tokenizer, ll_tok, text):
    m = matcher(ll_tok, ner_grammar(text, LABELS, skip=untokenizable(tokenizer, text)))
    assert not m.is_error(), m.get_error()
