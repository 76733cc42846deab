"""Losses of the clinical QA baseline: ``L = λ_QA · L_QA + λ_cls · Σ_i w_i · L_i``.

``L_QA`` is the mean of the start and end cross-entropies over a batch's windows (BERT's SQuAD loss; a window
without its answer targets position 0, ``[CLS]``). ``L_i`` is the binary cross-entropy of category ``i``'s sigmoid
output, averaged over the batch, and ``w_i`` its class weight (:func:`class_weights`). The QA-only baseline keeps
``λ_QA · L_QA``, the classification-only one ``λ_cls · Σ_i w_i · L_i``.

    loss_fn = QALoss(tasks=("qa", "cls"), weights=class_weights([300, 120, 30], 400), lambda_qa=1.0, lambda_cls=1.0)
    total, parts = loss_fn(model(input_ids, attention_mask), batch)   # parts: {"qa": L_QA, "cls": Σ w_i L_i}
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def span_loss(start_logits: torch.Tensor, end_logits: torch.Tensor, start: torch.Tensor, end: torch.Tensor
              ) -> torch.Tensor:
    """``(CE(start_logits, start) + CE(end_logits, end)) / 2``, each averaged over the batch.

    >>> logits = torch.tensor([[0.0, 0.0]])
    >>> round(float(span_loss(logits, logits, torch.tensor([0]), torch.tensor([1]))), 4)   # log 2
    0.6931
    """
    return (F.cross_entropy(start_logits, start) + F.cross_entropy(end_logits, end)) / 2


def category_losses(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Each category's binary cross-entropy (sigmoid outputs) averaged over the batch: a ``(C,)`` tensor.

    >>> category_losses(torch.zeros(2, 3), torch.tensor([[1.0, 0, 0], [0, 0, 1]])).tolist() == [0.6931471824645996] * 3
    True
    """
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(0)


def class_weights(positives: Sequence[int], n: int, scheme: str = "balanced") -> list[float]:
    """Category weights ``w_i`` from the training questions: ``balanced`` gives ``n / (C · n_i)`` (``n_i`` the
    questions of category ``i``, at least 1), rescaled to average 1 so that the weighted sum stays on the scale of
    an unweighted one; ``none`` gives 1 each.

    >>> class_weights([30, 10], 40)     # raw 40/60 and 40/20, mean 4/3
    [0.5, 1.5]
    >>> class_weights([30, 10], 40, "none")
    [1.0, 1.0]
    """
    if scheme == "none":
        return [1.0] * len(positives)
    if scheme != "balanced":
        raise ValueError(f"class weighting must be 'balanced' or 'none', not {scheme!r}")
    raw = [n / (len(positives) * max(1, p)) for p in positives]
    mean = sum(raw) / len(raw)
    return [r / mean for r in raw]


class QALoss(nn.Module):
    """The combined loss of the tasks present (``"qa"``, ``"cls"``); ``weights`` are the category weights."""

    def __init__(self, tasks: Sequence[str], weights: Sequence[float] = (), lambda_qa: float = 1.0,
                 lambda_cls: float = 1.0):
        super().__init__()
        self.tasks, self.lambda_qa, self.lambda_cls = tuple(tasks), lambda_qa, lambda_cls
        self.register_buffer("weights", torch.tensor(list(weights), dtype=torch.float))

    def forward(self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {}
        total = torch.zeros((), device=next(iter(outputs.values())).device)
        if "qa" in self.tasks:
            parts["qa"] = span_loss(outputs["start"], outputs["end"], batch["start"], batch["end"])
            total = total + self.lambda_qa * parts["qa"]
        if "cls" in self.tasks:
            parts["cls"] = (self.weights * category_losses(outputs["category"], batch["labels"])).sum()
            total = total + self.lambda_cls * parts["cls"]
        return total, parts
