"""Training data for ``bioselect tune train``: instruction JSONL -> trl prompt-completion examples, and dataset mixes.

Each record becomes trl's conversational prompt-completion example (:func:`tuning.chat.prompt_completion`, the
rendering generation uses too); trl renders it with the model's chat template and computes the loss on the
completion tokens only.

Two ways to combine several datasets (a record's ``dataset`` field names its dataset):

* ``concat``: every record of every file, once per epoch (or cycled until ``max_steps``).
* ``even``: a pool of exactly the examples ``max_steps`` optimizer steps consume; each draw picks a dataset with
  equal probability, then that dataset's next record in a seeded shuffled order (reshuffled when it runs out). A
  small dataset is repeated and a large one subsampled, so the mix and the step count do not depend on the sizes.

    >>> groups = {name: [{"dataset": name, "id": i} for i in range(size)] for name, size in (("a", 3), ("b", 100))}
    >>> drawn = even_mix(groups, 1000, seed=0)
    >>> len(drawn), sorted(draw_counts(drawn).items())
    (1000, [('a', 517), ('b', 483)])
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curation.io import InputError, read_jsonl
from tuning.chat import prompt_completion, render_prompt

MIX_STRATEGIES = ("concat", "even")
REQUIRED_FIELDS = ("instruction", "input", "output")


def load_records(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Read instruction JSONL files; a record without an output, or an empty file, is an InputError.

    A record lacking a ``dataset`` field is put in a dataset named after its file.
    """
    records: list[dict[str, Any]] = []
    for path in paths:
        for line, rec in read_jsonl(path):
            rid = str(rec.get("id", "")) or None
            for key in REQUIRED_FIELDS:
                if key not in rec or rec[key] is None:
                    what = "no output (training needs the answer)" if key == "output" else f"no {key!r} field"
                    raise InputError(path, f"record has {what}", line=line, record=rid)
                if not isinstance(rec[key], str):
                    raise InputError(path, f"{key!r} must be a string, got {type(rec[key]).__name__}", line=line,
                                     record=rid)
            if not rec["output"].strip():
                raise InputError(path, "record has an empty output (training needs the answer; [] for none)",
                                 line=line, record=rid)
            records.append({**rec, "dataset": str(rec.get("dataset") or Path(path).stem)})
    return records


def render_example(tokenizer, record: dict[str, Any]) -> str:
    """The whole training example as text: prompt and answer in the model's chat template."""
    pc = prompt_completion(record)
    return tokenizer.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=False,
                                         **pc["chat_template_kwargs"])


def check_lengths(path: str, tokenizer, max_length: int) -> tuple[int, int]:
    """Refuse a record of ``path`` whose prompt alone takes ``max_length`` tokens or more (:class:`InputError` naming
    its line and id): trl cuts an example at ``max_length``, so nothing of its answer would be trained, and trl
    drops such examples silently (a file of them leaves nothing to train on). Return how many examples are longer
    than ``max_length`` (their answers are cut at the end) and how many records there are."""
    rows = list(read_jsonl(path))
    prompts = tokenizer([render_prompt(tokenizer, r) for _, r in rows], add_special_tokens=False)["input_ids"]
    for (line, rec), ids in zip(rows, prompts):
        if len(ids) >= max_length:
            raise InputError(path, f"the prompt is {len(ids)} tokens, max_length is {max_length}: no token of the "
                                   "answer would be trained (raise --max-length, or drop the record)", line=line,
                             record=str(rec.get("id", "")) or None)
    examples = tokenizer([render_example(tokenizer, r) for _, r in rows], add_special_tokens=False)["input_ids"]
    return sum(len(ids) > max_length for ids in examples), len(rows)


def group_by_dataset(records: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Records per ``dataset`` value, in first-seen order."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        groups.setdefault(rec["dataset"], []).append(rec)
    return groups


def even_mix(groups: Mapping[str, Sequence[dict[str, Any]]], n: int, seed: int) -> list[dict[str, Any]]:
    """Draw ``n`` records: each draw picks a dataset uniformly at random, then its next record without replacement
    from a seeded shuffled order that is reshuffled when the dataset is used up. Deterministic for a seed."""
    if not groups or any(len(g) == 0 for g in groups.values()):
        raise ValueError("even_mix needs at least one dataset and no empty dataset")
    rng = random.Random(seed)
    names = sorted(groups)
    orders: dict[str, list[int]] = {name: [] for name in names}
    drawn = []
    for _ in range(n):
        name = rng.choice(names)
        if not orders[name]:
            orders[name] = list(range(len(groups[name])))
            rng.shuffle(orders[name])
        drawn.append(groups[name][orders[name].pop()])
    return drawn


def draw_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many of ``records`` come from each dataset."""
    return dict(Counter(r["dataset"] for r in records))


def task_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """How many of ``records`` are of each task (a record's ``task`` field, ``ner`` when absent).

    >>> task_counts([{"task": "re"}, {}, {"task": "re"}])
    {'re': 2, 'ner': 1}
    """
    return dict(Counter(r.get("task") or "ner" for r in records))


def pool_size(max_steps: int, global_batch: int, examples_per_row: int = 1) -> int:
    """Examples that ``max_steps`` optimizer steps of ``global_batch`` rows consume (a packed row holds about
    ``examples_per_row`` examples).

    >>> pool_size(150, 8), pool_size(150, 8, examples_per_row=3)
    (1200, 3600)
    """
    return max_steps * global_batch * max(1, examples_per_row)


def examples_per_row(lengths: Sequence[int], max_length: int) -> int:
    """About how many examples of these token lengths a packed row of ``max_length`` tokens holds.

    >>> examples_per_row([100, 120, 80], 512)
    5
    """
    mean = sum(min(n, max_length) for n in lengths) / max(1, len(lengths))
    return max(1, math.floor(max_length / max(1.0, mean)))


def to_dataset(records: Sequence[dict[str, Any]]):
    """A ``datasets.Dataset`` of trl conversational prompt-completion examples (columns ``prompt``, ``completion``)."""
    from datasets import Dataset

    return Dataset.from_list([prompt_completion(r) for r in records])
