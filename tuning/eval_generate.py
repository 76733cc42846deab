"""Generation-based evaluation while training: the task's main metric of generated answers on a sample of the dev
records (NER, RE, EE or TC).

    bioselect tune train --config configs/tune_smollm2_135m_cpu.yaml --eval_file runs/ncbi_dev.jsonl \\
        --eval_generate true --eval_steps 50 --save_steps 50 --metric_for_best_model strict_f1 \\
        --load_best_model_at_end true

Every evaluation (``eval_on_start``, every ``eval_steps``, the end of training) generates an answer for each record
of a seeded sample of ``eval_file`` (at most ``eval_generate_max_records``) with the model being trained, as
``bioselect tune generate`` does: the prompt is :func:`tuning.chat.render_prompt` in the training tokenizer's chat
template, decoding is greedy and, when llguidance is installed and ``eval_constrained`` is on, constrained by the
record's grammar (:mod:`tuning.constrained`). The answers are scored as ``bioselect evaluate`` scores a
``tune generate`` predictions file against the sampled records. The eval file holds records of one task (their
``task`` field, NER when absent), and what is logged depends on it (:func:`task_metrics`; ``eval_`` in front of
each):

* NER: ``strict_precision``, ``strict_recall``, ``strict_f1``, ``parse_error_rate`` and ``schema_error_rate`` (each
  dataset's answers checked against the entity types its sampled gold records hold);
* RE: ``strict_precision``, ``strict_recall``, ``strict_f1`` (``(head, relation, tail)`` triples), ``exact_match``
  and the two failure rates;
* EE: ``argument_classification_precision``, ``_recall``, ``_f1`` (``(event type, trigger, role, argument)``),
  ``exact_match`` and the failure rates;
* TC: ``label_precision``, ``label_recall``, ``label_f1`` (micro), ``label_macro_f1``, ``accuracy`` and the failure
  rates.

RE, EE and TC answers are checked against the label list each record's instruction names. The task's main metric
(:data:`curation.scoring.MAIN_METRICS`: ``strict_f1`` for NER and RE, ``argument_classification_f1`` for EE,
``label_macro_f1`` for TC) is what ``metric_for_best_model`` should name: with ``load_best_model_at_end: true`` the
checkpoint with the best value is kept and loaded. A metric the eval file's task does not log is refused before the
model loads.

Where it hooks in, and why not a ``TrainerCallback``: the Trainer (transformers 5.24) computes an evaluation's
metrics in ``evaluation_loop``; ``evaluate`` then logs that one dict (``log`` appends it to ``log_history`` and the
trackers send it on), passes it to the callbacks' ``on_evaluate`` and returns it to ``_determine_best_metric``,
which looks up ``metric_for_best_model`` (with ``eval_`` put in front when missing) in it. A callback's
``on_evaluate`` runs after the log: its numbers could reach best-model selection only by changing the dict in place,
and would reach ``log_history`` and the trackers only as a second log entry written through a handle on the
trainer, after callbacks listed before it had seen the metrics without them. ``compute_metrics``, the Trainer's own
metric hook, would make ``evaluation_loop`` keep every eval example's logits. :class:`GenerationEvalTrainer`
therefore adds the generation metrics to ``evaluation_loop``'s metrics (one override of trl's ``SFTTrainer``): they
are logged in the same entry as ``eval_loss``, seen by every ``on_evaluate`` callback (early stopping included) and
by best-model selection.

Under ``accelerate launch`` each process generates the records ``rank, rank + world_size, ...`` of the sample with
its own copy of the model; the per-record ``[tp, fp, fn]`` counts and statuses are gathered to every process
(``torch.distributed.all_gather_object``) and summed in record order, so every process logs and compares the
number one process would compute. FSDP shards the weights across processes, which would then have to generate in
lockstep: it is refused with ``eval_generate``.

An eval file that mixes tasks is refused (exit code 2) before the model loads.
"""

from __future__ import annotations

import copy
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trl import SFTTrainer

import prompts
from curation.io import InputError
from curation.records import Record, Span
from curation.scoring import (
    MAIN_METRICS,
    RATES,
    Answer,
    main_metric_name,
    parse_answer,
    prediction_from_output,
    record_counts,
    score_answers,
    summarize,
)
from tuning import generation
from tuning.chat import render_prompt
from tuning.constrained import answer_grammars, require_llguidance

METRICS = ("strict_precision", "strict_recall", "strict_f1", "parse_error_rate", "schema_error_rate")  # NER's


def task_metrics(task: str) -> tuple[str, ...]:
    """What an evaluation logs for records of ``task`` (each with ``eval_`` in front): NER's :data:`METRICS`; for
    RE, EE and TC the micro precision, recall and F1 of the task's main mode (:data:`curation.scoring.MAIN_METRICS`),
    TC's macro F1 too, the task's record-level rate and the failure rates.

    >>> task_metrics("ee")  # doctest: +NORMALIZE_WHITESPACE
    ('argument_classification_precision', 'argument_classification_recall', 'argument_classification_f1',
     'exact_match', 'parse_error_rate', 'schema_error_rate')
    >>> main_metric_name("tc") in task_metrics("tc")
    True
    """
    if task == "ner":
        return METRICS
    mode, average = MAIN_METRICS[task]
    macro = (main_metric_name(task),) if average == "macro" else ()
    return (f"{mode}_precision", f"{mode}_recall", f"{mode}_f1", *macro, RATES[task], "parse_error_rate",
            "schema_error_rate")


ALL_METRICS = tuple(dict.fromkeys(m for task in prompts.TASKS for m in task_metrics(task)))


def sample_indices(n: int, k: int, seed: int) -> list[int]:
    """The indices of a seeded sample of ``min(k, n)`` of ``n`` records, in file order.

    >>> sample_indices(10, 4, seed=0)
    [0, 2, 6, 9]
    >>> sample_indices(3, 64, seed=0)
    [0, 1, 2]
    """
    return sorted(random.Random(seed).sample(range(n), min(k, n)))


def record_result(gold: Record, output: str, spans: Sequence[Sequence[Any]], labels: Sequence[str] | None
                  ) -> tuple[dict[str, list[int]], str]:
    """One generated answer scored against its gold record as ``bioselect evaluate`` scores a prediction line
    ``{"output", "spans"}``: the strict ``{type: [tp, fp, fn]}`` counts and the answer's status under ``labels``.

    >>> gold = Record(id="s1", text="BRCA1 in breast cancer", spans=[Span(9, 22, "Disease")])
    >>> record_result(gold, '[{"entity": "Disease", "name": "breast cancer"}]', [[9, 22, "Disease"]], ["Disease"])
    ({'Disease': [1, 0, 0]}, 'ok')
    >>> record_result(gold, '[{"entity": "Gene", "name": "BRCA1"}]', [[0, 5, "Gene"]], ["Disease"])
    ({'Disease': [0, 0, 1]}, 'schema_error')
    """
    pred = prediction_from_output(gold.text, output, labels, [Span.from_list(s) for s in spans])
    return record_counts(gold.spans, pred, gold.text, "strict"), pred.status


def generation_metrics(results: Sequence[tuple[dict[str, list[int]], str]]) -> dict[str, float]:
    """Per-record ``(counts, status)`` -> the logged metrics (:data:`METRICS`): micro strict P/R/F1
    (:func:`curation.scoring.summarize`) and the shares of answers that are not JSON or not schema-valid.

    >>> generation_metrics([({"Disease": [1, 0, 1]}, "ok"), ({"Disease": [0, 1, 0]}, "ok"), ({}, "parse_error")])
    {'strict_precision': 0.5, 'strict_recall': 0.5, 'strict_f1': 0.5, 'parse_error_rate': 0.3333333333333333, \
'schema_error_rate': 0.0}
    """
    micro = summarize([counts for counts, _ in results])["micro"]
    statuses = Counter(status for _, status in results)
    n = len(results)
    return {"strict_precision": micro["precision"], "strict_recall": micro["recall"], "strict_f1": micro["f1"],
            "parse_error_rate": statuses["parse_error"] / n if n else 0.0,
            "schema_error_rate": statuses["schema_error"] / n if n else 0.0}


def answer_metrics(task: str, gold: Sequence[Answer], pred: Sequence[Answer]) -> dict[str, float]:
    """RE, EE or TC answers -> the logged metrics (:func:`task_metrics`), as ``bioselect evaluate`` computes them
    (:func:`curation.scoring.score_answers`).

    >>> g = [Answer("tc", ("ade",)), Answer("tc", ("no_ade",))]
    >>> m = answer_metrics("tc", g, [Answer("tc", ("ade",)), Answer("tc", status="parse_error")])
    >>> m["label_macro_f1"], m["accuracy"], m["parse_error_rate"]  # ade: F1 1; no_ade: one false negative, F1 0
    (0.5, 0.5, 0.5)
    """
    result = score_answers(task, gold, pred, n_bootstrap=0)
    mode, _ = MAIN_METRICS[task]
    micro = result[mode]["micro"]
    out = {f"{mode}_precision": micro["precision"], f"{mode}_recall": micro["recall"], f"{mode}_f1": micro["f1"]}
    if MAIN_METRICS[task][1] == "macro":
        out[main_metric_name(task)] = result[mode]["macro"]["f1"]
    out[RATES[task]] = result[RATES[task]]["value"]
    out["parse_error_rate"] = result["outputs"]["parse_error_rate"]
    out["schema_error_rate"] = result["outputs"]["schema_error_rate"]
    return out


@dataclass
class EvalSample:
    """The sampled dev records of one task: instruction records (prompts), gold records (NER scoring) or gold
    answers (RE, EE, TC), each record's labels as its instruction names them (the grammar) and as ``bioselect
    evaluate`` checks them (NER: its dataset's gold types in the sample, None: any; other tasks: the instruction's
    list)."""

    records: list[dict[str, Any]]
    gold: list[Record] | list[Answer]
    prompt_labels: list[list[str]]
    score_labels: list[list[str] | None]
    task: str = "ner"

    @property
    def metrics(self) -> tuple[str, ...]:
        return task_metrics(self.task)

    @property
    def ids(self) -> list[str]:
        return [str(r["id"]) for r in self.records]


def prepare_sample(path: str, records: Sequence[dict[str, Any]], max_records: int, seed: int) -> EvalSample:
    """Sample ``path``'s records (``records``: the same file read by :func:`tuning.sft_data.load_records`) and
    check that each can be generated and scored; records of more than one task (or of an unknown one), an
    instruction that names no labels, an NER answer without ``spans`` or a gold RE, EE or TC answer that does not fit
    its task's schema is an :class:`~curation.io.InputError`."""
    from curation.io import read_jsonl
    from curation.readers import read_corpus

    first: tuple[str, str] | None = None
    for n, obj in read_jsonl(path):
        task, rid = obj.get("task") or "ner", str(obj.get("id", "")) or None
        if task not in prompts.TASKS:
            raise InputError(path, f"unknown task {task!r}; one of {', '.join(prompts.TASKS)}", line=n, record=rid)
        if first is not None and task != first[0]:
            raise InputError(path, f"--eval-generate scores one task, but this record is {task!r} and record "
                                   f"{first[1]!r} is {first[0]!r} (one eval file per task)", line=n, record=rid)
        first = first or (task, str(rid))
    task = first[0] if first else "ner"
    if task != "ner":
        return _prepare_task_sample(path, task, records, max_records, seed)
    corpus = read_corpus(path, format="instruction")
    idx = sample_indices(len(corpus.records), max_records, seed)
    gold = [corpus.records[i] for i in idx]
    chosen = [records[i] for i in idx]
    prompt_labels = []
    for i, rec in zip(idx, chosen, strict=True):
        labels = generation.instruction_labels(rec["instruction"])
        if not labels:
            raise InputError(path, "the instruction does not name its entity types in the shipped template's words "
                                   "(prompts/templates/ner.txt); --eval-generate needs them for the answer's schema",
                             line=i + 1, record=str(rec.get("id", "")) or None)
        prompt_labels.append(labels)
    for i, r in zip(idx, gold, strict=True):
        if not r.meta.get("has_spans", True) and str(r.meta.get("output", "[]")).strip() != "[]":
            raise InputError(path, "the record has entities but no 'spans'; scoring needs their offsets", line=i + 1,
                             record=r.id)
    # bioselect evaluate's label sets: each dataset's gold types (in the sample it scores)
    datasets = [r.meta.get("dataset") or corpus.dataset for r in gold]
    types: dict[str, set[str]] = {d: set() for d in datasets}
    for d, r in zip(datasets, gold, strict=True):
        types[d].update(s.label for s in r.spans)
    score_labels = [sorted(types[d]) or None for d in datasets]
    return EvalSample(chosen, gold, prompt_labels, score_labels)


def _prepare_task_sample(path: str, task: str, records: Sequence[dict[str, Any]], max_records: int,
                         seed: int) -> EvalSample:
    """The sample of an RE, EE or TC eval file: the gold answers are the records' outputs, the labels the lists
    their instructions name (as ``bioselect evaluate`` reads an instruction file)."""
    idx = sample_indices(len(records), max_records, seed)
    chosen = [records[i] for i in idx]
    gold, labels = [], []
    for i, rec in zip(idx, chosen, strict=True):
        rid = str(rec.get("id", "")) or None
        found = generation.instruction_labels(rec["instruction"], task)
        if not found:
            raise InputError(path, f"the instruction does not name its labels in the shipped template's words "
                                   f"(prompts/templates/{task}.txt); --eval-generate needs them for the answer's "
                                   "schema", line=i + 1, record=rid)
        answer = parse_answer(task, rec["output"])
        if answer.status != "ok":
            what = "not JSON" if answer.status == "parse_error" else f"not a valid {task} answer"
            raise InputError(path, f"the gold output is {what} (prompts/schemas/{task}.json)", line=i + 1, record=rid)
        gold.append(answer)
        labels.append(found)
    return EvalSample(chosen, gold, labels, labels, task)


class GenerationEvaluator:
    """Generates answers for an :class:`EvalSample` with a model in training and scores them (:data:`METRICS`).

    ``tokenizer`` renders the prompts (the training tokenizer, so they equal ``tune generate``'s); ``constrained``
    decodes with each record's grammar (llguidance must be installed). ``batch_size`` and ``max_new_tokens`` are
    ``tune generate``'s.
    """

    def __init__(self, sample: EvalSample, tokenizer, constrained: bool = True, batch_size: int = 8,
                 max_new_tokens: int = 256):
        if constrained:
            require_llguidance()
        self.sample = sample
        self.constrained = constrained
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.prompts = [render_prompt(tokenizer, r) for r in sample.records]
        self.grammars = (answer_grammars(tokenizer, [r["input"] for r in sample.records], sample.prompt_labels,
                                         [sample.task] * len(sample.records)) if constrained else None)
        self._tokenizer = None

    @property
    def mode(self) -> str:
        return "constrained" if self.constrained else "unconstrained"

    def _generation_tokenizer(self, tokenizer):
        """A left-padding copy of the training tokenizer (the trainer's own keeps its padding side), made once:
        llguidance's tokenizer view is cached per tokenizer object."""
        if self._tokenizer is None:
            self._tokenizer = copy.deepcopy(tokenizer)
            self._tokenizer.padding_side = "left"
            if self._tokenizer.pad_token is None:
                self._tokenizer.pad_token = self._tokenizer.eos_token
        return self._tokenizer

    def shard_results(self, model, tokenizer, rank: int = 0, world_size: int = 1) -> list[tuple[int, Any, str]]:
        """Generate and score this process's records (``rank::world_size`` of the sample) in eval mode without
        gradients, then put the model back in the mode it was in; ``(index, counts, status)`` per NER record,
        ``(index, answer, status)`` per RE, EE or TC record (the parsed :class:`~curation.scoring.Answer`)."""
        mine = list(range(rank, len(self.prompts), world_size))
        tok = self._generation_tokenizer(tokenizer)
        was_training = model.training
        model.eval()
        try:
            generated = generation.generate(
                model, tok, [self.prompts[i] for i in mine],
                [self.grammars[i] for i in mine] if self.grammars is not None else None,
                self.batch_size, self.max_new_tokens)
        finally:
            model.train(was_training)
        out = []
        for i, gen in zip(mine, generated, strict=True):
            if self.sample.task != "ner":
                answer = parse_answer(self.sample.task, gen.text, self.sample.score_labels[i])
                out.append((i, answer, answer.status))
                continue
            row = generation.prediction_row(self.sample.records[i], gen, self.sample.prompt_labels[i])
            counts, status = record_result(self.sample.gold[i], row["output"], row["spans"],
                                           self.sample.score_labels[i])
            out.append((i, counts, status))
        return out

    def __call__(self, model, tokenizer, rank: int = 0, world_size: int = 1) -> dict[str, float]:
        """The metrics of the whole sample, the same on every process (each generates its shard; the per-record
        results are gathered to all)."""
        results = self.shard_results(model, tokenizer, rank, world_size)
        if world_size > 1:
            import torch.distributed as dist

            gathered: list[Any] = [None] * world_size
            dist.all_gather_object(gathered, results)
            results = [r for part in gathered for r in part]
        results.sort(key=lambda r: r[0])
        if [r[0] for r in results] != list(range(len(self.prompts))):
            raise RuntimeError(f"gathered {len(results)} results for {len(self.prompts)} sampled records")
        if self.sample.task != "ner":
            return answer_metrics(self.sample.task, self.sample.gold, [answer for _, answer, _ in results])
        return generation_metrics([(counts, status) for _, counts, status in results])


class GenerationEvalTrainer(SFTTrainer):
    """trl's ``SFTTrainer`` whose evaluations add the generation metrics of ``generation_eval`` (a
    :class:`GenerationEvaluator`) to the loss-based ones (see the module docstring for why here)."""

    def __init__(self, *args, generation_eval: GenerationEvaluator, **kwargs):
        super().__init__(*args, **kwargs)
        self.generation_eval = generation_eval

    def evaluation_loop(self, dataloader, description, prediction_loss_only=None, ignore_keys=None,
                        metric_key_prefix="eval"):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys,
                                         metric_key_prefix)
        if description == "Evaluation":  # not predict()
            scores = self.generation_eval(self.model, self.processing_class, self.args.process_index,
                                          self.args.world_size)
            output.metrics.update({f"{metric_key_prefix}_{k}": v for k, v in scores.items()})
        return output
