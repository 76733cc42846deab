"""Grammar-constrained decoding of NER answers: a per-record Lark grammar and llguidance token masks.

Every constrained answer is a JSON array in the training format (``json.dumps`` separators ``", "`` and
``": "``, keys in the order ``entity``, ``name``) that validates against ``prompts.schema("ner", labels)``; each
``entity`` is one of the record's labels and each ``name`` is a *mention candidate* of the record's input
(:func:`mention_candidates`): a run of 1 to ``max_pieces`` consecutive pieces (``\\w+`` runs and single
punctuation characters), copied with the text's own whitespace between them and JSON-escaped.

    >>> mention_candidates("IL-2 binds", max_pieces=2)
    ['-', '-2', '2', '2 binds', 'IL', 'IL-', 'binds']
    >>> print(ner_grammar("IL-2", ["Gene"], max_pieces=1))
    start: "[" (item (", " item)*)? "]"
    item: "{\\"entity\\": \\"" LABEL "\\", \\"name\\": \\"" NAME "\\"}"
    LABEL: "Gene"
    NAME: "-" | "2" | "IL"
    <BLANKLINE>

llguidance (the ``constrained`` extra) compiles the grammar and computes, at every step, the set of tokens that
keep the answer a prefix of a grammatical one; :class:`GrammarLogitsProcessor` applies those masks to a batch in
``model.generate``. Everything but that class is plain text processing.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Container, Sequence
from functools import lru_cache

PIECE = re.compile(r"\w+|[^\w\s]")
EXTRA = "constrained"  # the optional dependency group that installs llguidance


def mention_candidates(text: str, max_pieces: int = 32, skip: Container[str] = ()) -> list[str]:
    """The strings a constrained ``name`` may take: runs of 1..``max_pieces`` consecutive pieces of ``text``.

    A piece is a ``\\w+`` run or one character that is neither a word character nor whitespace, so a candidate
    starts and ends at word or punctuation boundaries and keeps the text's whitespace between its pieces. A piece
    holding a character of ``skip`` (characters the tokenizer cannot produce, :func:`untokenizable`) is never part
    of a candidate. Sorted, without duplicates.

    >>> mention_candidates("T - cell  leukaemia", max_pieces=3)
    ['-', '- cell', '- cell  leukaemia', 'T', 'T -', 'T - cell', 'cell', 'cell  leukaemia', 'leukaemia']
    >>> mention_candidates("a # b", skip={"#"})
    ['a', 'b']
    """
    if max_pieces < 1:
        raise ValueError("max_pieces must be >= 1")
    spans = [m.span() for m in PIECE.finditer(text)]
    ok = [not any(c in skip for c in text[a:b]) for a, b in spans]
    out = set()
    for i in range(len(spans)):
        for j in range(i, min(len(spans), i + max_pieces)):
            if not ok[j]:
                break
            out.add(text[spans[i][0]:spans[j][1]])
    return sorted(out)


def untokenizable(tokenizer, text: str) -> set[str]:
    """Characters of ``text`` that the tokenizer cannot reproduce (it drops or replaces them: SmolLM2's byte-level
    vocabulary, for one, has no token for the UTF-8 lead bytes of code points U+40000 and above)."""
    chars = sorted(set(text))
    if not chars:
        return set()
    ids = tokenizer(chars, add_special_tokens=False)["input_ids"]
    return {c for c, i in zip(chars, ids) if tokenizer.decode(i, clean_up_tokenization_spaces=False) != c}


def lark_literal(content: str) -> str:
    """A Lark string literal matching the JSON-escaped form of ``content`` (without the JSON quotes).

    >>> print(lark_literal('say "hi"\\tnow'))
    "say \\\\\\"hi\\\\\\"\\\\tnow"
    """
    literal = json.dumps(json.dumps(content, ensure_ascii=False)[1:-1], ensure_ascii=False)
    # JSON leaves DEL and the C1 controls raw, but Lark's lexer rejects a raw DEL in a literal: write them escaped
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", literal)


def ner_grammar(text: str, labels: Sequence[str], max_pieces: int = 32, skip: Container[str] = ()) -> str:
    """The Lark grammar of every admissible answer for an input ``text`` and a label set (``max_pieces`` and
    ``skip`` as in :func:`mention_candidates`).

    An input without any candidate admits only ``[]``.

    >>> ner_grammar("  ", ["Disease"]).splitlines()[0]
    'start: "[" "]"'
    """
    if not labels:
        raise ValueError("a constrained NER answer needs at least one entity type")
    names = mention_candidates(text, max_pieces, skip)
    if not names:
        return 'start: "[" "]"\n'
    return (
        'start: "[" (item (", " item)*)? "]"\n'
        'item: "{\\"entity\\": \\"" LABEL "\\", \\"name\\": \\"" NAME "\\"}"\n'
        f"LABEL: {' | '.join(lark_literal(label) for label in labels)}\n"
        f"NAME: {' | '.join(lark_literal(name) for name in names)}\n"
    )


def answer_grammars(tokenizer, texts: Sequence[str], label_sets: Sequence[Sequence[str]],
                    max_pieces: int = 32) -> list[str]:
    """:func:`ner_grammar` of each input text with its label set, leaving out what the tokenizer cannot produce."""
    return [ner_grammar(text, labels, max_pieces, untokenizable(tokenizer, text))
            for text, labels in zip(texts, label_sets, strict=True)]


def close_truncated(output: str) -> str:
    """Cut a constrained answer that ran out of tokens back to its last complete entity and close the array.

    ``output`` is a prefix of a grammatical answer; the result is the longest ``output[:k] + "]"`` (``k`` just
    after an entity's ``}``) that is valid JSON, or ``"[]"``. A complete answer is returned unchanged.

    >>> close_truncated('[{"entity": "Disease", "name": "cancer"}, {"entity": "Dis')
    '[{"entity": "Disease", "name": "cancer"}]'
    >>> close_truncated('[{"entity": "Disease", "name": "a}')
    '[]'
    """
    try:
        json.loads(output)
        return output
    except json.JSONDecodeError:
        pass
    k = output.rfind("}")
    while k >= 0:
        candidate = output[:k + 1] + "]"
        try:
            json.loads(candidate)
            return candidate
        except json.JSONDecodeError:
            k = output.rfind("}", 0, k)
    return "[]"


def require_llguidance():
    """Import llguidance, or fail naming the extra that installs it."""
    try:
        import llguidance
        import llguidance.hf
        import llguidance.numpy  # noqa: F401
    except ImportError as err:
        raise ImportError(f"constrained decoding needs llguidance ({err}): pip install 'bioselect[{EXTRA}]', "
                          "or generate with --unconstrained") from None
    return llguidance


def ll_tokenizer(tokenizer, vocab_size: int, stop_ids: Sequence[int]):
    """llguidance's view of a Hugging Face fast tokenizer, with the model's logits width and stop tokens.

    Token ids the tokenizer does not know (a model's padded vocabulary) are never allowed. Building one takes about
    half a second for a 50k vocabulary, so the last few are kept.
    """
    return _ll_tokenizer(tokenizer, vocab_size, tuple(stop_ids))


@lru_cache(maxsize=4)
def _ll_tokenizer(tokenizer, vocab_size: int, stop_ids: tuple[int, ...]):
    llg = require_llguidance()
    return llg.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(stop_ids))


class GrammarLogitsProcessor:
    """A ``model.generate`` logits processor that masks each sequence of a batch with its own grammar.

    ``grammars[i]`` is the Lark grammar of the batch's ``i``-th sequence. At each step the processor feeds every
    unfinished sequence's last token to its matcher, computes the allowed-token bitmasks and sets every other
    logit to ``-inf``. Once a grammar is complete only the stop tokens are allowed, so greedy decoding ends the
    sequence; a sequence that has emitted a stop token is left alone (``generate`` pads it). ``seconds`` counts
    the time spent here and in building the matchers (the constraint's overhead).
    """

    def __init__(self, ll_tok, grammars: Sequence[str], stop_ids: Sequence[int]):
        llg = require_llguidance()
        start = time.perf_counter()
        self.matchers = [llg.LLMatcher(ll_tok, llg.LLMatcher.grammar_from_lark(g), log_level=0) for g in grammars]
        for m in self.matchers:
            if m.is_error():
                raise ValueError(f"invalid grammar: {m.get_error().splitlines()[0]}")
        self.stop_ids = set(stop_ids)
        self.done = [False] * len(grammars)
        self.prompt_len: int | None = None
        self.vocab_size = ll_tok.vocab_size
        self.executor = llg.LLExecutor(num_threads=1)
        self.bitmask = llg.numpy.allocate_token_bitmask(len(grammars), self.vocab_size)
        self.seconds = time.perf_counter() - start

    def __call__(self, input_ids, scores):
        import numpy as np
        import torch
        from llguidance.numpy import fill_next_token_bitmask_par

        start = time.perf_counter()
        if self.prompt_len is None:
            self.prompt_len = input_ids.shape[1]
        elif input_ids.shape[1] > self.prompt_len:
            last = input_ids[:, -1].tolist()
            for i, m in enumerate(self.matchers):
                if self.done[i]:
                    continue
                if not m.consume_token(last[i]):
                    raise RuntimeError(f"sequence {i}: the grammar rejected token {last[i]} ({m.get_error()})")
                if last[i] in self.stop_ids:
                    self.done[i] = True
                    self.bitmask[i] = -1  # finished: generate() pads it whatever the logits say
        live = [(m, i) for i, m in enumerate(self.matchers) if not self.done[i]]
        if live:
            fill_next_token_bitmask_par(self.executor, live, self.bitmask)
            width = scores.shape[1]
            bits = np.unpackbits(self.bitmask.view(np.uint8), axis=1, count=min(width, self.vocab_size),
                                 bitorder="little").view(np.bool_)
            if bits.shape[1] < width:  # logits wider than the tokenizer's vocabulary: the extra ids are never allowed
                bits = np.pad(bits, ((0, 0), (0, width - bits.shape[1])))
            allowed = torch.from_numpy(bits).to(scores.device, non_blocking=True)
            scores = scores.masked_fill(~allowed, float("-inf"))
        self.seconds += time.perf_counter() - start
        return scores
