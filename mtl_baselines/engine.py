"""The one training loop under the encoder baselines, on :class:`accelerate.Accelerator`.

    state = fit(module, step_fn, plan, collate, groups, out_dir="runs/x", engine=EngineArgs(),
                evaluate=dev_score, eval_at={50, 100})
    # python -m mtl_baselines.token_mtl.train ...                         (one process, CPU or one GPU)
    # accelerate launch --num_processes 2 -m mtl_baselines.token_mtl.train ...   (data parallel)

A baseline contributes its trainable ``module`` (model and loss together when the loss has parameters), a
``step_fn(module, batch, step) -> (loss, extras)`` (forward and loss of a micro-batch of optimizer step ``step``,
0-based; ``extras`` go into that step's history row, floats averaged over micro-batches), the batch
``plan`` (every micro-batch's example indices, in order, drawn from its own seeded generator), ``collate`` (indices
to a batch of tensors) and its AdamW parameter groups (a group with ``"constant_lr": True`` keeps its rate; the
others follow the linear warm-up and decay of :func:`linear_warmup_decay`, transformers'
``get_linear_schedule_with_warmup``). The engine does the rest:

* **devices and precision**: :class:`accelerate.Accelerator` places the module (``device``) and runs the forward
  under bf16/fp16 autocast when ``mixed_precision`` asks for it (``no`` by default, the only choice that keeps
  CPU runs bit for bit reproducible).
* **gradient accumulation**: ``gradient_accumulation_steps`` micro-batches of the plan per optimizer step (the
  last step may have fewer); each micro-batch's loss is divided by the number in its step, the gradient
  all-reduce runs on the last one only (``accelerator.no_sync``). Accumulation is written out rather than left to
  ``accelerator.accumulate`` because that counter is not part of ``save_state`` and cannot end a short last step.
* **data parallel**: under ``accelerate launch --num_processes N`` each micro-batch of the plan is one global
  batch, sharded by rows (process ``r`` takes rows ``r, r + N, ...``); DDP averages the gradients, so a run
  takes the same number of steps with the same effective batch as on one process. Logged losses are the mean
  over processes. Only the main process writes files.
* **checkpoints**: every ``save_steps`` optimizer steps ``accelerator.save_state`` (module, optimizer, scheduler,
  every process's RNG state) plus ``progress.json`` (step, logs, best dev score, the run's settings) are written
  into ``OUTPUT/checkpoints/.tmp-step-N`` and renamed to ``step-N``: a kill during a save leaves the previous
  checkpoint whole. Running the same command again resumes from the newest complete one (refused, exit 2, when
  it was written with other settings); ``progress.json`` and ``metrics["resumed_from"]`` record the step.
* **selection**: ``evaluate(module) -> (score, curve_row, payload)`` runs at the steps in ``eval_at`` (``curve_row``
  goes into ``dev_curve``, ``payload``, e.g. the dev predictions, is returned for the best step); the best state
  is kept on disk (``OUTPUT/checkpoints/best-step-N.pt``, temp file then rename) and restored when training ends.
* **seeding** (:func:`set_seed`, transformers', called by the baseline before it builds its model) and
  **logging** through accelerate's trackers (``report_to``, ``none`` by default): every optimizer step's losses and
  learning rates and every dev evaluation's scores (``dev_`` in front), with the run's settings as parameters.
  ``tensorboard`` writes ``OUTPUT/train/``; ``mlflow`` logs one run named after ``OUTPUT`` into the store of
  ``MLFLOW_TRACKING_URI`` (a local ``sqlite:///...`` file or a server) and the experiment ``MLFLOW_EXPERIMENT_NAME``
  (default ``bioselect``); a resumed run logs into the MLflow run it started (its id is in the checkpoint), so the
  steps between the checkpoint and the kill appear twice in its history (other trackers start a new run on
  resume); ``wandb``, ``comet_ml``, ``aim``, ``clearml``, ``dvclive``, ``swanlab`` and ``trackio`` go through
  accelerate the same way when installed.

:func:`remove_checkpoints` drops the checkpoints once a run's last output is written.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from curation.io import InputError

PRECISIONS = ("no", "bf16", "fp16")
# accelerate's trackers (accelerate.utils.LoggerType less "all": a run logs where it is told, nowhere else)
TRACKERS = ("none", "tensorboard", "mlflow", "wandb", "comet_ml", "aim", "clearml", "dvclive", "swanlab", "trackio")
# the extra that installs a tracker, where the project has one
TRACKER_EXTRAS = {"tensorboard": "tensorboard", "mlflow": "tracking"}
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINTS = "checkpoints"


@dataclass
class EngineArgs:
    """Engine settings every baseline command takes (devices, precision, accumulation, checkpoints, logging)."""

    device: str = field(default="auto", metadata={
        "help": "auto (accelerate's choice: the GPU of this process when there is one), cpu or cuda. Pick GPUs with "
                "CUDA_VISIBLE_DEVICES or accelerate launch. Bit-for-bit reproducibility holds on CPU."})
    mixed_precision: str = field(default="no", metadata={
        "help": "no, bf16 or fp16 (autocast of the forward pass; fp16 needs a GPU and adds loss scaling)."})
    gradient_accumulation_steps: int = field(default=1, metadata={
        "help": "Micro-batches summed per optimizer step (an effective batch of batch_size x this)."})
    save_steps: int = field(default=0, metadata={
        "help": "Write a resumable checkpoint into OUTPUT/checkpoints every N optimizer steps; 0: never. Running "
                "the same command again resumes from the newest one; they are removed when the run finishes."})
    report_to: str = field(default="none", metadata={
        "help": "Tracker of the per-step losses and dev scores: none, tensorboard (OUTPUT/train; extra "
                "'tensorboard'), mlflow (MLFLOW_TRACKING_URI, e.g. sqlite:///mlflow.db; extra 'tracking'), or another "
                "accelerate tracker (wandb, comet_ml, aim, clearml, dvclive, swanlab, trackio) that is installed."})

    def __post_init__(self):
        for name, allowed in (("device", DEVICES), ("mixed_precision", PRECISIONS), ("report_to", TRACKERS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"--{name.replace('_', '-')}", f"one of {', '.join(allowed)}, not "
                                 f"{getattr(self, name)!r}")
        if self.report_to != "none":
            from accelerate.tracking import get_available_trackers

            if self.report_to not in {str(t.value) for t in get_available_trackers()}:
                extra = TRACKER_EXTRAS.get(self.report_to)
                hint = f"pip install 'bioselect[{extra}]'" if extra else f"pip install {self.report_to}"
                raise InputError("--report-to", f"{self.report_to} is not installed ({hint}); or pass --report-to "
                                                "none")
        if self.gradient_accumulation_steps < 1:
            raise InputError("--gradient-accumulation-steps", "must be >= 1")
        if self.save_steps < 0:
            raise InputError("--save-steps", "must be >= 0")
        if self.mixed_precision == "fp16" and self.device == "cpu":
            raise InputError("--mixed-precision", "fp16 needs a GPU; use bf16 on a CPU")


def engine_args(cfg: Any) -> EngineArgs:
    """The :class:`EngineArgs` part of a command config that extends it."""
    return EngineArgs(**{f.name: getattr(cfg, f.name) for f in fields(EngineArgs)})


def result_settings(cfg: Any) -> dict[str, Any]:
    """The engine settings a run's numbers depend on, those not at their default (so settings recorded before the
    engine existed still compare equal): precision and accumulation; devices, checkpoints and trackers do not."""
    return {f.name: getattr(cfg, f.name) for f in fields(EngineArgs)
            if f.name in ("mixed_precision", "gradient_accumulation_steps") and getattr(cfg, f.name) != f.default}


def set_seed(seed: int) -> None:
    """Seed ``random``, numpy and torch (all devices): transformers' ``set_seed``."""
    from transformers import set_seed as hf_set_seed

    hf_set_seed(seed)


def linear_warmup_decay(step: int, total: int, warmup: int) -> float:
    """Learning-rate factor: linear from 0 to 1 over ``warmup`` steps, then linear to 0 at ``total`` (the factor of
    transformers' ``get_linear_schedule_with_warmup``, here per parameter group).

    >>> [round(linear_warmup_decay(s, 10, 2), 2) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def is_main_process() -> bool:
    """True on the process that writes outputs (the only one without ``accelerate launch``)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def remove_checkpoints(out_dir: str | os.PathLike) -> None:
    """Remove a finished run's checkpoints (main process only)."""
    if is_main_process():
        shutil.rmtree(Path(out_dir) / CHECKPOINTS, ignore_errors=True)


class _Step(nn.Module):
    """The module DDP wraps: its forward is the baseline's whole step, so gradients of every trainable parameter
    (a loss's learned weights included) are averaged across processes."""

    def __init__(self, module: nn.Module, step_fn: Callable[[nn.Module, dict, int], tuple[torch.Tensor, dict]]):
        super().__init__()
        self.module = module
        self.step_fn = step_fn

    def forward(self, batch: dict[str, torch.Tensor], step: int) -> tuple[torch.Tensor, dict[str, Any]]:
        return self.step_fn(self.module, batch, step)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _latest_checkpoint(folder: Path) -> Path | None:
    done = sorted(p for p in folder.glob("step-*") if p.is_dir() and (p / "progress.json").is_file())
    return done[-1] if done else None


def _accelerator(engine: EngineArgs, out_dir: Path):
    from accelerate import Accelerator, DistributedDataParallelKwargs

    cpu = engine.device == "cpu"
    if engine.device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device", "cuda was asked for but torch sees no GPU")
    return Accelerator(cpu=cpu, mixed_precision=engine.mixed_precision,
                       log_with=None if engine.report_to == "none" else engine.report_to,
                       project_dir=str(out_dir),
                       # encoders carry parameters a baseline never uses (BERT's pooler): DDP must not wait for them
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def _start_tracking(acc: Any, tracker: str, out: Path, settings: Mapping[str, Any], run_id: str | None) -> None:
    """Open the tracker's run (the one a checkpoint names, when resuming) and log the run's settings as parameters.
    TensorBoard writes ``OUTPUT/train``; the other trackers name the run after the output folder and file it under the
    project ``bioselect`` (MLflow: ``MLFLOW_EXPERIMENT_NAME`` wins, as accelerate reads it)."""
    kwargs: dict[str, dict[str, Any]] = {}
    if tracker == "mlflow":
        kwargs["mlflow"] = {"run_name": out.name, **({"run_id": run_id} if run_id else {})}
    elif tracker == "wandb":
        kwargs["wandb"] = {"name": out.name}
    acc.init_trackers("train" if tracker == "tensorboard" else "bioselect",
                      config={k: v for k, v in settings.items() if isinstance(v, int | float | str | bool)},
                      init_kwargs=kwargs)


def _tracker_run_id(acc: Any, tracker: str) -> str | None:
    """The MLflow run's id on the main process, kept in checkpoints so that a resumed run logs into it; None for the
    other trackers (a resumed run starts a new run of theirs)."""
    if not acc.is_main_process or tracker != "mlflow":
        return None
    return acc.get_tracker("mlflow", unwrap=True).info.run_id


def fit(module: nn.Module, step_fn: Callable[[nn.Module, dict, int], tuple[torch.Tensor, dict[str, Any]]],
        plan: Sequence[Sequence[int]], collate: Callable[[list[int]], dict[str, torch.Tensor]],
        param_groups: Sequence[dict[str, Any]], *, out_dir: str | os.PathLike | None,
        engine: EngineArgs | None = None, lr: float = 5e-5, warmup_ratio: float = 0.1, max_grad_norm: float = 1.0,
        clip: Sequence[nn.Parameter] | None = None,
        evaluate: Callable[[nn.Module], tuple[float, dict[str, Any], Any]] | None = None,
        eval_at: Collection[int] = (), log_lrs: Mapping[str, int] | None = None,
        settings: Mapping[str, Any] | None = None, log_every: int = 0,
        logger: Any = None) -> dict[str, Any]:
    """Train ``module`` over ``plan`` (see the module doc); on return it holds the best evaluated state (the last
    one without ``evaluate``). ``clip``: the parameters whose gradient norm is clipped (all of ``module``'s when
    None). ``log_lrs``: history column name -> parameter group index (``{"lr": 0}`` by default). ``settings``: what
    a checkpoint must match to be resumed. Returns ``history`` (a row per optimizer step), ``dev_curve``,
    ``best_step``, ``best_score``, ``best_payload``, ``steps``, ``resumed_from`` (0: a fresh start),
    ``examples_per_process`` (training rows each process computed, a list as long as the number of processes) and
    ``main`` (whether this process writes outputs)."""
    engine = engine or EngineArgs()
    settings = json.loads(json.dumps(dict(settings or {}), default=str))
    log_lrs = dict(log_lrs or {"lr": 0})
    scratch = tempfile.TemporaryDirectory() if out_dir is None else None
    out = Path(scratch.name if scratch else out_dir)
    ckpt_root = out / CHECKPOINTS
    acc = _accelerator(engine, out)
    accum = engine.gradient_accumulation_steps
    total = math.ceil(len(plan) / accum)
    warmup = round(warmup_ratio * total)
    groups = [{k: v for k, v in g.items() if k != "constant_lr"} for g in param_groups]
    opt = torch.optim.AdamW(groups, lr=lr)
    factors = [(lambda s: 1.0) if g.get("constant_lr") else (lambda s: linear_warmup_decay(s, total, warmup))
               for g in param_groups]
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factors)
    wrapped, opt = acc.prepare(_Step(module, step_fn), opt)
    acc.register_for_checkpointing(sched)  # stepped by hand: accelerate's wrapper would step it N times under DDP
    clipped = list(clip) if clip is not None else [p for p in module.parameters() if p.requires_grad]
    rank, world = acc.process_index, acc.num_processes
    device = acc.device

    progress: dict[str, Any] = {"step": 0, "history": [], "dev_curve": [], "best_step": 0, "best_score": None,
                                "best_payload": None, "examples_per_process": [0] * world, "settings": settings}
    resumed_from = 0
    if ckpt_root.is_dir():
        if acc.is_main_process:
            for stale in ckpt_root.glob(".tmp-*"):  # a save cut short by a kill
                shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
        latest = _latest_checkpoint(ckpt_root)
        if latest is not None:
            saved = json.loads((latest / "progress.json").read_text(encoding="utf-8"))
            if saved["settings"] != settings:
                diff = sorted(k for k in set(saved["settings"]) | set(settings)
                              if saved["settings"].get(k) != settings.get(k))
                raise InputError(latest, f"was written by a run with other settings ({', '.join(diff)}); remove "
                                 f"{ckpt_root} to start afresh")
            if len(saved["examples_per_process"]) != world:
                raise InputError(latest, f"was written by {len(saved['examples_per_process'])} processes, not "
                                 f"{world}; resume with as many")
            acc.load_state(str(latest))
            progress = saved
            resumed_from = saved["step"]
            if logger is not None:
                logger.info("resumed from %s (step %d of %d)", latest, resumed_from, total)
        acc.wait_for_everyone()
    if engine.report_to != "none":
        _start_tracking(acc, engine.report_to, out, settings, progress.get("tracker_run_id"))
        progress["tracker_run_id"] = _tracker_run_id(acc, engine.report_to)

    def best_file(step: int) -> Path:
        return ckpt_root / f"best-step-{step:08d}.pt"

    def save_best(score: float, payload: Any, step: int) -> None:
        progress.update(best_score=score, best_step=step, best_payload=payload)
        if acc.is_main_process:
            ckpt_root.mkdir(parents=True, exist_ok=True)
            _atomic_torch_save(module.state_dict(), best_file(step))
            # keep the best state the newest checkpoint refers to: a kill before the next save resumes from it
            keep = {best_file(step), best_file(saved_best[0])}
            for old in ckpt_root.glob("best-step-*.pt"):
                if old not in keep:
                    old.unlink(missing_ok=True)

    def examples_per_process() -> list[int]:
        mine = torch.tensor([progress["examples_per_process"][rank] + trained[0]], device=device)
        return [int(n) for n in acc.gather(mine).tolist()]

    def save_checkpoint(step: int) -> None:
        progress["examples_per_process"], trained[0] = examples_per_process(), 0
        final = ckpt_root / f"step-{step:08d}"
        tmp = ckpt_root / f".tmp-step-{step:08d}"
        if acc.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        if acc.is_main_process:
            (tmp / "progress.json").write_text(json.dumps(progress), encoding="utf-8")
            os.replace(tmp, final)
            saved_best[0] = progress["best_step"]
            for old in ckpt_root.glob("step-*"):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()

    step = progress["step"]
    saved_best = [progress["best_step"]]
    trained = [0]  # examples this process trained on since the last gather
    module.train()
    while step < total:
        micro = plan[step * accum:(step + 1) * accum]
        losses, extras = [], []
        for j, idx in enumerate(micro):
            shard = list(idx[rank::world])
            weight = 1.0 / len(micro)
            if not shard:  # a batch smaller than the number of processes: take part with a zero-weight row
                shard, weight = list(idx[:1]), 0.0
            trained[0] += len(shard) if weight else 0
            batch = {k: v.to(device) for k, v in collate(shard).items()}
            with acc.no_sync(wrapped) if j < len(micro) - 1 else nullcontext():
                loss, extra = wrapped(batch, step)
                acc.backward(loss * weight)
            losses.append(loss.detach())
            extras.append(extra)
        acc.clip_grad_norm_(clipped, max_grad_norm)
        lrs = {name: opt.param_groups[i]["lr"] for name, i in log_lrs.items()}
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        mean_loss = losses[0] if len(losses) == 1 else torch.stack(losses).mean()
        if world > 1:
            mean_loss = acc.reduce(mean_loss, reduction="mean")
        row = {"step": step, **lrs, "loss": mean_loss.item()}
        for key in extras[-1]:
            values = [e[key] for e in extras if key in e]
            row[key] = sum(values) / len(values) if all(isinstance(v, float) for v in values) else values[-1]
        progress["history"].append(row)
        if engine.report_to != "none":
            acc.log({k: v for k, v in row.items() if isinstance(v, float)}, step=step)
        if log_every and logger is not None and step % log_every == 0:
            recent = progress["history"][-log_every:]
            logger.info("step %d/%d loss %.4f", step, total, sum(h["loss"] for h in recent) / len(recent))
        if evaluate is not None and step in eval_at:
            with torch.no_grad(), acc.autocast():
                score, curve_row, payload = evaluate(module)
            module.train()
            progress["dev_curve"].append({"step": step, **curve_row})
            if engine.report_to != "none":
                acc.log({f"dev_{k}": v for k, v in curve_row.items() if isinstance(v, int | float)
                         and not isinstance(v, bool)} | {"dev_score": float(score)}, step=step)
            if progress["best_score"] is None or score > progress["best_score"]:
                save_best(score, payload, step)
        progress["step"] = step
        if engine.save_steps and step % engine.save_steps == 0 and step < total:
            save_checkpoint(step)
    progress["examples_per_process"] = examples_per_process()
    acc.wait_for_everyone()
    if progress["best_score"] is not None and progress["best_step"] != step:
        module.load_state_dict(torch.load(best_file(progress["best_step"]), map_location="cpu", weights_only=True))
    if engine.report_to != "none":
        acc.end_training()
    main = acc.is_main_process
    if scratch is not None:
        scratch.cleanup()
    return {"history": progress["history"], "dev_curve": progress["dev_curve"], "best_step": progress["best_step"],
            "best_score": progress["best_score"], "best_payload": progress["best_payload"], "steps": step,
            "resumed_from": resumed_from, "examples_per_process": progress["examples_per_process"], "main": main}
