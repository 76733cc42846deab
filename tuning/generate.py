"""Generate NER answers for instruction records with a base model (and LoRA adapter), constrained or not.

    bioselect tune generate --model ../shared/models/smollm2-135m --adapter runs/lora --input runs/ncbi_test.jsonl \\
        --output runs/ncbi_pred.jsonl [--constrained | --unconstrained] [--batch-size 8] [--max-new-tokens 256]

Each record's prompt is its user turn in the model's chat template (:func:`tuning.chat.render_prompt`, as in
training); decoding is greedy, batched and left-padded. ``--constrained`` (the default, needs the ``constrained``
extra) makes every answer a JSON array valid against the shipped NER schema, with types from the record's label set
and names that are substrings of the input (:mod:`tuning.constrained`); ``--unconstrained`` takes the model's text
as it comes and reports parse and schema failures. A record's label set is ``--labels`` when given, else the types
its instruction names.

Writes PRED.jsonl, one line per input record in input order: ``{"id", "output", "spans", "status", "unplaced",
"n_new_tokens", "finish"}`` (``output``: the generated JSON text; ``spans``: ``[start, end, type]`` of the generated
names placed in the input, the k-th listing of a (type, name) at its k-th occurrence, unplaceable names left out and
counted in ``unplaced``; ``status``: ok, parse_error or schema_error; ``finish``: stop or length), and
PRED.jsonl.manifest.json (provenance, model, adapter, mode, counts). Bad input (unreadable JSONL, a model without
weights or chat template, an adapter for another base model) exits with code 2 before generating and writes nothing.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from curation.cli import parse_config, run
from curation.io import (
    Files,
    InputError,
    check_files,
    check_model_source,
    provenance,
    read_jsonl,
    together,
    write_json,
    write_jsonl,
)
from tuning import quantization
from tuning.chat import render_prompt
from tuning.constrained import answer_grammars, require_llguidance
from tuning.generation import (
    GenerationStats,
    check_adapter_files,
    default_device,
    generate,
    instruction_labels,
    load_model,
    load_tokenizer,
    prediction_row,
    resolve_dtype,
)

DTYPES = ("auto", "float32", "bfloat16", "float16")
MANIFEST = ".manifest.json"
REQUIRED = ("id", "instruction", "input")


@dataclass
class GenerateConfig(quantization.QuantizationArguments):
    model: str = field(metadata={"help": "Base model: a local folder or a hub id."})
    input: str = field(metadata={"help": "Instruction JSONL (bioselect data convert) with id, instruction, input."})
    output: str = field(metadata={"help": "Predictions JSONL to write; the manifest goes beside it."})
    adapter: str | None = field(default=None, metadata={"help": "LoRA adapter folder (peft) to apply to the model."})
    constrained: bool = field(
        default=False,
        metadata={"help": "Constrain decoding to schema-valid JSON whose names are substrings of the input "
                          "(the default; needs the 'constrained' extra)."})
    unconstrained: bool = field(
        default=False, metadata={"help": "Decode freely and report parse and schema failures."})
    batch_size: int = field(default=8, metadata={"help": "Prompts per batch."})
    max_new_tokens: int = field(
        default=256,
        metadata={"help": "Token budget of an answer; a constrained answer that runs out is cut back to its last "
                          "complete entity."})
    labels: list[str] | None = field(
        default=None,
        metadata={"help": "Entity types for every record; the types each instruction names if not given."})
    max_mention_pieces: int = field(
        default=32, metadata={"help": "Longest constrained name, in pieces (word runs and punctuation characters)."})
    dtype: str = field(default="auto", metadata={"help": f"One of {', '.join(DTYPES)}; auto: float32 on CPU, "
                                                         "bfloat16 on CUDA."})

    def __post_init__(self):
        for name in ("model", "adapter", "input", "output"):  # recipes name ~/.cache/offline-models/...
            if getattr(self, name):
                setattr(self, name, os.path.expanduser(getattr(self, name)))
        if self.constrained and self.unconstrained:
            raise InputError("--unconstrained", "give --constrained or --unconstrained, not both")
        self.constrained = not self.unconstrained
        for name in ("batch_size", "max_new_tokens", "max_mention_pieces"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name}", "must be >= 1")
        if self.dtype not in DTYPES:
            raise InputError("--dtype", f"must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        self.check_quantization()

    def files(self) -> Files:
        return Files(reads=[self.input, self.model, self.adapter], writes=[self.output, self.output + MANIFEST])

    @property
    def mode(self) -> str:
        return "constrained" if self.constrained else "unconstrained"


def read_records(path: str, labels: list[str] | None) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Instruction records and each one's label set; a record without id, instruction or input, a duplicate id, or
    a record whose label set is unknown is an :class:`InputError`."""
    records, label_sets, seen = [], [], set()
    for n, rec in read_jsonl(path):
        missing = [k for k in REQUIRED if not isinstance(rec.get(k), str if k != "id" else (str, int))]
        if missing:
            raise InputError(path, f"record needs {', '.join(repr(k) for k in missing)} (instruction JSONL from "
                                   "bioselect data convert)", line=n)
        rec["id"] = str(rec["id"])
        if rec["id"] in seen:
            raise InputError(path, f"duplicate id {rec['id']!r}", line=n)
        seen.add(rec["id"])
        if rec.get("task", "ner") != "ner":
            raise InputError(path, f"generation is for NER records; this record's task is {rec['task']!r}", line=n)
        found = labels or instruction_labels(rec["instruction"])
        if not found:
            raise InputError(path, "the instruction does not name its entity types in the shipped template's words; "
                                   "give --labels", line=n, record=rec["id"])
        records.append(rec)
        label_sets.append(list(found))
    return records, label_sets


def generate_file(cfg: GenerateConfig) -> dict[str, Any]:
    """Generate an answer for every record of ``cfg.input``; write ``cfg.output`` and its manifest together.

    Returns the manifest (provenance, model, adapter, mode, ``counts``, ``tokens_per_second``, ...). Bad input (see
    the module doc; also an output that is one of the inputs) raises :class:`~curation.io.InputError` before the
    model is loaded, and nothing is written.
    """
    check_files(cfg.files())  # parse_config checks this for the command; a caller may build cfg itself
    records, label_sets = read_records(cfg.input, cfg.labels)
    device = default_device()
    if cfg.constrained:
        try:
            require_llguidance()
        except ImportError as err:
            raise InputError("--constrained", str(err)) from None
    check_model_source(cfg.model)
    bnb = cfg.bnb_config(str(resolve_dtype(cfg.dtype, device)).removeprefix("torch."))
    if bnb is not None:
        quantization.check_quantizable(cfg.model, cfg.quantization_option)
    if cfg.adapter:
        check_adapter_files(cfg.adapter)
    tokenizer = load_tokenizer(cfg.model, cfg.adapter)
    prompts = [render_prompt(tokenizer, r) for r in records]
    grammars = (answer_grammars(tokenizer, [r["input"] for r in records], label_sets, cfg.max_mention_pieces)
                if cfg.constrained else None)
    model = load_model(cfg.model, cfg.adapter, cfg.dtype, device, bnb)

    stats = GenerationStats()
    generated = generate(model, tokenizer, prompts, grammars, cfg.batch_size, cfg.max_new_tokens, stats)
    rows = [prediction_row(r, g, labels) for r, g, labels in zip(records, generated, label_sets, strict=True)]
    statuses = Counter(row["status"] for row in rows)
    counts = {"records": len(rows), **{s: statuses.get(s, 0) for s in ("ok", "parse_error", "schema_error")},
              "finished_by_length": sum(row["finish"] == "length" for row in rows),
              "unplaced_names": sum(row["unplaced"] for row in rows),
              "new_tokens": stats.new_tokens}
    manifest = provenance(
        cfg, [cfg.input], model=cfg.model, adapter=cfg.adapter, mode=cfg.mode, batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens, quantization=quantization.describe(bnb),
        labels=sorted({x for ls in label_sets for x in ls}), counts=counts,
        seconds=round(stats.seconds, 2), tokens_per_second=round(stats.tokens_per_second, 2),
        constraint_seconds=round(stats.constraint_seconds, 2), device=str(next(model.parameters()).device))
    with together():  # the predictions and their manifest land together or not at all
        write_jsonl(cfg.output, rows)
        write_json(cfg.output + MANIFEST, manifest)
    return manifest


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(GenerateConfig, argv, prog="bioselect tune generate", description=__doc__.split("\n\n")[0])
    manifest = generate_file(cfg)
    counts = manifest["counts"]
    print(f"{cfg.mode}: {counts['records']} records -> {cfg.output}; ok {counts['ok']}, parse errors "
          f"{counts['parse_error']}, schema errors {counts['schema_error']}, cut by --max-new-tokens "
          f"{counts['finished_by_length']}, unplaced names {counts['unplaced_names']}; "
          f"{manifest['tokens_per_second']:.1f} tokens/s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
