"""Wall time of ``bioselect tune generate`` on the same records by one process and by two (``accelerate launch``, one
thread each), in one run, with the outputs checked byte for byte; and tokens/s and the padding share of the prompts
with and without length sorting.

    .venv/bin/python benchmarks/generate_parallel.py --model ~/.cache/offline-models/smollm2-135m \\
        --input runs/ncbi_test.jsonl --limit 32 --batch-size 8 --max-new-tokens 64

Three runs of the command, one after the other, each a fresh process (so model loading is in the wall time): one
process with length sorting (the default), two processes under ``accelerate launch --multi_gpu --num_processes 2``
with ``ACCELERATE_USE_CPU=true`` (CPU ranks over gloo), and one process with ``--sort-by-length false``. Every
process runs one torch thread (``OMP_NUM_THREADS=1``), so two processes can use two cores. ``generation s`` is the
manifest's ``seconds``: generation alone, the slowest process's. The padding share is pad tokens over all prompt
tokens of the batches (the prompts padded to their batch's longest). The load average is printed before and after:
the speed-up is only meaningful when the machine has two idle cores. The last line gives the speed-up of two
processes over one, in wall time and in generation time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from curation.cli import parse_config, run
from curation.io import InputError, read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[1]


@dataclass
class BenchmarkConfig:
    model: str = field(metadata={"help": "Base model folder or hub id."})
    input: str = field(metadata={"help": "Instruction JSONL (bioselect data convert)."})
    limit: int = field(default=32, metadata={"help": "Use the first N records."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per batch."})
    max_new_tokens: int = field(default=64, metadata={"help": "Token budget of an answer."})
    unconstrained: bool = field(default=False, metadata={"help": "Generate unconstrained (default: constrained)."})

    def __post_init__(self):
        self.model = os.path.expanduser(self.model)
        if self.limit < 1:
            raise InputError("--limit", "must be >= 1")


def _generate(cfg: BenchmarkConfig, data: Path, out: Path, processes: int, sort: bool) -> tuple[float, dict]:
    """Run the command; return its wall time and its manifest."""
    command = ["-m", "tuning.generate", "--model", cfg.model, "--input", str(data), "--output", str(out),
               "--batch-size", str(cfg.batch_size), "--max-new-tokens", str(cfg.max_new_tokens),
               "--sort-by-length", str(sort).lower(), *(["--unconstrained"] if cfg.unconstrained else [])]
    launch = ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"] if processes > 1 else []
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ACCELERATE_USE_CPU="true",
               PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *launch, *command], cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"generation with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    return wall, json.loads(Path(f"{out}.manifest.json").read_text(encoding="utf-8"))


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(BenchmarkConfig, argv, prog="generate_parallel", description=__doc__.split("\n\n")[0])
    rows = [row for _, row in read_jsonl(cfg.input)][:cfg.limit]
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="generate_parallel-") as tmp:
        data = Path(tmp) / "records.jsonl"
        write_jsonl(data, rows)
        runs = {}
        for name, processes, sort in (("1 process", 1, True), ("2 processes", 2, True),
                                      ("1 process, unsorted", 1, False)):
            out = Path(tmp) / f"{processes}-{sort}.jsonl"
            runs[name] = (*_generate(cfg, data, out, processes, sort), out.read_bytes())
    load_after = os.getloadavg()

    print(f"model {cfg.model}; {len(rows)} records of {cfg.input}, batch {cfg.batch_size}, max new tokens "
          f"{cfg.max_new_tokens}, {'unconstrained' if cfg.unconstrained else 'constrained'}; one torch thread per "
          f"process; {os.cpu_count()} CPUs; load average before {load_before[0]:.2f} {load_before[1]:.2f} "
          f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    print("")
    print("| run | processes | length sorting | wall s | generation s | new tokens | tokens/s | padding share |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for name, (wall, manifest, _) in runs.items():
        generated = sum(manifest["generated_per_process"])
        print(f"| {name} | {manifest['num_processes']} | {'yes' if manifest['sort_by_length'] else 'no'} | "
              f"{wall:.1f} | {manifest['seconds']:.1f} | {manifest['counts']['new_tokens']} | "
              f"{manifest['tokens_per_second']:.1f} | {manifest['padding_share']:.1%} |")
        assert generated == len(rows), manifest["generated_per_process"]
    one, two, unsorted = runs.values()
    identical = two[2] == one[2]
    print("")
    print(f"outputs: 2 processes {'byte-identical to' if identical else 'DIFFER from'} 1 process; unsorted "
          f"{'byte-identical' if unsorted[2] == one[2] else 'different'}")
    print(f"length sorting: padding share {unsorted[1]['padding_share']:.1%} -> {one[1]['padding_share']:.1%}, "
          f"tokens/s {unsorted[1]['tokens_per_second']:.1f} -> {one[1]['tokens_per_second']:.1f}")
    print(f"2 processes vs 1: {one[0] / two[0]:.2f}x wall, {one[1]['seconds'] / two[1]['seconds']:.2f}x generation")
    return 0 if identical else 1


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
