"""The transition system of SRU-NER: nested mentions <-> action sequences (pure functions, no torch).

Our reading of Ruano et al. (ACL 2025), "Effective Multi-Task Learning for Biomedical Named Entity Recognition",
section 3.1, written without the authors' code:

* A sentence of ``n`` words is read left to right with a pointer ``p`` (the current word). Mentions are token spans
  ``(start, end, type)``, ``end`` exclusive. At each word the actions are, in this order:

  - ``TR(e)`` opens a mention of type ``e`` starting at word ``p`` (pushes ``p`` on the stack of type ``e``). Several
    mentions starting at the same word: the **longest first** (ties: type name, then duplicates one after another).
  - ``RE(e)`` closes the innermost open mention of type ``e`` (pops the stack of ``e``); the mention ends at word
    ``p`` inclusive. RE comes **after** the last word of the mention and **before** that word's ``SH``. Several
    mentions ending at the same word: the **shortest first** (ties: type name).
  - ``SH`` moves the pointer to the next word; every word gets exactly one ``SH``.
  - ``EOA`` ends the sentence; it comes right after the ``SH`` of the last word.

* Every type has its own stack, so mentions of different types may overlap in any way; mentions of one type must be
  nested or disjoint. Two mentions of one type that partially overlap (*crossing*: ``a.start < b.start < a.end <
  b.end``) cannot be expressed: :func:`crossing_pairs` finds them and :func:`resolve_crossing` splits or drops them
  (the caller reports each one with the sentence id; nothing is lost silently).

* :func:`encode` gives the paper's **flat** sequence, one action at a time. The model predicts **steps**: each step
  is a *set* of actions (sigmoid multi-label logits, an action fires when its probability exceeds 0.5). A step is
  applied in the fixed order TR (per type), RE (per type), SH, EOA, and holds each action at most once.
  :func:`to_steps` packs a flat sequence into steps that decode to the same mentions: per word, the actions of each
  type are laid out one per step as early as possible, except that a type's last TR and first RE share a step (TR is
  applied first); SH (and EOA) join the word's last step. A flat sequence is itself a valid step sequence (one action
  per step), so :func:`decode` reads both.

* :func:`decode` is the exact inverse of :func:`encode` on every set of non-crossing mentions (the round trip is
  property-tested, and tested on every GENIA dev/test sentence). On model output it is lenient: an ``RE`` of a type
  with no open mention, actions after ``EOA`` or past the last word are ignored, and mentions still open at the end
  are dropped (the count is returned by :func:`decode_with_stats`).

    >>> flat = encode([(0, 3, "DNA"), (1, 2, "DNA"), (0, 2, "protein")], n_words=4)
    >>> flat
    ['TR(DNA)', 'TR(protein)', 'SH', 'TR(DNA)', 'RE(DNA)', 'RE(protein)', 'SH', 'RE(DNA)', 'SH', 'SH', 'EOA']
    >>> to_steps(flat)
    [('TR(DNA)', 'TR(protein)', 'SH'), ('TR(DNA)', 'RE(DNA)', 'RE(protein)', 'SH'), ('RE(DNA)', 'SH'), ('SH', 'EOA')]
    >>> decode(to_steps(flat)) == decode(flat) == sorted([(0, 3, "DNA"), (1, 2, "DNA"), (0, 2, "protein")])
    True
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable, Sequence

SH, EOA = "SH", "EOA"
Mention = tuple[int, int, str]  # token span [start, end) and type


def tr(label: str) -> str:
    return f"TR({label})"


def re_(label: str) -> str:
    return f"RE({label})"


def parse_action(action: str) -> tuple[str, str | None]:
    """``"TR(DNA)"`` -> ``("TR", "DNA")``; ``"SH"`` -> ``("SH", None)``.

    >>> parse_action("RE(cell_line)"), parse_action("EOA")
    (('RE', 'cell_line'), ('EOA', None))
    """
    if action in (SH, EOA):
        return action, None
    if action[:3] in ("TR(", "RE(") and action.endswith(")"):
        return action[:2], action[3:-1]
    raise ValueError(f"unknown action {action!r}")


def action_vocab(types: Sequence[str]) -> list[str]:
    """Every action over ``types``, in the model's output order: SH, EOA, TR per type, RE per type.

    >>> action_vocab(["DNA", "RNA"])
    ['SH', 'EOA', 'TR(DNA)', 'TR(RNA)', 'RE(DNA)', 'RE(RNA)']
    """
    return [SH, EOA, *(tr(t) for t in types), *(re_(t) for t in types)]


def _step_order(action: str) -> tuple[int, str]:
    kind, label = parse_action(action)
    return {"TR": 0, "RE": 1, SH: 2, EOA: 3}[kind], label or ""


def canonical_step(actions: Iterable[str]) -> tuple[str, ...]:
    """A set of actions in the order a step applies them: TR (by type), RE (by type), SH, EOA.

    >>> canonical_step({"SH", "RE(b)", "TR(a)", "RE(a)"})
    ('TR(a)', 'RE(a)', 'RE(b)', 'SH')
    """
    return tuple(sorted(set(actions), key=_step_order))


def crossing_pairs(mentions: Iterable[Mention]) -> list[tuple[Mention, Mention]]:
    """Pairs of same-type mentions that partially overlap (neither nested nor disjoint), earlier-starting first.

    >>> crossing_pairs([(0, 3, "A"), (2, 5, "A"), (2, 5, "B"), (1, 2, "A")])
    [((0, 3, 'A'), (2, 5, 'A'))]
    """
    by_type: dict[str, list[Mention]] = defaultdict(list)
    for m in mentions:
        by_type[m[2]].append(m)
    out = []
    for label in sorted(by_type):
        ms = sorted(by_type[label], key=lambda m: (m[0], -m[1]))
        for i, a in enumerate(ms):
            for b in ms[i + 1:]:
                if b[0] >= a[1]:
                    break
                if a[0] < b[0] and a[1] < b[1]:
                    out.append((a, b))
    return out


def resolve_crossing(mentions: Iterable[Mention], policy: str) -> tuple[list[Mention], list[str]]:
    """Make same-type mentions non-crossing; return the mentions and one message per change.

    Mentions are visited by start (longer first); a mention that crosses an already kept mention ``k`` of its type is
    dropped (``policy="drop"``) or split at ``k``'s end into a part nested in ``k`` and a part after it
    (``policy="split"``; the parts are checked again, so splitting always ends).

    >>> resolve_crossing([(0, 3, "A"), (2, 5, "A")], "split")
    ([(0, 3, 'A'), (2, 3, 'A'), (3, 5, 'A')], ['(2, 5, A) crosses (0, 3, A): split into (2, 3) + (3, 5)'])
    >>> resolve_crossing([(0, 3, "A"), (2, 5, "A"), (2, 5, "B")], "drop")
    ([(0, 3, 'A'), (2, 5, 'B')], ['(2, 5, A) crosses (0, 3, A): dropped'])
    """
    if policy not in ("split", "drop"):
        raise ValueError(f"policy must be 'split' or 'drop', not {policy!r}")
    heap = [(m[0], -m[1], m[2]) for m in mentions]
    heapq.heapify(heap)
    kept: list[Mention] = []
    notes: list[str] = []
    while heap:
        start, neg_end, label = heapq.heappop(heap)
        m = (start, -neg_end, label)
        k = next((k for k in kept if k[2] == label and k[0] < m[0] < k[1] < m[1]), None)
        if k is None:
            kept.append(m)
            continue
        what = f"({m[0]}, {m[1]}, {label}) crosses ({k[0]}, {k[1]}, {label})"
        if policy == "drop":
            notes.append(f"{what}: dropped")
            continue
        notes.append(f"{what}: split into ({m[0]}, {k[1]}) + ({k[1]}, {m[1]})")
        heapq.heappush(heap, (m[0], -k[1], label))
        heapq.heappush(heap, (k[1], -m[1], label))
    return kept, notes


def encode(mentions: Iterable[Mention], n_words: int) -> list[str]:
    """Non-crossing mentions of a sentence of ``n_words`` words -> the flat action sequence (see the module doc).

    >>> encode([(1, 2, "A")], 3)
    ['SH', 'TR(A)', 'RE(A)', 'SH', 'SH', 'EOA']
    >>> encode([(0, 2, "A"), (1, 3, "A")], 3)
    Traceback (most recent call last):
    ValueError: crossing mentions of one type cannot be encoded: (0, 2, 'A') and (1, 3, 'A')
    """
    mentions = list(mentions)
    for s, e, _ in mentions:
        if not 0 <= s < e <= n_words:
            raise ValueError(f"mention [{s}, {e}) outside a sentence of {n_words} words")
    crossing = crossing_pairs(mentions)
    if crossing:
        a, b = crossing[0]
        raise ValueError(f"crossing mentions of one type cannot be encoded: {a} and {b}")
    starts: dict[int, list[Mention]] = defaultdict(list)
    ends: dict[int, list[Mention]] = defaultdict(list)
    for m in mentions:
        starts[m[0]].append(m)
        ends[m[1] - 1].append(m)
    out: list[str] = []
    for i in range(n_words):
        out += [tr(m[2]) for m in sorted(starts[i], key=lambda m: (-(m[1] - m[0]), m[2]))]
        out += [re_(m[2]) for m in sorted(ends[i], key=lambda m: (m[1] - m[0], m[2]))]
        out.append(SH)
    if n_words:
        out.append(EOA)
    return out


def to_steps(flat: Sequence[str]) -> list[tuple[str, ...]]:
    """Pack a flat action sequence into multi-label steps (see the module doc); decodes to the same mentions.

    >>> to_steps(encode([(0, 1, "A"), (0, 1, "A"), (0, 1, "B")], 2))
    [('TR(A)', 'TR(B)', 'RE(B)'), ('TR(A)', 'RE(A)'), ('RE(A)', 'SH'), ('SH', 'EOA')]
    """
    steps: list[tuple[str, ...]] = []
    word: list[str] = []
    for action in flat:
        if action == EOA:
            if steps:
                steps[-1] = canonical_step([*steps[-1], EOA])
            else:
                steps.append((EOA,))
            continue
        if action != SH:
            word.append(action)
            continue
        per_type: dict[str, list[str]] = defaultdict(list)  # this word's actions of each type, flat order
        for a in word:
            per_type[parse_action(a)[1]].append(a)
        columns: list[list[str]] = []  # each type's actions laid out one per step
        for acts in per_type.values():
            n_tr = sum(a.startswith("TR") for a in acts)
            col: list[list[str]] = [[a] for a in acts]
            if 0 < n_tr < len(acts):  # the last TR and the first RE share a step (TR applies first)
                col[n_tr - 1].append(col.pop(n_tr)[0])
            columns.append(col)
        n_steps = max([1, *(len(c) for c in columns)])
        word_steps: list[list[str]] = [[] for _ in range(n_steps)]
        for col in columns:
            for k, group in enumerate(col):
                word_steps[k] += group
        word_steps[-1].append(SH)
        steps += [canonical_step(s) for s in word_steps]
        word = []
    if word:
        raise ValueError("actions after the last SH must be followed by SH")
    return steps


def decode_with_stats(steps: Iterable[Iterable[str]], n_words: int | None = None) -> tuple[list[Mention], int]:
    """Steps (or a flat sequence) -> ``(sorted mentions, number of mentions left open)``.

    ``n_words`` bounds the pointer: actions once every word is shifted are ignored.

    >>> decode_with_stats([("TR(A)",), ("RE(B)", "SH"), ("TR(A)", "RE(A)", "SH"), ("EOA",)])
    ([(1, 2, 'A')], 1)
    """
    stacks: dict[str, list[int]] = defaultdict(list)
    out: list[Mention] = []
    p = 0
    for step in steps:
        if isinstance(step, str):
            step = (step,)
        if n_words is not None and p >= n_words:
            break
        acts = canonical_step(step)
        for a in acts:
            kind, label = parse_action(a)
            if kind == "TR":
                stacks[label].append(p)
            elif kind == "RE" and stacks[label]:
                out.append((stacks[label].pop(), p + 1, label))
        if SH in acts:
            p += 1
        if EOA in acts:
            break
    return sorted(out), sum(len(s) for s in stacks.values())


def decode(steps: Iterable[Iterable[str]], n_words: int | None = None) -> list[Mention]:
    """Steps (or a flat sequence) -> the sorted mentions (lenient; see the module doc).

    >>> decode(encode([(0, 2, "A"), (0, 1, "A"), (1, 2, "B")], 2))
    [(0, 1, 'A'), (0, 2, 'A'), (1, 2, 'B')]
    """
    return decode_with_stats(steps, n_words)[0]
