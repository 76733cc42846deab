"""How an instruction record becomes a chat conversation: one place, shared by training and generation.

The user turn is the instruction, a blank line, then the input; the assistant turn is the output (the JSON entity
list). Training renders both turns with the model's chat template (trl's conversational prompt-completion format);
generation renders the user turn with ``add_generation_prompt=True`` so the model continues with its answer.

Both pass :data:`TEMPLATE_KWARGS` to the template: ``enable_thinking=False`` puts hybrid reasoning models (Qwen3)
in their non-thinking mode, where the generation prompt already ends with an empty ``<think>\n\n</think>\n\n``
block, so the completion a model is trained on and the answer it generates (and a grammar constrains) start with
the JSON itself. Templates that do not use the variable ignore it.

    >>> rec = {"instruction": "Extract diseases.", "input": "BRCA1 in breast cancer", "output": "[]"}
    >>> prompt_completion(rec)["prompt"]
    [{'role': 'user', 'content': 'Extract diseases.\\n\\nBRCA1 in breast cancer'}]
    >>> prompt_completion(rec)["completion"]
    [{'role': 'assistant', 'content': '[]'}]
    >>> prompt_completion(rec)["chat_template_kwargs"]
    {'enable_thinking': False}
"""

from __future__ import annotations

from typing import Any

from prompts import CHAT_TEMPLATE_KWARGS as TEMPLATE_KWARGS  # trl reads them from an example's chat_template_kwargs


def user_content(record: dict[str, Any]) -> str:
    """The text of the user turn: instruction, blank line, input."""
    return f"{record['instruction']}\n\n{record['input']}"


def prompt_messages(record: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": "user", "content": user_content(record)}]


def prompt_completion(record: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """trl's conversational prompt-completion example for one instruction record (with the template variables)."""
    return {"prompt": prompt_messages(record), "completion": [{"role": "assistant", "content": record["output"]}],
            "chat_template_kwargs": dict(TEMPLATE_KWARGS)}


def render_prompt(tokenizer, record: dict[str, Any]) -> str:
    """The generation prompt text: the user turn in the model's chat template, ending where the answer starts."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("the tokenizer has no chat template; bioselect renders prompts with the model's own template")
    return tokenizer.apply_chat_template(prompt_messages(record), tokenize=False, add_generation_prompt=True,
                                         **TEMPLATE_KWARGS)
