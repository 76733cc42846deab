"""The SRU-NER model: encoder word embeddings, the Slot-based Recurrent Unit and the multi-label action head.

    model = SRUNER(AutoModel.from_pretrained("~/.cache/offline-models/minilm-l6"), num_actions=len(vocab))
    logits = model(input_ids, attention_mask, word_index, gold, word_mask)       # teacher-forced (B, T, A)
    loss = action_loss(logits, gold, step_mask, supervised)                        # the paper's masking rule
    steps = model.generate(input_ids, attention_mask, word_index, n_words)       # batched greedy decoding

Our reading of the paper (Ruano et al., ACL 2025, section 3), written without the authors' code:

* **Word embeddings**: the encoder's last hidden state, max-pooled over each word's subwords, projected to the slot
  width ``slot_dim`` (:func:`max_pool_words`). A word without subwords (truncated away) gets zeros.
* **State**: a matrix with one slot per word, initialised with the word embeddings. Step ``t`` reads the slot of
  the current word ``p`` (the number of SH so far) and the input ``x_t`` (the sum of the embeddings of the actions
  of step ``t - 1``; a learned start vector at ``t = 0``).
* **Attention**: query ``q = W_q [x_t; s_p]``; key of slot ``j`` is ``s_j + r_{clip(j - p, -K, K)}`` (relative
  positional embeddings); with latent embeddings ``z_1..z_L`` the score of slot ``j`` is
  ``max_l (q + z_l) . k_j / sqrt(d)`` (max over latents), softmax over the sentence's words gives the context ``c``.
* **Update**: ``Omega = tanh(W_o [x_t; c; s_p])`` is summed into slot ``p`` (``s_p <- s_p + Omega``); the step
  output is ``o = D1 s_p + D2 c`` with learned diagonal ``D1``, ``D2`` (initialised to the identity).
* **Action head**: an MLP on ``[o; h_p]`` (``h_p`` the word embedding at the pointer) gives one logit per action;
  actions are multi-label (sigmoid): a step's action set is every action whose probability exceeds 0.5 (see
  :mod:`.actions` for how a set is applied).
* **Stopping**: at inference a sentence stops when sigmoid(EOA) > 0.5 or when its last word has been shifted (a
  word that gets ``max_steps_per_word`` steps without SH is shifted by force); in training the teacher-forced
  sequence ends with the step holding the last SH (and EOA).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SH_INDEX, EOA_INDEX = 0, 1  # positions of SH and EOA in :func:`.actions.action_vocab`


def max_pool_words(hidden: torch.Tensor, word_index: torch.Tensor, n_words: int) -> torch.Tensor:
    """Max-pool subword states into word states: ``(B, L, D)`` with each subword's word (-1: none) -> ``(B, N, D)``.

    >>> h = torch.tensor([[[1.0, 5.0], [3.0, 2.0], [0.0, 0.0], [9.0, 9.0]]])
    >>> max_pool_words(h, torch.tensor([[0, 0, 1, -1]]), 3).tolist()
    [[[3.0, 5.0], [0.0, 0.0], [0.0, 0.0]]]
    """
    b, _, d = hidden.shape
    idx = torch.where(word_index < 0, torch.full_like(word_index, n_words), word_index)
    out = hidden.new_full((b, n_words + 1, d), float("-inf"))
    out = out.scatter_reduce(1, idx.unsqueeze(-1).expand(-1, -1, d), hidden, reduce="amax", include_self=True)
    out = out[:, :n_words]
    return out.masked_fill(torch.isinf(out), 0.0)


def teacher_pointers(gold: torch.Tensor, n_words: torch.Tensor) -> torch.Tensor:
    """The word pointer at each teacher-forced step: SH count of the earlier gold steps, within the sentence.

    >>> g = torch.zeros(1, 4, 3); g[0, 0, 0] = g[0, 2, 0] = g[0, 3, 0] = 1
    >>> teacher_pointers(g, torch.tensor([3])).tolist()
    [[0, 1, 1, 2]]
    """
    shifts = gold[..., SH_INDEX].long().cumsum(-1) - gold[..., SH_INDEX].long()
    return torch.minimum(shifts, (n_words - 1).clamp(min=0).unsqueeze(-1))


def action_loss(logits: torch.Tensor, gold: torch.Tensor, step_mask: torch.Tensor, supervised: torch.Tensor
                ) -> torch.Tensor:
    """Multi-label BCE over the steps with the paper's loss-masking rule for partially annotated corpora.

    ``logits``, ``gold``: ``(B, T, A)``; ``step_mask``: ``(B, T)`` real steps; ``supervised``: ``(B, A)`` the actions
    a sentence's corpus annotates (SH, EOA and TR/RE of its own types). Every other action takes the model's own
    (detached) probability as its target, so it gets no gradient: a corpus is never penalised for entities it does
    not annotate. **Deferred SH**: at a gold SH step where the model fires (p > 0.5) an action of another corpus's
    type, the SH target is the model's own probability too (the model may finish that mention before shifting).
    The loss is the mean over real steps and all actions.

    >>> logits = torch.tensor([[[2.0, -2.0, 3.0]]]); gold = torch.tensor([[[1.0, 0.0, 0.0]]])
    >>> own = action_loss(logits, gold, torch.tensor([[True]]), torch.tensor([[True, True, False]]))
    >>> p = torch.sigmoid(logits)   # action 2 fires and is unsupervised: SH deferred, both take p as target
    >>> hand = F.binary_cross_entropy(p, torch.tensor([[[p[0, 0, 0], 0.0, p[0, 0, 2]]]]))
    >>> bool(torch.isclose(own, hand))
    True
    """
    probs = torch.sigmoid(logits).detach()
    sup = supervised.unsqueeze(1).expand_as(gold)
    target = torch.where(sup, gold, probs)
    defer = ((probs > 0.5) & ~sup).any(-1) & (gold[..., SH_INDEX] > 0)
    target[..., SH_INDEX] = torch.where(defer, probs[..., SH_INDEX], target[..., SH_INDEX])
    per_step = F.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(-1)
    mask = step_mask.to(per_step.dtype)
    return (per_step * mask).sum() / mask.sum().clamp(min=1)


class SRUCell(nn.Module):
    """One step of the Slot-based Recurrent Unit over a batch (see the module doc): ``slot_dim`` state width,
    ``latents`` latent embeddings, relative positions clipped at ``max_distance``."""

    def __init__(self, slot_dim: int, latents: int = 4, max_distance: int = 8):
        super().__init__()
        self.max_distance = max_distance
        self.query = nn.Linear(2 * slot_dim, slot_dim)
        self.rel = nn.Embedding(2 * max_distance + 1, slot_dim)
        self.latents = nn.Parameter(torch.randn(latents, slot_dim) * 0.02)
        self.omega = nn.Linear(3 * slot_dim, slot_dim)
        self.d1 = nn.Parameter(torch.ones(slot_dim))
        self.d2 = nn.Parameter(torch.ones(slot_dim))

    def forward(self, state: torch.Tensor, word_mask: torch.Tensor, p: torch.Tensor, x: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``state`` (B, N, d), ``word_mask`` (B, N), pointer ``p`` (B,), input ``x`` (B, d) -> (new state, output)."""
        b, n, d = state.shape
        rows = torch.arange(b, device=state.device)
        s_p = state[rows, p]
        q = self.query(torch.cat([x, s_p], -1))
        offset = torch.arange(n, device=state.device).unsqueeze(0) - p.unsqueeze(1)
        keys = state + self.rel(offset.clamp(-self.max_distance, self.max_distance) + self.max_distance)
        base = torch.einsum("bd,bnd->bn", q, keys)
        latent = torch.einsum("ld,bnd->bln", self.latents, keys)
        scores = (base.unsqueeze(1) + latent).amax(1) / math.sqrt(d)
        alpha = scores.masked_fill(~word_mask, float("-inf")).softmax(-1)
        c = torch.einsum("bn,bnd->bd", alpha, state)
        omega = torch.tanh(self.omega(torch.cat([x, c, s_p], -1)))
        state = state + F.one_hot(p, n).to(state.dtype).unsqueeze(-1) * omega.unsqueeze(1)
        return state, self.d1 * (s_p + omega) + self.d2 * c


class SRUNER(nn.Module):
    """``encoder`` (a ``transformers`` base model returning ``last_hidden_state``), ``num_actions`` (the length of
    :func:`.actions.action_vocab`, SH first and EOA second), the slot width, the SRU's latents and relative-distance
    clip, and the dropout on the word embeddings."""

    def __init__(self, encoder: nn.Module, num_actions: int, slot_dim: int = 256, latents: int = 4,
                 max_distance: int = 8, dropout: float = 0.1):
        super().__init__()
        self.encoder = encoder
        self.num_actions = num_actions
        self.proj = nn.Linear(encoder.config.hidden_size, slot_dim)
        self.dropout = nn.Dropout(dropout)
        self.action_emb = nn.Linear(num_actions, slot_dim, bias=False)  # multi-hot -> sum of action embeddings
        self.start = nn.Parameter(torch.zeros(slot_dim))
        self.cell = SRUCell(slot_dim, latents, max_distance)
        self.head = nn.Sequential(nn.Linear(2 * slot_dim, slot_dim), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(slot_dim, num_actions))

    def head_parameters(self) -> list[nn.Parameter]:
        """Everything but the encoder (the second optimiser's parameters)."""
        enc = {id(p) for p in self.encoder.parameters()}
        return [p for p in self.parameters() if id(p) not in enc]

    def word_embeddings(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor,
                        n_max: int) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.dropout(self.proj(max_pool_words(hidden, word_index, n_max)))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor,
                gold: torch.Tensor, n_words: torch.Tensor) -> torch.Tensor:
        """Teacher-forced action logits ``(B, T, A)`` for the gold step sets ``gold`` ``(B, T, A)``."""
        n_max = max(1, int(n_words.max()))
        words = self.word_embeddings(input_ids, attention_mask, word_index, n_max)
        word_mask = torch.arange(n_max, device=words.device).unsqueeze(0) < n_words.unsqueeze(1)
        pointers = teacher_pointers(gold, n_words)
        rows = torch.arange(words.shape[0], device=words.device)
        state, x = words, self.start.expand(words.shape[0], -1)
        out = []
        for t in range(gold.shape[1]):
            p = pointers[:, t]
            state, o = self.cell(state, word_mask, p, x)
            out.append(self.head(torch.cat([o, words[rows, p]], -1)))
            x = self.action_emb(gold[:, t])
        return torch.stack(out, 1)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, word_index: torch.Tensor,
                 n_words: torch.Tensor, max_steps_per_word: int = 4) -> list[list[tuple[int, ...]]]:
        """Greedy decoding of a batch: each sentence's steps as tuples of fired action indices.

        All sentences advance together; a finished sentence (EOA fired, or its last word shifted) keeps its state
        and contributes no more steps, so a sentence decodes the same alone or in any batch.
        """
        n_max = max(1, int(n_words.max()))
        words = self.word_embeddings(input_ids, attention_mask, word_index, n_max)
        b = words.shape[0]
        word_mask = torch.arange(n_max, device=words.device).unsqueeze(0) < n_words.unsqueeze(1)
        rows = torch.arange(b, device=words.device)
        state, x = words, self.start.expand(b, -1)
        p = torch.zeros(b, dtype=torch.long, device=words.device)
        at_word = torch.zeros_like(p)
        active = n_words > 0
        steps: list[list[tuple[int, ...]]] = [[] for _ in range(b)]
        for _ in range(max_steps_per_word * n_max):
            if not bool(active.any()):
                break
            new_state, o = self.cell(state, word_mask, p, x)
            fired = torch.sigmoid(self.head(torch.cat([o, words[rows, p]], -1))) > 0.5
            fired[:, SH_INDEX] |= at_word + 1 >= max_steps_per_word
            fired &= active.unsqueeze(1)
            state = torch.where(active.view(b, 1, 1), new_state, state)
            for i in active.nonzero().flatten().tolist():
                steps[i].append(tuple(fired[i].nonzero().flatten().tolist()))
            shifted = fired[:, SH_INDEX]
            at_word = torch.where(shifted, 0, at_word + 1)
            p = p + shifted.long()
            active &= ~fired[:, EOA_INDEX] & (p < n_words)
            p = torch.minimum(p, (n_words - 1).clamp(min=0))
            x = self.action_emb(fired.to(words.dtype))
        return steps


def steps_to_mentions(steps: Sequence[Sequence[int]], vocab: Sequence[str], n_words: int
                      ) -> list[tuple[int, int, str]]:
    """Decode one sentence's generated steps (action indices) into token mentions with :func:`.actions.decode`."""
    from mtl_baselines.sru_ner.actions import decode

    return decode([[vocab[a] for a in step] for step in steps], n_words)


def build_model(model: str, num_actions: int, slot_dim: int = 256, latents: int = 4, max_distance: int = 8,
                dropout: float = 0.1) -> SRUNER:
    """Builder: a Hugging Face encoder (local folder or hub id) under a fresh SRU and action head."""
    from transformers import AutoModel

    return SRUNER(AutoModel.from_pretrained(model), num_actions, slot_dim, latents, max_distance, dropout)
