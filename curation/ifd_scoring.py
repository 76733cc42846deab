"""IFD (instruction-following difficulty) of instruction records under a causal LM: the math, the token ids, a batched
scorer and the append-only score files that make a run resumable. ``bioselect curate ifd`` (:mod:`curation.ifd`)
drives it.

For a record with prompt ``x`` (instruction + input) and response ``y`` (output), ``s(y|x)`` is the mean token NLL of
``y`` given ``x`` and ``s(y)`` the mean token NLL of ``y`` alone. Superfiltering's IFD is the perplexity ratio
``exp(s(y|x)) / exp(s(y))`` (``ppl_ratio``); Cherry-LLM's is the loss ratio ``s(y|x) / s(y)`` (``loss_ratio``).

Token ids are built by concatenation, never by searching the response inside the prompt text:

* ``plain`` (Superfiltering's convention): prompt ids = ``tokenizer(instruction + "\\n" + input + "\\n")`` with the
  tokenizer's default special tokens (``instruction + "\\n"`` when the input is empty), response ids =
  ``tokenizer(output, add_special_tokens=False)``, conditional sequence = prompt ids + response ids, every response
  token scored; unconditional sequence = ``tokenizer(output)`` with default special tokens, scored from its second
  token on (exactly what ``model(ids, labels=ids).loss`` averages).
* ``chat``: prompt ids = the model's chat template over one user turn (``instruction + "\\n" + input``) with the
  generation prompt (non-thinking mode for hybrid reasoning templates, ``prompts.CHAT_TEMPLATE_KWARGS``); response
  and unconditional ids as in ``plain``.

Token scope: ``answer`` averages both losses over every response token, as above; ``content`` averages them over the
response's content tokens only, the tokens whose character offsets (a fast tokenizer's offset mapping) overlap the
strings that carry what the answer says (the mentions and class labels, :data:`CONTENT_RULES`), not over the JSON
scaffolding around them. The same per-token losses are computed either way and only the mean differs. An answer with
no content token (``[]``, an output that is not JSON, a record without ``task``) is not scored under ``content``.

Speed comes from four things, none of which changes a value beyond float rounding: records are scored in batches of
similar length; the LM head runs only on the positions whose next token is scored; the key/value cache of the prompt
prefix that a group of records shares (the constant instruction of a converted dataset) is computed once and reused;
the dtype follows the device. The batch plan depends only on the records and the batch size, so every process of a
sharded run and every resumed run computes each record in the same batch, with the same floating-point result.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from prompts import CHAT_TEMPLATE_KWARGS

if TYPE_CHECKING:
    import torch

VARIANTS = ("ppl_ratio", "loss_ratio")
TOKEN_SCOPES = ("answer", "content")
PROMPT_FORMATS = ("plain", "chat")


# --- the math ----------------------------------------------------------------------------------------------------


def ifd_from_losses(loss_cond: float, loss_uncond: float, variant: str = "ppl_ratio") -> float:
    """IFD from the mean token NLL of the response with (``loss_cond``) and without (``loss_uncond``) its prompt.

    ``ppl_ratio`` (Superfiltering) is ``exp(loss_cond) / exp(loss_uncond)``; ``loss_ratio`` (Cherry-LLM) is
    ``loss_cond / loss_uncond``. Below 1 the prompt helps the model predict the response.

    >>> round(ifd_from_losses(1.0, 2.0), 6)
    0.367879
    >>> ifd_from_losses(1.0, 2.0, "loss_ratio")
    0.5
    """
    if variant == "ppl_ratio":
        return math.exp(loss_cond - loss_uncond)  # = exp(a) / exp(b), without overflow for large losses
    if variant == "loss_ratio":
        return loss_cond / loss_uncond if loss_uncond else math.inf
    raise ValueError(f"unknown IFD variant {variant!r}; one of {', '.join(VARIANTS)}")


def plain_prompt(instruction: str, input: str) -> str:
    """Superfiltering's prompt text: ``instruction``, newline, ``input``, newline (no input line when it is empty).

    >>> plain_prompt("Find diseases.", "BRCA1 causes breast cancer.")
    'Find diseases.\\nBRCA1 causes breast cancer.\\n'
    >>> plain_prompt("Say hello.", "")
    'Say hello.\\n'
    """
    return f"{instruction}\n{input}\n" if input else f"{instruction}\n"


def chat_messages(instruction: str, input: str) -> list[dict[str, str]]:
    """The one user turn that the ``chat`` format renders with the model's chat template.

    >>> chat_messages("Find diseases.", "BRCA1 causes breast cancer.")
    [{'role': 'user', 'content': 'Find diseases.\\nBRCA1 causes breast cancer.'}]
    """
    return [{"role": "user", "content": f"{instruction}\n{input}" if input else instruction}]


def is_negative(output: str) -> bool:
    """Whether an output is an empty JSON list (a sentence without entities/relations/events).

    >>> is_negative("[]"), is_negative(" [ ] "), is_negative('[{"entity": "Disease", "name": "colon cancer"}]')
    (True, True, False)
    """
    text = output.strip()
    if not text.startswith("["):
        return False
    try:
        return json.loads(text) == []
    except json.JSONDecodeError:
        return False


def record_problem(obj: dict[str, Any]) -> str | None:
    """Why an instruction record cannot be scored, or ``None`` when it can.

    >>> record_problem({"id": "a", "instruction": "Find diseases.", "input": "", "output": "[]"}) is None
    True
    >>> record_problem({"id": "a", "instruction": "Find diseases.", "input": "x"})
    "lacks 'output'"
    >>> record_problem({"id": "a", "instruction": "Find diseases.", "output": "  "})
    'empty output'
    """
    for key in ("id", "instruction", "output"):
        if key not in obj or obj[key] is None:
            return f"lacks '{key}'"
    if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool):
        return "'id' is not a string or integer"
    for key in ("instruction", "input", "output"):
        if key in obj and not isinstance(obj[key], str):
            return f"'{key}' is not a string"
    if not obj["output"].strip():
        return "empty output"
    return None


# --- content tokens ------------------------------------------------------------------------------------------------

# What each task's answer says (:func:`is_content` holds the rule as paths into the JSON): the mentions copied from
# the input and, for ``tc``, the class label. Entity types, relation and event labels, role names, keys and punctuation
# are the answer's scaffolding.
CONTENT_RULES = {
    "ner": "the mention of each entity ('name')",
    "re": "the head and tail mentions ('head', 'tail')",
    "ee": "the trigger and every argument mention ('trigger', 'arguments' values)",
    "tc": "the class label ('label')",
}
NO_CONTENT_NEGATIVE = "[] names nothing: no content tokens"


def is_content(task: str, path: tuple[str | int, ...]) -> bool:
    """Whether the JSON string at ``path`` of a ``task`` answer is content (see :data:`CONTENT_RULES`).

    >>> is_content("ner", (0, "name")), is_content("ner", (0, "entity")), is_content("re", (2, "tail_type"))
    (True, False, False)
    >>> is_content("ee", (0, "arguments", "Theme", 1)), is_content("ee", (0, "event")), is_content("tc", ("label",))
    (True, False, True)
    """
    if task == "tc":
        return path == ("label",)
    if task not in CONTENT_RULES:
        raise ValueError(f"task {task!r} has no content rule; one of {', '.join(CONTENT_RULES)}")
    if len(path) < 2 or not isinstance(path[0], int):
        return False
    if task == "ner":
        return path[1:] == ("name",)
    if task == "re":
        return path[1:] in (("head",), ("tail",))
    return path[1:] == ("trigger",) or (len(path) == 4 and path[1] == "arguments" and isinstance(path[3], int))


def json_string_spans(text: str) -> list[tuple[tuple[str | int, ...], int, int]]:
    """Every string value (not object key) of a JSON text: its path and the character span of its literal between
    the quotes, as written (escapes included). ``ValueError`` when the text is not JSON.

    >>> json_string_spans('[{"entity": "Disease", "name": "gout"}]')
    [((0, 'entity'), 13, 20), ((0, 'name'), 32, 36)]
    >>> json_string_spans('{"label": "advice", "n": [1, true, "a\\\\"b"]}')
    [(('label',), 11, 17), (('n', 2), 36, 40)]
    """
    from json.decoder import WHITESPACE, scanstring
    from json.scanner import NUMBER_RE

    json.loads(text)  # the standard error message for text that is not JSON
    spans: list[tuple[tuple[str | int, ...], int, int]] = []

    def skip(i: int) -> int:
        return WHITESPACE.match(text, i).end()

    def expect(i: int, chars: str) -> str:
        if text[i : i + 1] not in chars:
            raise ValueError(f"expected one of {chars!r} at character {i}")
        return text[i]

    def value(i: int, path: tuple[str | int, ...]) -> int:
        i = skip(i)
        c = text[i : i + 1]
        if c == '"':
            _, end = scanstring(text, i + 1)
            spans.append((path, i + 1, end - 1))
            return end
        if c and c in "[{":
            close, k = "]" if c == "[" else "}", 0
            i = skip(i + 1)
            if text[i : i + 1] == close:
                return i + 1
            while True:
                if c == "[":
                    i = value(i, (*path, k))
                else:
                    expect(i, '"')
                    key, i = scanstring(text, i + 1)
                    expect(skip(i), ":")
                    i = value(skip(i) + 1, (*path, key))
                k += 1
                i = skip(i)
                if expect(i, "," + close) == close:
                    return i + 1
                i = skip(i + 1)
        for literal in ("true", "false", "null"):
            if text.startswith(literal, i):
                return i + len(literal)
        number = NUMBER_RE.match(text, i)
        if number:
            return number.end()
        raise ValueError(f"expected a JSON value at character {i}")

    end = skip(value(0, ()))
    if end != len(text):
        raise ValueError(f"extra text at character {end}")
    return spans


def content_spans(output: str, task: str) -> list[tuple[int, int]]:
    """Character spans, in ``output``, of the content strings of a ``task`` answer (empty strings left out).

    >>> out = '[{"entity": "Disease", "name": "colon cancer"}, {"entity": "Disease", "name": "FAP"}]'
    >>> [out[a:b] for a, b in content_spans(out, "ner")]
    ['colon cancer', 'FAP']
    >>> out = '[{"event": "Expression", "trigger": "expressed", "arguments": {"Theme": ["IL-2", "IL-4"]}}]'
    >>> [out[a:b] for a, b in content_spans(out, "ee")]
    ['expressed', 'IL-2', 'IL-4']
    >>> content_spans("[]", "ner")
    []
    """
    return [(a, b) for path, a, b in json_string_spans(output) if b > a and is_content(task, path)]


def overlapping_tokens(offsets: Sequence[tuple[int, int]], spans: Sequence[tuple[int, int]], first: int = 0
                       ) -> tuple[int, ...]:
    """Indices (``first`` on) of the tokens whose character offsets overlap a span; a token that straddles a span's
    edge (a quote merged with the first letters of a mention) counts. Special tokens (offsets ``(0, 0)``) never do.

    >>> overlapping_tokens([(0, 2), (2, 4), (4, 6), (6, 8), (0, 0)], [(3, 6)])
    (1, 2)
    """
    return tuple(j for j, (a, b) in enumerate(offsets) if j >= first and b > a
                 and any(a < end and b > start for start, end in spans))


def content_tokens(output: str, task: str | None, response_offsets: Sequence[tuple[int, int]],
                   uncond_offsets: Sequence[tuple[int, int]]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The content token indices of a response (into its conditional response ids and into its unconditional ids,
    from the second token on, which is where the unconditional pass scores). ``ValueError`` with the reason when
    there are none or a span maps to no token.

    >>> offsets = [(0, 2), (2, 7), (7, 9), (9, 11), (11, 13), (13, 15)]  # '{"', 'label', '":', ' "', 'no', '"}'
    >>> content_tokens('{"label": "no"}', "tc", offsets, [(0, 0), *offsets])  # alone: after a BOS
    ((4,), (5,))
    """
    if task is None:
        raise ValueError(f"no 'task' field: its content tokens are unknown (tasks: {', '.join(CONTENT_RULES)})")
    if task not in CONTENT_RULES:
        raise ValueError(f"task {task!r} has no content rule (tasks: {', '.join(CONTENT_RULES)})")
    try:
        spans = content_spans(output, task)
    except ValueError as err:
        raise ValueError(f"output is not JSON ({err}): its content strings cannot be located") from None
    if not spans:
        if is_negative(output):
            raise ValueError(NO_CONTENT_NEGATIVE)
        raise ValueError(f"the output has no content string ({task}: {CONTENT_RULES[task]})")
    for start, end in spans:
        if not overlapping_tokens(response_offsets, [(start, end)]):
            raise ValueError(f"content span {start}-{end} ({output[start:end]!r}) matches no response token")
    uncond = overlapping_tokens(uncond_offsets, spans, first=1)
    if not uncond:
        raise ValueError("its only content token opens the response alone, which the unconditional pass does not "
                         "score")
    return overlapping_tokens(response_offsets, spans), uncond


# --- token ids ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Example:
    """A record as token ids: conditional sequence ``prompt_ids + response_ids`` (every response token scored);
    unconditional sequence ``uncond_ids`` (scored from its second token). ``group`` names the records that share a
    prompt prefix (the instruction).

    With the ``content`` token scope, ``response_content`` (indices into ``response_ids``) and ``uncond_content``
    (indices into ``uncond_ids``, each at least 1) name the tokens whose losses are averaged instead, and ``problem``
    says why a record has none (it is then not scored)."""

    id: str
    group: str
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    uncond_ids: tuple[int, ...]
    response_content: tuple[int, ...] | None = None
    uncond_content: tuple[int, ...] | None = None
    problem: str | None = None

    @property
    def tokens(self) -> str:
        """The token scope: ``answer`` (every response token) or ``content``."""
        return "answer" if self.response_content is None else "content"


def encode_records(tokenizer, records: Sequence[dict[str, Any]], prompt_format: str = "plain",
                   tokens: str = "answer") -> list[Example]:
    """Tokenize usable records (see :func:`record_problem`) into :class:`Example` s, in one batched call per part.

    ``tokens="content"`` also maps each output's content spans (:func:`content_spans`, by the record's ``task``)
    through the tokenizer's offsets (a fast tokenizer's ``return_offsets_mapping``) to token indices; a record
    without content tokens gets ``problem`` set."""
    if prompt_format not in PROMPT_FORMATS:
        raise ValueError(f"unknown prompt format {prompt_format!r}; one of {', '.join(PROMPT_FORMATS)}")
    if tokens not in TOKEN_SCOPES:
        raise ValueError(f"unknown token scope {tokens!r}; one of {', '.join(TOKEN_SCOPES)}")
    if tokens == "content" and not getattr(tokenizer, "is_fast", False):
        raise ValueError("the content token scope needs a fast tokenizer (character offsets of tokens)")
    if not records:
        return []
    outputs = [r["output"] for r in records]
    if prompt_format == "plain":
        prompts = tokenizer([plain_prompt(r["instruction"], r.get("input", "")) for r in records])["input_ids"]
    else:
        conversations = [chat_messages(r["instruction"], r.get("input", "")) for r in records]
        prompts = tokenizer.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                                return_dict=True, **CHAT_TEMPLATE_KWARGS)["input_ids"]
    with_offsets = tokens == "content"
    responses = tokenizer(outputs, add_special_tokens=False, return_offsets_mapping=with_offsets)
    alone = tokenizer(outputs, return_offsets_mapping=with_offsets)
    examples = []
    for k, (r, p, y, u) in enumerate(zip(records, prompts, responses["input_ids"], alone["input_ids"])):
        ex = Example(str(r["id"]), r["instruction"], tuple(p), tuple(y), tuple(u))
        if with_offsets:
            try:
                cond, uncond = content_tokens(r["output"], r.get("task"), responses["offset_mapping"][k],
                                              alone["offset_mapping"][k])
                ex = replace(ex, response_content=cond, uncond_content=uncond)
            except ValueError as err:
                ex = replace(ex, response_content=(), uncond_content=(), problem=str(err))
        examples.append(ex)
    return examples


def length_problem(example: Example, max_length: int) -> str | None:
    """Why an example cannot be scored within ``max_length`` tokens, or ``None``.

    >>> length_problem(Example("a", "", (1, 2, 3), (4, 5), (4, 5)), 5) is None
    True
    >>> length_problem(Example("a", "", (1, 2, 3), (4, 5), (4, 5)), 4)
    'prompt + response is 5 tokens, over --max-length 4: the response would be cut'
    >>> length_problem(Example("a", "", (1, 2), (4,), (4,)), 8)
    'the response alone is 1 token; its unconditional loss (scored from the second token) is undefined'
    """
    n_prompt, n_total = len(example.prompt_ids), len(example.prompt_ids) + len(example.response_ids)
    if n_prompt >= max_length:
        return f"prompt is {n_prompt} tokens, not shorter than --max-length {max_length}"
    if n_total > max_length:
        return f"prompt + response is {n_total} tokens, over --max-length {max_length}: the response would be cut"
    if not example.response_ids:
        return "the response has no tokens"
    if len(example.uncond_ids) < 2:
        return (f"the response alone is {len(example.uncond_ids)} token; its unconditional loss (scored from the "
                "second token) is undefined")
    return None


# --- batch plan ---------------------------------------------------------------------------------------------------


def common_prefix_len(seqs: Iterable[Sequence[int]]) -> int:
    """Length of the longest common prefix of token id sequences.

    >>> common_prefix_len([(1, 2, 3), (1, 2, 4, 5), (1, 2)])
    2
    >>> common_prefix_len([])
    0
    """
    seqs = list(seqs)
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for s in seqs[1:]:
        k = 0
        while k < n and s[k] == first[k]:
            k += 1
        n = k
    return n


def bucket(order: Sequence[int], lengths: Sequence[int] | Mapping[int, int], batch_size: int, max_tokens: int,
           min_fill: float = 0.8) -> list[tuple[int, ...]]:
    """Split indices sorted longest first into batches of at most ``batch_size`` rows and ``max_tokens`` padded tokens
    whose sequences are at least ``min_fill`` times as long as the batch's longest (so padding stays under
    ``1 - min_fill``; a sequence longer than ``max_tokens`` gets a batch of its own).

    >>> bucket([0, 1, 2, 3, 4], [10, 6, 5, 5, 4], batch_size=3, max_tokens=16)
    [(0,), (1, 2), (3, 4)]
    >>> bucket([0, 1, 2], [10, 9, 5], batch_size=3, max_tokens=100)
    [(0, 1), (2,)]
    """
    batches, current = [], []
    for i in order:
        longest = lengths[current[0]] if current else 0
        if current and (len(current) == batch_size or (len(current) + 1) * longest > max_tokens
                        or lengths[i] < min_fill * longest):
            batches.append(tuple(current))
            current = []
        current.append(i)
    return batches + [tuple(current)] if current else batches


def shared_prefixes(seqs: Sequence[Sequence[int]], max_groups: int = 4, max_len: int = 64
                    ) -> list[tuple[tuple[int, ...], list[int]]]:
    """Greedy prefix groups: repeatedly the prefix whose key/value cache saves the most tokens (its length times
    the number of sequences that start with it, less one computation of it) with the positions of those sequences;
    what is left over comes last with the empty prefix.

    >>> shared_prefixes([(5, 1, 2, 3), (5, 1, 2, 4), (5, 1, 9), (7, 7), (8,)])
    [((5, 1), [0, 1, 2]), ((), [3, 4])]
    """
    from collections import Counter

    left, groups = list(range(len(seqs))), []
    while left and len(groups) < max_groups:
        counts = Counter(tuple(seqs[i][:d]) for i in left for d in range(1, min(len(seqs[i]), max_len) + 1))
        best = max(counts.items(), key=lambda kv: (len(kv[0]) * (kv[1] - 1), kv[0]), default=((), 0))
        if len(best[0]) * (best[1] - 1) <= 0:
            break
        members = [i for i in left if tuple(seqs[i][: len(best[0])]) == best[0]]
        groups.append((best[0], members))
        left = [i for i in left if i not in set(members)]
    return groups + [((), left)] if left else groups


@dataclass(frozen=True)
class Pass:
    """Batches of a chunk's conditional (``cond``) or unconditional (``uncond``) sequences that all start with
    ``prefix``, whose key/value cache (and the loss of any scored token inside it) is computed once."""

    kind: str
    prefix: tuple[int, ...]
    batches: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class Chunk:
    """Records scored together and written together, in passes whose batches are sorted by their own length."""

    indices: tuple[int, ...]
    passes: tuple[Pass, ...]


def plan_chunks(examples: Sequence[Example], batch_size: int = 64, max_batch_tokens: int = 2048,
                chunk_size: int = 256, reuse_prefix: bool = True, min_fill: float = 0.8) -> list[Chunk]:
    """Chunks of at most ``chunk_size`` records of one instruction, longest first, batched by length.

    The conditional prefix of an instruction's records is the longest common prefix of their prompt ids, so it is a
    true prefix of every prompt however the tokenizer merged tokens at the instruction/input boundary. Within a
    chunk, unconditional sequences are grouped by :func:`shared_prefixes` (a converted dataset's responses share
    their JSON opening, ``[{"entity": "Disease", "name": "``). The plan depends only on the examples and the sizes,
    so every process of a sharded run, and a resumed run, scores each record in the same batch.

    >>> exs = [Example(str(i), "g", (7, 8, 9, i), (1,) * (i + 8), (5, 6) + (i,) * (8 + i)) for i in range(3)]
    >>> [[(p.kind, p.prefix, p.batches) for p in c.passes] for c in plan_chunks(exs, batch_size=2, chunk_size=8)]
    [[('cond', (7, 8, 9), ((2, 1), (0,))), ('uncond', (5, 6), ((2, 1), (0,)))]]
    """
    groups: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        groups.setdefault(ex.group, []).append(i)
    chunks = []
    for members in groups.values():
        prompts = [examples[i].prompt_ids for i in members]
        prefix = tuple(prompts[0][: common_prefix_len(prompts)]) if reuse_prefix and len(members) > 1 else ()
        # tokens fed to the model: those after the cached prefix, less the last (only a target)
        fed = {i: len(examples[i].prompt_ids) + len(examples[i].response_ids) - len(prefix) - 1 for i in members}
        members = sorted(members, key=lambda i: (-fed[i], -len(examples[i].uncond_ids), i))
        for k in range(0, len(members), chunk_size):
            part = members[k : k + chunk_size]
            passes = [Pass("cond", prefix, tuple(bucket(part, fed, batch_size, max_batch_tokens, min_fill)))]
            alone = [examples[i].uncond_ids for i in part]
            for shared, pos in shared_prefixes(alone) if reuse_prefix else [((), list(range(len(part))))]:
                fed_u = {part[j]: max(len(alone[j]) - len(shared) - 1, 0) for j in pos}
                order = sorted(fed_u, key=lambda i: (-fed_u[i], i))
                passes.append(Pass("uncond", shared, tuple(bucket(order, fed_u, batch_size, max_batch_tokens,
                                                                  min_fill))))
            chunks.append(Chunk(tuple(part), tuple(passes)))
    return chunks


# --- the scorer ----------------------------------------------------------------------------------------------------


def pick_dtype(device: str, requested: str = "auto") -> torch.dtype:
    """The dtype to score in: ``requested`` unless ``auto``; then bfloat16 on a GPU that has it, float16 on other
    GPUs, float32 on CPU (and MPS), where half precision is slow or inaccurate."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@dataclass
class _Prefix:
    kv: list  # [(keys, values)] per layer, batch 1
    nll: list[float]  # nll[t - 1] = NLL of prefix token t (1 <= t < len(prefix))
    cum_nll: list[float]  # cum_nll[t] = NLL of prefix tokens 1..t (t < len(prefix))
    next_lse: Any  # logsumexp of the logits at the last prefix position, which predict the token after it
    next_logits: Any


class IFDScorer:
    """Mean response NLLs of :class:`Example` s under a causal LM, batch by batch.

    The decoder (``model.base_model``) yields hidden states; ``model.get_output_embeddings()`` (the LM head) runs only
    on the positions that predict a scored token, in chunks of ``head_chunk`` rows. Batches are right-padded with no
    attention mask: under causal attention a real token never sees the padding after it. A prefix's key/value cache,
    the NLLs of its own tokens and its last position's logits are computed once (a few are kept).

        scorer = IFDScorer(model, pad_id=tokenizer.pad_token_id or 0)
        for chunk in plan_chunks(examples):
            losses = scorer.score_chunk(examples, chunk)      # {example index: (loss_cond, loss_uncond)}
    """

    def __init__(self, model, pad_id: int = 0, head_chunk: int = 4096, max_prefixes: int = 8):
        self.model, self.pad_id, self.head_chunk, self.max_prefixes = model, pad_id, head_chunk, max_prefixes
        self.decoder = model.base_model
        self.head = model.get_output_embeddings()
        self._prefixes: dict[tuple[int, ...], _Prefix] = {}

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def _attention_kernel(self):
        """On CPU, attention runs with the math SDPA kernel: the fused CPU flash kernel splits its work by thread
        count, so a process with one thread (each of two under ``accelerate launch``) and one with two would round
        differently, and sharded output would not be byte-identical to a single-process run."""
        from contextlib import nullcontext

        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.MATH) if self.device.type == "cpu" else nullcontext()

    def _prefix(self, prefix: tuple[int, ...]) -> _Prefix:
        import torch

        if prefix not in self._prefixes:
            if len(self._prefixes) >= self.max_prefixes:
                self._prefixes.pop(next(iter(self._prefixes)))
            with self._attention_kernel():
                out = self.decoder(input_ids=torch.tensor([prefix], device=self.device), use_cache=True)
            hidden = out.last_hidden_state[0]
            targets = torch.tensor(prefix[1:], dtype=torch.long, device=self.device)
            nll = self._nll(hidden[:-1], targets).double().cpu().tolist()
            last = self.head(hidden[-1:]).float()[0]
            self._prefixes[prefix] = _Prefix([(layer.keys, layer.values) for layer in out.cache.layers],
                                             nll, [0.0, *itertools.accumulate(nll)], last.logsumexp(-1), last)
        return self._prefixes[prefix]

    def _nll(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Token NLLs from the LM head in float32: logsumexp - target logit (cross-entropy without materializing
        the log-softmax, a second vocabulary-sized tensor)."""
        logits = self.head(hidden).float()
        return logits.logsumexp(-1) - logits.gather(1, targets[:, None])[:, 0]

    def mean_nll(self, seqs: Sequence[Sequence[int]], starts: Sequence[int], prefix: tuple[int, ...] = (),
                 masks: Sequence[Sequence[int] | None] | None = None) -> list[float]:
        """Mean NLL of ``seq[start:]`` given ``seq[:start]`` for each sequence (``start >= 1``). Every sequence
        starts with ``prefix``, whose cached state stands in for its tokens, so the forward runs on
        ``seq[len(prefix):-1]`` (the last token is only a target).

        ``masks[b]``, where given, names the positions of ``seq`` (``start`` or later) to average over instead: the
        NLLs of every position from ``start`` are computed as without it and then only the named ones are summed, so
        the token scope costs nothing."""
        import torch

        n = len(prefix)
        masks = list(masks) if masks is not None else [None] * len(seqs)
        if any(tuple(seq[:n]) != prefix or not 1 <= start < len(seq) for seq, start in zip(seqs, starts)):
            raise ValueError("every sequence must start with the prefix and have a scored token")
        if any(m is not None and (not m or min(m) < start or max(m) >= len(seq))
               for seq, start, m in zip(seqs, starts, masks)):
            raise ValueError("a mask must name at least one position from the sequence's start on")
        sums = [0.0] * len(seqs)
        if n:
            shared = self._prefix(prefix)
            for b, (seq, start, mask) in enumerate(zip(seqs, starts, masks)):
                if mask is not None:  # the named positions inside the prefix, and position n
                    sums[b] += sum(shared.nll[t - 1] for t in mask if t < n)
                    if n in mask:
                        sums[b] += (shared.next_lse - shared.next_logits[seq[n]]).item()
                    continue
                if start < n:  # scored tokens inside the prefix: their NLLs were computed with it
                    sums[b] += shared.cum_nll[min(n, len(seq)) - 1] - shared.cum_nll[start - 1]
                if start <= n < len(seq):  # token n is predicted by the prefix's last position
                    sums[b] += (shared.next_lse - shared.next_logits[seq[n]]).item()
        width = max(len(seq) - 1 - n for seq in seqs)
        if width > 0:
            batch = len(seqs)
            ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
            rows, cols, targets, owner, keep = [], [], [], [], []
            for b, (seq, start, mask) in enumerate(zip(seqs, starts, masks)):
                ids[b, : len(seq) - 1 - n] = torch.tensor(seq[n:-1], dtype=torch.long)
                first = max(start, n + 1)  # tokens from first on are predicted by fed positions t - 1 - n
                rows += [b] * (len(seq) - first)
                cols += range(first - 1 - n, len(seq) - 1 - n)
                targets += seq[first:]
                owner += [b] * (len(seq) - first)
                named = set(mask) if mask is not None else None
                keep += [named is None or t in named for t in range(first, len(seq))]
            kwargs: dict[str, Any] = {"use_cache": False}
            if n:
                from transformers import DynamicCache

                # a fresh cache per batch: the forward appends this batch's keys/values to it
                past = [(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in shared.kv]
                kwargs = {"cache": DynamicCache(ddp_cache_data=past, config=self.model.config),
                          "use_cache": True}
            position_ids = torch.arange(n, n + width).expand(batch, width).to(self.device)
            with self._attention_kernel():
                hidden = self.decoder(input_ids=ids.to(self.device), position_ids=position_ids,
                                      **kwargs).last_hidden_state
            if rows:
                hidden = hidden[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
                targets_t = torch.tensor(targets, device=self.device)
                nll = torch.cat([self._nll(hidden[k : k + self.head_chunk], targets_t[k : k + self.head_chunk])
                                 for k in range(0, len(targets), self.head_chunk)])
                owner_t, nll = torch.tensor(owner), nll.double().cpu()
                if not all(keep):  # the token scope: sum only the named positions' NLLs
                    keep_t = torch.tensor(keep)
                    owner_t, nll = owner_t[keep_t], nll[keep_t]
                per_seq = torch.zeros(batch, dtype=torch.float64).index_add_(0, owner_t, nll)
                sums = [s + p for s, p in zip(sums, per_seq.tolist())]
        return [total / (len(seq) - start if mask is None else len(mask))
                for total, seq, start, mask in zip(sums, seqs, starts, masks)]

    def conditional(self, examples: Sequence[Example], prefix: tuple[int, ...] = ()) -> list[float]:
        """Mean NLL of each response given its prompt (``prefix`` must start every prompt), over its content tokens
        where the example names them."""
        if not all(len(ex.prompt_ids) >= len(prefix) for ex in examples):
            raise ValueError("the prefix is longer than a prompt")
        masks = [None if ex.response_content is None else [len(ex.prompt_ids) + j for j in ex.response_content]
                 for ex in examples]
        return self.mean_nll([ex.prompt_ids + ex.response_ids for ex in examples],
                             [len(ex.prompt_ids) for ex in examples], prefix, masks)

    def unconditional(self, examples: Sequence[Example], prefix: tuple[int, ...] = ()) -> list[float]:
        """Mean NLL of each response alone, from its second token on (``prefix`` must start every one), over its
        content tokens where the example names them."""
        return self.mean_nll([ex.uncond_ids for ex in examples], [1] * len(examples), prefix,
                             [ex.uncond_content for ex in examples])

    def score_chunk(self, examples: Sequence[Example], chunk: Chunk, on_batch=None) -> dict[int, tuple[float, float]]:
        """``index -> (loss_cond, loss_uncond)`` for the records of a chunk; ``on_batch(n)`` after each batch of n."""
        losses: dict[str, dict[int, float]] = {"cond": {}, "uncond": {}}
        for p in chunk.passes:
            score = self.conditional if p.kind == "cond" else self.unconditional
            for batch in p.batches:
                losses[p.kind].update(zip(batch, score([examples[i] for i in batch], p.prefix)))
                if on_batch:
                    on_batch(len(batch))
        return {i: (losses["cond"][i], losses["uncond"][i]) for i in chunk.indices}


def score_line(example: Example, loss_cond: float, loss_uncond: float, variant: str) -> str:
    """The output line of one scored record (also its line in the partial file).

    >>> row = json.loads(score_line(Example("r1", "", (1,), (2, 3), (2, 3)), 0.5, 1.5, "loss_ratio"))
    >>> row["id"], row["ifd"], row["n_response_tokens"], row["variant"], row["tokens"]
    ('r1', 0.3333333333333333, 2, 'loss_ratio', 'answer')
    >>> json.loads(score_line(Example("r2", "", (1,), (2, 3), (2, 3), (1,), (1,)), 0.5, 1.5, "ppl_ratio"))["tokens"]
    'content'

    With the ``content`` scope the line also carries ``n_content_tokens`` (of the conditional response).
    """
    finite = math.isfinite(loss_cond) and math.isfinite(loss_uncond)
    value = ifd_from_losses(loss_cond, loss_uncond, variant) if finite else math.nan
    row = {"id": example.id, "ifd": value if math.isfinite(value) else None,
           "loss_cond": loss_cond if finite else None, "loss_uncond": loss_uncond if finite else None,
           "n_response_tokens": len(example.response_ids), "variant": variant, "tokens": example.tokens}
    if example.response_content is not None:
        row["n_content_tokens"] = len(example.response_content)
    return json.dumps(row, ensure_ascii=False)


# --- tokenizers of a homologous pair -----------------------------------------------------------------------------


def tokenizer_mismatch(weak, strong, samples: Sequence[str] = (), chat: bool = False) -> list[str]:
    """Reasons why scores computed with the ``weak`` tokenizer do not transfer to the ``strong`` model's (empty when
    they match): vocabulary, special tokens, the token ids of ``samples`` and, for ``chat``, of their chat prompts."""
    reasons = []
    vw, vs = weak.get_vocab(), strong.get_vocab()
    if vw != vs:
        reasons.append(f"vocabularies differ ({len(vw)} vs {len(vs)} entries, {len(set(vw.items()) ^ set(vs.items()))}"
                       " differing)")
    if weak.all_special_tokens != strong.all_special_tokens:
        reasons.append(f"special tokens differ ({weak.all_special_tokens} vs {strong.all_special_tokens})")
    for text in samples:
        if weak(text)["input_ids"] != strong(text)["input_ids"]:
            reasons.append(f"they tokenize {text[:40]!r} differently")
            break
    if chat:  # compare what the templates render for these records, not their text (which may differ elsewhere)
        for text in samples:
            turn = [chat_messages(text, "")]
            ids = [t.apply_chat_template(turn, add_generation_prompt=True, tokenize=True, return_dict=True,
                                         **CHAT_TEMPLATE_KWARGS)["input_ids"] for t in (weak, strong)]
            if ids[0] != ids[1]:
                reasons.append(f"their chat templates render {text[:40]!r} differently")
                break
    return reasons


# --- append-only score files ---------------------------------------------------------------------------------------


def read_done(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """``id -> line`` of every finished line in the partial score files (:func:`curation.io.read_finished_lines`:
    a line cut by a kill is ignored, the first line of an id wins, any other bad line is refused)."""
    from curation.io import read_finished_lines

    return read_finished_lines(paths, "a score line of curate ifd",
                               "delete the .partial* files beside the output to score again")
