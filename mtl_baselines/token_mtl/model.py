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

import torch
from torch import nn

from mtl_baselines.token_mtl.labels import MCLS_NAMES, MTCLS_NAMES
from mtl_baselines.token_mtl.losses import HEADS

TOKEN_HEADS = ("ner", "mtcls")
HEAD_SIZES = {"mtcls": len(MTCLS_NAMES), "bcls": 2, "mcls": len(MCLS_NAMES)}


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


def build_model(model: str, num_labels: int, heads: Sequence[str], dropout: float = 0.1) -> TokenMTL:
    """Builder: the encoder ``model`` (a local folder or hub id) with the requested heads."""
    from transformers import AutoModel

    return TokenMTL(AutoModel.from_pretrained(model), num_labels, heads=heads, dropout=dropout)
