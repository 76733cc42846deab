"""A tiny random BERT and its word-level tokenizer (vocabulary ``w0`` .. ``w199``) for benchmarks run without
``--model``; the benchmarks sit beside this file, so ``from tiny_bert import tiny_bert`` finds it."""

from __future__ import annotations

import tempfile
from pathlib import Path


def tiny_bert(max_positions: int = 128):
    """``(tokenizer, encoder)``: 2 layers, 64 hidden, random weights (seed them with ``torch.manual_seed``)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(f"w{i}" for i in range(200))]
    path = Path(tempfile.mkdtemp()) / "vocab.txt"
    path.write_text("\n".join(vocab) + "\n")
    encoder = BertModel(BertConfig(vocab_size=len(vocab), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=128, max_position_embeddings=max_positions))
    return BertTokenizerFast(vocab_file=str(path)), encoder
