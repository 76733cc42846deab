"""Task losses of the token MTL model and the ways to weigh them.

**Homoscedastic uncertainty weighting** (Kendall, Gal and Cipolla, CVPR 2018). Each weighted task ``i`` has a learned
``s_i = log sigma_i^2`` and contributes

    exp(-s_i) * L_i + s_i / 2

This is Kendall et al.'s *classification* form (their eq. 10: a softmax whose logits are scaled by ``1 / sigma^2``
gives approximately ``L / sigma^2 + log sigma``, and ``log sigma = s / 2``). Every head here is a softmax
cross-entropy, so that is the form that applies; the regression form ``0.5 * exp(-s) * L + 0.5 * s`` (Gaussian
likelihood) would halve every task's weight and is not used. For a fixed ``L`` the term is smallest at
``s = log(2 L)``. Writing the loss in ``s`` rather than ``sigma`` keeps it finite for any parameter value.

Variants (:data:`VARIANTS`):

* ``single``: the NER head alone, ``L_ner``.
* ``heuristic``: fixed weights, ``sum_t w_t L_t``.
* ``uw_sym`` (symmetric): every task weighted, ``sum_t [exp(-s_t) L_t + s_t / 2]``.
* ``uw_asym`` (asymmetric): the primary task unweighted, ``L_ner + sum_aux [exp(-s_a) L_a + s_a / 2]``.
* ``uw_class`` (higher granularity): the NER loss split by gold class (``O`` and each entity type, the mean
  cross-entropy over the tokens of that class), each class with its own ``s_c``, plus one ``s`` per auxiliary task.
  A class with no token in the batch contributes nothing that step (its ``s_c / 2`` term alone would drive ``s_c``
  down without bound).

A variant name may end in ``-no_HEAD`` (``uw_sym-no_mtcls``) to drop an auxiliary head: the ablation runs.

    >>> import torch
    >>> float(uncertainty_loss(torch.tensor([2.0]), torch.tensor([0.0])))
    2.0
    >>> parse_variant("uw_sym-no_bcls")
    ('uw_sym', ('ner', 'mtcls', 'mcls'))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtl_baselines.token_mtl.labels import IGNORE

HEADS = ("ner", "mtcls", "bcls", "mcls")
AUX_HEADS = HEADS[1:]
VARIANTS = ("single", "heuristic", "uw_sym", "uw_asym", "uw_class")
UW_VARIANTS = ("uw_sym", "uw_asym", "uw_class")


def parse_variant(name: str) -> tuple[str, tuple[str, ...]]:
    """A variant name -> ``(loss variant, heads)``; ``-no_HEAD`` suffixes drop auxiliary heads.

    >>> parse_variant("single"), parse_variant("heuristic")
    (('single', ('ner',)), ('heuristic', ('ner', 'mtcls', 'bcls', 'mcls')))
    """
    base, *drops = name.split("-")
    if base not in VARIANTS:
        raise ValueError(f"unknown variant {base!r}; one of {', '.join(VARIANTS)}")
    if base == "single":
        if drops:
            raise ValueError(f"{name!r}: the single-task variant has no auxiliary head to drop")
        return base, ("ner",)
    dropped = set()
    for d in drops:
        head = d.removeprefix("no_")
        if not d.startswith("no_") or head not in AUX_HEADS or head in dropped:
            raise ValueError(f"{name!r}: each suffix must be -no_HEAD with HEAD one of {', '.join(AUX_HEADS)}, once")
        dropped.add(head)
    return base, tuple(h for h in HEADS if h not in dropped)


def uncertainty_loss(losses: torch.Tensor, log_vars: torch.Tensor, present: torch.Tensor | None = None
                     ) -> torch.Tensor:
    """Kendall et al.'s classification form ``sum_i present_i * (exp(-s_i) * L_i + s_i / 2)``, ``s = log sigma^2``.

    ``losses`` and ``log_vars`` have one entry per task; ``present`` (bool) masks tasks out of this step.

    >>> import math, torch
    >>> out = uncertainty_loss(torch.tensor([1.0, 3.0]), torch.tensor([0.0, math.log(2.0)]))
    >>> round(float(out), 4) == round(1.0 + 3.0 / 2 + math.log(2.0) / 2, 4)
    True
    """
    terms = torch.exp(-log_vars) * losses + 0.5 * log_vars
    if present is not None:
        terms = torch.where(present, terms, torch.zeros_like(terms))
    return terms.sum()


def fixed_weight_loss(losses: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """``sum_t w_t L_t``.

    >>> import torch
    >>> float(fixed_weight_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 0.5])))
    2.0
    """
    return (weights * losses).sum()


def per_class_token_losses(logits: torch.Tensor, labels: torch.Tensor, label_class: torch.Tensor, n_classes: int
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean token cross-entropy per gold class, and which classes occur.

    ``logits`` ``(..., n_labels)``, ``labels`` ``(...)`` with ``IGNORE`` for skipped positions, ``label_class``
    maps each label id to its class (``O`` or an entity type). Returns ``(losses[n_classes], present[n_classes])``;
    an absent class has loss 0.

    >>> import torch
    >>> logits = torch.zeros(1, 3, 3)                       # uniform: every token costs log 3
    >>> losses, present = per_class_token_losses(logits, torch.tensor([[0, 1, -100]]), torch.tensor([0, 1, 1]), 3)
    >>> [round(x, 4) for x in losses.tolist()], present.tolist()
    ([1.0986, 1.0986, 0.0], [True, True, False])
    """
    flat_labels = labels.reshape(-1)
    keep = flat_labels != IGNORE
    token_loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1])[keep], flat_labels[keep], reduction="none")
    cls = label_class[flat_labels[keep]]
    sums = torch.zeros(n_classes, dtype=token_loss.dtype, device=token_loss.device).index_add(0, cls, token_loss)
    counts = torch.bincount(cls, minlength=n_classes)
    return sums / counts.clamp(min=1), counts > 0


class MTLLoss(nn.Module):
    """The task losses of a :class:`~mtl_baselines.token_mtl.model.TokenMTL` combined by one variant.

    ``variant`` is one of :data:`VARIANTS`; ``heads`` the model's heads; ``label_class`` each NER label's class id
    and ``class_names`` the class names (used by ``uw_class``); ``weights`` the fixed weights of ``heuristic``
    (head -> weight). The learned log-variances are ``self.log_vars`` (initialised to 0, i.e. sigma = 1), named by
    ``self.log_var_names``; variants without them have an empty parameter.
    """

    def __init__(self, variant: str, heads: Sequence[str], label_class: Sequence[int] = (),
                 class_names: Sequence[str] = (), weights: Mapping[str, float] | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        if "ner" not in heads or set(heads) - set(HEADS):
            raise ValueError(f"heads must include 'ner' and come from {', '.join(HEADS)}, got {list(heads)}")
        self.variant, self.heads = variant, tuple(h for h in HEADS if h in heads)  # NER first
        self.register_buffer("label_class", torch.tensor(list(label_class), dtype=torch.long), persistent=False)
        self.class_names = list(class_names)
        aux = [h for h in self.heads if h != "ner"]
        if variant == "uw_sym":
            names = list(self.heads)
        elif variant == "uw_asym":
            names = aux
        elif variant == "uw_class":
            if not self.class_names or len(label_class) == 0:
                raise ValueError("uw_class needs label_class and class_names")
            names = [f"ner:{c}" for c in self.class_names] + aux
        else:
            names = []
        self.log_var_names = names
        self.log_vars = nn.Parameter(torch.zeros(len(names)))
        w = dict(weights or {})
        self.register_buffer("weights", torch.tensor([float(w.get(h, 1.0)) for h in self.heads]), persistent=False)

    def task_losses(self, logits: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
                    ) -> dict[str, torch.Tensor]:
        """The raw (unweighted) mean cross-entropy of each head."""
        out = {}
        for head in self.heads:
            lg, target = logits[head], batch[head]
            out[head] = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), target.reshape(-1), ignore_index=IGNORE)
        return out

    def forward(self, logits: Mapping[str, torch.Tensor], batch: Mapping[str, torch.Tensor]
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Return the total loss and the raw task losses (for logging and gradient similarity)."""
        losses = self.task_losses(logits, batch)
        stacked = torch.stack([losses[h] for h in self.heads])
        if self.variant == "single":
            total = losses["ner"]
        elif self.variant == "heuristic":
            total = fixed_weight_loss(stacked, self.weights)
        elif self.variant == "uw_sym":
            total = uncertainty_loss(stacked, self.log_vars)
        elif self.variant == "uw_asym":
            total = losses["ner"] + uncertainty_loss(stacked[1:], self.log_vars)
        else:
            cls_losses, present = per_class_token_losses(logits["ner"], batch["ner"], self.label_class,
                                                         len(self.class_names))
            aux = stacked[1:]
            total = uncertainty_loss(torch.cat([cls_losses, aux]), self.log_vars,
                                     torch.cat([present, torch.ones(len(aux), dtype=torch.bool, device=aux.device)]))
        return total, losses
