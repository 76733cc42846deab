"""Fixtures of the tuning tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import offline_model


def build_tiny_llama(out: Path, hidden_size: int = 32, intermediate_size: int = 64) -> Path:
    """Save a seeded tiny random Llama with SmolLM2's tokenizer and chat template into ``out`` (skip without them)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = offline_model("smollm2-135m")
    if folder is None:
        pytest.skip("SmolLM2 tokenizer not found under ~/.cache/offline-models (make models): the tiny test model "
                    "borrows its tokenizer and chat template")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=hidden_size, intermediate_size=intermediate_size, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer),
                         max_position_embeddings=1024, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random Llama saved with SmolLM2's tokenizer and chat template (session-wide, read-only)."""
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))
