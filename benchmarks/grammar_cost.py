"""What a record's grammar costs: its size in bytes and llguidance's compile + first mask, for the mention terminal
as a list of every run of up to 32 pieces (the former grammar) and as the substring automaton (tuning.constrained).

    .venv/bin/python benchmarks/grammar_cost.py --tokenizer ~/.cache/offline-models/smollm2-135m \\
        --input runs/ncbi_test.jsonl runs/ddi_test_re.jsonl runs/biored_test_re.jsonl \\
        --ids NCBI-disease/test/83 DDI-DrugBank.d776.s5 18991055 --long-words 1000 5000 20000

Each record's input gets an NER grammar with one label in both forms (the NER, RE and EE grammars share the mention
terminal). ``--long-words`` adds texts of that many words cut from all inputs joined (the substring form only: the
list form of a 5,000-word text does not fit in memory), and the time of one mask after 40 words of a mention.
Times are the median of ``--repeat`` runs on one thread.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from curation.cli import parse_config, run
from curation.io import InputError, read_jsonl
from tuning.constrained import lark_literal, ll_tokenizer, mention_candidates, ner_grammar, untokenizable
from tuning.generation import load_tokenizer

PREFIX = '[{"entity": "X", "name": "'


@dataclass
class GrammarCostConfig:
    tokenizer: str = field(metadata={"help": "Model folder whose tokenizer the matchers use."})
    input: list[str] = field(metadata={"help": "Instruction JSONL files to take the records from."})
    ids: list[str] = field(metadata={"help": "Record ids to measure."})
    long_words: list[int] | None = field(default=None, metadata={"help": "Lengths (words) of longer texts to add."})
    repeat: int = field(default=3, metadata={"help": "Runs per measurement (the median is printed)."})


def list_grammar(text: str, labels: Sequence[str], skip) -> str:
    """The former NER grammar: NAME as an alternation of every run of up to 32 pieces."""
    names = mention_candidates(text, 32, skip)
    if not names:
        return 'start: "[" "]"\n'
    return ('start: "[" (item (", " item)*)? "]"\n'
            'item: "{\\"entity\\": \\"" LABEL "\\", \\"name\\": \\"" NAME "\\"}"\n'
            f"LABEL: {' | '.join(lark_literal(x) for x in labels)}\n"
            f"NAME: {' | '.join(lark_literal(x) for x in names)}\n")


def _main(argv: Sequence[str] | None = None) -> int:
    import llguidance

    cfg, _ = parse_config(GrammarCostConfig, argv, prog="grammar_cost", description=__doc__.split("\n\n")[0])
    tokenizer = load_tokenizer(cfg.tokenizer)
    ll_tok = ll_tokenizer(tokenizer, len(tokenizer), [tokenizer.eos_token_id])
    records = {str(r["id"]): r for path in cfg.input for _, r in read_jsonl(path)}
    missing = [i for i in cfg.ids if i not in records]
    if missing:
        raise InputError("--ids", f"no record {missing[0]!r} in {', '.join(cfg.input)}")

    def compile_ms(grammar: str) -> float:
        times = []
        for _ in range(cfg.repeat):
            start = time.perf_counter()
            m = llguidance.LLMatcher(ll_tok, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
            if m.is_error():
                raise RuntimeError(m.get_error())
            m.compute_bitmask()
            times.append(time.perf_counter() - start)
        return 1000 * statistics.median(times)

    def mention_mask_ms(grammar: str, text: str) -> float:
        m = llguidance.LLMatcher(ll_tok, llguidance.LLMatcher.grammar_from_lark(grammar), log_level=0)
        mention = json.dumps(" ".join(text.split(" ")[:40]).strip(), ensure_ascii=False)[1:-1]
        ids = tokenizer(PREFIX + mention, add_special_tokens=False)["input_ids"]
        if m.try_consume_tokens(ids) != len(ids):
            raise RuntimeError("the grammar rejected the text's first 40 words as a mention")
        start = time.perf_counter()
        m.compute_bitmask()
        return 1000 * (time.perf_counter() - start)

    print("| input | words | chars | list of runs: bytes | ms | substring automaton: bytes | ms | "
          "mask in a mention ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    texts = [(i, records[i]["input"], True) for i in cfg.ids]
    joined = " ".join(r["input"] for r in records.values()).split(" ")
    texts += [(f"{n} words of the inputs joined", " ".join(joined[:n]), False) for n in cfg.long_words or ()]
    for name, text, with_list in texts:
        skip = untokenizable(tokenizer, text)
        new = ner_grammar(text, ["X"], skip)
        old = list_grammar(text, ["X"], skip) if with_list else None
        old_cells = f"{len(old.encode()):,} | {compile_ms(old):.1f}" if old else "- | -"
        print(f"| {name} | {len(text.split())} | {len(text):,} | {old_cells} | {len(new.encode()):,} | "
              f"{compile_ms(new):.1f} | {mention_mask_ms(new, text):.2f} |", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
