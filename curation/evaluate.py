"""Score NER predictions against gold with the unified scorer (:mod:`curation.scoring`).

    bioselect evaluate --gold ../shared/data/ner/NCBI-disease/test.tsv --pred runs/ncbi_pred.jsonl \\
        --output runs/ncbi_eval.json --name qwen-lora

GOLD is any corpus file :func:`curation.readers.read_corpus` reads (IOB2 TSV, records JSONL, instruction JSONL, ...).
PRED is one of (``--format-pred`` overrides detection):

* ``predictions``: JSON lines ``{"id", "output"}`` with the generated JSON text (optional ``"spans"``:
  ``[[start, end, label], ...]`` character offsets into the gold text, used for strict and relaxed scores; without
  them generated names are placed in the gold text by :func:`curation.scoring.names_to_spans`). An instruction JSONL
  (its ``output`` replaced by the model's answer) is read the same way.
* ``records``: a span file, one :meth:`curation.records.Record.to_dict` per line with the gold ids and texts.
* ``iob``: an IOB file in the gold file's sentence order with the same tokens.

Predictions are matched to gold by id; a prediction id absent from the gold file is an error, and so is a gold record
without a prediction unless ``--allow-missing`` is given: then such records count as empty predictions (reported as
``missing``, and on stderr with their number). Writes OUT.json (metrics + provenance) and
OUT.md (tables), and prints the tables. Bad input exits with code 2 and writes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.cli import parse_config, run
from curation.io import Files, InputError, atomic_write, provenance, read_jsonl, together, write_json
from curation.readers import detect_format, read_corpus
from curation.records import Corpus, Span, char_span_to_tokens, token_span_to_char
from curation.scoring import Prediction, format_markdown, prediction_from_output, prediction_from_spans, score

PRED_FORMATS = ("predictions", "records", "iob")


@dataclass
class EvaluateConfig:
    gold: str = field(metadata={"help": "Gold corpus file (any format read_corpus reads, or instruction JSONL)."})
    pred: str = field(metadata={"help": "Predictions: {id, output} JSONL, a span file (records JSONL) or IOB."})
    output: str = field(metadata={"help": "Metrics file to write (.json); the Markdown tables go beside it (.md)."})
    format_gold: str | None = field(default=None, metadata={"help": "Gold format; detected when not given."})
    format_pred: str | None = field(
        default=None,
        metadata={"help": f"Prediction format, one of {', '.join(PRED_FORMATS)}; detected when not given."})
    scheme: str = field(default="iob2", metadata={"help": "Tag scheme of IOB files: iob2 or iob1."})
    bootstrap: int = field(default=1000, metadata={"help": "Bootstrap resamples for the intervals (0: none)."})
    seed: int = field(default=0, metadata={"help": "Seed of the bootstrap resampling."})
    name: str | None = field(default=None, metadata={"help": "Model name for the report; PRED's stem if not given."})
    labels: list[str] | None = field(
        default=None,
        metadata={"help": "Entity types generated answers may use; each dataset's gold types when not given."})
    allow_missing: bool = field(default=False, metadata={
        "help": "Score gold records without a prediction as empty answers (reported as 'missing'); else they are an "
                "error."})

    def __post_init__(self):
        if self.scheme not in ("iob1", "iob2"):
            raise InputError("--scheme", f"must be iob1 or iob2, not {self.scheme!r}")
        if self.format_pred is not None and self.format_pred not in PRED_FORMATS:
            raise InputError("--format-pred", f"must be one of {', '.join(PRED_FORMATS)}, not {self.format_pred!r}")
        if self.bootstrap < 0:
            raise InputError("--bootstrap", "must be >= 0")
        if Path(self.output).suffix != ".json":
            raise InputError("--output", f"must end in .json (the tables go beside it as .md), got {self.output!r}")

    def files(self) -> Files:
        return Files(reads=[self.gold, self.pred], writes=[self.output, Path(self.output).with_suffix(".md")])


def read_gold(cfg: EvaluateConfig) -> Corpus:
    fmt = cfg.format_gold or detect_format(cfg.gold)
    corpus = read_corpus(cfg.gold, format=fmt, **({"scheme": cfg.scheme} if fmt == "iob" else {}))
    for r in corpus.records:
        if r.meta.get("task", "ner") not in ("", "ner"):
            raise InputError(cfg.gold, f"the scorer scores NER; this record's task is {r.meta['task']!r}", record=r.id)
        if not r.meta.get("has_spans", True) and str(r.meta.get("output", "[]")).strip() != "[]":
            raise InputError(cfg.gold, "instruction record has entities but no 'spans'; the scorer needs offsets",
                             record=r.id)
    return corpus


def _pred_format(cfg: EvaluateConfig) -> str:
    if cfg.format_pred:
        return cfg.format_pred
    if Path(cfg.pred).suffix.lower() in (".json", ".jsonl", ".jsonlines"):
        _, first = next(read_jsonl(cfg.pred))
        return "predictions" if "output" in first else "records"
    fmt = detect_format(cfg.pred)
    if fmt not in PRED_FORMATS:
        raise InputError(cfg.pred, f"a {fmt} file is not a prediction file; give --format-pred")
    return fmt


def _check_ids(path: str, unknown: list[tuple[int | None, str]]) -> None:
    if unknown:
        line, rid = unknown[0]
        raise InputError(path, f"{len(unknown)} prediction id(s) not in the gold file, first {rid!r}", line=line)


def _read_predictions(cfg: EvaluateConfig, fmt: str, gold: Corpus, labels: dict[str, list[str] | None],
                      datasets: list[str]) -> list[Prediction]:
    index = {r.id: i for i, r in enumerate(gold.records)}
    preds: list[Prediction | None] = [None] * len(gold.records)
    unknown: list[tuple[int | None, str]] = []
    if fmt == "predictions":
        for n, obj in read_jsonl(cfg.pred):
            if "id" not in obj or "output" not in obj:
                raise InputError(cfg.pred, "a prediction needs 'id' and 'output'", line=n)
            rid = str(obj["id"])
            if rid not in index:
                unknown.append((n, rid))
                continue
            i = index[rid]
            if preds[i] is not None:
                raise InputError(cfg.pred, f"duplicate id {rid!r}", line=n)
            if not isinstance(obj["output"], str):
                raise InputError(cfg.pred, "'output' must be the generated text (a string)", line=n, record=rid)
            text = gold.records[i].text
            spans = None
            if "spans" in obj:
                try:
                    spans = [Span.from_list(s) for s in obj["spans"]]
                except (TypeError, ValueError):
                    raise InputError(cfg.pred, "'spans' must be a list of [start, end, label] (or [start, end, label, "
                                     "fragments])", line=n, record=rid) from None
                bad = next((s for s in spans if not 0 <= s.start < s.end <= len(text)), None)
                if bad:
                    raise InputError(cfg.pred, f"span {bad.to_list()} is outside the gold text "
                                     f"(length {len(text)})", line=n, record=rid)
            preds[i] = prediction_from_output(text, obj["output"], labels[datasets[i]], spans)
    elif fmt == "records":
        for r in read_corpus(cfg.pred, format="records").records:
            if r.id not in index:
                unknown.append((None, r.id))
                continue
            g = gold.records[index[r.id]]
            if r.text != g.text:
                raise InputError(cfg.pred, "text differs from the gold record's text", record=r.id)
            preds[index[r.id]] = prediction_from_spans(g.text, r.spans)
    else:
        pred = read_corpus(cfg.pred, format="iob", scheme=cfg.scheme)
        if len(pred.records) != len(gold.records):
            raise InputError(cfg.pred, f"{len(pred.records)} sentences but the gold file has {len(gold.records)}")
        for k, (p, g) in enumerate(zip(pred.records, gold.records, strict=True)):
            if g.tokens is None or g.token_offsets is None:
                raise InputError(cfg.gold, "IOB predictions need a tokenised gold file", record=g.id)
            if p.tokens != g.tokens:
                j = next((j for j, (a, b) in enumerate(zip(p.tokens, g.tokens, strict=False)) if a != b),
                         min(len(p.tokens), len(g.tokens)))
                got = p.tokens[j] if j < len(p.tokens) else "<end>"
                want = g.tokens[j] if j < len(g.tokens) else "<end>"
                raise InputError(cfg.pred, f"sentence {k + 1} differs from gold sentence {k + 1} at token {j + 1}: "
                                 f"{got!r} vs {want!r}", line=p.meta.get("line"), record=g.id)
            token_spans = [char_span_to_tokens(p.token_offsets, s) for s in p.spans]
            spans = [token_span_to_char(g.token_offsets, a, b, s.label) for (a, b), s in
                     zip(token_spans, p.spans, strict=True)]
            preds[k] = prediction_from_spans(g.text, spans)
    _check_ids(cfg.pred, unknown)
    return [p if p is not None else Prediction(status="missing") for p in preds]


def score_files(cfg: EvaluateConfig, gold: Corpus | None = None, per_record: bool = False) -> dict[str, Any]:
    """Score ``cfg.pred`` against ``cfg.gold`` (read once and passed in when several predictions share it);
    ``per_record`` adds each record's counts (:func:`curation.scoring.score`)."""
    gold = gold if gold is not None else read_gold(cfg)
    datasets = [r.meta.get("dataset") or gold.dataset for r in gold.records]
    gold_labels: dict[str, set[str]] = {d: set() for d in datasets}
    for d, r in zip(datasets, gold.records, strict=True):
        gold_labels[d].update(s.label for s in r.spans)
    labels = {d: list(cfg.labels) if cfg.labels else sorted(ls) or None for d, ls in gold_labels.items()}
    pred_format = _pred_format(cfg)
    preds = _read_predictions(cfg, pred_format, gold, labels, datasets)
    missing = [r.id for r, p in zip(gold.records, preds, strict=True) if p.status == "missing"]
    if missing and not cfg.allow_missing:
        raise InputError(cfg.pred, f"{len(missing)} of {len(gold.records)} gold records have no prediction (first "
                                   f"{missing[0]!r}); --allow-missing scores them as empty answers")
    result = score(gold.records, preds, datasets, n_bootstrap=cfg.bootstrap, seed=cfg.seed, per_record=per_record)
    name = cfg.name or Path(cfg.pred).stem
    return {"name": name, "gold": cfg.gold, "pred": cfg.pred, "pred_format": pred_format, "labels": labels, **result}


def warn_missing(result: dict[str, Any]) -> None:
    """Say on stderr how many gold records had no prediction and how they were scored."""
    n = result["outputs"]["missing"]
    if n:
        print(f"warning: {result['pred']}: {n} of {result['records']} gold records have no prediction; scored as "
              "empty answers (--allow-missing)", file=sys.stderr)


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(EvaluateConfig, argv, prog="bioselect evaluate", description=__doc__.split("\n\n")[0])
    result = score_files(cfg)
    markdown = format_markdown(result, result["name"])
    warn_missing(result)
    out = Path(cfg.output)
    report = {**result, "provenance": provenance(cfg, [cfg.gold, cfg.pred])}
    with together():  # the tables and the metrics land together or not at all
        with atomic_write(out.with_suffix(".md")) as f:
            f.write(markdown)
        write_json(out, report)
    print(markdown, end="")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
