"""bitsandbytes quantisation of the base model for ``tune train`` (QLoRA) and ``tune generate``: the options, the
``transformers.BitsAndBytesConfig`` they make, and the checks that run before any weights are loaded.

    >>> check_options(load_in_4bit=True, load_in_8bit=False, quant_type="nf4", compute_dtype="float32")
    >>> check_options(load_in_4bit=True, load_in_8bit=True, quant_type="nf4", compute_dtype=None)
    Traceback (most recent call last):
    ...
    curation.io.InputError: --load-in-8bit: give --load-in-4bit or --load-in-8bit, not both

bitsandbytes (>= 0.50) quantises and runs 4-bit (NF4, FP4) and 8-bit (LLM.int8) linear layers on the CPU as well as
on CUDA GPUs; it is an optional dependency (the ``quantization`` extra), imported only when a quantised load is asked
for. The option names are transformers' ``BitsAndBytesConfig`` field names, which trl's ``ModelConfig`` shares for
``load_in_4bit``, ``load_in_8bit`` and ``bnb_4bit_quant_type``. Both commands take them from
:class:`QuantizationArguments`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.io import InputError

QUANT_TYPES = ("nf4", "fp4")
COMPUTE_DTYPES = ("float32", "bfloat16", "float16")
INSTALL = "pip install 'bioselect[quantization]' (bitsandbytes; runs on CPU and CUDA)"

HELP = {
    "load_in_4bit": f"Load the base model's linear layers in 4 bits with bitsandbytes, on CPU or CUDA; needs "
                    f"{INSTALL}.",
    "load_in_8bit": "Load the base model's linear layers in 8 bits (LLM.int8) with bitsandbytes; CPU or CUDA.",
    "bnb_4bit_quant_type": f"4-bit data type: {' or '.join(QUANT_TYPES)} (NormalFloat4, the QLoRA paper's, or 4-bit "
                           "float).",
    "bnb_4bit_use_double_quant": "Quantise the 4-bit blocks' scaling constants too (about 0.4 bits per weight less).",
    "bnb_4bit_compute_dtype": f"Dtype the 4-bit weights are dequantised to for each matmul: "
                              f"{', '.join(COMPUTE_DTYPES)}; default: the dtype of the unquantised layers (training: "
                              "bfloat16 with bf16, else float32; generation: --dtype).",
}


@dataclass(kw_only=True)
class QuantizationArguments:
    """The bitsandbytes options of ``tune train`` and ``tune generate``, mixed into each command's config
    (keyword-only, so a config may still declare required fields of its own). A config calls
    :meth:`check_quantization` from its ``__post_init__``."""

    load_in_4bit: bool = field(default=False, metadata={"help": HELP["load_in_4bit"]})
    load_in_8bit: bool = field(default=False, metadata={"help": HELP["load_in_8bit"]})
    bnb_4bit_quant_type: str = field(default="nf4", metadata={"help": HELP["bnb_4bit_quant_type"]})
    bnb_4bit_use_double_quant: bool = field(default=True, metadata={"help": HELP["bnb_4bit_use_double_quant"]})
    bnb_4bit_compute_dtype: str | None = field(default=None, metadata={"help": HELP["bnb_4bit_compute_dtype"]})

    def check_quantization(self) -> None:
        """Refuse contradictory or unknown values (:func:`check_options`)."""
        check_options(self.load_in_4bit, self.load_in_8bit, self.bnb_4bit_quant_type, self.bnb_4bit_compute_dtype)

    @property
    def quantization_option(self) -> str | None:
        """The option that asks for a quantised load (``--load-in-4bit`` or ``--load-in-8bit``), None without."""
        return "--load-in-4bit" if self.load_in_4bit else "--load-in-8bit" if self.load_in_8bit else None

    def bnb_config(self, compute_dtype: str):
        """:func:`bnb_config` for these options; ``compute_dtype`` applies when ``bnb_4bit_compute_dtype`` is not
        set. None when no quantised load is asked for."""
        return bnb_config(self.load_in_4bit, self.load_in_8bit, self.bnb_4bit_quant_type,
                          self.bnb_4bit_use_double_quant, self.bnb_4bit_compute_dtype or compute_dtype)


def check_options(load_in_4bit: bool, load_in_8bit: bool, quant_type: str, compute_dtype: str | None) -> None:
    """Refuse contradictory or unknown quantisation options (:class:`InputError` naming the option)."""
    if load_in_4bit and load_in_8bit:
        raise InputError("--load-in-8bit", "give --load-in-4bit or --load-in-8bit, not both")
    if quant_type not in QUANT_TYPES:
        raise InputError("--bnb-4bit-quant-type", f"must be one of {', '.join(QUANT_TYPES)}, not {quant_type!r}")
    if compute_dtype is not None and compute_dtype not in COMPUTE_DTYPES:
        raise InputError("--bnb-4bit-compute-dtype",
                         f"must be one of {', '.join(COMPUTE_DTYPES)}, not {compute_dtype!r}")


def require_bitsandbytes(option: str) -> None:
    """Import bitsandbytes, or raise :class:`InputError` saying how to install it."""
    try:  # its CPU-kernel warning is silenced in tuning/__init__.py
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise InputError(option, f"needs bitsandbytes, which is not installed: {INSTALL}") from None


def bnb_config(load_in_4bit: bool, load_in_8bit: bool, quant_type: str = "nf4", double_quant: bool = True,
               compute_dtype: str = "float32"):
    """transformers' ``BitsAndBytesConfig`` for a 4-bit or an 8-bit load; None when neither is asked for.

    4-bit weights are stored packed in bfloat16 tensors (``bnb_4bit_quant_storage``), which lets FSDP shard them
    with the rest of a bf16 model; the values are the same as in uint8 storage.
    """
    if not (load_in_4bit or load_in_8bit):
        return None
    require_bitsandbytes("--load-in-4bit" if load_in_4bit else "--load-in-8bit")
    import torch
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=quant_type,
                              bnb_4bit_use_double_quant=double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, compute_dtype),
                              bnb_4bit_quant_storage=torch.bfloat16)


def describe(config) -> dict[str, Any] | None:
    """What a manifest records about a ``BitsAndBytesConfig`` (None: not quantised)."""
    if config is None:
        return None
    if config.load_in_8bit:
        return {"method": "bitsandbytes", "bits": 8}
    return {"method": "bitsandbytes", "bits": 4, "bnb_4bit_quant_type": config.bnb_4bit_quant_type,
            "bnb_4bit_use_double_quant": config.bnb_4bit_use_double_quant,
            "bnb_4bit_compute_dtype": str(config.bnb_4bit_compute_dtype).removeprefix("torch."),
            "bnb_4bit_quant_storage": str(config.bnb_4bit_quant_storage).removeprefix("torch.")}


def quantizable_layers(model) -> list[str]:
    """Names of the modules transformers' bitsandbytes integration replaces: exactly ``torch.nn.Linear`` (not a
    subclass) or GPT-2's ``Conv1D``, the output head excepted. Works on a model built on the meta device."""
    import torch
    from transformers.pytorch_utils import Conv1D

    head = model.get_output_embeddings()
    return [name for name, module in model.named_modules()
            if (type(module) is torch.nn.Linear or isinstance(module, Conv1D)) and module is not head]


def check_quantizable(model: str, option: str) -> None:
    """Refuse, before any weights are loaded, a base model that bitsandbytes would not quantise: one already
    quantised by another method (its ``config.json`` carries a ``quantization_config``), or a model type whose
    linear layers are not plain ``torch.nn.Linear`` (Falcon's ``FalconLinear``): transformers would only warn and
    load it unquantised."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise InputError(model, f"cannot read the model config: {str(err).splitlines()[0]}") from None
    existing = getattr(config, "quantization_config", None)
    if existing is not None:
        method = existing.get("quant_method") if isinstance(existing, dict) else getattr(existing, "quant_method", "")
        method = getattr(method, "value", method)
        if method != "bitsandbytes":
            raise InputError(model, f"is already quantised ({method}); bitsandbytes cannot quantise it again: drop "
                                    f"{option}")
    with torch.device("meta"):  # the module tree without weights
        skeleton = AutoModelForCausalLM.from_config(config)
    if not quantizable_layers(skeleton):
        raise InputError(model, f"bitsandbytes cannot quantise model type {config.model_type!r}: it has no plain "
                                f"torch.nn.Linear layers (transformers would load it unquantised); drop {option}")


def saved_quantization(model: str):
    """The ``BitsAndBytesConfig`` a checkpoint was saved quantised with (its ``config.json`` holds a bitsandbytes
    ``quantization_config``: a model saved after a 4-bit or 8-bit load, as the ``bnb-4bit`` checkpoints shared on the
    Hub are), or None. Such a checkpoint loads quantised without ``--load-in-4bit``, from about half the bytes."""
    config_file = Path(model) / "config.json"
    if not config_file.is_file():
        return None
    try:
        saved = json.loads(config_file.read_text(encoding="utf-8")).get("quantization_config")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None  # the loader reports an unreadable config
    if not isinstance(saved, dict) or saved.get("quant_method") != "bitsandbytes":
        return None
    require_bitsandbytes(f"{model} (saved in bitsandbytes' {4 if saved.get('load_in_4bit') else 8}-bit format)")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig.from_dict(saved)


def quantized_layers(model) -> int:
    """How many of a loaded model's layers are bitsandbytes 4-bit or 8-bit layers."""
    import bitsandbytes as bnb

    return sum(isinstance(m, (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)) for m in model.modules())


def keep_training_kernel(model) -> int:
    """Keep a model's 4-bit layers off bitsandbytes' CPU inference kernel; return how many layers were set.

    bitsandbytes 0.50 repacks a 4-bit layer's weights for a bf16 CPU kernel (on CPUs with AVX512-BF16) at its first
    forward in eval mode without gradients, and never packs them back; a training step after an evaluation then runs
    that kernel, which has no backward: the gradient through the frozen layers is silently lost and every adapter
    below the last layer gets a wrong gradient (tests/tuning/test_quantization.py). Training with this set evaluates
    and trains on the dequantise-then-matmul path, exact in the compute dtype.
    """
    import bitsandbytes as bnb

    layers = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    for layer in layers:
        layer.support_avx512bf16_for_cpu = False
    return len(layers)


def mapped_file_ranges(suffix: str = ".safetensors") -> list[tuple[int, int]]:
    """Address ranges of this process's memory mappings of files whose name ends with ``suffix`` (Linux
    ``/proc/self/maps``; an empty list where there is none)."""
    ranges = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[-1].endswith(suffix):
                    lo, hi = fields[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        pass
    return ranges


def release_mapped_checkpoint(model) -> int:
    """Copy the parameters and buffers that are still views of the memory-mapped checkpoint into memory of their
    own, so that the mapping goes; return the bytes copied.

    transformers memory-maps the safetensors files and keeps a tensor whose dtype and device already match (the
    bfloat16 embeddings, norms and head of a 4-bit load with bfloat16 compute, on the CPU) as a view of the mapping.
    That view keeps the whole file mapped, and every page read while loading stays in the process's resident set:
    the bfloat16 weights of the layers that were quantised too, which nothing reads again (3.1 GiB for Qwen2.5-1.5B,
    more than its whole 4-bit model; docs/results/qlora_memory.md). Copying the few views out releases them. A
    checkpoint saved in 4 bits loads its packed weights and their quantisation constants as views too; they are copied
    the same way. A CUDA model holds no such views; a float32 load copied everything already.
    """
    import torch

    ranges = mapped_file_ranges()
    if not ranges:
        return 0

    def mapped(tensor) -> bool:
        return (torch.is_tensor(tensor) and tensor.device.type == "cpu" and tensor.numel() > 0
                and any(lo <= tensor.untyped_storage().data_ptr() < hi for lo, hi in ranges))

    copied = 0
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for tensor in table.values():
                if mapped(tensor):
                    tensor.data = tensor.data.clone()
                    copied += tensor.untyped_storage().nbytes()
                # a checkpoint saved in 4 bits: the layer's quantisation constants (absmax, code, nested state) too
                state = getattr(tensor, "quant_state", None)
                for part in (state, getattr(state, "state2", None)):
                    if part is None:
                        continue
                    for name, value in vars(part).items():
                        if mapped(value):
                            setattr(part, name, value.clone())
                            copied += value.untyped_storage().nbytes()
    return copied
