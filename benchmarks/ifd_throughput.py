"""IFD throughput: the naive per-sample loop against the project's scorer, on the same records and model, one run.

    .venv/bin/python benchmarks/ifd_throughput.py                           # CPU: real SmolLM2-135M, 256 records
    .venv/bin/python benchmarks/ifd_throughput.py --device cuda --random-init qwen3-0.6b --records 1024
    .venv/bin/python benchmarks/ifd_throughput.py --compare-tokens --records 256   # answer vs content token scope

The naive loop is what the reference implementations (Superfiltering, Cherry-LLM) do: one record at a time, batch 1,
``model(ids, labels=labels).loss`` with logits at every position, a second forward for the response alone. The
scorer is :class:`curation.ifd_scoring.IFDScorer` over :func:`curation.ifd_scoring.plan_chunks` (length-bucketed
batches, the shared instruction's key/value cache computed once, the LM head only on scored positions). Both score
the same token ids (:func:`curation.ifd_scoring.encode_records`). The records are the first ``--records`` sentences of
the NCBI-disease training set as instruction records. Prints records/s of each and, last,
``speedup N.Nx, max diff X`` (the largest |IFD difference|). On a GPU it also prints the scorer's achieved FLOP/s
as a share of the device's bf16 peak; there ``--random-init qwen3-0.6b`` builds Qwen3-0.6B from its config with
random weights (weights do not travel to the GPU machines; a random model times the same as a trained one).

``--compare-tokens`` times the scorer twice instead, over the whole answer (``--tokens answer``) and over its content
tokens (``--tokens content``), on the records both can score (the positives), in the same batches, taking turns
batch by batch; it prints records/s of each and, last, ``content/answer records/s ratio R``.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import torch

from curation import ifd_scoring as S

ROOT = Path(__file__).resolve().parents[1]
NCBI_TRAIN = ROOT.parent / "shared" / "data" / "ner" / "NCBI-disease" / "train.tsv"
OFFLINE = Path(os.environ.get("OFFLINE_MODELS", Path.home() / ".cache" / "offline-models"))

# Qwen3-0.6B (config.json of Qwen/Qwen3-0.6B), for random-init GPU timing
QWEN3_0_6B = {
    "architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024, "num_hidden_layers": 28,
    "num_attention_heads": 16, "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 3072,
    "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 40960, "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0, "hidden_act": "silu", "attention_bias": False, "bos_token_id": 151643,
    "eos_token_id": 151645,
}
RANDOM_INIT = {"qwen3-0.6b": QWEN3_0_6B}
# dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name()
BF16_PEAK = {"H200": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
             "A10G": 70e12, "RTX 4090": 165e12}


def ncbi_records(n: int) -> list[dict]:
    from curation.convert import convert_corpus
    from curation.readers import read_corpus

    corpus = read_corpus(NCBI_TRAIN)
    corpus.records = corpus.records[:n]
    return convert_corpus(corpus, task="ner")


def naive_losses(model, example: S.Example) -> tuple[float, float]:
    """One record, batch 1, full logits: Superfiltering's two forwards."""
    device = model.device
    ids = torch.tensor([example.prompt_ids + example.response_ids], device=device)
    labels = ids.clone()
    labels[0, : len(example.prompt_ids)] = -100
    alone = torch.tensor([example.uncond_ids], device=device)
    return model(ids, labels=labels).loss.item(), model(alone, labels=alone).loss.item()


def useful_flops(config, examples: list[S.Example], chunks: list[S.Chunk]) -> float:
    """Forward FLOPs of the scorer's real (unpadded) tokens: 2 x non-embedding parameters per token, attention
    scores and values (4 x layers x heads x head_dim x context), and the LM head on the scored positions (those
    inside a cached prefix counted once with it)."""
    hidden, layers = config.hidden_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q_width, kv_width = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    projections = hidden * (q_width + 2 * kv_width) + q_width * hidden + 3 * hidden * config.intermediate_size
    per_token = 2 * layers * projections
    attention = lambda start, end: 4 * layers * q_width * sum(range(start + 1, end + 1))  # noqa: E731
    total = 0.0
    for prefix in {p.prefix for c in chunks for p in c.passes}:  # computed once per prefix
        total += len(prefix) * per_token + attention(0, len(prefix)) + 2 * hidden * config.vocab_size * len(prefix)
    for chunk in chunks:
        for p in chunk.passes:
            n = len(p.prefix)
            for i in (i for batch in p.batches for i in batch):
                ex = examples[i]
                seq = ex.prompt_ids + ex.response_ids if p.kind == "cond" else ex.uncond_ids
                fed = max(len(seq) - 1 - n, 0)
                scored = len(ex.response_ids) if p.kind == "cond" else len(seq) - 1
                total += fed * per_token + attention(n, n + fed) + 2 * hidden * config.vocab_size * min(scored, fed)
    return total


def load(args):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    dtype = S.pick_dtype(args.device, args.dtype)
    if args.random_init:
        spec = dict(RANDOM_INIT[args.random_init])
        config = AutoConfig.for_model(spec.pop("model_type"), **spec)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or OFFLINE / "qwen2.5-0.5b")
        torch.manual_seed(0)
        with torch.device(args.device):
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
        name = f"{args.random_init} (random init, tokenizer {args.tokenizer or 'qwen2.5-0.5b'})"
    else:
        folder = args.model or OFFLINE / "smollm2-135m"
        tokenizer = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).to(args.device)
        name = str(folder)
    return model.eval(), tokenizer, name, dtype


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def compare_tokens(model, tokenizer, records: list[dict], args, batch_size: int, max_tokens: int) -> None:
    """The scorer over the whole answer and over its content tokens: records/s of each, their ratio last."""
    answer = S.encode_records(tokenizer, records, args.prompt_format, "answer")
    content = S.encode_records(tokenizer, records, args.prompt_format, "content")
    both = [k for k, (a, c) in enumerate(zip(answer, content))
            if c.problem is None and S.length_problem(a, 4096) is None]
    scopes = {"answer": [answer[k] for k in both], "content": [content[k] for k in both]}
    chunks = S.plan_chunks(scopes["answer"], batch_size, max_tokens, args.chunk_size)
    assert chunks == S.plan_chunks(scopes["content"], batch_size, max_tokens, args.chunk_size)  # same batches
    n = len(both)
    share = sum(len(ex.response_content) for ex in scopes["content"]) / sum(len(ex.response_ids)
                                                                           for ex in scopes["content"])
    print(f"{n} records scorable under both scopes; content tokens are {100 * share:.1f}% of the response tokens")
    # one scorer per scope, so each computes (and is timed on) its own cached prefixes, as a run of its own would
    scorers = {scope: S.IFDScorer(model, pad_id=tokenizer.pad_token_id or 0) for scope in scopes}
    times = {scope: 0.0 for scope in scopes}
    results: dict[str, dict[str, dict[int, float]]] = {scope: {"cond": {}, "uncond": {}} for scope in scopes}
    with torch.inference_mode():
        for scope in scopes:
            scorers[scope].conditional(scopes[scope][:2])  # warm-up
        sync(args.device)
        # the two scopes take turns batch by batch, in alternating order, so a drifting load from other jobs on a
        # shared machine weighs on both alike
        turn = 0
        for _ in range(args.rounds):
            for chunk in chunks:
                for p in chunk.passes:
                    for batch in p.batches:
                        turn += 1
                        for scope in ("answer", "content") if turn % 2 else ("content", "answer"):
                            scorer = scorers[scope]
                            score = scorer.conditional if p.kind == "cond" else scorer.unconditional
                            start = time.perf_counter()
                            values = score([scopes[scope][i] for i in batch], p.prefix)
                            sync(args.device)
                            times[scope] += time.perf_counter() - start
                            results[scope][p.kind].update(zip(batch, values))
    rate = {scope: n * args.rounds / t for scope, t in times.items()}
    for scope in ("answer", "content"):
        ifd = sorted(S.ifd_from_losses(results[scope]["cond"][i], results[scope]["uncond"][i]) for i in range(n))
        print(f"--tokens {scope}: {n} records x {args.rounds} in {times[scope]:.1f} s, {rate[scope]:.2f} records/s "
              f"(median IFD {ifd[n // 2]:.3f})")
    print(f"content/answer records/s ratio {rate['content'] / rate['answer']:.3f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="causal LM folder (default: $OFFLINE_MODELS/smollm2-135m)")
    p.add_argument("--random-init", choices=sorted(RANDOM_INIT), help="random weights from an embedded config")
    p.add_argument("--tokenizer", help="tokenizer for --random-init (default: $OFFLINE_MODELS/qwen2.5-0.5b)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"])
    p.add_argument("--records", type=int, default=256)
    p.add_argument("--prompt-format", default="plain", choices=S.PROMPT_FORMATS)
    p.add_argument("--batch-size", type=int, default=None, help="default: 64 on CPU, 256 on GPU")
    p.add_argument("--max-batch-tokens", type=int, default=None, help="default: 2048 on CPU, 65536 on GPU")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--rounds", type=int, default=2, help="timed rounds per method, in alternating order")
    p.add_argument("--compare-tokens", action="store_true",
                   help="time the scorer over the whole answer against its content tokens (no naive loop)")
    args = p.parse_args()
    gpu = args.device.startswith("cuda")
    batch_size = args.batch_size or (256 if gpu else 64)
    max_tokens = args.max_batch_tokens or (65536 if gpu else 2048)
    if args.threads:
        torch.set_num_threads(args.threads)

    model, tokenizer, name, dtype = load(args)
    records = ncbi_records(args.records)
    if args.compare_tokens:
        print(f"model {name}, device {args.device}, {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} "
              f"threads; first {len(records)} NCBI-disease train records, prompt {args.prompt_format}")
        compare_tokens(model, tokenizer, records, args, batch_size, max_tokens)
        return
    examples = S.encode_records(tokenizer, records, args.prompt_format)
    examples = [ex for ex in examples if S.length_problem(ex, 4096) is None]  # e.g. "[]" as 1 token: no s(y)
    negatives = sum(S.is_negative(r["output"]) for r in records)
    print(f"model {name}, device {args.device}, {str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} "
          f"threads; first {len(records)} NCBI-disease train records ({negatives} negatives), {len(examples)} "
          f"scorable, prompt {args.prompt_format}")

    chunks = S.plan_chunks(examples, batch_size, max_tokens, args.chunk_size)
    scorer = S.IFDScorer(model, pad_id=tokenizer.pad_token_id or 0)
    with torch.inference_mode():
        for ex in examples[:2]:  # warm-up of both paths
            naive_losses(model, ex)
        scorer.score_chunk(examples, S.plan_chunks(examples[:8], batch_size, max_tokens)[0])
        sync(args.device)

        def run_naive() -> list[tuple[float, float]]:
            return [naive_losses(model, ex) for ex in examples]

        def run_scorer() -> dict[int, tuple[float, float]]:
            return {i: pair for chunk in chunks for i, pair in scorer.score_chunk(examples, chunk).items()}

        # rounds alternate the order (naive, scorer, scorer, naive, ...) so a drifting load on a shared machine
        # weighs on both alike; times are summed over rounds
        times, results = {run_naive: 0.0, run_scorer: 0.0}, {}
        for k in range(args.rounds):
            for method in (run_naive, run_scorer) if k % 2 == 0 else (run_scorer, run_naive):
                start = time.perf_counter()
                results[method] = method()
                sync(args.device)
                times[method] += time.perf_counter() - start
        t_naive, t_fast = times[run_naive], times[run_scorer]
        naive, fast = results[run_naive], results[run_scorer]

    n = len(examples)
    cond_prefix = sorted({len(p.prefix) for c in chunks for p in c.passes if p.kind == "cond"})
    uncond_prefix = sorted({len(p.prefix) for c in chunks for p in c.passes if p.kind == "uncond"} - {0})
    r = args.rounds
    print(f"naive per-sample loop (batch 1, full logits): {n} records x {r} in {t_naive:.1f} s, "
          f"{n * r / t_naive:.2f} records/s")
    print(f"batched scorer (batch <= {batch_size}, <= {max_tokens} tokens, cached prefixes {cond_prefix} (prompt) "
          f"{uncond_prefix} (response) tokens, LM head on scored positions only): {n} records x {r} in {t_fast:.1f} s,"
          f" {n * r / t_fast:.2f} records/s")
    diff = max(abs(S.ifd_from_losses(*naive[i]) - S.ifd_from_losses(*fast[i])) for i in range(n))
    if gpu:
        flops = useful_flops(model.config, examples, chunks) * r / t_fast
        device_name = torch.cuda.get_device_name()
        peak = next((v for k, v in BF16_PEAK.items() if k in device_name), math.nan)
        print(f"scorer achieved {flops / 1e12:.1f} TFLOP/s = {100 * flops / peak:.1f}% of the bf16 peak "
              f"({peak / 1e12:.0f} TFLOP/s, {device_name})")
    print(f"speedup {t_naive / t_fast:.1f}x, max diff {diff:.1e}")


if __name__ == "__main__":
    main()
