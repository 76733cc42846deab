"""Generate NER, RE, EE or TC answers for instruction records with a base model (and LoRA adapter), constrained or not.

    bioselect tune generate --model ../shared/models/smollm2-135m --adapter runs/lora --input runs/ncbi_test.jsonl \\
        --output runs/ncbi_pred.jsonl [--constrained | --unconstrained] [--batch-size 8] [--max-new-tokens 256]

Each record's task is its ``task`` field (``ner`` when absent; a file may mix tasks). Its prompt is its user turn in
the model's chat template (:func:`tuning.chat.render_prompt`, as in training); decoding is greedy, batched and
left-padded. ``--constrained`` (the default, needs the ``constrained`` extra) makes every answer valid against the
task's shipped schema in the training format, with types from the record's label set and mentions that are runs of
the input's words (:mod:`tuning.constrained`); ``--unconstrained`` takes the model's text as it comes and reports
parse and schema failures. A record's label set is ``--labels`` when given, else the list its instruction names
(entity types, relation types, event types or classes); ``--entity-types`` and ``--roles`` restrict RE entity types
and EE roles, which the shipped instructions do not name.

Writes PRED.jsonl, one line per input record in input order: ``{"id", "task", "output", "spans", "status",
"unplaced", "n_new_tokens", "finish"}`` (``output``: the generated JSON text; ``status``: ok, parse_error or
schema_error under the record's label set; ``spans``: for NER, ``[start, end, type]`` of the generated names placed
in the input, the k-th listing of a (type, name) at its k-th occurrence, unplaceable names left out and counted in
``unplaced``; for RE and EE ``[]``, with ``unplaced`` counting mentions absent from the input; ``finish``: stop or
length), and PRED.jsonl.manifest.json (provenance, model, adapter, mode, counts). Bad input (unreadable JSONL, a
record whose labels are unknown, a model without weights or chat template, an adapter for another base model) exits
with code 2 before generating and writes nothing.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import prompts
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
        metadata={"help": "Token budget of an answer; a constrained list that runs out is cut back to its last "
                          "complete item (a cut TC answer stays a parse error)."})
    labels: list[str] | None = field(
        default=None,
        metadata={"help": "Label set of every record (entity types, relation types, event types or classes; the "
                          "records must then be of one task); the list each instruction names if not given."})
    entity_types: list[str] | None = field(
        default=None,
        metadata={"help": "Entity types a constrained RE answer may give as head_type and tail_type; any word of "
                          "letters, digits, '_', '.', '-' if not given."})
    roles: list[str] | None = field(
        default=None,
        metadata={"help": "Argument roles a constrained EE answer may use; any word of letters, digits, '_', '.', "
                          "'-' if not given."})
    dtype: str = field(default="auto", metadata={"help": f"One of {', '.join(DTYPES)}; auto: float32 on CPU, "
                                                         "bfloat16 on CUDA."})

    def __post_init__(self):
        for name in ("model", "adapter", "input", "output"):  # recipes name ~/.cache/offline-models/...
            if getattr(self, name):
                setattr(self, name, os.path.expanduser(getattr(self, name)))
        if self.constrained and self.unconstrained:
            raise InputError("--unconstrained", "give --constrained or --unconstrained, not both")
        self.constrained = not self.unconstrained
        for name in ("batch_size", "max_new_tokens"):
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


LABEL_WORDS = {"ner": "entity types", "re": "relation types", "ee": "event types", "tc": "classes"}


def read_records(path: str, labels: list[str] | None) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Instruction records (each with its ``task``, ``ner`` when absent) and each one's label set: ``labels``, else
    the list its instruction names. A record without id, instruction or input, a duplicate id, an unknown task, a
    record whose label set is unknown, or ``labels`` over records of more than one task is an :class:`InputError`."""
    records, label_sets, seen = [], [], set()
    first_task: tuple[str, str] | None = None
    for n, rec in read_jsonl(path):
        missing = [k for k in REQUIRED if not isinstance(rec.get(k), str if k != "id" else (str, int))]
        if missing:
            raise InputError(path, f"record needs {', '.join(repr(k) for k in missing)} (instruction JSONL from "
                                   "bioselect data convert)", line=n)
        rec["id"] = str(rec["id"])
        if rec["id"] in seen:
            raise InputError(path, f"duplicate id {rec['id']!r}", line=n)
        seen.add(rec["id"])
        task = rec.setdefault("task", "ner")
        if task not in prompts.TASKS:
            raise InputError(path, f"unknown task {task!r}; one of {', '.join(prompts.TASKS)}", line=n,
                             record=rec["id"])
        if labels and first_task is not None and task != first_task[0]:
            raise InputError(path, f"--labels is one label set, but this file mixes tasks ({first_task[0]!r} in "
                                   f"record {first_task[1]!r}, {task!r} here); generate one task at a time or let "
                                   "each instruction name its labels", line=n, record=rec["id"])
        first_task = first_task or (task, rec["id"])
        found = labels or prompts.instruction_labels(task, rec["instruction"])
        if not found:
            raise InputError(path, f"the {task} instruction does not name its {LABEL_WORDS[task]} in the words of "
                                   f"prompts/templates/{task}.txt; give --labels", line=n, record=rec["id"])
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
    prompt_texts = [render_prompt(tokenizer, r) for r in records]
    grammars = (answer_grammars(tokenizer, [r["input"] for r in records], label_sets, [r["task"] for r in records],
                                cfg.entity_types, cfg.roles)
                if cfg.constrained else None)
    model = load_model(cfg.model, cfg.adapter, cfg.dtype, device, bnb)

    stats = GenerationStats()
    generated = generate(model, tokenizer, prompt_texts, grammars, cfg.batch_size, cfg.max_new_tokens, stats)
    rows = [prediction_row(r, g, labels) for r, g, labels in zip(records, generated, label_sets, strict=True)]
    statuses = Counter(row["status"] for row in rows)
    counts = {"records": len(rows), **{s: statuses.get(s, 0) for s in ("ok", "parse_error", "schema_error")},
              "finished_by_length": sum(row["finish"] == "length" for row in rows),
              "unplaced_names": sum(row["unplaced"] for row in rows),
              "new_tokens": stats.new_tokens,
              "by_task": {task: {s: sum(row["task"] == task and row["status"] == s for row in rows)
                                 for s in ("ok", "parse_error", "schema_error")}
                          for task in sorted({row["task"] for row in rows})}}
    manifest = provenance(
        cfg, [cfg.input], model=cfg.model, adapter=cfg.adapter, mode=cfg.mode, batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens, quantization=quantization.describe(bnb),
        tasks=dict(sorted(Counter(r["task"] for r in records).items())),
        labels=sorted({x for ls in label_sets for x in ls}), entity_types=cfg.entity_types, roles=cfg.roles,
        counts=counts,
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
