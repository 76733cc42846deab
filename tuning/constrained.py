"""Grammar-constrained decoding of NER, RE, EE and TC answers: a per-record Lark grammar and llguidance token masks.

Every constrained answer is JSON in the training format (``json.dumps`` separators ``", "`` and ``": "``, keys in
the order ``curation.convert`` writes them) that validates against ``prompts.schema(task, labels)``: NER entity
lists, RE relation lists, EE event lists and the TC ``{"label": L}`` object. Types come from the record's label set;
every mention (NER ``name``, RE ``head`` and ``tail``, EE ``trigger`` and argument) is a *mention candidate* of the
record's input (:func:`mention_candidates`): a run of consecutive pieces (``\\w+`` runs and single punctuation
characters) copied with the text's own whitespace between them and JSON-escaped.

    >>> mention_candidates("IL-2 binds", max_pieces=2)
    ['-', '-2', '2', '2 binds', 'IL', 'IL-', 'binds']
    >>> print(ner_grammar("IL-2", ["Gene"]))
    start: "[" (item (", " item)*)? "]"
    item: "{\\"entity\\": \\"" LABEL "\\", \\"name\\": \\"" NAME "\\"}"
    LABEL: "Gene"
    NAME: RUN & EDGE
    RUN: %regex {"substring_chunks": ["IL", "-", "2"]}
    EDGE: FIRST (UNIT* LAST)?
    UNIT: /\\\\u[0-9a-fA-F]{4}|\\\\[^u]|[^\\\\]/
    FIRST: "-" | "2" | "I"
    LAST: "-" | "2" | "L"
    <BLANKLINE>

The mentions are one terminal of linear size, not a list of every run (which grows with the square of the input's
length): llguidance's ``%regex {"substring_chunks": [...]}`` admits any concatenation of consecutive chunks (a
suffix automaton), given here the JSON-escaped pieces and whitespace gaps of the text, and ``EDGE`` keeps a mention
from starting or ending with whitespace (or being empty), reading the escaped text one character (``UNIT``) at a
time. llguidance's own ``substring_words`` is not used: it emits the text's quotes and backslashes raw inside the
JSON string, groups a run of punctuation into one word (``"Na+/K+"`` would not admit ``"Na+"``) and admits the empty
string and runs with outer whitespace.

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
# A type or role the record does not list (RE entity types, EE roles without --entity-types / --roles): a word of
# letters, digits, "_", "." and "-", as the shipped corpora's types and roles are (PHEE's "Treatment.Drug").
FREE_TYPE = "/[A-Za-z0-9_.\\-]{1,64}/"
# One character of a JSON string's content as json.dumps writes it: a \\u escape, a two-character escape, or a raw
# character. EDGE reads a mention unit by unit so that the "t" of an escaped tab is not taken for a piece's last "t".
UNIT = 'UNIT: /\\\\u[0-9a-fA-F]{4}|\\\\[^u]|[^\\\\]/\n'


def _segments(text: str, skip: Container[str] = ()) -> list[list[tuple[str, bool]]]:
    """The text as runs of ``(chunk, is_piece)``: pieces and the non-empty whitespace gaps between them. A piece or
    gap holding a character of ``skip`` is left out and ends its run."""
    segments: list[list[tuple[str, bool]]] = []
    current: list[tuple[str, bool]] = []
    last_end = 0
    for m in PIECE.finditer(text):
        piece = m.group()
        gap = text[last_end:m.start()] if current else ""
        if any(c in skip for c in piece) or any(c in skip for c in gap):
            if current:
                segments.append(current)
            current, gap = [], ""
            if any(c in skip for c in piece):
                continue
        if gap:
            current.append((gap, False))
        current.append((piece, True))
        last_end = m.end()
    if current:
        segments.append(current)
    return segments


def mention_candidates(text: str, max_pieces: int | None = None, skip: Container[str] = ()) -> list[str]:
    """The strings a constrained mention may take: runs of consecutive pieces of ``text`` (at most ``max_pieces``).

    A piece is a ``\\w+`` run or one character that is neither a word character nor whitespace, so a candidate
    starts and ends at word or punctuation boundaries and keeps the text's whitespace between its pieces. A piece or
    whitespace gap holding a character of ``skip`` (characters the tokenizer cannot produce, :func:`untokenizable`)
    is never part of a candidate. Sorted, without duplicates. The grammars do not list the candidates (their number
    grows with the square of the text's length); :func:`mention_terminal` admits exactly the same set.

    >>> mention_candidates("T - cell  leukaemia", max_pieces=3)
    ['-', '- cell', '- cell  leukaemia', 'T', 'T -', 'T - cell', 'cell', 'cell  leukaemia', 'leukaemia']
    >>> mention_candidates("a # b", skip={"#"})
    ['a', 'b']
    """
    if max_pieces is not None and max_pieces < 1:
        raise ValueError("max_pieces must be >= 1")
    out = set()
    for seg in _segments(text, skip):
        starts = [k for k, (_, is_piece) in enumerate(seg) if is_piece]
        for n, i in enumerate(starts):
            for m, j in enumerate(starts[n:], start=1):
                if max_pieces is not None and m > max_pieces:
                    break
                out.add("".join(chunk for chunk, _ in seg[i:j + 1]))
    return sorted(out)


def untokenizable(tokenizer, text: str) -> set[str]:
    """Characters of ``text`` that the tokenizer cannot reproduce (it drops or replaces them: SmolLM2's byte-level
    vocabulary, for one, has no token for the UTF-8 lead bytes of code points U+40000 and above)."""
    chars = sorted(set(text))
    if not chars:
        return set()
    ids = tokenizer(chars, add_special_tokens=False)["input_ids"]
    return {c for c, i in zip(chars, ids) if tokenizer.decode(i, clean_up_tokenization_spaces=False) != c}


def _escaped(content: str) -> str:
    """The JSON-escaped form of ``content`` (what a JSON string holding it reads, without the quotes)."""
    return json.dumps(content, ensure_ascii=False)[1:-1]


def lark_literal(content: str) -> str:
    """A Lark string literal matching the JSON-escaped form of ``content`` (without the JSON quotes).

    >>> print(lark_literal('say "hi"\\tnow'))
    "say \\\\\\"hi\\\\\\"\\\\tnow"
    """
    literal = json.dumps(_escaped(content), ensure_ascii=False)
    # JSON leaves DEL and the C1 controls raw, but Lark's lexer rejects a raw DEL in a literal: write them escaped
    return re.sub(r"[\x7f-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", literal)


def _alternatives(contents: Sequence[str]) -> str:
    return " | ".join(lark_literal(c) for c in contents)


def mention_terminal(text: str, skip: Container[str] = ()) -> str | None:
    """Lark terminals ``NAME`` (and its helpers) admitting exactly the JSON-escaped :func:`mention_candidates` of
    ``text``; None when the text has no candidate.

    ``RUN`` is llguidance's substring automaton over the escaped chunks (pieces and whitespace gaps) of each run of
    producible text, so its size is linear in the text's length; ``EDGE`` makes a mention start with the (escaped)
    first character of a piece and end with the last character of one, read as whole escaped characters (``UNIT``),
    which rules out outer whitespace and the empty string (a gap is whitespace and a piece has none).

    >>> mention_terminal(" \\n ") is None
    True
    """
    segments = _segments(text, skip)
    if not segments:
        return None
    runs = []
    for seg in segments:
        chunks = json.dumps({"substring_chunks": [_escaped(c) for c, _ in seg]})
        runs.append("%regex " + chunks.replace("\x7f", "\\u007f"))
    pieces = [c for seg in segments for c, is_piece in seg if is_piece]
    return (f"NAME: RUN & EDGE\nRUN: {' | '.join(runs)}\nEDGE: FIRST (UNIT* LAST)?\n{UNIT}"
            f"FIRST: {_alternatives(sorted({p[0] for p in pieces}))}\n"
            f"LAST: {_alternatives(sorted({p[-1] for p in pieces}))}\n")


def _type_terminal(name: str, types: Sequence[str] | None) -> str:
    return f"{name}: {_alternatives(types) if types else FREE_TYPE}\n"


def ner_grammar(text: str, labels: Sequence[str], skip: Container[str] = ()) -> str:
    """The Lark grammar of every admissible NER answer for an input ``text`` and its entity types: an array of
    ``{"entity": TYPE, "name": MENTION}``. ``skip`` as in :func:`mention_candidates`; a text without any candidate
    admits only ``[]``.

    >>> ner_grammar("  ", ["Disease"]).splitlines()[0]
    'start: "[" "]"'
    """
    if not labels:
        raise ValueError("a constrained NER answer needs at least one entity type")
    names = mention_terminal(text, skip)
    if names is None:
        return 'start: "[" "]"\n'
    return ('start: "[" (item (", " item)*)? "]"\n'
            'item: "{\\"entity\\": \\"" LABEL "\\", \\"name\\": \\"" NAME "\\"}"\n'
            f"LABEL: {_alternatives(labels)}\n{names}")


def re_grammar(text: str, relations: Sequence[str], entity_types: Sequence[str] | None = None,
               skip: Container[str] = ()) -> str:
    """The Lark grammar of every admissible RE answer: an array of ``{"head": MENTION, "head_type": TYPE,
    "relation": RELATION, "tail": MENTION, "tail_type": TYPE}`` (all five keys, in this order, as
    ``curation.convert.re_output`` writes them). ``relations`` are the record's relation types; ``entity_types``
    restrict ``head_type`` and ``tail_type`` (without them a type is any word of :data:`FREE_TYPE`).

    >>> print(re_grammar("a b", ["ADE"], ["Drug", "AE"]).splitlines()[3])
    TYPE: "Drug" | "AE"
    """
    if not relations:
        raise ValueError("a constrained RE answer needs at least one relation type")
    names = mention_terminal(text, skip)
    if names is None:
        return 'start: "[" "]"\n'
    return ('start: "[" (item (", " item)*)? "]"\n'
            'item: "{\\"head\\": \\"" NAME "\\", \\"head_type\\": \\"" TYPE "\\", \\"relation\\": \\"" LABEL '
            '"\\", \\"tail\\": \\"" NAME "\\", \\"tail_type\\": \\"" TYPE "\\"}"\n'
            f"LABEL: {_alternatives(relations)}\n{_type_terminal('TYPE', entity_types)}{names}")


def ee_grammar(text: str, event_types: Sequence[str], roles: Sequence[str] | None = None,
               skip: Container[str] = ()) -> str:
    """The Lark grammar of every admissible EE answer: an array of ``{"event": TYPE, "trigger": MENTION,
    "arguments": {ROLE: [MENTION, ...], ...}}`` as ``curation.convert.ee_output`` writes them (a role lists at least
    one mention; ``"arguments": {}`` is allowed). ``roles`` restrict the role names (without them a role is any word
    of :data:`FREE_TYPE`). A role may repeat within one event (a grammar cannot forbid it without listing every
    order of the roles); JSON keeps the last.

    >>> print(ee_grammar("x", ["ADE"], ["Drug"]).splitlines()[2])
    arg: "\\"" ROLE "\\": [\\"" NAME "\\"" (", \\"" NAME "\\"")* "]"
    """
    if not event_types:
        raise ValueError("a constrained EE answer needs at least one event type")
    names = mention_terminal(text, skip)
    if names is None:
        return 'start: "[" "]"\n'
    return ('start: "[" (event (", " event)*)? "]"\n'
            'event: "{\\"event\\": \\"" LABEL "\\", \\"trigger\\": \\"" NAME "\\", \\"arguments\\": {" '
            '(arg (", " arg)*)? "}}"\n'
            'arg: "\\"" ROLE "\\": [\\"" NAME "\\"" (", \\"" NAME "\\"")* "]"\n'
            f"LABEL: {_alternatives(event_types)}\n{_type_terminal('ROLE', roles)}{names}")


def tc_grammar(labels: Sequence[str]) -> str:
    """The Lark grammar of a TC answer: ``{"label": L}`` with one label of the set (single-label: the TC schema and
    scorer take one label per record).

    >>> print(tc_grammar(["ade", "no_ade"]))
    start: "{\\"label\\": \\"" LABEL "\\"}"
    LABEL: "ade" | "no_ade"
    <BLANKLINE>
    """
    if not labels:
        raise ValueError("a constrained TC answer needs at least one label")
    return f'start: "{{\\"label\\": \\"" LABEL "\\"}}"\nLABEL: {_alternatives(labels)}\n'


def task_grammar(task: str, text: str, labels: Sequence[str], skip: Container[str] = (),
                 entity_types: Sequence[str] | None = None, roles: Sequence[str] | None = None) -> str:
    """The grammar of a record of any task: :func:`ner_grammar`, :func:`re_grammar` (with ``entity_types``),
    :func:`ee_grammar` (with ``roles``) or :func:`tc_grammar`."""
    if task == "ner":
        return ner_grammar(text, labels, skip)
    if task == "re":
        return re_grammar(text, labels, entity_types, skip)
    if task == "ee":
        return ee_grammar(text, labels, roles, skip)
    if task == "tc":
        return tc_grammar(labels)
    raise ValueError(f"unknown task {task!r}; one of ner, re, ee, tc")


def answer_grammars(tokenizer, texts: Sequence[str], label_sets: Sequence[Sequence[str]],
                    tasks: Sequence[str] | None = None, entity_types: Sequence[str] | None = None,
                    roles: Sequence[str] | None = None) -> list[str]:
    """:func:`task_grammar` of each input text with its label set and task (NER when ``tasks`` is not given),
    leaving out what the tokenizer cannot produce."""
    tasks = tasks if tasks is not None else ["ner"] * len(texts)
    return [task_grammar(task, text, labels, untokenizable(tokenizer, text) if task != "tc" else (), entity_types,
                         roles)
            for task, text, labels in zip(tasks, texts, label_sets, strict=True)]


def close_truncated(output: str) -> str:
    """Cut a constrained answer that ran out of tokens back to its last complete item and close the array.

    ``output`` is a prefix of a grammatical answer; for an array (NER, RE, EE) the result is the longest
    ``output[:k] + "]"`` (``k`` just after an item's ``}``) that is valid JSON, or ``"[]"``. A complete answer is
    returned unchanged, and so is a cut TC object (``{"label": ...``): it has no shorter valid form, and stays a
    parse error.

    >>> close_truncated('[{"entity": "Disease", "name": "cancer"}, {"entity": "Dis')
    '[{"entity": "Disease", "name": "cancer"}]'
    >>> close_truncated('[{"entity": "Disease", "name": "a}')
    '[]'
    >>> close_truncated('[{"event": "ADE", "trigger": "a", "arguments": {"Drug": ["b"]}}, {"event": "ADE", "trigger')
    '[{"event": "ADE", "trigger": "a", "arguments": {"Drug": ["b"]}}]'
    >>> close_truncated('{"label": "no_a')
    '{"label": "no_a'
    """
    try:
        json.loads(output)
        return output
    except json.JSONDecodeError:
        pass
    if output.startswith("{"):
        return output
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
