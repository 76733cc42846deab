"""Peak memory and time of the same LoRA run on a float32 base and on a 4-bit (QLoRA) base.

    .venv/bin/python benchmarks/qlora_memory.py --model ~/.cache/offline-models/qwen2.5-0.5b \\
        --train-file runs/ncbi_train_64.jsonl --steps 3 --batch-size 2 --max-length 256 \\
        --variants float32,4bit,bf16,4bit-bf16,4bit-bf16-saved

Each run is ``bioselect tune train`` (:func:`tuning.train.train`) for ``--steps`` optimizer steps into a temporary
folder, with the same data, seed and LoRA settings. ``float32`` (the reference) and ``4bit`` differ only in
``load_in_4bit`` (NF4, double quantisation, float32 compute); ``bf16`` trains on a bfloat16 base in bfloat16, and
``4bit-bf16`` is the QLoRA paper's recipe (NF4 linear layers, bfloat16 compute and bfloat16 embeddings, norms and
head); ``4bit-bf16-saved`` trains the same model from a checkpoint saved in 4 bits (made in a process of its own
before the run, not measured), which loads quantised as saved and reads about half the bytes. Each runs in a
subprocess of its own, so that its peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``
of that process: model loading, trl's data preparation and training) is its own. Also reported: the peak before
the first step (loading) and the resident size when training starts, the model's own footprint
(``get_memory_footprint``: parameters and buffers), and seconds per optimizer step (each step timed by a callback;
the median of the steps after the first).

The resident set counts two kinds of pages: anonymous memory (tensors, optimizer state, Python objects) and file
pages the process has mapped: the safetensors checkpoint, which transformers memory-maps. A float32 load copies
every tensor out of it and drops the mapping; a bfloat16 load keeps the checkpoint's own bfloat16 tensors as views
of the mapped file, so there the weights are file pages (clean ones, which the kernel may drop under pressure and
read again at the next forward pass). A thread samples ``/proc/self/status`` (``RssAnon``, ``RssFile``, ``VmRSS``)
every 20 ms, so each run also reports its peak anonymous memory, in loading and in training separately. A line per
variant gives its ratios to float32; the last line is the issue's measure, 4-bit over float32 peak resident set.
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

# name -> (4-bit load, bf16): the base's unquantised layers and the compute dtype follow bf16. 4bit-bf16-saved
# trains from the 4bit-bf16 model saved quantised (made before the run, not measured), which loads in 4 bits as saved
VARIANTS = {"float32": (False, False), "4bit": (True, False), "bf16": (False, True), "4bit-bf16": (True, True),
            "4bit-bf16-saved": (False, True)}


def save_quantised(model: str, out: str) -> None:
    """Save ``model`` loaded in 4 bits with bfloat16 compute (the 4bit-bf16 variant's load), with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuning.quantization import bnb_config

    lm = AutoModelForCausalLM.from_pretrained(model, dtype=torch.bfloat16, device_map={"": "cpu"},
                                              quantization_config=bnb_config(True, False, "nf4", True, "bfloat16"))
    lm.save_pretrained(out)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


class Sampler:
    """Peak ``RssAnon`` and ``RssFile`` of this process per phase, sampled from ``/proc/self/status`` by a thread."""

    def __init__(self, interval: float = 0.02):
        import threading

        self.interval = interval
        self.phase = "loading"
        self.peaks: dict[str, dict[str, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def read() -> dict[str, int]:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("RssAnon", "RssFile", "VmRSS"):
                    out[key] = int(value.split()[0]) * 1024  # kB
        return out

    def sample(self) -> None:
        peaks = self.peaks.setdefault(self.phase, {})
        for key, value in self.read().items():
            peaks[key] = max(peaks.get(key, 0), value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def switch(self, phase: str) -> None:
        self.sample()  # the last sample of the old phase
        self.phase = phase
        self.sample()


def child(args: argparse.Namespace) -> dict:
    """One run in this process; returns what it measured."""
    import torch
    from transformers import TrainerCallback

    from tuning.train import TrainConfig, train

    class Meter(TrainerCallback):
        def __init__(self):
            self.step_seconds: list[float] = []
            self.start = 0.0
            self.at_start: dict[str, int] = {}

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            sampler.switch("training")
            self.at_start = {"peak_rss_before_training": _maxrss(), "rss_at_training_start": _rss(),
                             "model_footprint": model.get_memory_footprint()}

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.step_seconds.append(time.perf_counter() - self.start)

    meter = Meter()
    with tempfile.TemporaryDirectory() as tmp, Sampler() as sampler:
        cfg = TrainConfig(model=args.model, train_files=[args.train_file], output_dir=str(Path(tmp) / "run"),
                          max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                          max_length=args.max_length,
                          lora_r=args.lora_r, lora_alpha=2 * args.lora_r, seed=args.seed, logging_steps=1,
                          save_steps=args.steps + 1, report_to="none", resume_from_checkpoint="no",
                          load_in_4bit=VARIANTS[args.child][0], bf16=VARIANTS[args.child][1],
                          use_cpu=not torch.cuda.is_available())  # transformers asks for it to train bf16 on a CPU
        manifest = train(cfg, callbacks=[meter])
    t = manifest["training"]
    return {"variant": args.child, "peak_rss": _maxrss(), **meter.at_start, "step_seconds": meter.step_seconds,
            "steps": t["global_step"], "loss_curve": t["loss_curve"], "quantization": manifest["quantization"],
            "sampled_peaks": sampler.peaks}


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                         os.environ.get("PYTHONPATH", "")])}


def run_variant(variant: str, args: argparse.Namespace) -> dict:
    """Run one variant in a fresh interpreter; its last stdout line is its JSON result."""
    cmd = [sys.executable, __file__, "--child", variant, "--model", args.model, "--train-file", args.train_file,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
           "--lora-r", str(args.lora_r), "--seed", str(args.seed)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
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
    parser.add_argument("--variants", default="float32,4bit",
                        help=f"Comma-separated runs, float32 first (the reference): {', '.join(VARIANTS)}. bf16: "
                             "the base and the compute in bfloat16; 4bit-bf16: NF4 with bfloat16 compute and "
                             "bfloat16 unquantised layers (the QLoRA paper's recipe); 4bit-bf16-saved: the same "
                             "model saved in 4 bits first, then trained from that checkpoint.")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--save-quantised", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.model = str(Path(args.model).expanduser())
    if args.save_quantised:
        save_quantised(args.model, args.save_quantised)
        return
    if args.child:
        print(json.dumps(child(args)))
        return

    start = time.perf_counter()
    results = {}
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if variants[:1] != ["float32"] or "4bit" not in variants or not set(variants) <= set(VARIANTS):
        parser.error(f"--variants: float32 first, 4bit among them, from {', '.join(VARIANTS)}")
    saved_dir = tempfile.TemporaryDirectory()
    for variant in variants:
        if variant.endswith("-saved"):
            saved = Path(saved_dir.name) / "model"
            code = subprocess.run([sys.executable, __file__, "--save-quantised", str(saved), "--model", args.model,
                                   "--train-file", args.train_file], env=child_env()).returncode
            if code:
                raise SystemExit(f"saving the 4-bit checkpoint failed ({code})")
            size = sum(f.stat().st_size for f in saved.glob("*.safetensors"))
            print(f"  {variant}: the 4-bit checkpoint holds {gib(size)} of safetensors", flush=True)
            r = results[variant] = run_variant(variant, argparse.Namespace(**{**vars(args), "model": str(saved)}))
        else:
            r = results[variant] = run_variant(variant, args)
        per_step = statistics.median(r["step_seconds"][1:] or r["step_seconds"])
        losses = ", ".join(f"{loss:.3f}" for _, loss in r["loss_curve"])
        quant = r["quantization"]
        layers = f", {quant['quantized_layers']} layers in 4 bits" if quant else ""
        print(f"{variant}: peak RSS {gib(r['peak_rss'])} (before the first step {gib(r['peak_rss_before_training'])}"
              f", at its start {gib(r['rss_at_training_start'])}); model {gib(r['model_footprint'])}{layers}; "
              f"{per_step:.1f} s/step (steps: {', '.join(f'{s:.1f}' for s in r['step_seconds'])}); "
              f"losses {losses}", flush=True)
        peaks = r["sampled_peaks"]
        print(f"  sampled peaks: loading anonymous {gib(peaks['loading']['RssAnon'])} + file "
              f"{gib(peaks['loading']['RssFile'])} (resident {gib(peaks['loading']['VmRSS'])}); training anonymous "
              f"{gib(peaks['training']['RssAnon'])} + file {gib(peaks['training']['RssFile'])} (resident "
              f"{gib(peaks['training']['VmRSS'])})", flush=True)
    saved_dir.cleanup()
    print(f"wall time {time.perf_counter() - start:.0f} s (all runs, model loading included)")
    f32 = results["float32"]

    def anon(r: dict, phase: str | None = None) -> int:
        return max(p["RssAnon"] for name, p in r["sampled_peaks"].items() if phase in (None, name))

    def per_step(r: dict) -> float:
        return statistics.median(r["step_seconds"][1:] or r["step_seconds"])

    for variant in variants[1:]:
        r = results[variant]
        print(f"{variant}/float32: peak RSS {r['peak_rss'] / f32['peak_rss']:.2f}x, peak anonymous "
              f"{anon(r) / anon(f32):.2f}x, training-phase anonymous peak "
              f"{anon(r, 'training') / anon(f32, 'training'):.2f}x, model footprint "
              f"{r['model_footprint'] / f32['model_footprint']:.2f}x, s/step {per_step(r) / per_step(f32):.2f}x")
    print(f"4-bit/float32 peak RSS {results['4bit']['peak_rss'] / f32['peak_rss']:.2f}x")


if __name__ == "__main__":
    main()
