"""The token MTL model: any Hugging Face encoder shared by up to four linear heads (hard parameter sharing).

    from transformers import AutoModel
    model = TokenMTL(AutoModel.from_pretrained("dmis-lab/biobert-base-cased-v1.2"), num_labels=11)
    logits = model(input_ids, attention_mask)
    # {"ner": (B, T, 11), "mtcls": (B, T, 3), "bcls": (B, 2), "mcls": (B, 4)}

Token heads (NER, mtCLS) read every subword's last hidden state; sentence heads (bCLS, mCLS) read the first
position (``[CLS]`` for BERT encoders). ``heads=("ner",)`` is the single-task baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from curation.io import InputError, check_model_source
from mtl_baselines.token_mtl.labels import MCLS_NAMES, MTCLS_NAMES
from mtl_baselines.token_mtl.losses import HEADS

if TYPE_CHECKING:
    from mtl_baselines.token_mtl.train import TrainArgs

TOKEN_HEADS = ("ner", "mtcls")
HEAD_SIZES = {"mtcls": len(MTCLS_NAMES), "bcls": 2, "mcls": len(MCLS_NAMES)}
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "spiece.model", "vocab.json")


class TokenMTL(nn.Module):
    """``encoder`` (a ``transformers`` base model returning ``last_hidden_state``), ``num_labels`` NER (BIO)
    labels, the ``heads`` to build (a subset of ``("ner", "mtcls", "bcls", "mcls")`` holding ``"ner"``) and the
    dropout applied to the encoder output before every head."""

    def __init__(self, encoder: nn.Module, num_labels: int, heads: Sequence[str] = HEADS, dropout: float = 0.1):
        super().__init__()
        if "ner" not in heads or set(heads) - set(HEADS):
            raise ValueError(f"heads must include 'ner' and come from {', '.join(HEADS)}, got {list(heads)}")
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        hidden = encoder.config.hidden_size
        sizes = HEAD_SIZES | {"ner": num_labels}
        self.heads = nn.ModuleDict({h: nn.Linear(hidden, sizes[h]) for h in HEADS if h in heads})

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.dropout(self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state)
        return {name: head(hidden if name in TOKEN_HEADS else hidden[:, 0]) for name, head in self.heads.items()}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The encoder's trainable parameters (where task gradients are compared)."""
        return [p for p in self.encoder.parameters() if p.requires_grad]


def check_tokenizer(tokenizer: Any, vocab_size: int, tokenizer_name: str, model_name: str,
                    shipped_vocab: dict[str, int] | None = None) -> None:
    """Raise :class:`InputError` when a tokenizer cannot drive an encoder.

    The tokenizer must be a fast one (word alignment needs ``word_ids()``), must not produce ids beyond the
    encoder's embedding table, and must have the same vocabulary as the tokenizer shipped with the encoder
    (``shipped_vocab``, when the encoder folder has one).
    """
    if not getattr(tokenizer, "is_fast", False):
        raise InputError("--tokenizer", f"{tokenizer_name} is not a fast tokenizer; word alignment needs word_ids()")
    if len(tokenizer) > vocab_size:
        raise InputError("--tokenizer", f"tokenizer/encoder mismatch: {tokenizer_name} has {len(tokenizer)} tokens "
                         f"but the encoder {model_name} embeds only {vocab_size}; give the encoder's own tokenizer")
    if shipped_vocab is not None and tokenizer.get_vocab() != shipped_vocab:
        raise InputError("--tokenizer", f"tokenizer/encoder mismatch: {tokenizer_name}'s vocabulary differs from "
                         f"the tokenizer shipped with {model_name}; drop --tokenizer to use the encoder's own")


def load_tokenizer(model: str, tokenizer: str | None = None) -> Any:
    """Load the tokenizer for ``model`` (``tokenizer`` overrides its location) and check it fits the encoder (a
    local ``model`` folder must hold a config and intact weights, checked before anything is loaded)."""
    from transformers import AutoConfig, AutoTokenizer

    check_model_source(model)
    name = tokenizer or model
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise InputError("--model", f"cannot load an encoder config from {model!r}: {err}") from None
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as err:
        raise InputError("--tokenizer" if tokenizer else "--model", f"cannot load a tokenizer from {name!r}: {err}"
                         ) from None
    shipped = None
    if tokenizer and tokenizer != model and Path(model).is_dir() and \
            any((Path(model) / f).is_file() for f in _TOKENIZER_FILES):
        shipped = AutoTokenizer.from_pretrained(model).get_vocab()
    check_tokenizer(tok, config.vocab_size, name, model, shipped)
    return tok


def build_model(cfg: TrainArgs, num_labels: int, heads: Sequence[str]) -> TokenMTL:
    """Builder: the config's encoder (``cfg.model``, a local folder or hub id) with the requested heads."""
    from transformers import AutoModel

    return TokenMTL(AutoModel.from_pretrained(cfg.model), num_labels, heads=heads, dropout=cfg.dropout)
