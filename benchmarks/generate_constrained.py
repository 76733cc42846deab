"""Tokens/s of constrained vs unconstrained greedy generation on the same model and inputs, in one run, and the share
of answers that parse and validate in each mode, for records of any task (NER, RE, EE, TC; ``--task`` keeps those
of the tasks named).

    .venv/bin/python benchmarks/generate_constrained.py --model ~/.cache/offline-models/smollm2-135m \\
        --input runs/ncbi_test.jsonl --limit 32 --batch-size 8 --max-new-tokens 64 --threads 1
    .venv/bin/python benchmarks/generate_constrained.py --model ~/.cache/offline-models/smollm2-135m \\
        --input runs/ddi_phee_16.jsonl --task re ee --limit 16 --batch-size 8 --max-new-tokens 48 --threads 1

Both modes run batch by batch, interleaved (the mode that goes first alternates between batches) after one untimed
warm-up batch, so a machine whose speed drifts (other jobs, clocks) affects both alike. A mode's time is everything
generation needs: for the constrained mode it includes building the grammars, the llguidance tokenizer and matchers,
and masking the logits; that share is printed too. ``valid`` is the ``ok`` status of the prediction rows
(:func:`curation.scoring.parse_output` for NER, :func:`curation.scoring.parse_answer` for RE, EE and TC) under the
records' label sets, overall and per task.

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

import prompts
from curation.cli import parse_config, run
from curation.io import InputError
from tuning.chat import render_prompt
from tuning.constrained import answer_grammars
from tuning.generate import read_records
from tuning.generation import GenerationStats, generate, load_model, load_tokenizer, prediction_row


@dataclass
class BenchmarkConfig:
    model: str = field(metadata={"help": "Base model folder or hub id."})
    input: str = field(metadata={"help": "Instruction JSONL (bioselect data convert)."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder to apply."})
    task: list[str] | None = field(
        default=None, metadata={"help": f"Keep the records of these tasks ({', '.join(prompts.TASKS)}); all if not "
                                        "given."})
    limit: int = field(default=32, metadata={"help": "Use the first N records (of those tasks)."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per batch."})
    max_new_tokens: int = field(default=64, metadata={"help": "Token budget of an answer."})
    threads: int | None = field(default=None, metadata={"help": "torch CPU threads (default: torch's choice)."})
    dtype: str = field(default="auto", metadata={"help": "auto, float32, bfloat16 or float16."})

    def __post_init__(self):
        unknown = sorted(set(self.task or ()) - set(prompts.TASKS))
        if unknown:
            raise InputError("--task", f"must be among {', '.join(prompts.TASKS)}, not {', '.join(unknown)}")


def _row(name: str, stats: GenerationStats, valid: int, n: int, by_task: str) -> str:
    ms_step = 1000 * stats.seconds / stats.steps if stats.steps else 0.0
    return (f"| {name} | {n} | {valid} ({valid / n:.0%}) | {by_task} | {stats.new_tokens} | {stats.seconds:.1f} | "
            f"{stats.tokens_per_second:.1f} | {stats.steps} | {ms_step:.0f} | {stats.constraint_seconds:.2f} |")


def _main(argv: Sequence[str] | None = None) -> int:
    import torch

    cfg, _ = parse_config(BenchmarkConfig, argv, prog="generate_constrained", description=__doc__.split("\n\n")[0])
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    records, label_sets = read_records(cfg.input, None)
    keep = [i for i, r in enumerate(records) if not cfg.task or r["task"] in cfg.task][:cfg.limit]
    if not keep:
        raise InputError(cfg.input, f"no record of the tasks {', '.join(cfg.task or ())}")
    records, label_sets = [records[i] for i in keep], [label_sets[i] for i in keep]
    tasks = [r["task"] for r in records]
    tokenizer = load_tokenizer(cfg.model, cfg.adapter)
    model = load_model(cfg.model, cfg.adapter, cfg.dtype)
    prompt_texts = [render_prompt(tokenizer, r) for r in records]
    texts = [r["input"] for r in records]

    warm = slice(0, min(cfg.batch_size, len(records)))
    generate(model, tokenizer, prompt_texts[warm], None, cfg.batch_size, 4)
    generate(model, tokenizer, prompt_texts[warm],
             answer_grammars(tokenizer, texts[warm], label_sets[warm], tasks[warm]), cfg.batch_size, 4)

    stats = {"unconstrained": GenerationStats(), "constrained": GenerationStats()}
    answers: dict[str, list] = {"unconstrained": [], "constrained": []}
    for k, lo in enumerate(range(0, len(records), cfg.batch_size)):
        batch = slice(lo, lo + cfg.batch_size)
        for mode in (("unconstrained", "constrained") if k % 2 == 0 else ("constrained", "unconstrained")):
            grammars = None
            if mode == "constrained":
                start = time.perf_counter()
                grammars = answer_grammars(tokenizer, texts[batch], label_sets[batch], tasks[batch])
                spent = time.perf_counter() - start
                stats[mode].seconds += spent
                stats[mode].constraint_seconds += spent
            answers[mode] += generate(model, tokenizer, prompt_texts[batch], grammars, cfg.batch_size,
                                      cfg.max_new_tokens, stats[mode])

    n = len(records)
    ok = {mode: [prediction_row(r, g, labels)["status"] == "ok"
                 for r, g, labels in zip(records, answers[mode], label_sets, strict=True)] for mode in answers}
    valid = {mode: sum(flags) for mode, flags in ok.items()}
    by_task = {mode: ", ".join(f"{t} {sum(f for f, x in zip(flags, tasks, strict=True) if x == t)}/{tasks.count(t)}"
                               for t in sorted(set(tasks))) for mode, flags in ok.items()}
    device = next(model.parameters()).device
    print(f"model {cfg.model}{' + ' + cfg.adapter if cfg.adapter else ''}; device {device}, torch threads "
          f"{torch.get_num_threads()}, dtype {next(model.parameters()).dtype}; {n} records of {cfg.input}, batch "
          f"{cfg.batch_size}, max new tokens {cfg.max_new_tokens}")
    print("")
    print("| mode | records | valid | valid by task | new tokens | seconds | tokens/s | decode steps | ms/step | "
          "constraint s |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    for mode in ("unconstrained", "constrained"):
        print(_row(mode, stats[mode], valid[mode], n, by_task[mode]))
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
