"""Training tokens/s with packing vs padding: the same LoRA run (model, data, steps, batch) both ways.

    .venv/bin/python benchmarks/train_throughput.py --model ~/.cache/offline-models/smollm2-135m \\
        --train-file runs/ncbi_train_64.jsonl --steps 4 --batch-size 8 --max-length 256

Each run is ``bioselect tune train`` (:func:`tuning.train.train`) for ``--steps`` optimizer steps into a temporary
folder. Tokens are the real (non-padding) tokens trl counts in every batch (``num_tokens``); time is the Trainer's
``train_runtime`` (model loading and data preparation excluded). With padding a batch holds ``--batch-size``
examples padded to the longest; with packing it holds ``--batch-size`` rows of ``--max-length`` tokens filled with
whole examples (position ids restart per example). The last line printed is the ratio of the two rates.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def run_once(model: str, train_file: str, out: Path, packing: bool, steps: int, batch_size: int,
             max_length: int, seed: int) -> dict:
    from tuning.train import TrainConfig, train

    cfg = TrainConfig(model=model, train_files=[train_file], output_dir=str(out), max_steps=steps,
                      per_device_train_batch_size=batch_size, max_length=max_length, packing=packing, seed=seed,
                      logging_steps=1,
                      save_steps=steps + 1, report_to="none", resume_from_checkpoint="no")
    t = train(cfg)["training"]
    return {"tokens": t["train_tokens"], "seconds": t["train_runtime_s"], "steps": t["global_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Causal LM folder or hub id (with a chat template).")
    parser.add_argument("--train-file", required=True, help="Instruction JSONL.")
    parser.add_argument("--steps", type=int, default=4, help="Optimizer steps per run.")
    parser.add_argument("--batch-size", type=int, default=8, help="Examples (padding) or rows (packing) per step.")
    parser.add_argument("--max-length", type=int, default=256, help="Truncation length; the packed row length.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, packing in (("padding", False), ("packing", True)):
            r = run_once(str(Path(args.model).expanduser()), args.train_file, Path(tmp) / name, packing, args.steps,
                         args.batch_size, args.max_length, args.seed)
            rates[name] = r["tokens"] / r["seconds"]
            print(f"{name}: {r['steps']} steps, {r['tokens']:.0f} tokens in {r['seconds']:.1f} s = "
                  f"{rates[name]:.1f} tokens/s ({r['seconds'] / r['steps']:.1f} s/step)", flush=True)
    print(f"wall time {time.perf_counter() - start:.0f} s (both runs, model loading included)")
    print(f"packing/padding tokens/s {rates['packing'] / rates['padding']:.2f}x")


if __name__ == "__main__":
    main()
