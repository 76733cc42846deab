"""The LoRA generator as an evaluator of the dataset-combination search (``bioselect curate combos --evaluator
lora``): train an adapter on one mix of corpora of any task, generate the target's dev answers, return their main
metric (:data:`curation.scoring.MAIN_METRICS`: strict micro F1 for an NER or RE target, argument classification micro
F1 for EE, macro F1 for TC).

    corpora = find_corpora(["NCBI-disease", "BC5CDR", "linnaeus"], "../shared/data/ner")
    evaluate = LoraEvaluator(corpora, "NCBI-disease", "~/.cache/offline-models/smollm2-135m", steps=300,
                             work_dir="runs/combos/ncbi_lora/evals")
    evaluate(frozenset({"NCBI-disease", "BC5CDR"}))        # dev F1 of that mix
    evaluate.test_score(frozenset({"NCBI-disease", "BC5CDR"}))  # the same adapter, scored on the test set too

Each dataset's task is read from the folder its corpus sits in (:func:`curation.combo_evaluators.corpus_task`:
``../shared/data/re/DDI`` is RE, ``../shared/data/cls/HealthAdvice`` TC), and each capped sample is converted to
instruction JSONL of its own task (:func:`curation.convert.convert_corpus`, with the labels of its capped training
sample), so one mix may hold NER, RE, EE and TC datasets; it is trained on with
:func:`tuning.train.train` as ``bioselect tune train --mix even --max-steps N`` would, the dev answers generated with
:func:`tuning.generate.generate_file` as ``bioselect tune generate`` would, and scored with
:func:`curation.evaluate.score_files`. The corpora, caps, dev subset and mix names are the search's shared ones
(:mod:`curation.combo_evaluators`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from curation.combo_evaluators import Corpora, check_mix, corpus_task, mix_name, safe_name
from curation.convert import TYPED_OPTION
from curation.io import InputError, provenance, write_json, write_jsonl


def answers_made_by(cfg) -> bool:
    """Whether ``cfg.output`` holds finished answers of exactly this ``tune generate`` config: its manifest records
    the same resolved config and input hash, written after the adapter's weights (a mix's dev answers, reused when
    its test set is scored; greedy decoding would only write them again). An option the recorded config lacks
    (added to ``tune generate`` since) counts as the same where it has its default. Anything else: False."""
    from dataclasses import MISSING, asdict, fields

    from curation.io import sha256_file
    from tuning.generate import MANIFEST
    from tuning.generation import adapter_weights_file

    pred, manifest_path = Path(cfg.output), Path(cfg.output + MANIFEST)
    if not (pred.is_file() and manifest_path.is_file()):
        return False
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False
    weights = adapter_weights_file(cfg.adapter)
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict):
        return False
    current = json.loads(json.dumps(asdict(cfg)))
    defaults = json.loads(json.dumps({f.name: f.default for f in fields(cfg) if f.default is not MISSING}))
    recorded = {**{k: v for k, v in defaults.items() if k in current}, **manifest["config"]}
    return (recorded == current
            and (manifest.get("inputs") or {}).get(cfg.input) == sha256_file(cfg.input)
            and (weights is None or weights.stat().st_mtime <= manifest_path.stat().st_mtime))


class LoraEvaluator:
    """Train a LoRA adapter on a mix with ``bioselect tune train --mix even --max-steps steps`` (the paper's
    protocol: a fixed number of steps, each example from a dataset drawn with equal probability), generate the
    target's dev answers with ``bioselect tune generate`` and return their strict micro F1 (see the module doc).

    ``work_dir`` receives ``data/`` (each dataset's capped instruction JSONL, the dev subset and the test set) and
    one folder per mix (``adapter/``, ``pred_dev.jsonl``, ``metrics.json``). ``train_args`` are further
    ``tune train`` options (``["--lora-r", "8"]``). Training saves a checkpoint every ``save_steps`` steps and a
    killed evaluation resumes from its last one (the same batches: the adapter equals an uninterrupted run's), as
    its generation resumes from the answers already written; ``save_steps`` is not a setting of the scores.
    ``argument_types`` "target" (the default) constrains an RE target's answers to the entity types its training
    split gives relation heads and tails (an EE target's to its argument roles), as ``tune generate --entity-types``
    / ``--roles`` do; "free" lets the grammar admit any word there (the search's histories made before the option).
    """

    # histories made before these options trained in one pass, on every negative (and, for an RE or EE target, let a
    # constrained answer type its head and tail or name its roles with any word: see __init__)
    ADDED_SETTINGS = {"gradient_accumulation_steps": 1, "negative_ratio": 1.0}
    ARGUMENT_TYPES = ("target", "free")

    def __init__(self, corpora: Mapping[str, str | os.PathLike], target: str, model: str, *,
                 work_dir: str | os.PathLike, max_train: int = 1000, steps: int = 300, batch_size: int = 8,
                 lr: float = 2e-4, max_length: int = 512, dev_size: int = 200, max_new_tokens: int = 256,
                 constrained: bool = True, generate_batch_size: int = 8, seed: int = 0,
                 gradient_accumulation_steps: int = 1, negative_ratio: float = 1.0, save_steps: int = 25,
                 argument_types: str = "target", train_args: Sequence[str] = ()):
        self.target, self.model = target, os.path.expanduser(model)
        self.work_dir = Path(work_dir)
        self.max_train, self.steps, self.batch_size, self.lr, self.max_length = max_train, steps, batch_size, lr, \
            max_length
        self.dev_size, self.max_new_tokens, self.constrained = dev_size, max_new_tokens, constrained
        self.generate_batch_size, self.seed, self.train_args = generate_batch_size, seed, list(train_args)
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.tasks = {name: corpus_task(folder) for name, folder in corpora.items()}
        self.negative_ratio = negative_ratio
        if save_steps < 1:
            raise InputError("--save-steps", f"must be at least 1, got {save_steps}")
        self.save_steps = save_steps
        if argument_types not in self.ARGUMENT_TYPES:
            raise InputError("--argument-types", f"must be one of {', '.join(self.ARGUMENT_TYPES)}, "
                                                 f"not {argument_types!r}")
        self.argument_types = argument_types
        # a setting of the scores only where the target's answers type arguments (RE, EE): NER and TC histories
        # made before it resume unchanged
        self.typed = self.tasks[target] in TYPED_OPTION if target in self.tasks else False
        if self.typed:
            self.ADDED_SETTINGS = {**type(self).ADDED_SETTINGS, "argument_types": "free"}
        self.corpora = Corpora(corpora, target, max_train, dev_size, seed, self.tasks, negative_ratio)

    def settings(self) -> dict[str, Any]:
        return {"evaluator": "lora", "model": self.model, "max_train": self.max_train, "steps": self.steps,
                "batch_size": self.batch_size, "lr": self.lr, "max_length": self.max_length,
                "dev_size": self.dev_size, "max_new_tokens": self.max_new_tokens, "constrained": self.constrained,
                "seed": self.seed, "train_args": self.train_args, "tasks": self.tasks,
                "gradient_accumulation_steps": self.gradient_accumulation_steps,
                "negative_ratio": self.negative_ratio,
                **({"argument_types": self.argument_types} if self.typed else {})}

    def typed_argv(self) -> list[str]:
        """``--entity-types`` (RE target) or ``--roles`` (EE target) listing what the target's training split types
        its relations' heads and tails with (its events' arguments), when ``argument_types`` is "target" and the
        answers are constrained; [] otherwise (the grammar then admits any word there)."""
        from curation.convert import argument_types
        from curation.records import Corpus

        if not self.typed or self.argument_types == "free" or not self.constrained:
            return []
        option = TYPED_OPTION[self.tasks[self.target]]
        names = argument_types(Corpus(records=list(self.corpora.splits(self.target).train)), self.tasks[self.target])
        if not names:
            raise InputError(self.corpora.paths[self.target],
                             f"the training split has no {option.replace('_', ' ')} to constrain answers to")
        return ["--" + option.replace("_", "-"), *names]

    def check(self) -> None:
        """Load every corpus, check the model folder (and llguidance when generating constrained)."""
        from curation.io import check_model_source

        self.corpora.check()
        check_model_source(self.model)
        if self.constrained:
            from tuning.constrained import require_llguidance

            try:
                require_llguidance()
            except ImportError as err:
                raise InputError("--unconstrained", str(err)) from None

    def data_file(self, name: str, split: str = "train") -> Path:
        """Instruction JSONL of a dataset's capped training sample, or of the target's dev subset / test set
        (written on first use)."""
        from curation.convert import convert_corpus
        from curation.records import Corpus

        path = self.work_dir / "data" / f"{safe_name(name)}.{split}.jsonl"
        if not path.is_file():
            c = self.corpora
            records = c.train(name) if split == "train" else c.eval_records(split)
            labels = c.types(name) if self.tasks[name] == "ner" else c.labels(name)
            try:
                rows = convert_corpus(Corpus(records=list(records), dataset=name), self.tasks[name], labels=labels,
                                      dataset=name)
            except ValueError as err:  # a TC record without exactly one class
                raise InputError(c.paths[name], f"{split}: {err}") from None
            for row in rows:
                row["id"] = f"{name}/{row['id']}"  # readers number records per file: ids repeat across corpora
            write_jsonl(path, rows)
        return path

    def train_argv(self, mix: frozenset, output_dir: str | os.PathLike) -> list[str]:
        """The ``bioselect tune train`` arguments for a mix."""
        files = [str(self.data_file(d)) for d in sorted(mix)]
        return ["--model", self.model, "--train-files", ",".join(files), "--output-dir", str(output_dir),
                "--mix", "even", "--max-steps", str(self.steps), "--per-device-train-batch-size", str(self.batch_size),
                *(("--gradient-accumulation-steps", str(self.gradient_accumulation_steps))
                  if self.gradient_accumulation_steps > 1 else ()),
                "--learning-rate", str(self.lr), "--max-length", str(self.max_length), "--seed", str(self.seed),
                "--report-to", "none", "--resume-from-checkpoint", "auto",
                "--save-steps", str(min(self.save_steps, self.steps)),
                "--save-total-limit", "1", *self.train_args]

    def generate_argv(self, adapter: str | os.PathLike, split: str, output: str | os.PathLike) -> list[str]:
        """The ``bioselect tune generate`` arguments for the target's ``split``."""
        return ["--model", self.model, "--adapter", str(adapter), "--input", str(self.data_file(self.target, split)),
                "--output", str(output), "--batch-size", str(self.generate_batch_size),
                "--max-new-tokens", str(self.max_new_tokens),
                "--constrained" if self.constrained else "--unconstrained", *self.typed_argv()]

    def __call__(self, mix: frozenset) -> float:
        return self.train_and_score(mix, ("dev",))["dev"]["f1"]

    def test_score(self, mix: frozenset) -> dict[str, Any]:
        return self.train_and_score(mix, ("dev", "test"))

    def dev_counts(self, mix: frozenset) -> tuple[str, list] | None:
        """The target's task and the per-record counts of its main metric for ``mix``'s finished dev answers
        (``pred_dev.jsonl`` in its folder), scored against the dev subset; None when they are not there (or do not
        answer every record of it)."""
        from curation.evaluate import EvaluateConfig, score_files
        from curation.scoring import main_metric_counts

        folder = self.work_dir / mix_name(frozenset(mix), self.target)
        pred = folder / "pred_dev.jsonl"
        if not pred.is_file():
            return None
        try:  # scored as train_and_score scores it (its output path is not written here)
            result = score_files(EvaluateConfig(gold=str(self.data_file(self.target, "dev")), pred=str(pred),
                                                output=str(folder / "eval_dev.json"), bootstrap=0), per_record=True)
        except InputError:
            return None
        return result.get("task", "ner"), main_metric_counts(result)

    def train_and_score(self, mix: frozenset, splits: Sequence[str] = ("dev",)) -> dict[str, Any]:
        """Train (unless the mix's adapter is there), generate (unless this config's finished answers are there:
        :func:`answers_made_by`) and score each of ``splits``. The configs are parsed
        from the command lines that ``metrics.json`` records, so the record reruns exactly what ran; bad input
        raises :class:`InputError` (the search records it as a failed evaluation)."""
        from curation.cli import parse_config
        from curation.evaluate import EvaluateConfig, score_files
        from curation.scoring import MAIN_METRICS, main_metric_name
        from tuning import generate, train

        start = time.perf_counter()
        mix = frozenset(mix)
        check_mix(mix, self.corpora)
        folder = self.work_dir / mix_name(mix, self.target)
        adapter = folder / "adapter"
        trained = not (adapter / "adapter_config.json").is_file()
        if trained:
            cfg, _ = parse_config(train.TrainConfig, self.train_argv(mix, adapter), prog="bioselect tune train")
            train.train(cfg)
        scores, commands = {}, {}
        for s in splits:
            pred = folder / f"pred_{s}.jsonl"
            argv = self.generate_argv(adapter, s, pred)
            cfg, _ = parse_config(generate.GenerateConfig, argv, prog="bioselect tune generate")
            if trained or not answers_made_by(cfg):
                generate.generate_file(cfg)
            commands[s] = ["bioselect", "tune", "generate", *argv]
            result = score_files(EvaluateConfig(gold=str(self.data_file(self.target, s)), pred=str(pred),
                                                output=str(folder / f"eval_{s}.json"), bootstrap=0))
            mode, average = MAIN_METRICS[result.get("task", "ner")]
            block = result[mode][average]  # the target task's main metric is the search's score
            scores[s] = {"metric": main_metric_name(result.get("task", "ner")),
                         **{k: block[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn") if k in block}}
        out = {"mix": sorted(mix), "steps": self.steps, "adapter": str(adapter), **scores,
               "seconds": round(time.perf_counter() - start, 2)}
        name = "metrics.json" if tuple(splits) == ("dev",) else "metrics_" + "_".join(splits) + ".json"
        write_json(folder / name, {**out, "settings": self.settings(),
                                   "train_command": ["bioselect", "tune", "train", *self.train_argv(mix, adapter)],
                                   "generate_commands": commands,
                                   "provenance": provenance(None, [str(self.data_file(d)) for d in sorted(mix)])})
        return out
