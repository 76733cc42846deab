"""``bioselect tune train``: LoRA (or 4-bit QLoRA) supervised fine-tuning of a causal LM on instruction JSONL.

    bioselect tune train --config configs/tune_smollm2_135m_cpu.yaml
    bioselect tune train --model ~/.cache/offline-models/smollm2-135m --train-files runs/ncbi_train_10.jsonl \\
        --output-dir runs/tune/smollm2 --max-steps 150
    accelerate launch --config_file configs/accelerate/ddp.yaml -m tuning.train --config configs/tune_qwen2.5_0.5b.yaml

Also ``python -m tuning.train ...``. trl's ``SFTTrainer`` trains a peft LoRA adapter on prompt-completion examples
(:mod:`tuning.sft_data`) rendered with the model's chat template; the loss covers the completion only, which ends
with the template's end-of-turn token (trained on, and set as the tokenizer's EOS). ``--packing`` packs examples
into rows of ``max_length`` tokens with position ids restarting at every example, so no example attends to another.
OUTPUT_DIR receives the adapter and tokenizer, ``train_config.yaml`` (the resolved config), ``manifest.json``
(input hashes, base model, chat template, versions, git commit, losses), ``checkpoint-*`` folders and TensorBoard
logs under ``runs/``; a run whose OUTPUT_DIR holds checkpoints resumes from the newest. ``--load-in-4bit`` (QLoRA)
or ``--load-in-8bit`` loads the frozen base through bitsandbytes, on CPU or GPU (:mod:`tuning.quantization`). Bad
input (an empty dataset, a record without output, a model without chat template or weights, a quantised load
without bitsandbytes or of a model it cannot quantise) exits with code 2 before any training.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from curation.cli import parse_config, run
from curation.io import Files, InputError, check_model_source
from tuning import quantization
from tuning.sft_data import MIX_STRATEGIES


@dataclass
class TrainConfig:
    model: str = field(default="", metadata={
        "help": "Base causal LM: a local folder (e.g. ~/.cache/offline-models/smollm2-135m) or a hub id "
                "(Qwen/Qwen2.5-0.5B-Instruct, Qwen/Qwen3-8B, meta-llama/Llama-3.1-8B-Instruct); needs a chat "
                "template."})
    train_files: list[str] = field(default_factory=list, metadata={
        "help": "Instruction JSONL file(s) (bioselect data convert / curate output): several paths, a comma list "
                "or a YAML list."})
    eval_file: str | None = field(default=None, metadata={
        "help": "Instruction JSONL scored (completion loss) before training, every eval_steps and at the end."})
    output_dir: str = field(default="", metadata={"help": "Run folder: adapter, config, manifest, checkpoints, logs."})
    mix: str = field(default="concat", metadata={
        "help": "How several datasets (the records' 'dataset' field) combine: 'concat' (every record once per epoch) "
                "or 'even' (each example drawn from a dataset picked with equal probability; needs max_steps)."})
    max_steps: int = field(default=-1, metadata={
        "help": "Optimizer steps to train; -1: train for 'epochs' instead."})
    epochs: float = field(default=1.0, metadata={"help": "Passes over the training data when max_steps is -1."})
    batch_size: int = field(default=8, metadata={
        "help": "Examples (packed rows with --packing) per device per forward pass."})
    grad_accum: int = field(default=1, metadata={"help": "Forward passes accumulated per optimizer step."})
    lr: float = field(default=2e-4, metadata={"help": "Peak learning rate (AdamW)."})
    lr_scheduler: str = field(default="cosine", metadata={"help": "Scheduler name (cosine, linear, constant, ...)."})
    warmup_steps: float = field(default=0.03, metadata={
        "help": "Warm-up: a share of the steps when < 1, else a number of steps."})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay."})
    max_length: int = field(default=512, metadata={
        "help": "Tokens per example (longer ones are cut at the end); the row length with --packing."})
    packing: bool = field(default=False, metadata={
        "help": "Pack examples into rows of max_length tokens (best-fit decreasing); position ids restart at each "
                "example so examples do not attend to each other."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(default="all-linear", metadata={
        "help": "Modules that get adapters: 'all-linear' or comma-separated names (q_proj,k_proj,v_proj,o_proj)."})
    load_in_4bit: bool = field(default=False, metadata={"help": "QLoRA: " + quantization.HELP["load_in_4bit"]})
    load_in_8bit: bool = field(default=False, metadata={"help": quantization.HELP["load_in_8bit"]})
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": quantization.HELP["bnb_4bit_quant_type"]})
    bnb_4bit_use_double_quant: bool = field(default=True, metadata={
        "help": quantization.HELP["bnb_4bit_use_double_quant"]})
    bnb_4bit_compute_dtype: str | None = field(default=None, metadata={
        "help": quantization.HELP["bnb_4bit_compute_dtype"]})
    bf16: bool | None = field(default=None, metadata={
        "help": "bf16 weights and mixed precision; default: on when a CUDA GPU with bf16 is present."})
    gradient_checkpointing: bool = field(default=False, metadata={
        "help": "Recompute activations in the backward pass (less memory, about 20-30 percent slower)."})
    attn_implementation: str | None = field(default=None, metadata={
        "help": "Attention kernel (sdpa, eager, flash_attention_2, kernels-community/flash-attn2); transformers' "
                "default when not set."})
    eos_token: str | None = field(default=None, metadata={
        "help": "Token that ends a completion; default: the token the chat template closes assistant turns with."})
    seed: int = field(default=0, metadata={"help": "Seed of the adapter initialisation, the mix and the batches."})
    logging_steps: int = field(default=10, metadata={"help": "Log the training loss every N steps."})
    save_steps: int = field(default=100, metadata={"help": "Write a checkpoint every N steps."})
    save_total_limit: int = field(default=2, metadata={"help": "Checkpoints kept (oldest deleted)."})
    eval_steps: int | None = field(default=None, metadata={
        "help": "Score eval_file every N steps (besides before and after training); default: before and after only."})
    resume_from_checkpoint: str = field(default="auto", metadata={
        "help": "'auto': continue from the newest checkpoint-* in output_dir if there is one; 'no': start afresh; "
                "or a checkpoint folder."})
    report_to: str = field(default="tensorboard", metadata={
        "help": "Where the logs go besides log_history: 'tensorboard' (output_dir/runs/) or 'none'."})

    def __post_init__(self):
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
            raise InputError("--max-steps", "must be >= 1, or -1 to train for 'epochs'")
        if self.max_steps == -1 and self.epochs <= 0:
            raise InputError("--epochs", "must be > 0")
        for name in ("batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha", "logging_steps", "save_steps",
                     "save_total_limit"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')}", "must be >= 1")
        if self.eval_steps is not None and self.eval_steps < 1:
            raise InputError("--eval-steps", "must be >= 1")
        if self.lr <= 0 or self.warmup_steps < 0:
            raise InputError("--lr" if self.lr <= 0 else "--warmup-steps", "must be > 0" if self.lr <= 0 else ">= 0")
        if not 0 <= self.lora_dropout < 1:
            raise InputError("--lora-dropout", "must be in [0, 1)")
        if not self.lora_target_modules.strip():
            raise InputError("--lora-target-modules", "must name modules or be 'all-linear'")
        if self.report_to not in ("tensorboard", "none"):
            raise InputError("--report-to", f"must be 'tensorboard' or 'none', not {self.report_to!r}")
        quantization.check_options(self.load_in_4bit, self.load_in_8bit, self.bnb_4bit_quant_type,
                                   self.bnb_4bit_compute_dtype)
        if self.bf16 is None:
            import torch

            self.bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        if self.load_in_4bit and self.bnb_4bit_compute_dtype is None:
            self.bnb_4bit_compute_dtype = "bfloat16" if self.bf16 else "float32"

    def files(self) -> Files:
        return Files(reads=[self.model, *self.train_files, self.eval_file], folders=[self.output_dir])

    def sft_config(self, eval_file: bool):
        """trl's ``SFTConfig`` for this run (completion-only loss, EOS = ``eos_token``)."""
        from trl import SFTConfig

        init_kwargs: dict[str, Any] = {"dtype": "bfloat16" if self.bf16 else "float32"}
        if self.attn_implementation:
            init_kwargs["attn_implementation"] = self.attn_implementation
        if self.load_in_4bit or self.load_in_8bit:
            from accelerate import PartialState

            # one whole quantised copy per process on its own device (device_map="auto" would split it across GPUs)
            init_kwargs["device_map"] = {"": PartialState().device}
        return SFTConfig(
            output_dir=self.output_dir, max_steps=self.max_steps, num_train_epochs=self.epochs,
            per_device_train_batch_size=self.batch_size, per_device_eval_batch_size=self.batch_size,
            gradient_accumulation_steps=self.grad_accum, learning_rate=self.lr, lr_scheduler_type=self.lr_scheduler,
            warmup_steps=self.warmup_steps, weight_decay=self.weight_decay, max_length=self.max_length,
            packing=self.packing, packing_strategy="bfd", completion_only_loss=True, eos_token=self.eos_token,
            bf16=self.bf16, activation_checkpointing=self.gradient_checkpointing, model_init_kwargs=init_kwargs,
            seed=self.seed, data_seed=self.seed, logging_steps=self.logging_steps, logging_first_step=True,
            save_strategy="steps", save_steps=self.save_steps, save_total_limit=self.save_total_limit,
            eval_strategy="steps" if eval_file and self.eval_steps else "no", eval_steps=self.eval_steps,
            eval_on_start=eval_file, report_to=self.report_to, ddp_find_unused_parameters=False,
        )


def build_trainer(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> tuple[Any, dict[str, Any]]:
    """Check every input (before any model is loaded), build the examples and trl's ``SFTTrainer``; return the
    trainer and what the manifest records about the data and the run. ``callbacks`` are extra
    ``transformers.TrainerCallback`` objects."""
    from tuning import sft_data, sft_model

    check_model_source(cfg.model)
    records = sft_data.load_records(cfg.train_files)
    eval_records = sft_data.load_records([cfg.eval_file]) if cfg.eval_file else None
    bnb = quantization.bnb_config(cfg.load_in_4bit, cfg.load_in_8bit, cfg.bnb_4bit_quant_type,
                                  cfg.bnb_4bit_use_double_quant, cfg.bnb_4bit_compute_dtype or "float32")
    if bnb is not None:
        quantization.check_quantizable(cfg.model, "--load-in-4bit" if cfg.load_in_4bit else "--load-in-8bit")
    if cfg.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") is None:
        raise InputError("--report-to", "tensorboard is not installed (pip install 'bioselect[tensorboard]'), or pass "
                                        "--report-to none")
    tokenizer = sft_model.load_tokenizer(cfg.model)
    end_of_turn = sft_model.end_of_turn_token(tokenizer)
    cfg.eos_token = cfg.eos_token or end_of_turn
    if cfg.eos_token is None:
        raise InputError(cfg.model, "the chat template closes assistant turns with no special token; name the "
                                    "token that ends an answer with --eos-token")
    if cfg.eos_token not in tokenizer.get_vocab():
        raise InputError("--eos-token", f"{cfg.eos_token!r} is not in the tokenizer's vocabulary")
    resume = sft_model.resolve_checkpoint(cfg.resume_from_checkpoint, cfg.output_dir)
    args = cfg.sft_config(eval_file=eval_records is not None)

    train_records = records
    if cfg.mix == "even":
        per_row = 1
        if cfg.packing:
            lengths = [len(tokenizer(_render(tokenizer, r), add_special_tokens=False)["input_ids"])
                       for r in records[:: max(1, len(records) // 256)]]
            per_row = sft_data.examples_per_row(lengths, cfg.max_length)
        n = sft_data.pool_size(cfg.max_steps, cfg.batch_size * cfg.grad_accum * args.world_size, per_row)
        train_records = sft_data.even_mix(sft_data.group_by_dataset(records), n, cfg.seed)

    from trl import SFTTrainer

    trainer = SFTTrainer(
        model=cfg.model, args=args, train_dataset=sft_data.to_dataset(train_records),
        eval_dataset=sft_data.to_dataset(eval_records) if eval_records else None, processing_class=tokenizer,
        peft_config=sft_model.lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules),
        quantization_config=bnb, callbacks=list(callbacks),
    )
    quant = quantization.describe(bnb)
    if quant is not None:  # what bitsandbytes actually replaced, counted on the loaded model
        quant["quantized_layers"] = quantization.quantized_layers(trainer.model)
        quantization.keep_training_kernel(trainer.model)
    info = {
        "base_model": cfg.model,
        "quantization": quant,
        "chat_template": sft_model.template_info(tokenizer, end_of_turn),
        "versions": sft_model.package_versions(),
        "data": {
            "records": len(records),
            "per_dataset": sft_data.draw_counts(records),
            "mix": cfg.mix,
            "trained_pool": len(train_records),
            "trained_pool_per_dataset": sft_data.draw_counts(train_records),
            "eval_records": len(eval_records) if eval_records else 0,
        },
        "resume_from": resume,
    }
    return trainer, info


def train(cfg: TrainConfig, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train, then write the adapter, ``train_config.yaml`` and ``manifest.json`` to ``cfg.output_dir``; return the
    manifest. The distributed process group is destroyed at the end only if this call started it (a caller that
    set it up, such as ``tune experiment`` under ``accelerate launch``, goes on using it)."""
    import torch.distributed as dist

    owns_group = not (dist.is_available() and dist.is_initialized())
    trainer, info = build_trainer(cfg, callbacks)
    resume = info.pop("resume_from")
    result = trainer.train(resume_from_checkpoint=resume)
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
            "train_tokens": max((h["num_tokens"] for h in history if "num_tokens" in h), default=None),
            "eval_loss_before": min(evals, key=lambda h: h["step"])["eval_loss"] if evals else None,
            "eval_loss_after": final_eval.get("eval_loss"),
            "world_size": trainer.args.world_size,
            "padding_free": trainer.padding_free,
        },
    }
    if trainer.is_world_process_zero():
        _write_outputs(cfg, manifest)
    if owns_group:
        trainer.end()
    else:
        for tracker in trainer.accelerator.trackers:
            tracker.finish()
    return manifest


def _render(tokenizer, record: dict[str, Any]) -> str:
    from tuning.chat import prompt_completion

    pc = prompt_completion(record)
    return tokenizer.apply_chat_template(pc["prompt"] + pc["completion"], tokenize=False,
                                         **pc["chat_template_kwargs"])


def _write_outputs(cfg: TrainConfig, manifest: dict[str, Any]) -> None:
    import yaml

    from curation.io import atomic_write, provenance, write_json

    with atomic_write(os.path.join(cfg.output_dir, "train_config.yaml")) as f:
        f.write(f"# resolved config; rerun: bioselect tune train --config {cfg.output_dir}/train_config.yaml\n")
        yaml.safe_dump(asdict(cfg), f, sort_keys=False)
    inputs = [*cfg.train_files, *([cfg.eval_file] if cfg.eval_file else [])]
    write_json(os.path.join(cfg.output_dir, "manifest.json"), provenance(cfg, inputs, **manifest))


def _main(argv: Sequence[str] | None = None) -> int:
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
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
