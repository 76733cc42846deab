"""Score instruction records by IFD with a causal LM: ``bioselect curate ifd``.

    bioselect curate ifd --model ~/.cache/offline-models/smollm2-135m --input runs/ncbi_train.jsonl \\
        --output runs/ncbi_train.ifd.jsonl [--prompt-format plain|chat] [--batch-size 32] [--max-length 1024] \\
        [--tokens answer|content]
    accelerate launch --num_processes 2 -m curation.ifd --model ... --input ... --output ...   # sharded, same output

Each output line is ``{"id", "ifd", "loss_cond", "loss_uncond", "n_response_tokens", "variant", "tokens"}`` in input
order (``variant``: ``ppl_ratio``, Superfiltering's ``exp(loss_cond) / exp(loss_uncond)``, or ``loss_ratio``,
Cherry-LLM's ``loss_cond / loss_uncond``; ``tokens``: the losses are means over every response token, ``answer``, or
over its ``content`` tokens only, the mentions and labels inside the JSON, and then ``n_content_tokens`` is added);
``OUTPUT.manifest.json`` says how the file was made and lists the records that were
not scored, with the reason. Scores are appended to ``OUTPUT.partial-RANK`` as they are computed, so a killed run
started again with the same arguments scores only what is missing. See :mod:`curation.ifd_scoring` for the exact
definitions and docs/curation.md for the recipes.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from curation.cli import parse_config, run
from curation.io import (
    Files,
    InputError,
    append_lines,
    check_model_source,
    drop_incomplete_tail,
    read_jsonl,
    sha256_file,
    unloadable,
    write_json,
)

PARTIAL_META = ".partial.json"


@dataclass
class IFDConfig:
    model: str = field(metadata={"help": "Scoring (weak) model: a folder or hub id of a causal LM."})
    input: str = field(metadata={"help": "Instruction JSONL ({id, instruction, input, output, ...} per line)."})
    output: str = field(metadata={"help": "Scores JSONL to write (one line per scored record, input order)."})
    prompt_format: Literal["plain", "chat"] = field(
        default="plain", metadata={"help": "plain: Superfiltering's 'instruction\\ninput\\n'; chat: the model's chat "
                                           "template over one user turn."})
    batch_size: int = field(default=64, metadata={"help": "Most sequences per forward pass."})
    max_batch_tokens: int = field(
        default=2048, metadata={"help": "Most padded tokens per forward pass (2048 suits a CPU; on a GPU use more, "
                                        "e.g. 65536)."})
    chunk_size: int = field(default=256, metadata={"help": "Records scored and appended together (the unit of "
                                                           "resuming and of sharding across processes)."})
    max_length: int = field(default=1024, metadata={"help": "Records whose prompt + response exceed this many tokens "
                                                            "are reported and not scored."})
    variant: Literal["ppl_ratio", "loss_ratio"] = field(
        default="ppl_ratio", metadata={"help": "IFD variant: ppl_ratio (Superfiltering) or loss_ratio (Cherry-LLM)."})
    tokens: Literal["answer", "content"] = field(
        default="answer", metadata={"help": "Response tokens whose losses are averaged: answer (all of them) or "
                                            "content (the mentions and class labels inside the JSON, not its "
                                            "scaffolding; records without any are reported and not scored)."})
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = field(
        default="auto", metadata={"help": "auto: float32 on CPU, bfloat16 (float16 without it) on GPU."})
    strong_model: str | None = field(
        default=None, metadata={"help": "The model the data is selected for; warn if its tokenizer differs from "
                                        "--model's (a homologous pair shares one)."})
    positives_only: bool = field(
        default=False, metadata={"help": "Score only records whose output is not [] (hybrid Superfiltering)."})
    reuse_prefix: bool = field(
        default=True, metadata={"help": "Compute the key/value cache of a token prefix that records share (the "
                                        "instruction; the opening of the responses) once."})

    def __post_init__(self):
        self.model = os.path.expanduser(self.model)  # recipes name ~/.cache/offline-models/...
        self.strong_model = os.path.expanduser(self.strong_model) if self.strong_model else None
        for name, low in (("batch_size", 1), ("max_batch_tokens", 1), ("chunk_size", 1), ("max_length", 2)):
            if getattr(self, name) < low:
                raise InputError("--" + name.replace("_", "-"), f"must be at least {low}, got {getattr(self, name)}")

    def files(self) -> Files:
        out = Path(self.output)
        return Files(reads=[self.input, self.model, self.strong_model],
                     writes=[out, *(out.with_name(out.name + x) for x in (".manifest.json", PARTIAL_META))])


def load_records(path: str, positives_only: bool = False) -> tuple[list[dict], list[dict], int]:
    """Usable records, the unusable ones as ``{"id", "line", "reason"}``, and the count of negatives left out."""
    from curation.ifd_scoring import is_negative, record_problem

    records, skipped, seen, negatives = [], [], {}, 0
    for line, obj in read_jsonl(path):
        problem = record_problem(obj)
        rid = str(obj["id"]) if obj.get("id") is not None else None
        if problem is None and rid in seen:
            problem = f"duplicate id (first on line {seen[rid]})"
        if problem:
            skipped.append({"id": rid, "line": line, "reason": problem})
            continue
        seen[rid] = line
        if positives_only and is_negative(obj["output"]):
            negatives += 1
            continue
        records.append(obj | {"_line": line})
    return records, skipped, negatives


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _parts(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{glob.escape(out.name)}.partial-*"))


def run_settings(cfg: IFDConfig) -> dict[str, Any]:
    """What the partial scores of a killed run are recorded with and a resumed run must share: everything that
    decides a score (the input's hash, the model, how records are tokenised, batched and scored)."""
    return {"input_sha256": sha256_file(cfg.input), "model": cfg.model, "prompt_format": cfg.prompt_format,
            "max_length": cfg.max_length, "variant": cfg.variant, "tokens": cfg.tokens, "dtype": cfg.dtype,
            "positives_only": cfg.positives_only, "batch_size": cfg.batch_size,
            "max_batch_tokens": cfg.max_batch_tokens, "chunk_size": cfg.chunk_size, "reuse_prefix": cfg.reuse_prefix}


def run_ifd(cfg: IFDConfig) -> dict[str, Any] | None:
    """Score ``cfg.input`` into ``cfg.output``; return the manifest on the main process (``None`` on the others)."""
    check_model_source(cfg.model)  # --strong-model lends only its tokenizer, loaded (or refused) below
    records, skipped, negatives = load_records(cfg.input, cfg.positives_only)  # bad input fails before the imports
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curation import ifd_scoring as S
    from curation.io import process_state

    state = process_state()
    n_records = len(records) + len(skipped) + negatives
    tokenizer = _load(AutoTokenizer, cfg.model, "the tokenizer")
    try:
        encoded = S.encode_records(tokenizer, records, cfg.prompt_format, cfg.tokens)
    except ValueError as err:  # a tokenizer without character offsets
        raise InputError("--tokens", f"{cfg.tokens}: {err}") from None
    examples, lines, no_content = [], {}, []
    for rec, ex in zip(records, encoded):
        problem = ex.problem or S.length_problem(ex, cfg.max_length)
        if problem:
            skipped.append({"id": ex.id, "line": rec["_line"], "reason": problem})
            if ex.problem:
                no_content.append(ex.id)
        else:
            examples.append(ex)
            lines[ex.id] = rec["_line"]
    skipped.sort(key=lambda s: s["line"])
    if state.is_main_process:
        empty = [item for item in skipped if item["reason"] == S.NO_CONTENT_NEGATIVE]
        for item in skipped:
            if item["reason"] != S.NO_CONTENT_NEGATIVE:
                _warn(str(InputError(cfg.input, item["reason"] + "; not scored", line=item["line"],
                                     record=item["id"])))
        if empty:  # one line for all: every [] of a dataset would otherwise be a warning of its own
            _warn(f"{cfg.input}: {len(empty)} negatives ([]) have no content tokens; not scored (--positives-only "
                  "leaves them out)")
    if not examples:
        raise InputError(cfg.input, f"no record can be scored ({len(skipped)} unusable, {negatives} negatives left "
                                    "out)")
    mismatch = []
    if cfg.strong_model:
        strong = _load(AutoTokenizer, cfg.strong_model, "the tokenizer")
        samples = [r["output"] for r in records[:20]] + [r.get("input", "") for r in records[:20]]
        mismatch = S.tokenizer_mismatch(tokenizer, strong, samples, chat=cfg.prompt_format == "chat")
        if mismatch and state.is_main_process:
            _warn(f"--model {cfg.model} and --strong-model {cfg.strong_model} do not share a tokenizer "
                  f"({'; '.join(mismatch)}); IFD from the weak model may not transfer")

    out = Path(cfg.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta_path = out.with_name(out.name + PARTIAL_META)
    settings = run_settings(cfg)
    previous = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else None
    if previous != settings and any(p.stat().st_size for p in _parts(out)):
        if previous is None:  # a run writes its settings before any score: these scores are not of curate ifd
            raise InputError(out.with_name(out.name + ".partial-*"), f"partial scores without their {PARTIAL_META} "
                                                                     "(not left by curate ifd); delete them to start")
        changed = ", ".join(k for k in settings if previous.get(k) != settings[k])
        raise InputError(meta_path, f"a killed run with other settings ({changed}) left partial scores here; rerun "
                                    "it with the same settings or delete the .partial* files")
    if state.is_main_process and previous != settings:
        write_json(meta_path, settings)
    my_part = out.with_name(f"{out.name}.partial-{state.process_index}")
    drop_incomplete_tail(my_part)
    state.wait_for_everyone()
    done = S.read_done(_parts(out))
    state.wait_for_everyone()  # nobody appends before every process has read what is done

    chunks = S.plan_chunks(examples, cfg.batch_size, cfg.max_batch_tokens, cfg.chunk_size, cfg.reuse_prefix)
    mine = [c for k, c in enumerate(chunks) if k % state.num_processes == state.process_index
            and any(examples[i].id not in done for i in c.indices)]
    if mine:
        dtype = S.pick_dtype(str(state.device), cfg.dtype)
        model = _load(AutoModelForCausalLM, cfg.model, "the model", dtype=dtype).to(state.device).eval()
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        scorer = S.IFDScorer(model, pad_id=pad_id)
        total = 2 * sum(len(c.indices) for c in mine)
        with torch.inference_mode(), tqdm(total=total, unit="seq", desc=f"IFD [{state.process_index}]",
                                          disable=None, position=state.process_index) as bar:
            for chunk in mine:
                losses = scorer.score_chunk(examples, chunk, on_batch=bar.update)
                new = [i for i in sorted(chunk.indices) if examples[i].id not in done]
                append_lines(my_part, [S.score_line(examples[i], *losses[i], cfg.variant) for i in new])
    state.wait_for_everyone()
    if not state.is_main_process:
        return None

    parts = _parts(out)
    done = S.read_done(parts)
    missing = [ex.id for ex in examples if ex.id not in done]
    if missing:  # a process died without raising; keep the partial files for a rerun
        raise RuntimeError(f"{len(missing)} records have no score (first: {missing[0]}); rerun to finish")
    with_lines = sorted(examples, key=lambda ex: lines[ex.id])
    from curation.io import atomic_write, provenance, staged, together

    not_finite = [ex.id for ex in with_lines if json.loads(done[ex.id])["ifd"] is None]
    with together():  # the scores and their manifest land together or not at all
        with atomic_write(out) as f:
            f.writelines(done[ex.id] + "\n" for ex in with_lines)
        manifest = provenance(
            cfg, [cfg.input], kind="ifd_scores", output=str(out), output_sha256=sha256_file(staged(out)),
            model=cfg.model, strong_model=cfg.strong_model, tokenizer_mismatch=mismatch,
            prompt_format=cfg.prompt_format, max_length=cfg.max_length, variant=cfg.variant, tokens=cfg.tokens,
            dtype=str(S.pick_dtype(str(state.device), cfg.dtype)), device=str(state.device),
            num_processes=state.num_processes,
            counts={"records": n_records, "scored": len(examples), "unusable": len(skipped) - len(no_content),
                    "unscorable_content": len(no_content), "negatives_left_out": negatives,
                    "non_finite": len(not_finite)},
            cached_prefix_tokens={kind: sorted({len(p.prefix) for c in chunks for p in c.passes if p.kind == kind})
                                  for kind in ("cond", "uncond")},
            skipped=skipped, unscorable_content=no_content, non_finite=not_finite,
        )
        write_json(out.with_name(out.name + ".manifest.json"), manifest)
    for p in parts:
        p.unlink()
    meta_path.unlink(missing_ok=True)
    return manifest


def _load(auto_class, model: str, what: str, **kwargs):
    """``auto_class.from_pretrained(model)``; a folder that does not load is an :class:`InputError` naming it."""
    try:
        return auto_class.from_pretrained(model, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as err:  # missing or corrupt config, tokenizer or weights
        raise unloadable(model, what, err) from None


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(IFDConfig, argv, prog="bioselect curate ifd", description=__doc__.split("\n\n")[0])
    manifest = run_ifd(cfg)
    if manifest is not None:
        c = manifest["counts"]
        content = f", {c['unscorable_content']} without content tokens" if cfg.tokens == "content" else ""
        summary = (f"scored {c['scored']} of {c['records']} records ({c['unusable']} unusable{content}, "
                   f"{c['negatives_left_out']} negatives left out) -> {cfg.output}")
        print(summary)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())

