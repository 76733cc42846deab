"""Tokens/s of constrained vs unconstrained greedy generation on the same model and inputs, in one run, and the share
of answers that parse and validate in each mode.

    .venv/bin/python benchmarks/generate_constrained.py --model ~/.cache/offline-models/smollm2-135m \\
        --input runs/ncbi_test.jsonl --limit 32 --batch-size 8 --max-new-tokens 64 --threads 1

Both modes run batch by batch, interleaved (the mode that goes first alternates between batches) after one untimed
warm-up batch, so a machine whose speed drifts (other jobs, clocks) affects both alike. A mode's time is everything
generation needs: for the constrained mode it includes building the grammars, the llguidance tokenizer and matchers,
and masking the logits; that share is printed too. ``valid`` is :func:`curation.scoring.parse_output`'s ``ok`` under
the records' label sets.

The last line gives two ratios. Tokens/s counts answer tokens, so it also moves with answer lengths: a batch decodes
until its longest answer ends, and a mode whose answers stop earlier leaves more of the batch idle. Time per
decoding step (wall time over decoding steps summed over batches; every step runs the whole batch) compares the
same work, and is the overhead the constraint adds.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from curation.cli import parse_config, run
from tuning.chat import render_prompt
from tuning.constrained import answer_grammars
from tuning.generate import read_records
from tuning.generation import GenerationStats, generate, load_model, load_tokenizer, prediction_row


@dataclass
class BenchmarkConfig:
    model: str = field(metadata={"help": "Base model folder or hub id."})
    input: str = field(metadata={"help": "Instruction JSONL (bioselect data convert)."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder to apply."})
    limit: int = field(default=32, metadata={"help": "Use the first N records."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per batch."})
    max_new_tokens: int = field(default=64, metadata={"help": "Token budget of an answer."})
    max_mention_pieces: int = field(default=32, metadata={"help": "Longest constrained name, in pieces."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})


def _row(name: str, stats: GenerationStats, valid: int, n: int) -> str:
    ms_step = 1000 * stats.seconds / stats.steps if stats.steps else 0.0
    return (f"| {name} | {n} | {valid} ({valid / n:.0%}) | {stats.new_tokens} | {stats.seconds:.1f} | "
            f"{stats.tokens_per_second:.1f} | {stats.steps} | {ms_step:.0f} | {stats.constraint_seconds:.2f} |")


def _main(argv: Sequence[str] | None = None) -> int:
    import torch

    cfg, _ = parse_config(BenchmarkConfig, argv, prog="generate_constrained", description=__doc__.split("\n\n")[0])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    records, label_sets = read_records(cfg.input, None)
    records, label_sets = records[:cfg.limit], label_sets[:cfg.limit]
    tokenizer = load_tokenizer(cfg.model, cfg.adapter)
    model = load_model(cfg.model, cfg.adapter, cfg.dtype)
    prompts = [render_prompt(tokenizer, r) for r in records]
    texts = [r["input"] for r in records]

    warm = slice(0, min(cfg.batch_size, len(records)))
    generate(model, tokenizer, prompts[warm], None, cfg.batch_size, 4)
    generate(model, tokenizer, prompts[warm], answer_grammars(tokenizer, texts[warm], label_sets[warm]),
             cfg.batch_size, 4)

    stats = {"unconstrained": GenerationStats(), "constrained": GenerationStats()}
    answers: dict[str, list] = {"unconstrained": [], "constrained": []}
    for k, lo in enumerate(range(0, len(records), cfg.batch_size)):
        batch = slice(lo, lo + cfg.batch_size)
        for mode in (("unconstrained", "constrained") if k % 2 == 0 else ("constrained", "unconstrained")):
            grammars = None
            if mode == "constrained":
                start = time.perf_counter()
                grammars = answer_grammars(tokenizer, texts[batch], label_sets[batch], cfg.max_mention_pieces)
                spent = time.perf_counter() - start
                stats[mode].seconds += spent
                stats[mode].constraint_seconds += spent
            answers[mode] += generate(model, tokenizer, prompts[batch], grammars, cfg.batch_size,
                                      cfg.max_new_tokens, stats[mode])

    n = len(records)
    valid = {mode: sum(prediction_row(r, g, labels)["status"] == "ok"
                       for r, g, labels in zip(records, answers[mode], label_sets, strict=True))
             for mode in answers}
    device = next(model.parameters()).device
    print(f"model {cfg.model}{' + ' + cfg.adapter if cfg.adapter else ''}; device {device}, torch threads "
          f"{torch.get_num_threads()}, dtype {next(model.parameters()).dtype}; {n} records of {cfg.input}, batch "
          f"{cfg.batch_size}, max new tokens {cfg.max_new_tokens}")
    print("")
    print("| mode | records | valid | new tokens | seconds | tokens/s | decode steps | ms/step | constraint s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mode in ("unconstrained", "constrained"):
        print(_row(mode, stats[mode], valid[mode], n))
    c, u = stats["constrained"], stats["unconstrained"]
    print("")
    print(f"constraint work (grammars, llguidance tokenizer and matchers, masks): {c.constraint_seconds:.2f} s = "
          f"{c.constraint_seconds / c.seconds:.1%} of the constrained run; answers cut by the token budget: "
          f"constrained {sum(g.finish == 'length' for g in answers['constrained'])}, unconstrained "
          f"{sum(g.finish == 'length' for g in answers['unconstrained'])}")
    ratio = c.tokens_per_second / u.tokens_per_second
    step_ratio = (c.seconds / c.steps) / (u.seconds / u.steps)
    print(f"constrained/unconstrained tokens/s {ratio:.2f}, time per decoding step {step_ratio:.2f} (overhead "
          f"{step_ratio - 1:.0%}), valid {valid['constrained'] / n:.0%} vs {valid['unconstrained'] / n:.0%}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
