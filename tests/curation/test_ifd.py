"""IFD scoring on a tiny random Llama with a tokenizer trained here: exactness of the batched scorer against a plain
per-sample computation, bad input, resuming after kill -9, a 2-process accelerate run, and ``curate run``."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import prompts
from curation import ifd_scoring as S
from curation.ifd import IFDConfig, run_settings
from curation.ifd import main as ifd_main
from curation.io import InputError, append_lines, drop_incomplete_tail
from curation.pipeline import RunConfig
from curation.pipeline import main as run_main
from tests.helpers import one_torch_thread  # noqa: F401 (autouse: the module's tests run on one torch thread)

ROOT = Path(__file__).resolve().parents[2]
INSTRUCTION = prompts.instruction("ner", ["Disease"])
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
                 "{% if add_generation_prompt %}<s>assistant\n{% endif %}")
DISEASES = ["breast cancer", "cystic fibrosis", "colon cancer", "gout", "ataxia telangiectasia", "Duchenne dystrophy"]
GENES = ["BRCA1", "APC", "ATM", "CFTR", "DMD"]


def make_tokenizer(vocab_size: int = 400):
    """A byte-level BPE that prepends <s> (so the unconditional pass starts at a BOS), with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [INSTRUCTION, "BRCA1 causes breast cancer and ovarian cancer.", *DISEASES, "a\n\n\nb",
              '[{"entity": "Disease", "name": "colon cancer"}]', "[]"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_records(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        found = rng.sample(DISEASES, rng.randint(0, 2))
        text = (f"{rng.choice(GENES)} {'mutations' if i % 3 else 'variants'} are linked to "
                + (" and ".join(found) if found else "nothing") + "." * (1 + i % 4))
        rows.append({"id": f"r{i}", "instruction": INSTRUCTION, "input": text, "dataset": "toy", "task": "ner",
                     "output": json.dumps([{"entity": "Disease", "name": d} for d in found])})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path



# Byte-identity across processes needs the same thread count on both sides, whatever the user's shell exported: the
# in-process side has one thread (the fixture above), and a subprocess gets this environment (torchrun keeps an
# exported OMP_NUM_THREADS; a run with 2 threads rounds differently from one with 1).
ONE_THREAD = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")} | {
    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = make_tokenizer()
    tok.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def loaded(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny), AutoModelForCausalLM.from_pretrained(tiny).eval()


def reference(model, tok, rec: dict, prompt_format: str = "plain") -> tuple[float, float]:
    """The per-sample computation, written plainly: one full forward each, cross-entropy over the response."""
    if prompt_format == "plain":
        text = rec["instruction"] + "\n" + rec["input"] + "\n" if rec["input"] else rec["instruction"] + "\n"
        prompt = tok(text)["input_ids"]
    else:
        content = rec["instruction"] + "\n" + rec["input"] if rec["input"] else rec["instruction"]
        prompt = tok.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=True, return_dict=True)["input_ids"]
    response = tok(rec["output"], add_special_tokens=False)["input_ids"]
    ids = torch.tensor(prompt + response)
    with torch.no_grad():
        logits = model(ids[None]).logits[0]
        loss_cond = F.cross_entropy(logits[len(prompt) - 1 : -1], ids[len(prompt) :]).item()
        alone = torch.tensor(tok(rec["output"])["input_ids"])
        loss_uncond = F.cross_entropy(model(alone[None]).logits[0, :-1], alone[1:]).item()
    return loss_cond, loss_uncond


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# --- pure parts ----------------------------------------------------------------------------------------------------


def test_ifd_variants_by_hand():
    assert S.ifd_from_losses(2.0, 3.0) == pytest.approx(math.exp(2.0) / math.exp(3.0), rel=1e-12)
    assert S.ifd_from_losses(2.0, 3.0, "loss_ratio") == pytest.approx(2 / 3)
    assert S.ifd_from_losses(800.0, 799.0) == pytest.approx(math.e)  # no overflow
    with pytest.raises(ValueError):
        S.ifd_from_losses(1.0, 1.0, "ratio")


def test_token_ids_are_concatenated(loaded):
    tok, _ = loaded
    rec = make_records(3)[1]
    plain, chat = S.encode_records(tok, [rec], "plain")[0], S.encode_records(tok, [rec], "chat")[0]
    assert plain.prompt_ids == tuple(tok(rec["instruction"] + "\n" + rec["input"] + "\n")["input_ids"])
    assert plain.response_ids == tuple(tok(rec["output"], add_special_tokens=False)["input_ids"])
    assert plain.uncond_ids == (tok.bos_token_id, *plain.response_ids)
    assert chat.response_ids == plain.response_ids and chat.prompt_ids[-3:] != plain.prompt_ids[-3:]
    no_input = S.encode_records(tok, [rec | {"input": ""}])[0]
    assert no_input.prompt_ids == tuple(tok(rec["instruction"] + "\n")["input_ids"])


def test_plan_covers_every_record_once_and_prefixes_are_true_prefixes(loaded):
    tok, _ = loaded
    rows = make_records(50) + [{"id": "other", "instruction": "List genes.", "input": "APC", "output": "[]"}]
    examples = S.encode_records(tok, rows)
    chunks = S.plan_chunks(examples, batch_size=4, max_batch_tokens=200, chunk_size=16)
    assert sorted(i for c in chunks for i in c.indices) == list(range(len(examples)))
    for c in chunks:
        for kind in ("cond", "uncond"):
            assert sorted(i for p in c.passes if p.kind == kind for b in p.batches for i in b) == sorted(c.indices)
        for p in c.passes:
            seqs = [examples[i].prompt_ids if p.kind == "cond" else examples[i].uncond_ids for b in p.batches
                    for i in b]
            assert all(seq[: len(p.prefix)] == p.prefix for seq in seqs)
    cond = [p.prefix for c in chunks for p in c.passes if p.kind == "cond"]
    assert len(cond[0]) > 50 and cond[-1] == ()  # the instruction is shared; a group of one reuses nothing
    opening = tok('[{"entity": "Disease", "name": "', add_special_tokens=False)["input_ids"]
    uncond = [p.prefix for p in chunks[0].passes if p.kind == "uncond"]
    assert len(uncond[0]) >= len(opening) - 1  # the responses' JSON opening
    assert S.plan_chunks(examples, 4, 200, 16) == chunks


@pytest.mark.parametrize("prompt_format", ["plain", "chat"])
@pytest.mark.parametrize("batch_size,reuse_prefix", [(1, False), (3, True), (16, True)])
def test_batched_equals_per_sample(loaded, prompt_format, batch_size, reuse_prefix):
    tok, model = loaded
    rows = make_records(12)
    # the newline after the instruction merges with an input that starts with newlines: "\n\n\nATM" is "\n\n",
    # "\n", "ATM", so the tokens of instruction + "\n" are not a prefix of this prompt
    rows.append(rows[0] | {"id": "merge", "input": "\n\nATM is linked to gout."})
    # two records with the same prompt: the cached prefix is the whole prompt, its last position predicts the answer
    same = {"instruction": "List diseases.", "input": "APC causes gout."}
    rows += [same | {"id": "same1", "output": '[{"entity": "Disease", "name": "gout"}]'},
             same | {"id": "same2", "output": "[]"}]
    examples = S.encode_records(tok, rows, prompt_format)
    if prompt_format == "plain":
        head = tok(INSTRUCTION + "\n")["input_ids"]
        assert list(examples[-1].prompt_ids[: len(head)]) != head and list(examples[0].prompt_ids[: len(head)]) == head
    scorer = S.IFDScorer(model, pad_id=tok.pad_token_id)
    got = {}
    with torch.inference_mode():
        for chunk in S.plan_chunks(examples, batch_size, 10_000, 8, reuse_prefix):
            got.update(scorer.score_chunk(examples, chunk))
    for i, rec in enumerate(rows):
        want_cond, want_uncond = reference(model, tok, rec, prompt_format)
        assert got[i][0] == pytest.approx(want_cond, abs=1e-5)
        assert got[i][1] == pytest.approx(want_uncond, abs=1e-5)
        assert S.ifd_from_losses(*got[i]) == pytest.approx(math.exp(want_cond) / math.exp(want_uncond), abs=1e-4)


# --- content tokens ------------------------------------------------------------------------------------------------


def task_records() -> tuple[list[dict], dict[str, list[str]]]:
    """Records of every task the converter writes (ner, re, ee, tc), and each record's content strings, by hand."""
    from curation.convert import convert_corpus
    from curation.records import Corpus, Event, Record, Relation, Span

    rows, content = [], {}
    for rec in [r for r in make_records(12, seed=4) if r["output"] != "[]"]:
        rows.append(rec)
        content[rec["id"]] = [e["name"] for e in json.loads(rec["output"])]
    text = "BRCA1 binds APC and ATM in gout."  # BRCA1 0-5, APC 12-15, ATM 20-23
    genes = [Span(0, 5, "Gene"), Span(12, 15, "Gene"), Span(20, 23, "Gene")]
    re_corpus = Corpus([Record("re1", text, genes, relations=[Relation(0, 1, "Binds"), Relation(0, 2, "Binds")]),
                        Record("re2", text, genes, relations=[Relation(2, 1, "Binds")])], dataset="toy-re")
    content |= {"re1": ["BRCA1", "APC", "BRCA1", "ATM"], "re2": ["ATM", "APC"]}
    text = "ATM expression activates CFTR and DMD."  # ATM 0-3, expression 4-14, activates 15-24, CFTR 25-29, DMD 34-37
    spans = [Span(0, 3, "Gene"), Span(4, 14, "Trigger"), Span(15, 24, "Trigger"), Span(25, 29, "Gene"),
             Span(34, 37, "Gene")]
    events = [Event("Gene_expression", 1, (("Theme", 0),)),
              Event("Positive_regulation", 2, (("Theme", 3), ("Theme", 4), ("Cause", 0)))]
    ee_corpus = Corpus([Record("ee1", text, spans, events=events)], dataset="toy-ee")
    content["ee1"] = ["expression", "ATM", "activates", "ATM", "CFTR", "DMD"]
    tc_corpus = Corpus([Record("tc1", "Patients should take APC inhibitors.", labels=["advice"]),
                        Record("tc2", "APC is linked to gout.", labels=["no advice"])], dataset="HealthAdvice")
    content |= {"tc1": ["advice"], "tc2": ["no advice"]}
    for corpus, task in ((re_corpus, "re"), (ee_corpus, "ee"), (tc_corpus, "tc")):
        rows += convert_corpus(corpus, task=task)
    return rows, content


def reference_content(model, tok, rec: dict, strings: list[str]) -> tuple[float, float]:
    """The per-sample content losses, written plainly: the content characters are every quoted occurrence of the
    record's content strings in its output (the test data has no type or key equal to a mention), a token is content
    when its offsets overlap them, and the losses are the mean cross-entropy of those tokens in one full forward."""
    out, spans = rec["output"], []
    for value in set(strings):
        quoted, k = json.dumps(value), rec["output"].find(json.dumps(value))
        while k >= 0:
            spans.append((k + 1, k + len(quoted) - 1))
            k = out.find(quoted, k + 1)

    def mask(offsets) -> torch.Tensor:
        return torch.tensor([b > a and any(a < e and b > s for s, e in spans) for a, b in offsets])

    text = rec["instruction"] + "\n" + rec["input"] + "\n"
    prompt = tok(text)["input_ids"]
    response = tok(out, add_special_tokens=False, return_offsets_mapping=True)
    alone = tok(out, return_offsets_mapping=True)
    ids = torch.tensor(prompt + response["input_ids"])
    alone_ids = torch.tensor(alone["input_ids"])
    with torch.no_grad():
        nll = F.cross_entropy(model(ids[None]).logits[0, len(prompt) - 1 : -1], ids[len(prompt) :], reduction="none")
        nll_alone = F.cross_entropy(model(alone_ids[None]).logits[0, :-1], alone_ids[1:], reduction="none")
    keep, keep_alone = mask(response["offset_mapping"]), mask(alone["offset_mapping"])[1:]
    assert 0 < keep.sum() < len(keep) and keep_alone.sum() == keep.sum()
    return nll[keep].mean().item(), nll_alone[keep_alone].mean().item()


def test_content_spans_of_every_task():
    rows, content = task_records()
    for row in rows:
        found = [row["output"][a:b] for a, b in S.content_spans(row["output"], row["task"])]
        assert found == content[row["id"]], row["id"]
    # escapes stay inside the span as written; types, relation labels, roles and keys never count
    out = json.dumps([{"entity": "Disease", "name": 'the "gout" \\ form'}])
    assert [out[a:b] for a, b in S.content_spans(out, "ner")] == ['the \\"gout\\" \\\\ form']
    assert S.content_spans('[{"entity": "Disease", "name": ""}]', "ner") == []


@pytest.mark.parametrize("output,task,reason", [
    ("[]", "ner", "[] names nothing"),
    ('[{"entity": "Disease", "name": "gout"}', "ner", "output is not JSON"),
    ('{"label": "advice"}', "ner", "the output has no content string (ner: the mention"),
    ('[{"entity": "Disease", "name": ""}]', "ner", "the output has no content string"),
    ('{"label": "advice"}', None, "no 'task' field"),
    ('{"label": "advice"}', "qa", "task 'qa' has no content rule"),
])
def test_content_problems(loaded, output, task, reason):
    tok, _ = loaded
    row = {"id": "x", "instruction": "Classify.", "input": "APC.", "output": output} | ({"task": task} if task else {})
    ex = S.encode_records(tok, [row], tokens="content")[0]
    assert ex.problem.startswith(reason) and ex.response_content == () and ex.tokens == "content"
    with pytest.raises(ValueError, match="matches no response token"):  # offsets that do not cover the text
        S.content_tokens('{"label": "no"}', "tc", [(0, 10)], [(0, 0), (0, 10)])
    assert S.encode_records(tok, [row])[0].problem is None  # the answer scope scores every token of any output


@pytest.mark.parametrize("batch_size,reuse_prefix", [(1, False), (3, True), (16, True)])
def test_content_scope_equals_per_sample(loaded, batch_size, reuse_prefix):
    tok, model = loaded
    rows, content = task_records()
    examples = S.encode_records(tok, rows, tokens="content")
    answer = S.encode_records(tok, rows)
    assert [ex.problem for ex in examples] == [None] * len(rows)
    assert [ex.response_ids for ex in examples] == [ex.response_ids for ex in answer]
    plan = S.plan_chunks(examples, batch_size, 10_000, 8, reuse_prefix)
    assert plan == S.plan_chunks(answer, batch_size, 10_000, 8, reuse_prefix)  # the scope changes no batch
    scorer = S.IFDScorer(model, pad_id=tok.pad_token_id)
    got, whole = {}, {}
    with torch.inference_mode():
        for chunk in plan:
            got.update(scorer.score_chunk(examples, chunk))
            whole.update(scorer.score_chunk(answer, chunk))
    for i, rec in enumerate(rows):
        want_cond, want_uncond = reference_content(model, tok, rec, content[rec["id"]])
        assert got[i][0] == pytest.approx(want_cond, abs=1e-5), rec["id"]
        assert got[i][1] == pytest.approx(want_uncond, abs=1e-5), rec["id"]
        assert whole[i][0] == pytest.approx(reference(model, tok, rec)[0], abs=1e-5)
        assert abs(got[i][0] - whole[i][0]) > 1e-3  # the scope does change the value
    assert {r["task"] for r in rows} == {"ner", "re", "ee", "tc"}


def test_masked_positions_inside_and_right_after_a_cached_prefix(loaded):
    """Content tokens inside a shared response prefix (two identical answers) are summed from the prefix's NLLs; the
    first mention of NER answers is the token right after their shared opening, predicted by its last position."""
    tok, model = loaded
    rows, content = task_records()
    twice = [r | {"id": f"{r['id']}-{k}", "input": r["input"] + "!" * k} for r in rows if r["id"] == "tc1"
             for k in range(2)]
    ner = [r for r in rows if r["task"] == "ner"]
    examples = S.encode_records(tok, twice + ner, tokens="content")
    chunks = S.plan_chunks(examples, 4, 10_000, 8)
    uncond = [(p.prefix, [i for b in p.batches for i in b]) for c in chunks for p in c.passes if p.kind == "uncond"]
    assert (examples[0].uncond_ids, [0, 1]) in uncond and examples[0].uncond_ids == examples[1].uncond_ids
    assert any(prefix and len(prefix) == min(examples[i].uncond_content) for prefix, members in uncond
               for i in members if i >= 2)
    with torch.inference_mode():
        scorer = S.IFDScorer(model, pad_id=tok.pad_token_id)
        got = {i: pair for chunk in chunks for i, pair in scorer.score_chunk(examples, chunk).items()}
    for i, rec in enumerate(twice + ner):
        want = reference_content(model, tok, rec, content[rec["id"].split("-")[0]])
        assert got[i] == pytest.approx(want, abs=1e-5)


def test_tokenizer_mismatch_of_a_pair(loaded):
    tok, _ = loaded
    assert S.tokenizer_mismatch(tok, make_tokenizer(), ["BRCA1 causes gout."], chat=True) == []
    other = make_tokenizer(vocab_size=350)
    reasons = S.tokenizer_mismatch(tok, other, ["BRCA1 causes gout."])
    assert reasons and "vocabularies differ" in reasons[0]


def test_partial_files_survive_a_cut_line(tmp_path):
    part = tmp_path / "s.jsonl.partial-0"
    append_lines(part, ['{"id": "a", "ifd": 0.5}', '{"id": "b", "ifd": 0.7}'])
    with open(part, "a") as f:
        f.write('{"id": "c", "if')
    assert list(S.read_done([part])) == ["a", "b"]
    drop_incomplete_tail(part)
    append_lines(part, ['{"id": "c", "ifd": 0.1}'])
    assert list(S.read_done([part])) == ["a", "b", "c"]
    # a finished line the run did not write is refused with its line number, not skipped and scored again
    append_lines(part, ["not json"])
    with pytest.raises(InputError, match=r"partial-0:4: not a score line of curate ifd"):
        S.read_done([part])


# --- the command -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clean_run(tiny, tmp_path_factory) -> tuple[Path, Path]:
    """120 records scored once, in process, in chunks of 8: the reference output of the resume and accelerate tests."""
    folder = tmp_path_factory.mktemp("clean")
    data = write_jsonl(folder / "in.jsonl", make_records(120))
    out = folder / "scores.jsonl"
    assert ifd_main(["--model", str(tiny), "--input", str(data), "--output", str(out), "--chunk-size", "8"]) == 0
    return data, out


def test_command_output_matches_reference(clean_run, loaded):
    tok, model = loaded
    data, out = clean_run
    rows = read_lines(out)
    records = read_lines(data)
    assert [r["id"] for r in rows] == [r["id"] for r in records]
    for row, rec in list(zip(rows, records))[:10]:
        want_cond, want_uncond = reference(model, tok, rec)
        assert row["loss_cond"] == pytest.approx(want_cond, abs=1e-5)
        assert row["ifd"] == pytest.approx(math.exp(want_cond) / math.exp(want_uncond), abs=1e-4)
        assert row["variant"] == "ppl_ratio"
        assert row["n_response_tokens"] == len(tok(rec["output"], add_special_tokens=False)["input_ids"])
    manifest = json.loads(out.with_name("scores.jsonl.manifest.json").read_text())
    assert manifest["variant"] == "ppl_ratio" and manifest["prompt_format"] == "plain"
    assert manifest["counts"]["scored"] == 120 and manifest["skipped"] == []
    assert not list(out.parent.glob("*.partial*"))


def test_loss_ratio_variant(tiny, clean_run, tmp_path):
    data, out = clean_run
    out2 = tmp_path / "lr.jsonl"
    assert ifd_main(["--model", str(tiny), "--input", str(data), "--output", str(out2), "--chunk-size", "8",
                     "--variant", "loss_ratio"]) == 0
    for a, b in zip(read_lines(out), read_lines(out2)):
        assert b["loss_cond"] == a["loss_cond"] and b["ifd"] == pytest.approx(a["loss_cond"] / a["loss_uncond"])


def test_resume_from_partial_files(tiny, clean_run, tmp_path):
    """A killed 2-process run left partial files (one with a cut last line); the rerun completes it exactly."""
    data, clean = clean_run
    lines = clean.read_text().splitlines()
    out = tmp_path / "scores.jsonl"
    (tmp_path / "scores.jsonl.partial-0").write_text("\n".join(lines[:30:2]) + "\n" + lines[40][:25])
    (tmp_path / "scores.jsonl.partial-1").write_text("\n".join(lines[1:30:2]) + "\n")
    args = ["--model", str(tiny), "--input", str(data), "--output", str(out), "--chunk-size", "8"]
    # scores without the settings a run writes before its first score are not of curate ifd: refused, kept
    assert ifd_main(args) == 2
    assert (tmp_path / "scores.jsonl.partial-1").read_text() == "\n".join(lines[1:30:2]) + "\n" and not out.exists()
    cfg = IFDConfig(model=str(tiny), input=str(data), output=str(out), chunk_size=8)
    (tmp_path / "scores.jsonl.partial.json").write_text(json.dumps(run_settings(cfg)))
    assert ifd_main(args) == 0
    assert out.read_bytes() == clean.read_bytes()
    assert not list(tmp_path.glob("*.partial*"))


def test_resume_refuses_other_settings(tiny, clean_run, tmp_path):
    data, clean = clean_run
    out = tmp_path / "scores.jsonl"
    args = ["--model", str(tiny), "--input", str(data), "--output", str(out), "--chunk-size", "8"]
    (tmp_path / "scores.jsonl.partial-0").write_text(clean.read_text().splitlines()[0] + "\n")
    (tmp_path / "scores.jsonl.partial.json").write_text(json.dumps({"model": "another"}))
    assert ifd_main(args) == 2


def _wait_for_lines(path: Path, proc: subprocess.Popen, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if path.exists() and path.read_bytes().count(b"\n") >= 1:
            return path.read_bytes().count(b"\n")
        time.sleep(0.01)
    raise AssertionError(f"no partial lines before the run ended (rc={proc.poll()})")


@pytest.mark.slow
def test_kill_9_then_resume(tiny, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", make_records(600, seed=1))
    out = tmp_path / "scores.jsonl"
    args = [sys.executable, "-m", "curation.ifd", "--model", str(tiny), "--input", str(data), "--output", str(out),
            "--chunk-size", "4", "--batch-size", "2"]
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ONE_THREAD)
    try:
        n = _wait_for_lines(tmp_path / "scores.jsonl.partial-0", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists() and 0 < n < 600
    subprocess.run(args, cwd=ROOT, check=True, capture_output=True, env=ONE_THREAD)
    clean = tmp_path / "clean.jsonl"
    assert ifd_main(["--model", str(tiny), "--input", str(data), "--output", str(clean), "--chunk-size", "4",
                     "--batch-size", "2"]) == 0
    assert out.read_bytes() == clean.read_bytes()
    ids = [r["id"] for r in read_lines(out)]
    assert ids == [f"r{i}" for i in range(600)]


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="compares 2 CPU processes with an in-process CPU run")
def test_two_process_accelerate_run_is_identical(tiny, clean_run, tmp_path):
    data, clean = clean_run
    out = tmp_path / "scores.jsonl"
    # accelerate 1.15 starts several CPU processes only through its torchrun launcher (--multi_gpu); with no GPU the
    # command puts them on the CPU (gloo). `--cpu --num_processes 2` would start a single process.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "curation.ifd",
           "--model", str(tiny), "--input", str(data), "--output", str(out), "--chunk-size", "8"]
    assert torch.get_num_threads() == 1  # the side that made `clean`; ONE_THREAD pins the other
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=ONE_THREAD, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(out.with_name("scores.jsonl.manifest.json").read_text())["num_processes"] == 2
    by_id = lambda p: sorted(p.read_text().splitlines(), key=lambda line: json.loads(line)["id"])  # noqa: E731
    assert by_id(out) == by_id(clean)
    assert out.read_bytes() == clean.read_bytes()  # also in input order


def test_bad_records_are_reported_and_the_rest_scored(tiny, tmp_path, capsys):
    good = make_records(6)
    rows = [good[0], {"id": "no-out", "instruction": INSTRUCTION, "input": "x"}, good[1],
            {"id": "no-instr", "input": "x", "output": "[]"}, good[2] | {"id": "empty", "output": "  "},
            good[3] | {"id": good[0]["id"]}, good[4] | {"id": "long", "input": "BRCA1 " * 300}, good[5]]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "s.jsonl"
    assert ifd_main(["--model", str(tiny), "--input", str(data), "--output", str(out), "--max-length", "400"]) == 0
    err = capsys.readouterr().err
    for rid, reason in [("no-out", "lacks 'output'"), ("no-instr", "lacks 'instruction'"), ("empty", "empty output"),
                        ("r0", "duplicate id"), ("long", "--max-length 400")]:
        assert f"(record {rid})" in err and reason in err
    assert [r["id"] for r in read_lines(out)] == ["r0", "r1", "r5"]
    manifest = json.loads((tmp_path / "s.jsonl.manifest.json").read_text())
    assert [(s["id"], s["line"]) for s in manifest["skipped"]] == [("no-out", 2), ("no-instr", 4), ("empty", 5),
                                                                    ("r0", 6), ("long", 7)]
    assert manifest["counts"] == {"records": 8, "scored": 3, "unusable": 5, "unscorable_content": 0,
                                  "negatives_left_out": 0, "non_finite": 0}


def test_content_scope_command(tiny, loaded, tmp_path, capsys):
    tok, model = loaded
    rows, content = task_records()
    negatives = [r for r in make_records(12, seed=4) if r["output"] == "[]"]
    bad = [rows[0] | {"id": "not-json", "output": rows[0]["output"][:-1]},
           {k: v for k, v in rows[1].items() if k != "task"} | {"id": "no-task"}]
    data = write_jsonl(tmp_path / "in.jsonl", rows + negatives + bad)
    out = tmp_path / "s.jsonl"
    args = ["--model", str(tiny), "--input", str(data), "--output", str(out), "--tokens", "content"]
    assert ifd_main(args) == 0
    captured = capsys.readouterr()
    assert f"{len(negatives)} negatives ([]) have no content tokens; not scored" in captured.err
    assert "(record not-json): output is not JSON" in captured.err
    assert "(record no-task): no 'task' field" in captured.err
    assert "(record r" not in captured.err  # the negatives are one line, not one each
    assert f"{len(negatives) + 2} without content tokens" in captured.out
    lines = read_lines(out)
    assert [r["id"] for r in lines] == [r["id"] for r in rows]
    for line, rec in zip(lines, rows):
        want_cond, want_uncond = reference_content(model, tok, rec, content[rec["id"]])
        assert line["loss_cond"] == pytest.approx(want_cond, abs=1e-5)
        assert line["ifd"] == pytest.approx(math.exp(want_cond - want_uncond), abs=1e-4)
        assert (line["tokens"], line["variant"]) == ("content", "ppl_ratio")
        assert 0 < line["n_content_tokens"] < line["n_response_tokens"]
    manifest = json.loads((tmp_path / "s.jsonl.manifest.json").read_text())
    assert manifest["tokens"] == "content" and manifest["config"]["tokens"] == "content"
    assert manifest["counts"] == {"records": len(rows) + len(negatives) + 2, "scored": len(rows), "unusable": 0,
                                  "unscorable_content": len(negatives) + 2, "negatives_left_out": 0,
                                  "non_finite": 0}
    assert set(manifest["unscorable_content"]) == {r["id"] for r in negatives} | {"not-json", "no-task"}
    assert {s["reason"] for s in manifest["skipped"] if s["id"] in {r["id"] for r in negatives}} == {
        S.NO_CONTENT_NEGATIVE}
    # partial scores of a killed run over the whole answer are not mixed in
    from curation.io import sha256_file

    settings = {"input_sha256": sha256_file(data), "model": str(tiny), "prompt_format": "plain", "max_length": 1024,
                "variant": "ppl_ratio", "tokens": "answer", "dtype": "auto", "positives_only": False,
                "batch_size": 64, "max_batch_tokens": 2048, "chunk_size": 256, "reuse_prefix": True}
    (tmp_path / "s2.jsonl.partial-0").write_text(out.read_text().splitlines()[0] + "\n")
    (tmp_path / "s2.jsonl.partial.json").write_text(json.dumps(settings))
    assert ifd_main([*args[:5], str(tmp_path / "s2.jsonl"), "--tokens", "content"]) == 2
    assert "a killed run with other settings (tokens)" in capsys.readouterr().err


def test_response_cut_by_max_length_is_excluded(tiny, loaded, tmp_path, capsys):
    tok, _ = loaded
    rows = make_records(4)
    long = rows[0] | {"id": "cut", "output": json.dumps([{"entity": "Disease", "name": d} for d in DISEASES * 4])}
    ex = S.encode_records(tok, [long])[0]
    limit = len(ex.prompt_ids) + len(ex.response_ids) - 1  # the prompt fits, the response would lose a token
    data = write_jsonl(tmp_path / "in.jsonl", [*rows, long])
    out = tmp_path / "s.jsonl"
    args = ["--model", str(tiny), "--input", str(data), "--output", str(out)]
    assert ifd_main([*args, "--max-length", str(limit)]) == 0
    assert "(record cut)" in capsys.readouterr().err
    assert "cut" not in {r["id"] for r in read_lines(out)}
    skipped = json.loads((tmp_path / "s.jsonl.manifest.json").read_text())["skipped"]
    assert skipped[0]["id"] == "cut" and "would be cut" in skipped[0]["reason"]


@pytest.mark.parametrize("content", ["", "not json\n", '{"id": "a", "input": "x"}\n'])
def test_unusable_file_exits_2(tiny, tmp_path, capsys, content):
    data = tmp_path / "in.jsonl"
    data.write_text(content)
    assert ifd_main(["--model", str(tiny), "--input", str(data), "--output", str(tmp_path / "s.jsonl")]) == 2
    assert "error: " in capsys.readouterr().err
    assert ifd_main(["--model", str(tiny), "--input", str(tmp_path / "nope.jsonl"), "--output", "x.jsonl"]) == 2


def test_bad_options_exit_2(tiny, tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", make_records(2))
    assert ifd_main(["--model", str(tiny), "--input", str(data), "--output", "s.jsonl", "--batch-size", "0"]) == 2
    assert ifd_main(["--model", str(tiny), "--input", str(data), "--output", str(data)]) == 2


def test_strong_model_with_another_tokenizer_warns(tiny, tmp_path, capsys):
    other = tmp_path / "strong"
    make_tokenizer(vocab_size=350).save_pretrained(other)
    data = write_jsonl(tmp_path / "in.jsonl", make_records(3))
    out = tmp_path / "s.jsonl"
    args = ["--model", str(tiny), "--input", str(data), "--output", str(out)]
    assert ifd_main([*args, "--strong-model", str(tiny)]) == 0
    assert "share a tokenizer" not in capsys.readouterr().err
    assert ifd_main([*args, "--strong-model", str(other)]) == 0
    assert "do not share a tokenizer" in capsys.readouterr().err
    assert json.loads((tmp_path / "s.jsonl.manifest.json").read_text())["tokenizer_mismatch"]


# --- curate run ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", ["answer", "content"])
def test_curate_run_scores_positives_and_filters(tiny, tmp_path, tokens):
    rows = make_records(40, seed=3)
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "filtered.jsonl"
    assert run_main(["--model", str(tiny), "--input", str(data), "--output", str(out), "--ratio", "0.5",
                     "--tokens", tokens]) == 0
    lines = read_lines(tmp_path / "filtered.ifd.jsonl")
    assert {r["tokens"] for r in lines} == {tokens}
    scores = {r["id"]: r["ifd"] for r in lines}
    positives = [r for r in rows if r["output"] != "[]"]
    negatives = [r for r in rows if r["output"] == "[]"]
    assert set(scores) == {r["id"] for r in positives}  # negatives are not scored
    eligible = sorted((r for r in positives if scores[r["id"]] <= 1), key=lambda r: -scores[r["id"]])
    want = {r["id"] for r in eligible[: len(positives) // 2]} | {r["id"] for r in negatives}
    kept = read_lines(out)
    assert {r["id"] for r in kept} == want
    assert kept == [r for r in rows if r["id"] in want]  # unchanged, input order
    manifest = json.loads((tmp_path / "filtered.jsonl.manifest.json").read_text())
    assert manifest["model"] == str(tiny) and manifest["variant"] == "ppl_ratio" and manifest["tokens"] == tokens
    assert manifest["counts"]["toy"]["negative"] == {"kept": len(negatives), "dropped": 0}
    assert (tmp_path / "filtered.jsonl.ifd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_config_covers_both_commands():
    from dataclasses import fields

    from curation.filter import FilterConfig
    from curation.ifd import IFDConfig

    names = {f.name for f in fields(RunConfig)}
    assert {f.name for f in fields(IFDConfig)} - {"positives_only"} <= names
    assert {f.name for f in fields(FilterConfig)} <= names
    cfg = RunConfig(model="m", input="in.jsonl", output="out.jsonl", tokens="content")
    assert cfg.ifd_config().tokens == cfg.filter_config().tokens == "content"


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("curate_*.yaml")), ids=lambda p: p.name)
def test_recipes_parse(path):
    import yaml

    from curation.cli import parse_config

    assert path.read_text().splitlines()[0] == f"# bioselect curate run --config configs/{path.name}"
    assert set(yaml.safe_load(path.read_text())) <= set(RunConfig.__dataclass_fields__)
    cfg, _ = parse_config(RunConfig, ["--config", str(path)], prog="test")
    assert cfg.ifd_config().model.startswith(os.path.expanduser("~/")) and cfg.output.startswith("runs/")
