"""Peak memory and time of the same LoRA run on a float32 base and on a 4-bit (QLoRA) base.

    .venv/bin/python benchmarks/qlora_memory.py --model ~/.cache/offline-models/qwen2.5-0.5b \\
        --train-file runs/ncbi_train_64.jsonl --steps 3 --batch-size 2 --max-length 128

Each run is ``bioselect tune train`` (:func:`tuning.train.train`) for ``--steps`` optimizer steps into a temporary
folder, with the same data, seed and LoRA settings; the only difference is ``load_in_4bit`` (NF4, double
quantisation, float32 compute). Each runs in a subprocess of its own, so that its peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss`` of that process: model loading, trl's data preparation and training) is its
own. Also reported: the peak before the first step (loading) and the resident size when training starts, the
model's own footprint (``get_memory_footprint``: parameters and buffers), and seconds per optimizer step (each step
timed by a callback; the median of the steps after the first). The last line printed is the peak-memory ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VARIANTS = ("float32", "4bit")


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def child(args: argparse.Namespace) -> dict:
    """One run in this process; returns what it measured."""
    from transformers import TrainerCallback

    from tuning.train import TrainConfig, train

    class Meter(TrainerCallback):
        def __init__(self):
            self.step_seconds: list[float] = []
            self.start = 0.0
            self.at_start: dict[str, int] = {}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.at_start = {"peak_rss_before_training": _maxrss(), "rss_at_training_start": _rss(),
                             "model_footprint": model.get_memory_footprint()}

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_seconds.append(time.perf_counter() - self.start)

    meter = Meter()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=args.model, train_files=[args.train_file], output_dir=str(Path(tmp) / "run"),
                          max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                          max_length=args.max_length,
                          lora_r=args.lora_r, lora_alpha=2 * args.lora_r, seed=args.seed, logging_steps=1,
                          save_steps=args.steps + 1, report_to="none", resume_from_checkpoint="no",
                          load_in_4bit=args.child == "4bit")
        manifest = train(cfg, callbacks=[meter])
    t = manifest["training"]
    return {"variant": args.child, "peak_rss": _maxrss(), **meter.at_start, "step_seconds": meter.step_seconds,
            "steps": t["global_step"], "loss_curve": t["loss_curve"], "quantization": manifest["quantization"]}


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """Run one variant in a fresh interpreter; its last stdout line is its JSON result."""
    cmd = [sys.executable, __file__, "--child", variant, "--model", args.model, "--train-file", args.train_file,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
           "--lora-r", str(args.lora_r), "--seed", str(args.seed)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} run failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="Causal LM folder or hub id (with a chat template).")
    parser.add_argument("--train-file", required=True, help="Instruction JSONL (the same data for both runs).")
    parser.add_argument("--steps", type=int, default=3, help="Optimizer steps per run.")
    parser.add_argument("--batch-size", type=int, default=2, help="Examples per step.")
    parser.add_argument("--max-length", type=int, default=128, help="Tokens per example.")
    parser.add_argument("--lora-r", type=int, default=16, help="LoRA rank (alpha = 2r), all linear layers.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model = str(Path(args.model).expanduser())
    if args.child:
        print(json.dumps(child(args)))
        return

    start = time.perf_counter()
    results = {}
    for variant in VARIANTS:
        r = results[variant] = run_variant(variant, args)
        per_step = statistics.median(r["step_seconds"][1:] or r["step_seconds"])
        losses = ", ".join(f"{loss:.3f}" for _, loss in r["loss_curve"])
        quant = r["quantization"]
        layers = f", {quant['quantized_layers']} layers in 4 bits" if quant else ""
        print(f"{variant}: peak RSS {gib(r['peak_rss'])} (before the first step {gib(r['peak_rss_before_training'])}"
              f", at its start {gib(r['rss_at_training_start'])}); model {gib(r['model_footprint'])}{layers}; "
              f"{per_step:.1f} s/step (steps: {', '.join(f'{s:.1f}' for s in r['step_seconds'])}); "
              f"losses {losses}", flush=True)
    print(f"wall time {time.perf_counter() - start:.0f} s (both runs, model loading included)")
    f32, q4 = results["float32"], results["4bit"]
    time_ratio = statistics.median(q4["step_seconds"][1:]) / statistics.median(f32["step_seconds"][1:])
    print(f"4-bit/float32 model footprint {q4['model_footprint'] / f32['model_footprint']:.2f}x, "
          f"s/step {time_ratio:.2f}x")
    print(f"4-bit/float32 peak RSS {q4['peak_rss'] / f32['peak_rss']:.2f}x")


if __name__ == "__main__":
    main()
