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

    accelerate launch --num_processes 2 -m tuning.generate --model ... --input ... --output ...   # same output

Finished answers are appended batch by batch to ``PRED.jsonl.parts/rank-K.jsonl`` (one file per process, fsync'ed),
so a killed run started again with the same settings generates only what is missing; under ``accelerate launch``
the batches are dealt out to the processes, and the first process merges the parts into PRED.jsonl. A batch is the
same whatever the number of processes, so the output is byte-identical to one process's.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import prompts
from curation.cli import parse_config, run
from curation.io import (
    Files,
    InputError,
    append_lines,
    atomic_folder,
    atomic_write,
    check_files,
    check_model_source,
    drop_incomplete_tail,
    provenance,
    read_finished_lines,
    read_jsonl,
    sha256_file,
    together,
    write_json,
)
from tuning import quantization
from tuning.chat import render_prompt
from tuning.constrained import answer_grammars, require_llguidance
from tuning.generation import (
    GenerationStats,
    adapter_weights_file,
    check_adapter_files,
    default_device,
    generate,
    load_model,
    load_tokenizer,
    padding_tokens,
    plan_batches,
    prediction_row,
    prompt_token_ids,
    resolve_dtype,
)

DTYPES = ("auto", "float32", "bfloat16", "float16")
MANIFEST = ".manifest.json"
PARTS = ".parts"  # PRED.jsonl.parts/: settings.json and one rank-K.jsonl per process while a run is unfinished
SETTINGS = "settings.json"
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
    repetition_penalty: float = field(
        default=1.0,
        metadata={"help": "Divide the scores of tokens already in the prompt or the answer by this (CTRL's penalty, "
                          "transformers' repetition_penalty) before the grammar's mask; 1: off. Against answers "
                          "that repeat an item to the token budget; it also penalises the input's words, which "
                          "every mention repeats, so measure before using it."})
    dtype: str = field(default="auto", metadata={"help": f"One of {', '.join(DTYPES)}; auto: float32 on CPU, "
                                                         "bfloat16 on CUDA."})
    sort_by_length: bool = field(
        default=True, metadata={"help": "Batch prompts of similar token length together (longest first), so batches "
                                        "pad little; false: batches in input order. The output is in input order "
                                        "either way."})

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
        if not self.repetition_penalty > 0:
            raise InputError("--repetition-penalty", f"must be > 0, got {self.repetition_penalty}")
        if self.dtype not in DTYPES:
            raise InputError("--dtype", f"must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        self.check_quantization()

    def files(self) -> Files:
        return Files(reads=[self.input, self.model, self.adapter], writes=[self.output, self.output + MANIFEST],
                     folders=[self.output + PARTS])

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


def run_settings(cfg: GenerateConfig, dtype: str, quantization_info: dict[str, Any] | None) -> dict[str, Any]:
    """What a partial folder is recorded with and a resumed run must share: everything that decides the answers
    (the input's hash, the model and adapter, the decoding options and how records are batched)."""
    adapter_weights = adapter_weights_file(cfg.adapter)
    return {"input_sha256": sha256_file(cfg.input),
            "model": os.path.realpath(cfg.model) if os.path.isdir(cfg.model) else cfg.model,
            "adapter": os.path.realpath(cfg.adapter) if cfg.adapter else None,
            "adapter_sha256": sha256_file(adapter_weights) if adapter_weights else None,
            "mode": cfg.mode, "labels": cfg.labels, "entity_types": cfg.entity_types, "roles": cfg.roles,
            "max_new_tokens": cfg.max_new_tokens, "batch_size": cfg.batch_size,
            "sort_by_length": cfg.sort_by_length, "dtype": dtype, "quantization": quantization_info,
            # only when set: partial folders made before the option (no penalty) resume
            **({"repetition_penalty": cfg.repetition_penalty} if cfg.repetition_penalty != 1.0 else {})}


def read_parts(parts: Path, settings: dict[str, Any]) -> dict[str, str]:
    """``id -> prediction line`` of every finished record in a partial folder a killed run left (empty when there
    is none). A line cut by the kill (no newline) is ignored. A folder recorded with other settings is an
    :class:`InputError`, and nothing in it is touched."""
    if not parts.exists():
        return {}
    recorded = parts / SETTINGS
    try:
        previous = json.loads(recorded.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(parts, f"not a partial folder of tune generate (no readable {SETTINGS}); move it away or "
                                "delete it") from None
    if previous != settings:
        changed = ", ".join(k for k in settings if previous.get(k) != settings[k]) or "the recorded keys"
        raise InputError(recorded, f"a killed run with other settings ({changed}) left partial predictions here; "
                                   f"rerun it with the same settings or delete {parts}")
    return read_finished_lines(sorted(parts.glob("rank-*.jsonl")), "a prediction line",
                               f"delete {parts} to start again")


def launched_processes():
    """accelerate's process state when this call is one of the processes ``accelerate launch`` started (several of
    them, no process group yet); None for one process. A program that has set up the process group itself
    (``tune experiment`` runs each generation on its main process only) gets None: sharding needs every process to
    call :func:`generate_file` together."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return None
    from curation.io import process_state

    return process_state()


def generate_file(cfg: GenerateConfig) -> dict[str, Any] | None:
    """Generate an answer for every record of ``cfg.input``; write ``cfg.output`` and its manifest together.

    Returns the manifest (provenance, model, adapter, mode, ``counts``, ``tokens_per_second``, ...) on the main
    process, None on the others. Bad input (see the module doc; also an output that is one of the inputs, and a
    partial folder left by a run with other settings) raises :class:`~curation.io.InputError` before the model is
    loaded, and nothing is written.

    Batches are planned over all records (:func:`tuning.generation.plan_batches`) and batch ``k`` goes to process
    ``k % N``, so every batch, and so every answer, is the one a single process computes. Each process appends its
    finished batches to ``OUTPUT.parts/rank-K.jsonl``; records already there (a killed run's) are not generated
    again. The main process merges the parts in input order, writes the output and the manifest together, and
    removes the partial folder.
    """
    check_files(cfg.files())  # parse_config checks this for the command; a caller may build cfg itself
    records, label_sets = read_records(cfg.input, cfg.labels)
    state = launched_processes()
    rank, world = (state.process_index, state.num_processes) if state is not None else (0, 1)
    device = str(state.device) if state is not None else default_device()
    if cfg.constrained:
        try:
            require_llguidance()
        except ImportError as err:
            raise InputError("--constrained", str(err)) from None
    check_model_source(cfg.model)
    dtype = str(resolve_dtype(cfg.dtype, device)).removeprefix("torch.")
    bnb = cfg.bnb_config(dtype)
    if bnb is not None:
        quantization.check_quantizable(cfg.model, cfg.quantization_option)
    if cfg.adapter:
        check_adapter_files(cfg.adapter)
    parts = Path(cfg.output + PARTS)
    saved = quantization.saved_quantization(cfg.model)
    quant = quantization.describe(saved or bnb)
    settings = run_settings(cfg, dtype, quant)
    ids = [r["id"] for r in records]
    done = read_parts(parts, settings)
    resumed = sum(i in done for i in ids)

    tokenizer = load_tokenizer(cfg.model, cfg.adapter)
    prompt_texts = [render_prompt(tokenizer, r) for r in records]
    prompt_ids = prompt_token_ids(tokenizer, prompt_texts)
    lengths = [len(x) for x in prompt_ids]
    batches = plan_batches(lengths, cfg.batch_size, cfg.sort_by_length)
    pad_tokens, prompt_tokens = padding_tokens(lengths, batches)
    mine = [b for k, b in enumerate(batches) if k % world == rank and any(ids[i] not in done for i in b)]
    stats = GenerationStats()
    if mine:
        sub = [i for b in mine for i in b]  # my records, batch after batch; generate() indexes into this list
        grammars = (answer_grammars(tokenizer, [records[i]["input"] for i in sub], [label_sets[i] for i in sub],
                                    [records[i]["task"] for i in sub], cfg.entity_types, cfg.roles)
                    if cfg.constrained else None)
        model = load_model(cfg.model, cfg.adapter, cfg.dtype, device, bnb, saved_quantized=saved is not None)
    _barrier(state)  # every process has read what is done, and passed every check, before anything is written
    if rank == 0 and not parts.exists():
        with atomic_folder(parts) as tmp:  # the folder appears with its settings, or not at all
            write_json(tmp / SETTINGS, settings)
    _barrier(state)
    if mine:
        part = parts / f"rank-{rank}.jsonl"
        drop_incomplete_tail(part)

        def save(batch: list[int], answers) -> None:  # the whole batch is regenerated, only the missing are written
            append_lines(part, [json.dumps(prediction_row(records[sub[p]], g, label_sets[sub[p]]),
                                           ensure_ascii=False)
                                for p, g in zip(batch, answers, strict=True) if ids[sub[p]] not in done])

        at = {i: p for p, i in enumerate(sub)}
        generate(model, tokenizer, [prompt_texts[i] for i in sub], grammars, cfg.batch_size, cfg.max_new_tokens,
                 stats, batches=[[at[i] for i in b] for b in mine], on_batch=save,
                 prompt_ids=[prompt_ids[i] for i in sub], repetition_penalty=cfg.repetition_penalty)
    every = _gather(state, {"seconds": stats.seconds, "constraint_seconds": stats.constraint_seconds,
                            "new_tokens": stats.new_tokens,
                            "records": sum(ids[i] not in done for b in mine for i in b)})  # waits for everyone
    if rank != 0:
        return None

    lines = read_parts(parts, settings)
    missing = [i for i in ids if i not in lines]
    if missing:  # a process stopped without an error; its part is kept for a rerun
        raise RuntimeError(f"{len(missing)} records have no prediction (first: {missing[0]}); run again to finish")
    rows = [json.loads(lines[i]) for i in ids]
    statuses = Counter(row["status"] for row in rows)
    counts = {"records": len(rows), **{s: statuses.get(s, 0) for s in ("ok", "parse_error", "schema_error")},
              "finished_by_length": sum(row["finish"] == "length" for row in rows),
              "unplaced_names": sum(row["unplaced"] for row in rows),
              "new_tokens": sum(row["n_new_tokens"] for row in rows),
              "by_task": {task: {s: sum(row["task"] == task and row["status"] == s for row in rows)
                                 for s in ("ok", "parse_error", "schema_error")}
                          for task in sorted({row["task"] for row in rows})}}
    seconds = max(s["seconds"] for s in every)  # the processes generate at the same time
    generated = sum(s["new_tokens"] for s in every)
    manifest = provenance(
        cfg, [cfg.input], model=cfg.model, adapter=cfg.adapter, mode=cfg.mode, batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens, quantization=quant,
        tasks=dict(sorted(Counter(r["task"] for r in records).items())),
        labels=sorted({x for ls in label_sets for x in ls}), entity_types=cfg.entity_types, roles=cfg.roles,
        counts=counts, num_processes=world, resumed=resumed, generated_per_process=[s["records"] for s in every],
        sort_by_length=cfg.sort_by_length,
        padding_share=round(pad_tokens / prompt_tokens, 4) if prompt_tokens else 0.0,
        seconds=round(seconds, 2), tokens_per_second=round(generated / seconds, 2) if seconds else 0.0,
        constraint_seconds=round(sum(s["constraint_seconds"] for s in every), 2), device=device)
    with together():  # the predictions and their manifest land together or not at all
        with atomic_write(cfg.output) as f:
            f.writelines(lines[i] + "\n" for i in ids)
        write_json(cfg.output + MANIFEST, manifest)
    shutil.rmtree(parts)
    return manifest


def _barrier(state) -> None:
    if state is not None:
        state.wait_for_everyone()


def _gather(state, item: dict[str, Any]) -> list[dict[str, Any]]:
    if state is None:
        return [item]
    from accelerate.utils import gather_object

    return gather_object([item])


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(GenerateConfig, argv, prog="bioselect tune generate", description=__doc__.split("\n\n")[0])
    manifest = generate_file(cfg)
    if manifest is None:  # not the main process: the main one reports
        return 0
    counts = manifest["counts"]
    resumed = f" ({manifest['resumed']} resumed from {cfg.output}{PARTS})" if manifest["resumed"] else ""
    print(f"{cfg.mode}: {counts['records']} records{resumed} -> {cfg.output}; ok {counts['ok']}, parse errors "
          f"{counts['parse_error']}, schema errors {counts['schema_error']}, cut by --max-new-tokens "
          f"{counts['finished_by_length']}, unplaced names {counts['unplaced_names']}; "
          f"{manifest['tokens_per_second']:.1f} tokens/s")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
