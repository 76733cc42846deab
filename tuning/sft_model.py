"""Model side of ``bioselect tune train``: input checks, the tokenizer and its chat template, the LoRA config,
checkpoints to resume from (quantisation: :mod:`tuning.quantization`).

The end-of-turn token is read off the chat template rather than trusted from ``tokenizer.eos_token``: a base
checkpoint's EOS (Qwen2.5's ``<|endoftext|>``) is often not the token that closes an assistant turn
(``<|im_end|>``), and a model fine-tuned on the template must learn to stop at the latter.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from curation.io import InputError


def load_tokenizer(model: str):
    """The model's tokenizer; it must carry a chat template."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise InputError(model, f"cannot load the tokenizer: {str(err).splitlines()[0]}") from None
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(model, "the tokenizer has no chat template (training renders records with the model's own "
                                "template: use an instruct/chat checkpoint or add a chat_template.jinja)")
    return tokenizer


def end_of_turn_token(tokenizer) -> str | None:
    """The special token the chat template closes an assistant turn with (ChatML ``<|im_end|>``, Llama 3
    ``<|eot_id|>``), or None when the turn is not closed by a special token."""
    sentinel = "bioselect-answer-sentinel"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "question"}, {"role": "assistant", "content": sentinel}], tokenize=False)
    if sentinel not in text:
        return None
    tail = text[text.rindex(sentinel) + len(sentinel):]
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return tokenizer.convert_ids_to_tokens(ids[0]) if ids and ids[0] in special else None


def template_info(tokenizer, end_of_turn: str | None) -> dict[str, Any]:
    """What the manifest records about the chat template."""
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    return {"source": tokenizer.name_or_path, "sha256": hashlib.sha256(template.encode()).hexdigest(),
            "end_of_turn": end_of_turn, "tokenizer_eos": tokenizer.eos_token}


def lora_config(r: int, alpha: int, dropout: float, target_modules: str):
    """A peft ``LoraConfig`` for causal LM training; ``target_modules`` is ``all-linear`` or comma-separated names."""
    from peft import LoraConfig

    targets = target_modules if target_modules == "all-linear" else [m.strip() for m in target_modules.split(",")]
    return LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, bias="none",
                      task_type="CAUSAL_LM")


def resolve_checkpoint(resume: str, output_dir: str) -> str | None:
    """The checkpoint to resume from: ``auto`` -> the newest ``checkpoint-*`` in ``output_dir`` (None if there is
    none), ``no`` -> None, else the given folder, which must hold a Trainer checkpoint."""
    if resume == "no":
        return None
    if resume == "auto":
        if not Path(output_dir).is_dir():
            return None
        from transformers.trainer_utils import get_last_checkpoint

        return get_last_checkpoint(output_dir)
    if not (Path(resume) / "trainer_state.json").is_file():
        raise InputError("--resume-from-checkpoint", f"{resume} is not a Trainer checkpoint (no trainer_state.json)")
    return resume


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "bitsandbytes"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out
