"""Corpus records -> instruction records (the BioSelectTune format).

Each instruction record is ``{"id", "instruction", "input", "output", "dataset", "task", "spans"}``: ``output`` is
JSON text that validates against ``prompts.schema(task, labels)``; ``spans`` keeps the gold character offsets into
``input`` (``[start, end, label]``, in the order of ``output`` for NER) so strict span scoring works downstream.

    >>> from curation.records import Record, Span
    >>> r = Record(id="s1", text="BRCA1 in breast cancer", spans=[Span(9, 22, "Disease")])
    >>> ner_output(r)
    '[{"entity": "Disease", "name": "breast cancer"}]'
"""

from __future__ import annotations

import json
from typing import Any

import prompts
from curation.records import Corpus, Record


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def ner_entities(record: Record) -> list[dict[str, str]]:
    """Entities in order of appearance (start; the longer of two nested spans first)."""
    return [{"entity": s.label, "name": s.surface(record.text)} for s in record.sorted_spans()]


def ner_output(record: Record) -> str:
    return _dumps(ner_entities(record))


def re_output(record: Record) -> str:
    """Relations in order of the head's first character, then the tail's."""
    rels = sorted(record.relations, key=lambda r: (record.spans[r.head].start, record.spans[r.tail].start, r.label))
    return _dumps([
        {"head": record.spans[r.head].surface(record.text), "head_type": record.spans[r.head].label,
         "relation": r.label,
         "tail": record.spans[r.tail].surface(record.text), "tail_type": record.spans[r.tail].label}
        for r in rels
    ])


def ee_output(record: Record) -> str:
    """Events in order of their trigger; each role lists its mentions in order of appearance."""
    def key(e):
        return record.spans[e.trigger].start if e.trigger is not None else -1

    events = []
    for e in sorted(record.events, key=key):
        args: dict[str, list[str]] = {}
        for role, idx in sorted(e.arguments, key=lambda a: (record.spans[a[1]].start, a[0])):
            args.setdefault(role, []).append(record.spans[idx].surface(record.text))
        trigger = record.spans[e.trigger].surface(record.text) if e.trigger is not None else ""
        events.append({"event": e.type, "trigger": trigger, "arguments": args})
    return _dumps(events)


def tc_output(record: Record) -> str:
    if len(record.labels) != 1:
        raise ValueError(f"record {record.id} has {len(record.labels)} labels; TC needs exactly one")
    return _dumps({"label": record.labels[0]})


OUTPUTS = {"ner": ner_output, "re": re_output, "ee": ee_output, "tc": tc_output}


def task_labels(corpus: Corpus, task: str) -> list[str]:
    """The label list a task's instruction names: span types, relation types, event types or classes."""
    if task == "ner":
        return corpus.labels
    if task == "re":
        return sorted({r.label for rec in corpus for r in rec.relations})
    if task == "ee":
        return sorted({e.type for rec in corpus for e in rec.events})
    if task == "tc":
        return sorted({lab for rec in corpus for lab in rec.labels})
    raise ValueError(f"unknown task {task!r}; one of {', '.join(prompts.TASKS)}")


# the option of `tune generate` (and `tune experiment`, and the lora evaluator of `curate combos`) listing what a
# task's answers type beside their labels: see argument_types
TYPED_OPTION = {"re": "entity_types", "ee": "roles"}


def argument_types(corpus: Corpus, task: str) -> list[str]:
    """What a task's answers type beside their labels: the entity types of the relations' heads and tails (re), the
    roles of the events' arguments (ee); [] for ner and tc, whose labels are all their answers type."""
    if task == "re":
        return sorted({rec.spans[i].label for rec in corpus for r in rec.relations for i in (r.head, r.tail)})
    if task == "ee":
        return sorted({role for rec in corpus for e in rec.events for role, _ in e.arguments})
    return []


def convert_corpus(corpus: Corpus, task: str = "ner", labels: list[str] | None = None,
                   dataset: str | None = None) -> list[dict[str, Any]]:
    """Turn every record of a corpus into an instruction record for ``task``."""
    if task not in OUTPUTS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(prompts.TASKS)}")
    labels = labels or task_labels(corpus, task)
    if not labels:
        raise ValueError(f"corpus {corpus.path or corpus.dataset} has no {task} labels")
    name = dataset or corpus.dataset
    instr = prompts.instruction(task, labels, dataset=name)
    out = []
    for rec in corpus:
        row = {
            "id": rec.id,
            "instruction": instr,
            "input": rec.text if rec.question is None else f"{rec.question}\n{rec.text}",
            "output": OUTPUTS[task](rec),
            "dataset": name,
            "task": task,
        }
        if task == "ner":
            row["spans"] = [s.to_list() for s in rec.sorted_spans()]
        out.append(row)
    return out


def validate_outputs(rows: list[dict[str, Any]], labels: list[str] | None = None) -> list[tuple[str, str]]:
    """Check every row's ``output`` against its task schema; return ``(id, error)`` for each failure."""
    import jsonschema

    validators: dict[str, jsonschema.protocols.Validator] = {}
    failures = []
    for row in rows:
        task = row["task"]
        if task not in validators:
            s = prompts.schema(task, labels)
            validators[task] = jsonschema.Draft202012Validator(s)
        try:
            obj = json.loads(row["output"])
        except json.JSONDecodeError as err:
            failures.append((row["id"], f"output is not JSON: {err.msg}"))
            continue
        err = jsonschema.exceptions.best_match(validators[task].iter_errors(obj))
        if err is not None:
            failures.append((row["id"], err.message))
    return failures
