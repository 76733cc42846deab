"""Prompt templates (one per task family) and the JSON schemas that answers must validate against.

    >>> instruction("ner", ["Disease"]).splitlines()[0].split(": ")[-1]
    'Disease.'
    >>> schema("ner", ["Disease"])["items"]["properties"]["entity"]["enum"]
    ['Disease']
"""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources

TASKS = ("ner", "re", "ee", "tc")

# Variables passed to every chat-template rendering (training, generation, chat-format IFD): hybrid reasoning
# models (Qwen3) answer in non-thinking mode, with an empty think block already in the generation prompt, so the
# answer starts with the JSON. Templates that do not use a variable ignore it.
CHAT_TEMPLATE_KWARGS = {"enable_thinking": False}

# Human-readable descriptions used by the TC template, by dataset name.
TC_DESCRIPTIONS = {
    "HealthAdvice": "Decide whether the sentence from a research paper gives health advice, and how strongly.",
    "CausalLanguage": "Decide which kind of relation the sentence from a research paper claims between its findings.",
    "ADE-Corpus-V2": "Decide whether the sentence reports an adverse drug effect.",
}


@cache
def template(task: str) -> str:
    """The raw template text of a task family (``ner``, ``re``, ``ee``, ``tc``)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    return resources.files(__package__).joinpath("templates", f"{task}.txt").read_text(encoding="utf-8").strip()


def instruction(task: str, labels: list[str], dataset: str = "") -> str:
    """The instruction for a task with the dataset's label list filled in."""
    return template(task).format(labels=", ".join(labels), description=TC_DESCRIPTIONS.get(dataset, ""))


def instruction_labels(task: str, instruction: str) -> list[str] | None:
    """The label list an instruction names in the ``{labels}`` slot of the task's template, or None when no line of
    the instruction holds that slot's lead-in (the clause before ``{labels}``) and its ending.

    >>> instruction_labels("re", instruction("re", ["ADE", "DOSE"]))
    ['ADE', 'DOSE']
    >>> instruction_labels("tc", "Classify the text into exactly one of these labels: ade, no_ade.")
    ['ade', 'no_ade']
    >>> instruction_labels("ee", "Find the events.") is None
    True
    """
    line = next(x for x in template(task).splitlines() if "{labels}" in x)
    before, after = line.split("{labels}", 1)
    lead = before.rsplit(". ", 1)[-1]  # the clause that introduces the list, without the sentences before it
    for text in instruction.splitlines():
        i = text.find(lead)
        if i >= 0 and text.endswith(after):
            labels = [x.strip() for x in text[i + len(lead) : len(text) - len(after)].split(",")]
            return labels if all(labels) else None
    return None


@cache
def _schema(task: str) -> dict:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; one of {', '.join(TASKS)}")
    return json.loads(resources.files(__package__).joinpath("schemas", f"{task}.json").read_text(encoding="utf-8"))


def schema(task: str, labels: list[str] | None = None) -> dict:
    """The JSON schema of a task's answer; with ``labels``, types are restricted to that set."""
    s = copy.deepcopy(_schema(task))
    if labels:
        if task == "ner":
            s["items"]["properties"]["entity"]["enum"] = list(labels)
        elif task == "re":
            s["items"]["properties"]["relation"]["enum"] = list(labels)
        elif task == "ee":
            s["items"]["properties"]["event"]["enum"] = list(labels)
        elif task == "tc":
            s["properties"]["label"]["enum"] = list(labels)
    return s
