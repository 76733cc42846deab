"""Multi-dataset data for SRU-NER: type renaming, crossing-span handling, encoding, sampling and evaluation views.

    corpora = {"genia": load_splits("../shared/data/nested_ner/GENIA/dev.jsonlines"), "ncbi": load_splits(...)}
    train = [rename_types(r, name) for name, s in corpora.items() for r in s.train]   # "ncbi_Disease", ...
    probs = sample_probabilities([len(s.train) for s in corpora.values()])           # inverse to dataset size

* **Renaming**: every type becomes ``<dataset>_<type>`` so corpora never share an action; a sentence of dataset
  ``d`` supervises SH, EOA and the TR/RE of ``d``'s types only (:func:`supervised_mask`, the loss-masking rule of
  :func:`.model.action_loss`).
* **Sampling**: each training sentence is drawn with probability inversely proportional to the size of its dataset,
  so every dataset is drawn equally often in expectation (:func:`sample_probabilities`).
* **Evaluation views** (:func:`evaluation_spans`): ``disjoint`` keeps, for a sentence of dataset ``d``, only the
  predicted mentions of ``d``'s own renamed types; ``merged`` keeps every predicted mention whose original type name
  is one of ``d``'s types, whatever dataset it was learned from (``ncbi_Disease`` counts for BC5CDR's ``Disease``),
  duplicates removed. Both map types back to the original names, so the foundation scorer compares them with gold.
* **Partial views of one corpus** (:func:`restrict_splits`): keep some entity types only (in every split) and train
  on one of ``n`` disjoint document parts, to build the paper's global-prediction experiment (BC5CDR train split
  into a Chemical-only and a Disease-only half, each scored on the full test set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch

from curation.io import InputError
from curation.records import Record, Span, char_span_to_tokens, token_span_to_char
from curation.sample import sampling_order
from mtl_baselines.sru_ner.actions import action_vocab, encode, resolve_crossing, to_steps

if TYPE_CHECKING:
    from mtl_baselines.common import Splits

CROSSING_POLICIES = ("drop", "split", "error")


def rename_types(record: Record, dataset: str) -> Record:
    """A copy of ``record`` with every span type renamed ``<dataset>_<type>`` and ``meta["dataset"]`` set.

    >>> r = rename_types(Record(id="s", text="IL-2", spans=[Span(0, 4, "protein")]), "genia")
    >>> r.spans, r.meta["dataset"]
    ([Span(start=0, end=4, label='genia_protein')], 'genia')
    """
    return Record(id=record.id, text=record.text, spans=[Span(s.start, s.end, f"{dataset}_{s.label}")
                                                         for s in record.spans],
                  tokens=record.tokens, token_offsets=record.token_offsets, doc_id=record.doc_id,
                  meta={**record.meta, "dataset": dataset})


def train_part(records: Sequence[Record], k: int, n: int, seed: int) -> list[Record]:
    """Part ``k`` (1-based) of ``n`` disjoint parts of ``records``: every n-th document of the seeded class-balanced
    order (:func:`curation.sample.sampling_order`), so the parts share the corpus's type mix; records kept in order.

    >>> recs = [Record(id=str(i), text="x", doc_id=f"d{i // 2}") for i in range(8)]
    >>> a, b = train_part(recs, 1, 2, 0), train_part(recs, 2, 2, 0)
    >>> len(a), len(b), {r.doc_id for r in a} & {r.doc_id for r in b}
    (4, 4, set())
    """
    if not 1 <= k <= n:
        raise ValueError(f"part {k} of {n} does not exist")
    order = sampling_order(list(records), seed, unit="document")
    return [records[i] for i in sorted(i for unit in order[k - 1 :: n] for i in unit)]


def restrict_splits(splits: Splits, types: Sequence[str] = (), part: tuple[int, int] | None = None,
                    seed: int = 0) -> Splits:
    """``splits`` with only ``types`` annotated (every split; all when empty) and, with ``part`` = (k, n), the train
    split cut to its k-th of n document parts (:func:`train_part`). An unknown type raises :class:`InputError`."""
    from mtl_baselines.common import Splits

    known = {s.label for r in (*splits.train, *splits.dev, *splits.test) for s in r.spans}
    if unknown := sorted(set(types) - known):
        raise InputError(splits.dataset, f"no entity type {', '.join(unknown)} (it has {', '.join(sorted(known))})")

    def keep(records: Sequence[Record]) -> list[Record]:
        if not types:
            return list(records)
        return [Record(id=r.id, text=r.text, spans=[s for s in r.spans if s.label in types], tokens=r.tokens,
                       token_offsets=r.token_offsets, doc_id=r.doc_id, meta=r.meta) for r in records]

    train, how = splits.train, splits.how
    if part is not None:
        train = train_part(train, part[0], part[1], seed)
        how += f"; train part {part[0]}/{part[1]} by document, or by sentence where none is given (seed {seed})"
    if types:
        how += f"; types kept: {', '.join(types)}"
    return Splits(splits.dataset, keep(train), keep(splits.dev), keep(splits.test), how, splits.sources)


def token_mentions(record: Record, where: str = "") -> list[tuple[int, int, str]]:
    """A record's spans as token mentions; a span off token edges raises :class:`InputError`."""
    if not record.tokens or not record.token_offsets:
        raise InputError(where or record.id, "SRU-NER needs tokenised records", record=record.id)
    out = []
    for s in record.spans:
        tok = char_span_to_tokens(record.token_offsets, s)
        if tok is None:
            raise InputError(where or record.id, f"span {s} does not align with token edges", record=record.id,
                             line=record.meta.get("line"))
        out.append((tok[0], tok[1], s.label))
    return out


def clean_mentions(record: Record, policy: str, where: str = "") -> tuple[list[tuple[int, int, str]], list[str]]:
    """Token mentions with crossing same-type pairs split or dropped; one report line per change naming the
    sentence id. ``policy="error"`` raises :class:`InputError` on the first crossing pair instead.

    >>> from curation.records import join_tokens
    >>> text, off = join_tokens(["a", "b", "c"])
    >>> r = Record(id="s7", text=text, tokens=["a", "b", "c"], token_offsets=off,
    ...            spans=[Span(0, 3, "X"), Span(2, 5, "X")])
    >>> clean_mentions(r, "drop")
    ([(0, 2, 'X')], ['sentence s7: (1, 3, X) crosses (0, 2, X): dropped'])
    """
    if policy not in CROSSING_POLICIES:
        raise InputError("--crossing", f"must be one of {', '.join(CROSSING_POLICIES)}, not {policy!r}")
    mentions = token_mentions(record, where)
    if policy == "error":
        kept, notes = resolve_crossing(mentions, "drop")
        if notes:
            raise InputError(where or record.id, f"crossing mentions of one type: {notes[0].split(':')[0]}; give "
                             "--crossing split or --crossing drop", record=record.id, line=record.meta.get("line"))
        return kept, notes
    kept, notes = resolve_crossing(mentions, policy)
    return kept, [f"sentence {record.id}: {n}" for n in notes]


def supervised_mask(types: Sequence[str], own: Sequence[str]) -> list[bool]:
    """Which actions of ``action_vocab(types)`` a sentence annotating the types ``own`` supervises.

    >>> supervised_mask(["a_X", "b_Y"], ["a_X"])
    [True, True, True, False, True, False]
    """
    own_set = set(own)
    return [True, True, *(t in own_set for t in types), *(t in own_set for t in types)]


def encode_example(record: Record, mentions: Sequence[tuple[int, int, str]], tokenizer: Any, types: Sequence[str],
                   own_types: Sequence[str], max_length: int) -> dict[str, Any]:
    """One sentence -> ``input_ids``, ``word_index`` (each subword's word, -1 none), ``n_words``, the gold steps as
    action indices and the ``supervised`` action mask."""
    enc = tokenizer(record.tokens, is_split_into_words=True, truncation=True, max_length=max_length)
    index = {a: i for i, a in enumerate(action_vocab(types))}
    steps = to_steps(encode(mentions, len(record.tokens)))
    return {"input_ids": enc["input_ids"], "word_index": [-1 if w is None else w for w in enc.word_ids()],
            "n_words": len(record.tokens), "steps": [[index[a] for a in s] for s in steps],
            "supervised": supervised_mask(types, own_types)}


def collate(examples: Sequence[dict[str, Any]], pad_id: int, num_actions: int) -> dict[str, torch.Tensor]:
    """Pad a batch: ``input_ids``, ``attention_mask``, ``word_index``, ``n_words``, ``gold`` (B, T, A) multi-hot
    steps, ``step_mask`` (B, T) and ``supervised`` (B, A).

    >>> b = collate([{"input_ids": [5, 6], "word_index": [-1, 0], "n_words": 1, "steps": [[0, 1]],
    ...               "supervised": [True, True]}], pad_id=0, num_actions=2)
    >>> b["gold"].tolist(), b["step_mask"].tolist()
    ([[[1.0, 1.0]]], [[True]])
    """
    width = max(len(e["input_ids"]) for e in examples)
    t_max = max(1, max(len(e.get("steps", [])) for e in examples))
    gold = torch.zeros(len(examples), t_max, num_actions)
    step_mask = torch.zeros(len(examples), t_max, dtype=torch.bool)
    for i, e in enumerate(examples):
        for t, step in enumerate(e.get("steps", [])):
            gold[i, t, step] = 1.0
            step_mask[i, t] = True
    return {
        "input_ids": torch.tensor([e["input_ids"] + [pad_id] * (width - len(e["input_ids"])) for e in examples]),
        "attention_mask": torch.tensor([[1] * len(e["input_ids"]) + [0] * (width - len(e["input_ids"]))
                                        for e in examples]),
        "word_index": torch.tensor([e["word_index"] + [-1] * (width - len(e["word_index"])) for e in examples]),
        "n_words": torch.tensor([e["n_words"] for e in examples]),
        "gold": gold, "step_mask": step_mask,
        "supervised": torch.tensor([e["supervised"] for e in examples], dtype=torch.bool),
    }


def sample_probabilities(sizes: Sequence[int]) -> list[float]:
    """Per-sentence drawing probabilities, each dataset's sentences weighted by 1 / (its size): every dataset has
    the same total probability.

    >>> sample_probabilities([1, 3])
    [0.5, 0.16666666666666666, 0.16666666666666666, 0.16666666666666666]
    """
    live = [n for n in sizes if n > 0]
    return [1.0 / (n * len(live)) for n in sizes for _ in range(n)]


def draw_batches(sizes: Sequence[int], batch_size: int, steps: int, generator: torch.Generator) -> list[list[int]]:
    """``steps`` batches of indices into the concatenated datasets, drawn with :func:`sample_probabilities`."""
    probs = torch.tensor(sample_probabilities(sizes), dtype=torch.double)
    draws = torch.multinomial(probs, steps * batch_size, replacement=True, generator=generator).tolist()
    return [draws[k * batch_size:(k + 1) * batch_size] for k in range(steps)]


def evaluation_spans(record: Record, mentions: Sequence[tuple[int, int, str]], dataset: str,
                     origin: Mapping[str, tuple[str, str]], mode: str) -> list[Span]:
    """Predicted token mentions (renamed types) -> character spans with original type names for one gold sentence
    of ``dataset``; ``origin`` maps each renamed type to ``(dataset, type)``; ``mode`` is ``disjoint`` or ``merged``.

    >>> from curation.records import join_tokens
    >>> text, off = join_tokens(["aspirin", "headache"])
    >>> r = Record(id="s", text=text, tokens=["aspirin", "headache"], token_offsets=off)
    >>> origin = {"cdr_Disease": ("cdr", "Disease"), "ncbi_Disease": ("ncbi", "Disease"),
    ...           "cdr_Chemical": ("cdr", "Chemical")}
    >>> pred = [(1, 2, "ncbi_Disease"), (1, 2, "cdr_Disease"), (0, 1, "cdr_Chemical")]
    >>> evaluation_spans(r, pred, "ncbi", origin, "disjoint")
    [Span(start=8, end=16, label='Disease')]
    >>> [s.label for s in evaluation_spans(r, pred[:2], "cdr", origin, "merged")]
    ['Disease']
    """
    if mode not in ("disjoint", "merged"):
        raise ValueError(f"mode must be 'disjoint' or 'merged', not {mode!r}")
    own = {t for d, t in origin.values() if d == dataset}
    keep = set()
    for s, e, label in mentions:
        d, t = origin[label]
        if (mode == "disjoint" and d == dataset) or (mode == "merged" and t in own):
            keep.add((s, e, t))
    return [token_span_to_char(record.token_offsets, s, e, t) for s, e, t in sorted(keep)]
