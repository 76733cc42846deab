"""``bioselect tune train``: LoRA (or 4-bit QLoRA) supervised fine-tuning of a causal LM on instruction JSONL.

    bioselect tune train --config configs/tune_smollm2_135m_cpu.yaml
    bioselect tune train --model ~/.cache/offline-models/smollm2-135m --train-files runs/ncbi_train_10.jsonl \\
        --output-dir runs/tune/smollm2 --max-steps 150
    accelerate launch --config_file configs/accelerate/ddp.yaml -m tuning.train --config configs/tune_qwen2.5_0.5b.yaml

Also ``python -m tuning.train ...``. The options are trl's ``SFTConfig`` (every trl and ``TrainingArguments`` option
under its own name: ``--learning_rate``, ``--optim``, ``--max_grad_norm``, ...) plus the project's. trl's
``SFTTrainer`` trains a peft LoRA adapter on prompt-completion examples (:mod:`tuning.sft_data`) rendered with the
model's chat template; the loss covers the completion only, which ends with the template's end-of-turn token (trained
on, and set as the tokenizer's EOS). ``--packing`` packs examples into rows of ``max_length`` tokens with position ids
restarting at every example, so no example attends to another. OUTPUT_DIR receives the adapter and tokenizer,
``train_config.yaml`` (the resolved config), ``manifest.json`` (input hashes, base model, chat template, versions, git
commit, losses), ``checkpoint-*`` folders and, with ``--report_to tensorboard``, TensorBoard logs under ``runs/``; a
run whose OUTPUT_DIR holds checkpoints resumes from the newest. ``--load-in-4bit`` (QLoRA) or ``--load-in-8bit`` loads
the frozen base through bitsandbytes, on CPU or GPU (:mod:`tuning.quantization`). Bad input (an empty dataset, a record
without output, a prompt that fills ``max_length``, a model without chat template or weights, a quantised load without
bitsandbytes or of a model it cannot quantise) exits with code 2 before any training. ``--eval-generate true``
also generates answers for a sample of ``eval_file`` at every evaluation and logs the main metric of its task
(:mod:`tuning.eval_generate`: strict F1 for NER and RE, argument classification F1 for EE, macro F1 for TC), which
``--metric-for-best-model strict_f1`` (``argument_classification_f1``, ``label_macro_f1``) selects the best
checkpoint by. The training files may mix tasks and datasets; the manifest counts the records per dataset and task.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import MISSING, Field, dataclass, field, fields
from enum import Enum
from typing import Any

from transformers import TrainerCallback
from transformers.trainer_utils import SchedulerType
from trl import SFTConfig

from curation.cli import parse_config, run
from curation.io import Files, InputError, append_lines, check_model_source
from tuning import quantization
from tuning.quantization import QuantizationArguments
from tuning.sft_data import MIX_STRATEGIES

# the options' names before they became trl's, accepted for one more release with a warning: old -> trl's name
RENAMED = {"lr": "learning_rate", "epochs": "num_train_epochs", "batch_size": "per_device_train_batch_size",
           "grad_accum": "gradient_accumulation_steps", "lr_scheduler": "lr_scheduler_type"}


@dataclass
class TrainConfig(QuantizationArguments, SFTConfig):
    """trl's ``SFTConfig``, so every trl and ``transformers.TrainingArguments`` option works under its own name
    (``learning_rate``, ``optim``, ``max_grad_norm``, ``lr_scheduler_type``, ``torch_compile``, ``report_to``, ...),
    plus the run's base model, data files, LoRA adapter and bitsandbytes options. The options declared below are the
    project's own and the trl ones whose default differs here; they make up ``train_config.yaml``."""

    model: str = field(default="", metadata={
        "help": "Base causal LM: a local folder (e.g. ~/.cache/offline-models/smollm2-135m) or a hub id "
                "(Qwen/Qwen2.5-0.5B-Instruct, Qwen/Qwen3-8B, meta-llama/Llama-3.1-8B-Instruct); needs a chat "
                "template."})
    train_files: list[str] = field(default_factory=list, metadata={
        "help": "Instruction JSONL file(s) (bioselect data convert / curate output): several paths, a comma list "
                "or a YAML list."})
    eval_file: str | None = field(default=None, metadata={
        "help": "Instruction JSONL scored (completion loss) before training, every eval_steps and at the end."})
    eval_generate: bool = field(default=False, metadata={
        "help": "At every evaluation also generate answers for a seeded sample of eval_file's records (one task: "
                "NER, RE, EE or TC) and log the task's scores beside the loss: eval_strict_f1 (NER, RE), "
                "eval_argument_classification_f1 (EE) or eval_label_macro_f1 (TC), with precision, recall and the "
                "parse and schema error rates (metric_for_best_model: strict_f1 selects by it)."})
    eval_generate_max_records: int = field(default=64, metadata={
        "help": "Records of eval_file sampled (seeded by seed) for --eval-generate; all when the file has fewer."})
    eval_constrained: bool = field(default=True, metadata={
        "help": "Grammar-constrained decoding for --eval-generate, as tune generate (needs llguidance; decodes "
                "freely with a warning without it)."})
    eval_max_new_tokens: int = field(default=256, metadata={
        "help": "Token budget of an answer generated by --eval-generate (tune generate's --max-new-tokens)."})
    mix: str = field(default="concat", metadata={
        "help": "How several datasets (the records' 'dataset' field) combine: 'concat' (every record once per epoch) "
                "or 'even' (each example drawn from a dataset picked with equal probability; needs max_steps)."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "Modules that get adapters: 'all-linear' or comma-separated names (q_proj,k_proj,v_proj,o_proj)."})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "Attention kernel (sdpa, eager, flash_attention_2, kernels-community/flash-attn2); transformers' "
                "default when not set."})

    # trl / transformers options with the project's defaults
    output_dir: str | None = field(default=None, metadata={
        "help": "Run folder (required): adapter, config, manifest, checkpoints, logs."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={
        "help": "Passes over the training data when max_steps is -1."})
    lr_scheduler_type: SchedulerType | str = field(default="cosine", metadata={
        "help": "Scheduler name (cosine, linear, constant, constant_with_warmup, ...)."})
    warmup_steps: float = field(default=0.03, metadata={
        "help": "Warm-up: a share of the steps when < 1, else a number of steps."})
    max_length: int = field(default=512, metadata={
        "help": "Tokens per example (prompt and answer); the row length with --packing. A record whose prompt "
                "alone does not fit is an error."})
    completion_only_loss: bool | None = field(default=True, metadata={
        "help": "Loss on the answer tokens only (the prompt's labels are -100)."})
    gradient_checkpointing: bool | None = field(default=None, metadata={
        "help": "Deprecated alias of activation_checkpointing (transformers).", "nargs": "?", "const": True})
    seed: int = field(default=0, metadata={
        "help": "Seed of the adapter initialisation, the mix and the batches (and data_seed unless set)."})
    logging_first_step: bool = field(default=True, metadata={"help": "Log the loss of the first step too."})
    save_steps: float = field(default=100, metadata={"help": "Write a checkpoint every N steps."})
    save_total_limit: int | None = field(default=2, metadata={"help": "Checkpoints kept (oldest deleted)."})
    eval_on_start: bool | None = field(default=None, metadata={
        "help": "Score eval_file before training; default: on when eval_file is given."})
    report_to: None | str | list[str] = field(default="none", metadata={
        "help": "Where the logs go besides the manifest's loss curve: 'none', 'tensorboard' (output_dir/runs/), or "
                "another transformers integration that is installed."})
    resume_from_checkpoint: str | None = field(default="auto", metadata={
        "help": "'auto': continue from the newest checkpoint-* in output_dir if there is one; 'no': start afresh; "
                "or a checkpoint folder."})
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 weights and mixed precision; default: on when a CUDA GPU with bf16 is present."})
    eos_token: str | None = field(default=None, metadata={
        "help": "Token that ends a completion; default: the token the chat template closes assistant turns with."})
    ddp_find_unused_parameters: bool | None = field(default=False, metadata={
        "help": "DDP looks for parameters without a gradient (off: every LoRA weight gets one)."})

    # the old names (RENAMED)
    lr: float | None = field(default=None, metadata={"help": "Deprecated: use --learning_rate."})
    epochs: float | None = field(default=None, metadata={"help": "Deprecated: use --num_train_epochs."})
    batch_size: int | None = field(default=None, metadata={"help": "Deprecated: use --per_device_train_batch_size."})
    grad_accum: int | None = field(default=None, metadata={"help": "Deprecated: use --gradient_accumulation_steps."})
    lr_scheduler: str | None = field(default=None, metadata={"help": "Deprecated: use --lr_scheduler_type."})

    def __post_init__(self):
        for old, new in RENAMED.items():
            if getattr(self, old) is not None:
                print(f"warning: {old} (--{old}) is now trl's {new} (--{new}); the old name goes in the next "
                      "release", file=sys.stderr)
                setattr(self, new, getattr(self, old))
                setattr(self, old, None)
        # the trl / transformers options set to other than their default, as given (train_config.yaml keeps them)
        declared = set(_declared())
        self._given = {f.name: getattr(self, f.name) for f in fields(self)
                       if f.init and f.name not in declared and _set(getattr(self, f.name), _default(f))}
        if not self.model:
            raise InputError("--model", "is required (a causal LM folder or hub id)")
        if not self.output_dir:
            raise InputError("--output-dir", "is required")
        files = [self.train_files] if isinstance(self.train_files, str) else list(self.train_files)
        self.train_files = [os.path.expanduser(p.strip()) for item in files for p in item.split(",") if p.strip()]
        if not self.train_files:
            raise InputError("--train-files", "is required (one or more instruction JSONL files)")
        # recipes name local folders as ~/...; a hub id never starts with "~"
        self.model = os.path.expanduser(self.model)
        self.output_dir = os.path.expanduser(self.output_dir)
        self.eval_file = os.path.expanduser(self.eval_file) if self.eval_file else None
        if self.mix not in MIX_STRATEGIES:
            raise InputError("--mix", f"must be one of {', '.join(MIX_STRATEGIES)}, not {self.mix!r}")
        if self.mix == "even" and self.max_steps < 1:
            raise InputError("--max-steps", "the 'even' mix trains a fixed number of steps: set max_steps >= 1")
        if self.max_steps == 0 or self.max_steps < -1:
            raise InputError("--max-steps", "must be >= 1, or -1 to train for num_train_epochs")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise InputError("--num-train-epochs", "must be > 0")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "max_length", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise InputError(_flag(name), "must be >= 1")
        for name in ("logging_steps", "save_steps", "eval_steps", "learning_rate"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise InputError(_flag(name), "must be > 0")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise InputError("--save-total-limit", "must be >= 1 (or unset: keep every checkpoint)")
        if self.warmup_steps < 0:
            raise InputError("--warmup-steps", "must be >= 0")
        if not 0 <= self.lora_dropout < 1:
            raise InputError("--lora-dropout", "must be in [0, 1)")
        if not self.lora_target_modules.strip():
            raise InputError("--lora-target-modules", "must name modules or be 'all-linear'")
        if self.eval_on_start is None:
            self.eval_on_start = bool(self.eval_file)
        if self.eval_file and self.eval_steps and self.eval_strategy == "no":
            self.eval_strategy = "steps"
        if not self.eval_file and (self.eval_on_start or _plain(self.eval_strategy) != "no"):
            raise InputError("--eval-file", "is needed to evaluate (eval_on_start, eval_strategy)")
        if self.eval_generate and not self.eval_file:
            raise InputError("--eval-generate", "needs --eval-file (the dev records to generate answers for)")
        for name in ("eval_generate_max_records", "eval_max_new_tokens"):
            if getattr(self, name) < 1:
                raise InputError(_flag(name), "must be >= 1")
        if self.eval_generate and self.fsdp:
            raise InputError("--eval-generate", "does not run under FSDP (each process would have to generate in "
                                                "lockstep with the others); use DDP or DeepSpeed ZeRO-2")
        _check_best_metric(self.metric_for_best_model, self.eval_generate)
        check_report_to(self.report_to)
        self.check_quantization()
        if self.bf16 is None:  # trl's default is on; here only where a CUDA GPU runs bf16
            import torch

            self.bf16 = not self.fp16 and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if self.load_in_4bit and self.bnb_4bit_compute_dtype is None:
            self.bnb_4bit_compute_dtype = "bfloat16" if self.bf16 else "float32"
        if self.data_seed is None:
            self.data_seed = self.seed
        try:
            super().__post_init__()
        except ValueError as err:  # transformers' own checks (an unknown optim or scheduler, clashing options)
            raise InputError(_option_in(str(err)), str(err).strip().splitlines()[0]) from None

    def files(self) -> Files:
        return Files(reads=[self.model, *self.train_files, self.eval_file], folders=[self.output_dir])

    def recipe(self) -> dict[str, Any]:
        """The options that rerun this config (``train_config.yaml``): every option declared by this class,
        resolved (the detected ``eos_token`` and ``bf16`` included), and every other trl / transformers option that
        was set, as given."""
        # gradient_checkpointing is declared only to turn trl's default off; activation_checkpointing is the option
        own = [n for n in _declared() if n not in {*RENAMED, "gradient_checkpointing"}]
        resolved = {name: _plain(getattr(self, name)) for name in [*own, "activation_checkpointing"]}
        return {**resolved, **{k: _plain(v) for k, v in self._given.items() if k not in resolved}}

    def resolved(self) -> dict[str, Any]:
        """Every option's resolved value (the manifest's ``config``): ``to_dict()``, which masks ``*_token``
        fields, with the end-of-turn token left readable."""
        return {**self.to_dict(), "eos_token": self.eos_token}


def _declared() -> list[str]:
    """The options :class:`TrainConfig` and its bitsandbytes mixin declare (not inherited from trl), in order."""
    return [*vars(TrainConfig)["__annotations__"], *vars(QuantizationArguments)["__annotations__"]]


def _default(f: Field) -> Any:
    return f.default_factory() if f.default_factory is not MISSING else f.default


def _set(value: Any, default: Any) -> bool:
    """Whether an option holds other than its default. The parser spells some unset options differently (argparse
    runs a ``str | bool`` option's default "no" through its bool type, and gives ``debug`` None for "")."""
    unset = (None, False, "", "no")
    return value != default and not (value in unset and default in unset)


def _plain(value: Any) -> Any:
    """A YAML-safe option value (an enum's value)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _option_in(message: str) -> str:
    """The option a transformers ``ValueError`` is about: the first of TrainConfig's fields it names, or the field
    whose type it names ("x is not a valid SchedulerType")."""
    words = re.findall(r"[A-Za-z_][A-Za-z0-9_]*", message)
    types = {f.name: re.findall(r"\w+", str(f.type)) for f in fields(TrainConfig)}
    named = [w for w in words if w in types] or [n for w in words for n, t in types.items() if w in t and w != "str"]
    return _flag(named[0]) if named else "arguments"


# what an evaluation logs (without the "eval_" prefix): transformers' loss and speed, trl's token statistics
EVAL_METRICS = ("loss", "runtime", "samples_per_second", "steps_per_second", "entropy", "num_tokens",
                "mean_token_accuracy")


def _check_best_metric(name: str | None, eval_generate: bool) -> None:
    """Refuse a ``metric_for_best_model`` that no evaluation logs (the Trainer would fail at the first evaluation,
    after the model loaded)."""
    from tuning.eval_generate import ALL_METRICS

    if name is None:
        return
    key = name.removeprefix("eval_")
    if key in ALL_METRICS and not eval_generate:
        raise InputError("--metric-for-best-model", f"{name!r} is logged only with --eval-generate true")
    if key not in (*EVAL_METRICS, *ALL_METRICS):
        raise InputError("--metric-for-best-model", f"{name!r} is never logged; one of "
                                                    f"{', '.join((*EVAL_METRICS, *ALL_METRICS))} (eval_ in front or "
                                                    "not)")


def check_report_to(report_to: None | str | list[str]) -> None:
    """Refuse a logging integration transformers does not know or that is not installed (the Trainer would fail
    after the model loaded)."""
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    for name in names:
        if name in ("none", "all"):
            continue
        if name not in INTEGRATION_TO_CALLBACK:
            raise InputError("--report-to", f"unknown integration {name!r}: one of none, all, "
                                            f"{', '.join(sorted(INTEGRATION_TO_CALLBACK))}")
        if name not in get_available_reporting_integrations():
            extra = {"tensorboard": " (pip install 'bioselect[tensorboard]')",
                     "mlflow": " (pip install 'bioselect[tracking]')"}.get(name, "")
            raise InputError("--report-to", f"{name} is not installed{extra}; or pass --report-to none")


class EvaluateAtEnd(TrainerCallback):
    """Evaluate after the last optimizer step inside the training loop (transformers does so only for a step-based
    eval_strategy whose eval_steps do not divide max_steps): the final metrics then reach the trackers while their run
    is open (transformers' MLflow callback ends its run in ``on_train_end``; a later log would open a second run)
    and take part in best-model selection."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= state.max_steps:
            control.should_evaluate = True
        return control


STEP_TIMES = "step_times.jsonl"


class StepClock(TrainerCallback):
    """Append the wall time of every optimizer step's end to ``OUTPUT_DIR/step_times.jsonl`` (main process), after a
    ``{"begin": STEP}`` line per training segment, so that a run resumed after a kill still knows what its steps
    cost (:func:`step_seconds`)."""

    def __init__(self, output_dir: str):
        self.path = os.path.join(output_dir, STEP_TIMES)

    def _append(self, row: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        append_lines(self.path, [json.dumps(row)])

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._append({"begin": state.global_step, "t": time.time()})

    def on_step_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._append({"step": state.global_step, "t": time.time()})


def step_seconds(path: str | os.PathLike, steps: int) -> float | None:
    """Seconds the training loop spent on steps 1..``steps``, each counted once in its last execution (a step redone
    after a kill counts its second run; model loading and the time between segments are left out); None when a step
    has no recorded end (a run begun before the clock existed, or a torn file).

    >>> import tempfile
    >>> rows = [{"begin": 0, "t": 100.0}, {"step": 1, "t": 110.0}, {"step": 2, "t": 130.0},  # killed in step 3
    ...         {"begin": 1, "t": 500.0}, {"step": 2, "t": 512.0}, {"step": 3, "t": 520.0}]  # resumed from step 1
    >>> with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
    ...     _ = f.write("".join(json.dumps(r) + "\\n" for r in rows))
    >>> step_seconds(f.name, 3), step_seconds(f.name, 4)
    (30.0, None)
    """
    if not os.path.isfile(path):
        return None
    last: dict[int, float] = {}
    previous = None
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                previous = None  # a torn line: the next step's start is unknown
                continue
            if "begin" in row:
                previous = row["t"]
            elif previous is not None:
                last[row["step"]] = row["t"] - previous
                previous = row["t"]
    if not all(k in last for k in range(1, steps + 1)):
        return None
    return round(sum(last[k] for k in range(1, steps + 1)), 3)


def build_trainer(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> tuple[Any, dict[str, Any]]:
    """Check every input (before any model is loaded), build the examples and trl's ``SFTTrainer``; return the
    trainer and what the manifest records about the data and the run. ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects."""
    from tuning import eval_generate, sft_data, sft_model

    check_model_source(cfg.model)
    records = sft_data.load_records(cfg.train_files)
    eval_records = sft_data.load_records([cfg.eval_file]) if cfg.eval_file else None
    sample = (eval_generate.prepare_sample(cfg.eval_file, eval_records, cfg.eval_generate_max_records, cfg.seed)
              if cfg.eval_generate else None)
    best = (cfg.metric_for_best_model or "").removeprefix("eval_")
    if sample is not None and best in eval_generate.ALL_METRICS and best not in sample.metrics:
        raise InputError("--metric-for-best-model", f"{cfg.metric_for_best_model!r} is not logged for the "
                                                    f"{sample.task} records of {cfg.eval_file}; one of "
                                                    f"{', '.join(sample.metrics)}")
    bnb = cfg.bnb_config("float32")  # the config set the 4-bit compute dtype
    if bnb is not None:
        quantization.check_quantizable(cfg.model, cfg.quantization_option)
    saved = quantization.saved_quantization(cfg.model)  # a checkpoint saved quantised loads so, asked or not
    tokenizer = sft_model.load_tokenizer(cfg.model)
    end_of_turn = sft_model.end_of_turn_token(tokenizer)
    cfg.eos_token = cfg.eos_token or end_of_turn
    if cfg.eos_token is None:
        raise InputError(cfg.model, "the chat template closes assistant turns with no special token; name the "
                                    "token that ends an answer with --eos-token")
    if cfg.eos_token not in tokenizer.get_vocab():
        raise InputError("--eos-token", f"{cfg.eos_token!r} is not in the tokenizer's vocabulary")
    cut = {}
    for path in [*cfg.train_files, *([cfg.eval_file] if cfg.eval_file else [])]:
        n, total = sft_data.check_lengths(path, tokenizer, cfg.max_length)
        if n:
            cut[path] = n
            print(f"warning: {path}: {n} of {total} examples are longer than max_length ({cfg.max_length} tokens); "
                  "their answers are cut at the end", file=sys.stderr)
    resume = sft_model.resolve_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir)
    args = _trainer_args(cfg, quantized=bnb is not None or saved is not None)

    train_records = records
    if cfg.mix == "even":
        per_row = 1
        if cfg.packing:
            lengths = [len(tokenizer(sft_data.render_example(tokenizer, r), add_special_tokens=False)["input_ids"])
                       for r in records[:: max(1, len(records) // 256)]]
            per_row = sft_data.examples_per_row(lengths, cfg.max_length)
        n = sft_data.pool_size(cfg.max_steps, cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps
                               * args.world_size, per_row)
        train_records = sft_data.even_mix(sft_data.group_by_dataset(records), n, cfg.seed)

    from trl import SFTTrainer

    extra: dict[str, Any] = {}
    trainer_class = SFTTrainer
    if sample is not None:
        trainer_class = eval_generate.GenerationEvalTrainer
        constrained = cfg.eval_constrained
        if constrained:
            from tuning.constrained import require_llguidance

            try:
                require_llguidance()
            except ImportError as err:
                print(f"warning: --eval-generate decodes without constraints: {err}", file=sys.stderr)
                constrained = False
        extra["generation_eval"] = eval_generate.GenerationEvaluator(
            sample, tokenizer, constrained, cfg.per_device_eval_batch_size, cfg.eval_max_new_tokens)
    trainer = trainer_class(
        model=cfg.model, args=args, train_dataset=sft_data.to_dataset(train_records),
        eval_dataset=sft_data.to_dataset(eval_records) if eval_records else None, processing_class=tokenizer,
        peft_config=sft_model.lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules),
        quantization_config=bnb, callbacks=[*callbacks, StepClock(cfg.output_dir),
                                            *([EvaluateAtEnd()] if eval_records else [])], **extra,
    )
    quant = quantization.describe(saved or bnb)  # transformers loads a saved-quantised checkpoint as it was saved
    if quant is not None:  # what bitsandbytes actually replaced, counted on the loaded model
        quant["quantized_layers"] = quantization.quantized_layers(trainer.model)
        quant["saved_quantized"] = saved is not None
        quantization.keep_training_kernel(trainer.model)
        quantization.release_mapped_checkpoint(trainer.model)
    info = {
        "base_model": cfg.model,
        "quantization": quant,
        "chat_template": sft_model.template_info(tokenizer, end_of_turn),
        "versions": sft_model.package_versions(),
        "data": {
            "records": len(records),
            "per_dataset": sft_data.draw_counts(records),
            "per_task": sft_data.task_counts(records),
            "mix": cfg.mix,
            "trained_pool": len(train_records),
            "trained_pool_per_dataset": sft_data.draw_counts(train_records),
            "trained_pool_per_task": sft_data.task_counts(train_records),
            "eval_records": len(eval_records) if eval_records else 0,
            "cut_to_max_length": cut,
        },
        "eval_generate": None if sample is None else {
            "records": len(sample.ids), "ids": sample.ids, "task": sample.task, "metrics": list(sample.metrics),
            "mode": extra["generation_eval"].mode,
            "max_new_tokens": cfg.eval_max_new_tokens, "batch_size": cfg.per_device_eval_batch_size},
        "resume_from": resume,
    }
    return trainer, info


def _trainer_args(cfg: TrainConfig, quantized: bool) -> TrainConfig:
    """The config the trainer gets: ``cfg`` with the base model's loading options (dtype from ``bf16``, the
    attention kernel, one quantised copy per process) added to ``model_init_kwargs``, which win over them."""
    init_kwargs: dict[str, Any] = {"dtype": "bfloat16" if cfg.bf16 else "float32"}
    if cfg.attn_implementation:
        init_kwargs["attn_implementation"] = cfg.attn_implementation
    if quantized:
        # one whole quantised copy per process on its own device (device_map="auto" would split it across GPUs)
        from accelerate import PartialState

        init_kwargs["device_map"] = {"": PartialState().device}
    args = copy.copy(cfg)  # a copy: the recorded config keeps what was asked for
    args.model_init_kwargs = {**init_kwargs, **(cfg.model_init_kwargs or {})}
    return args


def train(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train, then write the adapter, ``train_config.yaml`` and ``manifest.json`` to ``cfg.output_dir``; return the
    manifest. Under a launcher the distributed process group (started when the config was built) stays up for the
    caller: ``tune experiment`` goes on using it; ``tune train`` ends it."""
    trainer, info = build_trainer(cfg, callbacks)
    resume = info.pop("resume_from")
    result = trainer.train(resume_from_checkpoint=resume)
    final_eval = next((h for h in reversed(trainer.state.log_history)
                       if "eval_loss" in h and h["step"] == trainer.state.global_step), None)
    if final_eval is None:  # a resumed run that had already finished (no step ran)
        final_eval = trainer.evaluate() if trainer.eval_dataset is not None else {}
    trainer.save_model(cfg.output_dir)

    history = trainer.state.log_history
    evals = [h for h in history if "eval_loss" in h]
    manifest = {
        **info,
        "training": {
            "global_step": trainer.state.global_step,
            "resumed_from": resume,
            "final_train_loss": next((h["loss"] for h in reversed(history) if "loss" in h), None),
            "mean_train_loss": result.metrics.get("train_loss"),
            "loss_curve": [[h["step"], h["loss"]] for h in history if "loss" in h],
            "epochs": trainer.state.epoch,
            "train_runtime_s": result.metrics.get("train_runtime"),
            # every step once, in its last execution: a resumed run's cost as if it had not been interrupted
            "train_step_seconds": step_seconds(os.path.join(cfg.output_dir, STEP_TIMES),
                                               trainer.state.global_step),
            "train_tokens": max((h["num_tokens"] for h in history if "num_tokens" in h), default=None),
            "eval_loss_before": min(evals, key=lambda h: h["step"])["eval_loss"] if evals else None,
            "eval_loss_after": final_eval.get("eval_loss"),
            "best_model_checkpoint": trainer.state.best_model_checkpoint,
            "best_metric": trainer.state.best_metric,
            "world_size": trainer.args.world_size,
            "padding_free": trainer.padding_free,
        },
    }
    if trainer.is_world_process_zero():
        _write_outputs(cfg, manifest)
    for tracker in trainer.accelerator.trackers:
        tracker.finish()
    return manifest


def _write_outputs(cfg: TrainConfig, manifest: dict[str, Any]) -> None:
    import yaml

    from curation.io import atomic_write, provenance, write_json

    with atomic_write(os.path.join(cfg.output_dir, "train_config.yaml")) as f:
        f.write(f"# resolved config; rerun: bioselect tune train --config {cfg.output_dir}/train_config.yaml\n")
        yaml.safe_dump(cfg.recipe(), f, sort_keys=False)
    inputs = [*cfg.train_files, *([cfg.eval_file] if cfg.eval_file else [])]
    write_json(os.path.join(cfg.output_dir, "manifest.json"), provenance(cfg.resolved(), inputs, **manifest))


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _main(argv: Sequence[str] | None = None) -> int:
    started = not _distributed()  # building the config starts the process group under a launcher
    cfg, _ = parse_config(TrainConfig, argv, prog="bioselect tune train", description=__doc__.split("\n\n")[0])
    m = train(cfg)
    from accelerate import PartialState

    if PartialState().is_main_process:
        t = m["training"]
        resumed = f" (resumed from {t['resumed_from']})" if t["resumed_from"] else ""
        print(f"{t['global_step']} steps{resumed} in {t['train_runtime_s'] or 0:.0f} s, {t['train_tokens']} tokens; "
              f"final train loss {t['final_train_loss']}")
        if t["eval_loss_after"] is not None:
            print(f"eval loss {t['eval_loss_before']} -> {t['eval_loss_after']}")
        print(f"wrote adapter, train_config.yaml and manifest.json to {cfg.output_dir}")
    if started and _distributed():  # a caller that had started it (tune experiment) goes on using it
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
