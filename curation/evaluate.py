"""Score NER, RE, EE or TC predictions against gold with the unified scorer (:mod:`curation.scoring`).

    bioselect evaluate --gold ../shared/data/ner/NCBI-disease/test.tsv --pred runs/ncbi_pred.jsonl \\
        --output runs/ncbi_eval.json --name qwen-lora
    bioselect evaluate --gold runs/ddi_test_re.jsonl --pred runs/ddi_pred.jsonl --output runs/ddi_eval.json

GOLD is any corpus file :func:`curation.readers.read_corpus` reads (IOB2 TSV, records JSONL, instruction JSONL, ...).
PRED is one of (``--format-pred`` overrides detection):

* ``predictions``: JSON lines ``{"id", "output"}`` with the generated JSON text (optional ``"spans"``:
  ``[[start, end, label], ...]`` character offsets into the gold text, used for strict and relaxed scores; without
  them generated names are placed in the gold text by :func:`curation.scoring.names_to_spans`). An instruction JSONL
  (its ``output`` replaced by the model's answer) is read the same way.
* ``records``: a span file, one :meth:`curation.records.Record.to_dict` per line with the gold ids and texts.
* ``iob``: an IOB file in the gold file's sentence order with the same tokens.

The task is the gold records' ``task`` field (instruction JSONL), else the predictions' ``task`` field, else the
schema every gold answer fits (instruction JSONL without the field), else NER; ``--task`` sets it (it must agree
with the gold's ``task`` field; a corpus read by its reader scores its relations, events or labels with
``--task re|ee|tc``). Answers are checked against the task's
schema restricted to a label set per dataset: ``--labels``, else for NER the dataset's gold entity types, for RE, EE
and TC the list each record's instruction names (one list per dataset) or, for a corpus, the dataset's gold labels.
RE, EE and TC predictions are ``predictions`` or ``records`` (their relations, events or labels); IOB is NER only.

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

import prompts
from curation.cli import parse_config, run
from curation.io import Files, InputError, atomic_write, provenance, read_jsonl, together, write_json
from curation.readers import detect_format, read_corpus
from curation.records import Corpus, Record, Span, char_span_to_tokens, token_span_to_char
from curation.scoring import (
    Answer,
    Prediction,
    answer_from_record,
    format_markdown,
    parse_answer,
    parse_output,
    prediction_from_output,
    prediction_from_spans,
    score,
    score_answers,
)

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
        metadata={"help": "Labels generated answers may use: entity types (ner), relation types (re), event types "
                          "(ee) or classes (tc). When not given: for NER each dataset's gold types; for RE, EE and TC "
                          "the list each record's instruction names, or a corpus's gold labels."})
    allow_missing: bool = field(default=False, metadata={
        "help": "Score gold records without a prediction as empty answers (reported as 'missing'); else they are an "
                "error."})
    task: str | None = field(default=None, metadata={
        "help": f"Task to score, one of {', '.join(prompts.TASKS)}; detected from the records' task field (or the "
                "gold answers' schema) when not given, NER for a corpus without one."})

    def __post_init__(self):
        if self.task is not None and self.task not in prompts.TASKS:
            raise InputError("--task", f"must be one of {', '.join(prompts.TASKS)}, not {self.task!r}")
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
    """The gold corpus; records of more than one task (instruction JSONL) are refused."""
    fmt = cfg.format_gold or detect_format(cfg.gold)
    corpus = read_corpus(cfg.gold, format=fmt, **({"scheme": cfg.scheme} if fmt == "iob" else {}))
    first: Record | None = None
    for r in corpus.records:
        if not r.meta.get("task"):
            continue
        if first is None:
            first = r
        elif r.meta["task"] != first.meta["task"]:
            line = _instruction_lines(cfg.gold)[r.id][0] if corpus.format == "instruction" else r.meta.get("line")
            raise InputError(cfg.gold, f"task {r.meta['task']!r}, but record {first.id!r} is {first.meta['task']!r}; "
                                       "score one task at a time", line=line, record=r.id)
    return corpus


def _gold_task(gold: Corpus) -> str | None:
    return next((r.meta["task"] for r in gold.records if r.meta.get("task")), None)


def detect_task(cfg: EvaluateConfig, gold: Corpus, pred_format: str) -> str:
    """The task to score (module docstring): ``--task``, the gold's ``task`` field, the predictions' ``task`` field,
    the one schema every gold answer of an instruction file fits, else ``ner``."""
    gold_task = _gold_task(gold)
    if cfg.task is not None:
        if gold_task is not None and gold_task != cfg.task:
            raise InputError("--task", f"is {cfg.task!r} but the gold records of {cfg.gold} are {gold_task!r}")
        return cfg.task
    if gold_task is not None:
        return gold_task
    if pred_format == "predictions":
        _, first = next(read_jsonl(cfg.pred))
        if first.get("task") in prompts.TASKS:
            return first["task"]
    if gold.format == "instruction":
        def fits(task: str, output: str) -> bool:
            if task == "ner":
                return parse_output(output)[1] == "ok"
            return parse_answer(task, output).status == "ok"

        task = next((t for t in prompts.TASKS if all(fits(t, r.meta["output"]) for r in gold.records)), None)
        if task is None:
            raise InputError(cfg.gold, f"the gold answers fit no one task's schema ({', '.join(prompts.TASKS)}); "
                                       "give --task")
        return task
    return "ner"


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


def _prediction_lines(cfg: EvaluateConfig, index: dict[str, int], task: str):
    """``(line, gold index, object)`` of every ``{"id", "output"}`` prediction, after the checks every task shares;
    ids absent from the gold are reported once all lines are read."""
    seen: set[str] = set()
    unknown: list[tuple[int | None, str]] = []
    for n, obj in read_jsonl(cfg.pred):
        if "id" not in obj or "output" not in obj:
            raise InputError(cfg.pred, "a prediction needs 'id' and 'output'", line=n)
        rid = str(obj["id"])
        if rid not in index:
            unknown.append((n, rid))
            continue
        if rid in seen:
            raise InputError(cfg.pred, f"duplicate id {rid!r}", line=n)
        seen.add(rid)
        if not isinstance(obj["output"], str):
            raise InputError(cfg.pred, "'output' must be the generated text (a string)", line=n, record=rid)
        if obj.get("task") and obj["task"] != task:
            raise InputError(cfg.pred, f"a {obj['task']!r} prediction, but the gold records are scored as {task!r}",
                             line=n, record=rid)
        yield n, index[rid], obj
    _check_ids(cfg.pred, unknown)


def _read_predictions(cfg: EvaluateConfig, fmt: str, gold: Corpus, labels: dict[str, list[str] | None],
                      datasets: list[str]) -> list[Prediction]:
    index = {r.id: i for i, r in enumerate(gold.records)}
    preds: list[Prediction | None] = [None] * len(gold.records)
    unknown: list[tuple[int | None, str]] = []
    if fmt == "predictions":
        for n, i, obj in _prediction_lines(cfg, index, "ner"):
            rid = gold.records[i].id
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


_LABEL_WORDS = {"re": "relation types", "ee": "event types", "tc": "classes"}


def _instruction_lines(path: str) -> dict[str, tuple[int, str]]:
    """Record id -> (line, instruction) of an instruction JSONL (its reader keeps neither)."""
    return {str(obj["id"]): (n, obj["instruction"]) for n, obj in read_jsonl(path)}


def task_labels(cfg: EvaluateConfig, gold: Corpus, task: str, datasets: list[str]) -> dict[str, list[str] | None]:
    """Each dataset's label set for RE, EE or TC answers: ``--labels``; else the list each record's instruction names
    (records of one dataset must name the same list); else, for a corpus, the dataset's gold labels (None: any)."""
    if cfg.labels:
        return {d: list(cfg.labels) for d in datasets}
    if gold.format == "instruction":
        lines = _instruction_lines(cfg.gold)
        labels: dict[str, list[str]] = {}
        first: dict[str, str] = {}
        for d, r in zip(datasets, gold.records, strict=True):
            n, instruction = lines[r.id]
            found = prompts.instruction_labels(task, instruction)
            if found is None:
                raise InputError(cfg.gold, f"the instruction names no {_LABEL_WORDS[task]} (it does not follow "
                                           f"prompts/templates/{task}.txt); give them with --labels", line=n,
                                 record=r.id)
            if d in labels and found != labels[d]:
                raise InputError(cfg.gold, f"the instruction names {', '.join(found)}, but record {first[d]!r} of "
                                           f"the same dataset {d!r} names {', '.join(labels[d])}; one label set per "
                                           "dataset", line=n, record=r.id)
            labels.setdefault(d, found)
            first.setdefault(d, r.id)
        return dict(labels)
    sets: dict[str, set[str]] = {d: set() for d in datasets}
    for d, r in zip(datasets, gold.records, strict=True):
        if task == "re":
            sets[d].update(x.label for x in r.relations)
        elif task == "ee":
            sets[d].update(e.type for e in r.events)
        else:
            sets[d].update(r.labels)
    return {d: sorted(ls) or None for d, ls in sets.items()}


def gold_answers(cfg: EvaluateConfig, gold: Corpus, task: str) -> list[Answer]:
    """The gold RE, EE or TC answers: an instruction file's ``output`` (which must fit the task's schema), or a
    corpus record's relations, events or label (TC: exactly one per record)."""
    out = []
    lines = _instruction_lines(cfg.gold) if gold.format == "instruction" else {}
    for r in gold.records:
        if gold.format == "instruction":
            answer = parse_answer(task, r.meta["output"])
            if answer.status != "ok":
                what = "not JSON" if answer.status == "parse_error" else f"not a valid {task} answer"
                raise InputError(cfg.gold, f"the gold output is {what} (prompts/schemas/{task}.json)",
                                 line=lines[r.id][0], record=r.id)
        else:
            try:
                answer = answer_from_record(task, r)
            except ValueError as err:
                raise InputError(cfg.gold, str(err), line=r.meta.get("line"), record=r.id) from None
        out.append(answer)
    return out


def _read_answers(cfg: EvaluateConfig, fmt: str, gold: Corpus, task: str, labels: dict[str, list[str] | None],
                  datasets: list[str]) -> list[Answer]:
    index = {r.id: i for i, r in enumerate(gold.records)}
    preds: list[Answer | None] = [None] * len(gold.records)
    if fmt == "predictions":
        for _, i, obj in _prediction_lines(cfg, index, task):
            preds[i] = parse_answer(task, obj["output"], labels[datasets[i]])
    elif fmt == "records":
        unknown: list[tuple[int | None, str]] = []
        for r in read_corpus(cfg.pred, format="records").records:
            if r.id not in index:
                unknown.append((None, r.id))
                continue
            if r.text != gold.records[index[r.id]].text:
                raise InputError(cfg.pred, "text differs from the gold record's text", record=r.id)
            if task == "tc" and len(r.labels) > 1:
                raise InputError(cfg.pred, f"a TC prediction names one label, not {len(r.labels)}", record=r.id)
            preds[index[r.id]] = Answer(task, tuple(r.labels)) if task == "tc" else answer_from_record(task, r)
        _check_ids(cfg.pred, unknown)
    else:
        raise InputError(cfg.pred, f"IOB predictions hold entities only; the gold records are scored as {task!r}")
    return [p if p is not None else Answer(task, status="missing") for p in preds]


def score_files(cfg: EvaluateConfig, gold: Corpus | None = None, per_record: bool = False) -> dict[str, Any]:
    """Score ``cfg.pred`` against ``cfg.gold`` (read once and passed in when several predictions share it) for the
    task :func:`detect_task` finds; ``per_record`` adds each record's counts (:func:`curation.scoring.score`,
    :func:`curation.scoring.score_answers`)."""
    gold = gold if gold is not None else read_gold(cfg)
    pred_format = _pred_format(cfg)
    task = detect_task(cfg, gold, pred_format)
    datasets = [r.meta.get("dataset") or gold.dataset for r in gold.records]
    if task != "ner":
        labels = task_labels(cfg, gold, task, datasets)
        answers = gold_answers(cfg, gold, task)
        preds = _read_answers(cfg, pred_format, gold, task, labels, datasets)
        _refuse_missing(cfg, gold, preds)
        result = score_answers(task, answers, preds, datasets, n_bootstrap=cfg.bootstrap, seed=cfg.seed,
                               per_record=per_record)
        name = cfg.name or Path(cfg.pred).stem
        return {"name": name, "gold": cfg.gold, "pred": cfg.pred, "pred_format": pred_format, "labels": labels,
                **result}
    for r in gold.records:
        if not r.meta.get("has_spans", True) and str(r.meta.get("output", "[]")).strip() != "[]":
            raise InputError(cfg.gold, "instruction record has entities but no 'spans'; the scorer needs offsets",
                             record=r.id)
    gold_labels: dict[str, set[str]] = {d: set() for d in datasets}
    for d, r in zip(datasets, gold.records, strict=True):
        gold_labels[d].update(s.label for s in r.spans)
    labels = {d: list(cfg.labels) if cfg.labels else sorted(ls) or None for d, ls in gold_labels.items()}
    preds = _read_predictions(cfg, pred_format, gold, labels, datasets)
    _refuse_missing(cfg, gold, preds)
    result = score(gold.records, preds, datasets, n_bootstrap=cfg.bootstrap, seed=cfg.seed, per_record=per_record)
    name = cfg.name or Path(cfg.pred).stem
    return {"name": name, "gold": cfg.gold, "pred": cfg.pred, "pred_format": pred_format, "labels": labels, **result}


def _refuse_missing(cfg: EvaluateConfig, gold: Corpus, preds: list[Prediction] | list[Answer]) -> None:
    missing = [r.id for r, p in zip(gold.records, preds, strict=True) if p.status == "missing"]
    if missing and not cfg.allow_missing:
        raise InputError(cfg.pred, f"{len(missing)} of {len(gold.records)} gold records have no prediction (first "
                                   f"{missing[0]!r}); --allow-missing scores them as empty answers")


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
