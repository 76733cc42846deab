"""How an instruction record becomes a chat conversation: one place, shared by training and generation.

The user turn is the instruction, a blank line, then the input; the assistant turn is the output (the JSON entity
list). Training renders both turns with the model's chat template (trl's conversational prompt-completion format);
generation renders the user turn with ``add_generation_prompt=True`` so the model continues with its answer.

    >>> rec = {"instruction": "Extract diseases.", "input": "BRCA1 in breast cancer", "output": "[]"}
    >>> prompt_completion(rec)["prompt"]
    [{'role': 'user', 'content': 'Extract diseases.\\n\\nBRCA1 in breast cancer'}]
    >>> prompt_completion(rec)["completion"]
    [{'role': 'assistant', 'content': '[]'}]
"""

from __future__ import annotations

from typing import Any


def user_content(record: dict[str, Any]) -> str:
    """The text of the user turn: instruction, blank line, input."""
    return f"{record['instruction']}\n\n{record['input']}"


def prompt_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": user_content(record)}]


def prompt_completion(record: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """trl's conversational prompt-completion example for one instruction record."""
    return {"prompt": prompt_messages(record), "completion": [{"role": "assistant", "content": record["output"]}]}


def render_prompt(tokenizer, record: dict[str, Any]) -> str:
    """The generation prompt text: the user turn in the model's chat template, ending where the answer starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; bioselect renders prompts with the model's own template")
    return tokenizer.apply_chat_template(prompt_messages(record), tokenize=False, add_generation_prompt=True)
