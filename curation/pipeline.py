"""Score positives by IFD, then filter: ``bioselect curate run`` (``curate ifd --positives-only`` + ``curate filter``;
the negatives are scored too with ``--negative-order ifd``).

    bioselect curate run --config configs/curate_smollm2.yaml
    bioselect curate run --model ~/.cache/offline-models/smollm2-135m --input runs/ncbi_train.jsonl \\
        --output runs/ncbi_train.filtered.jsonl --ratio 0.5 [--tokens answer|content]
    accelerate launch --num_processes 2 -m curation.pipeline --config configs/curate_smollm2.yaml

Writes the scores (``--scores``, by default ``OUTPUT_STEM.ifd.jsonl``, with its manifest), the filtered JSONL, its
manifest and the IFD histogram; see :mod:`curation.ifd` and :mod:`curation.filter`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from curation.cli import parse_config, run
from curation.filter import FilterConfig, run_filter
from curation.ifd import IFDConfig, run_ifd
from curation.io import Files, InputError


@dataclass
class RunConfig:
    model: str = field(metadata={"help": "Scoring (weak) model: a folder or hub id of a causal LM."})
    input: str = field(metadata={"help": "Instruction JSONL ({id, instruction, input, output, ...} per line)."})
    output: str = field(metadata={"help": "Filtered instruction JSONL to write."})
    scores: str | None = field(default=None, metadata={"help": "Scores JSONL (default: OUTPUT_STEM.ifd.jsonl)."})
    # scoring (curate ifd)
    prompt_format: Literal["plain", "chat"] = field(
        default="plain", metadata={"help": "plain: Superfiltering's 'instruction\\ninput\\n'; chat: the model's chat "
                                           "template over one user turn."})
    batch_size: int = field(default=64, metadata={"help": "Most sequences per forward pass."})
    max_batch_tokens: int = field(
        default=2048, metadata={"help": "Most padded tokens per forward pass (2048 suits a CPU; on a GPU use more, "
                                        "e.g. 65536)."})
    chunk_size: int = field(default=256, metadata={"help": "Records scored and appended together."})
    max_length: int = field(default=1024, metadata={"help": "Records longer than this (prompt + response) are "
                                                            "reported and not scored."})
    variant: Literal["ppl_ratio", "loss_ratio"] = field(
        default="ppl_ratio", metadata={"help": "IFD variant: ppl_ratio (Superfiltering) or loss_ratio (Cherry-LLM)."})
    tokens: Literal["answer", "content"] = field(
        default="answer", metadata={"help": "Response tokens whose losses are averaged: answer (all of them) or "
                                            "content (the mentions and class labels inside the JSON; positives "
                                            "without any are reported, not scored, and not kept)."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "auto: float32 on CPU, bfloat16 (float16 without it) on GPU."})
    strong_model: str | None = field(
        default=None, metadata={"help": "The model the data is selected for; warn if its tokenizer differs."})
    reuse_prefix: bool = field(default=True, metadata={"help": "Reuse the key/value cache of a shared prompt prefix."})
    # selection (curate filter)
    ratio: float = field(default=0.5, metadata={"help": "Keep the top share of positives by IFD (of all positives)."})
    count: int | None = field(default=None, metadata={"help": "Keep this many positives instead of --ratio."})
    max_ifd: float = field(default=1.0, metadata={"help": "Positives with IFD above this are dropped."})
    keep_high_ifd: bool = field(default=False, metadata={"help": "Rank positives above --max-ifd instead of "
                                                                 "dropping them (reported either way)."})
    negative_ratio: float = field(default=1.0, metadata={"help": "Share of negatives (output []) to keep."})
    seed: int = field(default=0, metadata={"help": "Seed of the negative sample (and of --order random)."})
    order: str = field(default="top", metadata={
        "help": "Which positives are kept: 'top' (highest IFD), 'bottom' or 'random' (the control)."})
    negative_order: str = field(default="random", metadata={
        "help": "Which negatives --negative-ratio keeps: 'random' or 'ifd' (negatives are then scored too)."})

    def __post_init__(self):
        if self.scores is None:
            out = Path(self.output)
            self.scores = str(out.with_name(out.stem + ".ifd.jsonl"))
        if Path(self.scores).resolve() == Path(self.output).resolve():
            raise InputError("--scores", "must differ from --output")
        self.ifd_config()  # the sub-configs check their fields
        self.filter_config()

    def files(self) -> Files:
        ifd, filt = self.ifd_config().files(), self.filter_config().files()
        return Files(reads=ifd.reads, writes=[*ifd.writes, *filt.writes])

    def ifd_config(self) -> IFDConfig:
        own = ("output", "positives_only")
        shared = {f.name: getattr(self, f.name) for f in fields(IFDConfig) if f.name not in own}
        return IFDConfig(**shared, output=self.scores, positives_only=self.negative_order != "ifd")

    def filter_config(self) -> FilterConfig:
        shared = {f.name: getattr(self, f.name) for f in fields(FilterConfig) if f.name not in ("output", "scores")}
        return FilterConfig(**shared, scores=self.scores, output=self.output)


def run_pipeline(cfg: RunConfig) -> dict[str, Any] | None:
    """Score, then filter on the main process; return the filter manifest there (``None`` elsewhere)."""
    if run_ifd(cfg.ifd_config()) is None:
        return None
    return run_filter(cfg.filter_config())


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(RunConfig, argv, prog="bioselect curate run", description=__doc__.split("\n\n")[0])
    manifest = run_pipeline(cfg)
    if manifest is not None:
        t = manifest["totals"]
        print(f"kept {t.get('kept', 0)} of {sum(t.values())} records -> {cfg.output} (scores: {cfg.scores})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
