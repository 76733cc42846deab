"""The clinical QA model: an encoder whose lower layers are shared and whose upper layers are copied per task, a
span head (start/end) and a multi-label answer-category head.

    from transformers import AutoModel
    model = ClinicalQA(AutoModel.from_pretrained("emilyalsentzer/Bio_ClinicalBERT"), num_categories=4,
                       shared_layers=6)           # the paper: 6 of BERT-base's 12 layers shared
    out = model(input_ids, attention_mask, token_type_ids)
    # {"start": (B, T), "end": (B, T), "category": (B, 4)}

With both tasks (``tasks=("qa", "cls")``) the embeddings and the first ``shared_layers`` transformer layers run
once; each task then runs its own copy of the remaining layers (initialised from the same pretrained weights) and
its head. ``shared_layers`` may be anything from 0 (only the embeddings shared) to the encoder's depth (hard
sharing: one encoder, two heads); the default is half the depth rounded down, the paper's ratio (3 of MiniLM's 6).
A single-task model (``("qa",)`` or ``("cls",)``) is the plain encoder with one head.

Heads read the encoder output after dropout: the span head is two fully connected ReLU layers (512 and 256 units)
applied to every position and a linear layer to two logits (start, end); the category head is three fully
connected ReLU layers (512, 256 and 128 units) on the first position (``[CLS]``) and a linear layer to one logit per
category (sigmoid outputs, multi-label).

Works with BERT-family encoders whose model class keeps its layers in ``encoder.layer`` and calls
``self.embeddings(..., inputs_embeds=...)`` (BERT, BioBERT, ClinicalBERT, PubMedBERT, RoBERTa, ELECTRA, MiniLM).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

TASKS = ("qa", "cls")
VARIANT_TASKS = {"mtl": ("qa", "cls"), "qa_only": ("qa",), "cls_only": ("cls",)}


def mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """Fully connected ReLU layers of the ``hidden`` sizes, then a linear output layer.

    >>> mlp(8, (4, 2), 3)
    Sequential(
      (0): Linear(in_features=8, out_features=4, bias=True)
      (1): ReLU()
      (2): Linear(in_features=4, out_features=2, bias=True)
      (3): ReLU()
      (4): Linear(in_features=2, out_features=3, bias=True)
    )
    """
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(in_features, size), nn.ReLU()]
        in_features = size
    return nn.Sequential(*layers, nn.Linear(in_features, out_features))


class _GivenStates(nn.Module):
    """Stands in for a task branch's embeddings: hands on the shared layers' output, passed as ``inputs_embeds``."""

    def forward(self, inputs_embeds: torch.Tensor, **_: Any) -> torch.Tensor:
        return inputs_embeds


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer layers (``encoder.encoder.layer``), or a ``ValueError`` naming the class."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        raise ValueError(f"{type(encoder).__name__} keeps no layer list in .encoder.layer; the shared/duplicated "
                         "split needs a BERT-family encoder")
    return layers


def split_encoder(encoder: nn.Module, shared_layers: int, n_branches: int) -> tuple[nn.Module, list[nn.Module]]:
    """Cut ``encoder`` after ``shared_layers`` layers: the shared part (embeddings + lower layers, the module
    itself) and ``n_branches`` independent copies of the upper layers (each a model of the same class whose
    embeddings pass the shared hidden states through, so the class's own attention-mask code still runs)."""
    layers = encoder_layers(encoder)
    depth = len(layers)
    if not 0 <= shared_layers <= depth:
        raise ValueError(f"shared_layers must be in [0, {depth}] for this {depth}-layer encoder, not {shared_layers}")
    lower, upper = list(layers[:shared_layers]), list(layers[shared_layers:])
    embeddings = encoder.embeddings
    encoder.embeddings, encoder.encoder.layer = _GivenStates(), nn.ModuleList()
    skeleton = copy.deepcopy(encoder)  # config and glue only: no embeddings, no layers
    encoder.embeddings, encoder.encoder.layer = embeddings, nn.ModuleList(lower)
    branches = []
    for _ in range(n_branches if upper else 0):
        branch = copy.deepcopy(skeleton)
        branch.encoder.layer = nn.ModuleList(copy.deepcopy(upper))
        branches.append(branch)
    return encoder, branches


class ClinicalQA(nn.Module):
    """``encoder`` (a ``transformers`` BERT-family base model), ``num_categories`` answer categories, the
    ``tasks`` to build (``("qa", "cls")``, ``("qa",)`` or ``("cls",)``), ``shared_layers`` (multi-task only;
    ``None``: half the depth), the hidden sizes of the span and category heads, and the dropout on the encoder
    output."""

    def __init__(self, encoder: nn.Module, num_categories: int = 0, tasks: Sequence[str] = TASKS,
                 shared_layers: int | None = None, span_hidden: Sequence[int] = (512, 256),
                 category_hidden: Sequence[int] = (512, 256, 128), dropout: float = 0.1):
        super().__init__()
        tasks = tuple(t for t in TASKS if t in tasks)
        if not tasks or len(tasks) != len(set(tasks)):
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}")
        if "cls" in tasks and num_categories < 1:
            raise ValueError("the category head needs num_categories >= 1")
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # the heads read [CLS] from the last hidden states; the pooler would idle
        depth = len(encoder_layers(encoder))
        self.tasks, self.depth = tasks, depth
        self.shared_layers = depth if len(tasks) == 1 else depth // 2 if shared_layers is None else shared_layers
        self.shared, branches = split_encoder(encoder, self.shared_layers, len(tasks))
        self.branches = nn.ModuleDict(dict(zip(tasks, branches)))
        self.dropout = nn.Dropout(dropout)
        hidden = encoder.config.hidden_size
        self.heads = nn.ModuleDict()
        if "qa" in tasks:
            self.heads["qa"] = mlp(hidden, span_hidden, 2)
        if "cls" in tasks:
            self.heads["cls"] = mlp(hidden, category_hidden, num_categories)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
        shared = self.shared(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        out = {}
        for task in self.tasks:
            h = shared
            if task in self.branches:
                h = self.branches[task](inputs_embeds=shared, attention_mask=attention_mask).last_hidden_state
            h = self.dropout(h)
            if task == "qa":
                logits = self.heads["qa"](h)
                # padding never wins a span: its logits are pushed far below any real position's
                pad = attention_mask == 0
                out["start"] = logits[..., 0].masked_fill(pad, -1e4)
                out["end"] = logits[..., 1].masked_fill(pad, -1e4)
            else:
                out["category"] = self.heads["cls"](h[:, 0])
        return out


def build_model(model: str, variant: str, num_categories: int, shared_layers: int = -1,
                span_hidden: Sequence[int] = (512, 256), category_hidden: Sequence[int] = (512, 256, 128),
                dropout: float = 0.1) -> ClinicalQA:
    """Builder: the encoder ``model`` (local folder or hub id) with the variant's tasks and the given heads
    (``shared_layers`` -1: half the depth)."""
    from transformers import AutoModel

    from curation.io import InputError

    encoder = AutoModel.from_pretrained(model)
    try:
        return ClinicalQA(encoder, num_categories, VARIANT_TASKS[variant],
                          None if shared_layers < 0 else shared_layers, tuple(span_hidden), tuple(category_hidden),
                          dropout)
    except ValueError as err:
        raise InputError("--shared-layers" if "shared_layers" in str(err) else "--model", str(err)) from None
