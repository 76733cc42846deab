"""``bioselect tune export``: a LoRA adapter made ready to share, merged into its base model or as it is.

    bioselect tune export --adapter runs/tune/smollm2 --output runs/export/smollm2-ncbi --merge true
    bioselect tune export --adapter runs/tune/smollm2 --output runs/export/smollm2-ncbi-adapter [--eval FILE]

Also ``python -m tuning.export ...``. With ``--merge true`` the base model (the one the adapter's
``adapter_config.json`` names, or ``--model``) is loaded unquantised in its own dtype (``dtype`` or ``torch_dtype`` of
its ``config.json``; float32 when it names none), the adapter is applied with peft and merged
(``merge_and_unload``), and the result is saved as safetensors in that dtype (or ``--dtype``): a model that
transformers' ``AutoModelForCausalLM`` loads alone. Each merged weight is W + (alpha/r) B A rounded once to that
dtype; in bfloat16 an update much smaller than the weights mostly rounds away, ``--dtype float32`` keeps it.
Without ``--merge`` the adapter (``adapter_config.json`` and its weights) is copied. Either way the tokenizer and
chat template the adapter was trained with go beside it, with a model card (``README.md``: YAML metadata with the
training data's SHA-256, the precision, the command, the evaluation table when one is found) and ``manifest.json``
(provenance, and the training manifest ``tune train`` wrote).

A QLoRA adapter (trained on a 4-bit base) is merged into the unquantised base: merging into 4-bit weights would
quantise the sum again and lose the adapter's update, which is far smaller than one 4-bit step, so ``--merge`` with
``--load-in-4bit`` or ``--load-in-8bit`` is refused. The output folder is written beside its target and renamed into
place. Bad input (a missing adapter, an adapter without config or weights, a base model that is not there or that
the adapter does not fit, an output that exists or lies inside the adapter or the base) exits with code 2 before any
weights are loaded and writes nothing.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curation.cli import parse_config, run
from curation.io import Files, InputError, atomic_folder, check_model_source, provenance, write_json

EVAL_NAME = "eval.json"  # what `tune experiment` writes beside each run's adapter (`bioselect evaluate --output`)
DTYPES = ("float32", "bfloat16", "float16")
TRAINING_MANIFEST = "manifest.json"  # written by `tune train` into the adapter folder


@dataclass
class ExportConfig:
    adapter: str = field(default="", metadata={
        "help": "LoRA adapter folder (bioselect tune train's output_dir): adapter_config.json and adapter weights."})
    output: str = field(default="", metadata={
        "help": "Folder to create (must not exist, or be empty): the merged model or the adapter, tokenizer, chat "
                "template, README.md model card and manifest.json."})
    merge: bool = field(default=False, metadata={
        "help": "Merge the adapter into the base model's weights and save a plain transformers model in the base's "
                "dtype; without it the adapter is exported as it is."})
    model: str | None = field(default=None, metadata={
        "help": "Base model folder; default: the base_model_name_or_path of the adapter's adapter_config.json."})
    dtype: str = field(default="base", metadata={
        "help": "dtype of the merged weights: 'base' (the dtype the base's config.json names; float32 when it names "
                "none), float32, bfloat16 or float16. A small update merged into bfloat16 weights is mostly rounded "
                "away; float32 keeps it."})
    eval: str | None = field(default=None, metadata={
        "help": "Evaluation to put in the model card: a bioselect evaluate JSON (its tables are rendered) or a "
                "Markdown file (included as it is); default: an eval.json in or beside the adapter folder whose "
                "predictions were made with this adapter."})
    load_in_4bit: bool = field(default=False, metadata={
        "help": "Refused: a merged model is saved in the base's own dtype, since merging into 4-bit weights would "
                "quantise the sum again and lose the adapter's update; quantise when loading instead (tune generate "
                "--load-in-4bit)."})
    load_in_8bit: bool = field(default=False, metadata={"help": "Refused, as --load-in-4bit."})

    def __post_init__(self):
        if not self.adapter:
            raise InputError("--adapter", "is required (the adapter folder tune train wrote)")
        if not self.output:
            raise InputError("--output", "is required (a new folder)")
        for name in ("adapter", "output", "model", "eval"):
            if getattr(self, name):
                setattr(self, name, os.path.expanduser(getattr(self, name)))
        if self.dtype not in ("base", *DTYPES):
            raise InputError("--dtype", f"must be base, {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.dtype != "base" and not self.merge:
            raise InputError("--dtype", "sets the dtype of merged weights: give --merge true, or drop it (an "
                                        "adapter is exported as it was saved)")
        option = "--load-in-4bit" if self.load_in_4bit else "--load-in-8bit"
        if (self.load_in_4bit or self.load_in_8bit) and self.merge:
            raise InputError(option, "a quantised output cannot be merged into: --merge saves the merged weights "
                                     "unquantised, in the base's dtype or --dtype (merging into quantised weights "
                                     "would quantise the sum again and lose the adapter's update); drop " + option +
                                     " and quantise when loading (tune generate --load-in-4bit)")
        if self.load_in_4bit or self.load_in_8bit:
            raise InputError(option, "an adapter is exported as it is, with nothing to quantise; quantise the base "
                                     "when loading it (tune generate --load-in-4bit)")

    def files(self) -> Files:
        base = self.model or adapter_base(self.adapter)
        return Files(reads=[self.adapter, base, self.eval], folders=[self.output], sealed=[self.adapter, base])


def adapter_base(adapter: str) -> str | None:
    """The base model an adapter folder's ``adapter_config.json`` names (``~`` expanded); None when it names none
    or cannot be read (the checks of :func:`check_inputs` then say what is wrong)."""
    try:
        base = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8")).get(
            "base_model_name_or_path")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None
    return os.path.expanduser(base) if isinstance(base, str) and base else None


def base_dtype(config: dict[str, Any], path: str | os.PathLike) -> str:
    """The dtype a model's ``config.json`` says its weights are in (``dtype``, or ``torch_dtype`` as transformers
    before 4.56 wrote it); float32, transformers' default, when it names none.

    >>> base_dtype({"dtype": "bfloat16"}, "m"), base_dtype({"torch_dtype": "float16"}, "m"), base_dtype({}, "m")
    ('bfloat16', 'float16', 'float32')
    """
    dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    if dtype not in DTYPES:
        raise InputError(path, f"config.json gives dtype {dtype!r}; a merge needs one of {', '.join(DTYPES)}")
    return dtype


def training_manifest(adapter: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest ``tune train`` wrote into the adapter folder (kept as ``training_manifest`` by an export, so an
    exported adapter exports again); None when there is none."""
    path = Path(adapter) / TRAINING_MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"not JSON ({err}): the training manifest is damaged") from None
    if not isinstance(manifest, dict):
        raise InputError(path, "the training manifest is not a JSON object")
    return manifest.get("training_manifest", manifest)


def check_inputs(cfg: ExportConfig) -> dict[str, Any]:
    """Every check that needs no weights: the adapter's files, the base model, the adapter against the base (its
    recorded base's architecture and widths, the shape of every tensor), the evaluation file, the output. Return
    what the export needs: ``base``, ``base_config``, ``adapter_config``, ``dtype``, ``training``, ``eval``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuning.generation import adapter_mismatch, adapter_shapes, check_adapter, check_adapter_files

    check_adapter_files(cfg.adapter)
    base = cfg.model or adapter_base(cfg.adapter)
    if not base:
        raise InputError(Path(cfg.adapter) / "adapter_config.json", "names no base model "
                                                                    "(base_model_name_or_path); give --model")
    try:
        check_model_source(base)
    except InputError as err:
        if cfg.model:
            raise
        raise InputError(err.path, f"{err.message} (the base named in {cfg.adapter}/adapter_config.json; give "
                                   "--model)") from None
    if cfg.merge:
        from tuning.quantization import saved_quantization

        saved = saved_quantization(base)
        if saved is not None:
            bits = 4 if saved.load_in_4bit else 8
            raise InputError(base, f"is saved quantised (bitsandbytes {bits}-bit): merging into it would quantise the "
                                   "sum again and lose the adapter's update; merge into the unquantised original "
                                   "with --model")
    try:
        config = AutoConfig.from_pretrained(base)
    except (OSError, ValueError) as err:
        raise InputError(base, f"cannot read the model config: {str(err).splitlines()[0]}") from None
    adapter_config = check_adapter(cfg.adapter, config)
    with torch.device("meta"):  # the module tree without weights: enough to check the adapter's shapes
        skeleton = AutoModelForCausalLM.from_config(config)
    problem = adapter_mismatch(adapter_shapes(cfg.adapter), skeleton)
    if problem:
        raise InputError(cfg.adapter, f"adapter does not fit the model {base}: {problem}")
    base_config = json.loads((Path(base) / "config.json").read_text(encoding="utf-8")) if Path(base).is_dir() else {}
    evaluation = read_eval(cfg.eval) if cfg.eval else find_eval(cfg.adapter)
    out = Path(cfg.output)
    if out.is_dir() and any(out.iterdir()):
        raise InputError(cfg.output, "exists and is not empty; export into a new or empty folder")
    own = base_dtype(base_config, Path(base) / "config.json")
    return {"base": base, "base_config": base_config, "adapter_config": adapter_config, "base_dtype": own,
            "dtype": own if cfg.dtype == "base" else cfg.dtype, "training": training_manifest(cfg.adapter),
            "eval": evaluation}


def read_eval(path: str) -> dict[str, Any]:
    """An evaluation for the model card: ``{"path", "markdown", "result"}`` from a ``bioselect evaluate`` JSON
    (tables rendered by :func:`curation.scoring.format_markdown`) or a Markdown file (as it is)."""
    from curation.io import read_text
    from curation.scoring import format_markdown

    text = read_text(path)
    if path.endswith(".md"):
        return {"path": path, "markdown": text.strip() + "\n", "result": None}
    try:
        result = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(path, f"invalid JSON: {err.msg} (line {err.lineno}); give a bioselect evaluate JSON or a "
                               ".md file") from None
    if not isinstance(result, dict) or not {"strict", "outputs", "records"} <= set(result):
        raise InputError(path, "not a bioselect evaluate result (no strict/outputs/records); give its JSON or a .md "
                               "file")
    markdown = format_markdown(result, result.get("name", ""))
    return {"path": path, "markdown": markdown.replace("## Evaluation", "### Evaluation", 1), "result": result}


def find_eval(adapter: str) -> dict[str, Any] | None:
    """The ``eval.json`` in the adapter folder or beside it (``tune experiment`` writes ``RUN/adapter`` and
    ``RUN/eval.json``) whose predictions' manifest names this adapter; None when there is none."""
    folder = Path(adapter)
    for candidate in (folder / EVAL_NAME, folder.parent / EVAL_NAME):
        try:
            result = json.loads(candidate.read_text(encoding="utf-8"))
            pred_manifest = json.loads(Path(str(result["pred"]) + ".manifest.json").read_text(encoding="utf-8"))
            made_with = pred_manifest.get("adapter")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            continue
        if made_with and Path(made_with).is_dir() and os.path.samefile(made_with, folder):
            return read_eval(str(candidate))
    return None


def export(cfg: ExportConfig, command: str | None = None) -> dict[str, Any]:
    """Check the inputs, then write ``cfg.output`` whole (merged model or adapter, tokenizer and chat template,
    ``README.md``, ``manifest.json``); return the manifest. ``command`` is the line the model card gives (default:
    :func:`export_command`)."""
    from tuning.generation import adapter_weights_file
    from tuning.sft_model import load_tokenizer

    info = check_inputs(cfg)
    # the tokenizer saved with the adapter (EOS = the template's end-of-turn token, as trained), else the base's
    tokenizer_source = cfg.adapter if (Path(cfg.adapter) / "tokenizer_config.json").is_file() else info["base"]
    tokenizer = load_tokenizer(tokenizer_source)
    weights = adapter_weights_file(cfg.adapter)  # there: check_inputs checked the adapter's files
    merged = None
    with atomic_folder(cfg.output) as tmp:
        if cfg.merge:
            merged = merge(cfg.adapter, info["base"], info["dtype"])
            merged.save_pretrained(tmp)
            files = ["config.json", *sorted(p.name for p in tmp.glob("*.safetensors*"))]
        else:
            adapter_config = {**info["adapter_config"], "base_model_name_or_path": info["base"]}
            (tmp / "adapter_config.json").write_text(json.dumps(adapter_config, indent=2, sort_keys=True) + "\n",
                                                     encoding="utf-8")
            shutil.copyfile(weights, tmp / weights.name)
            files = ["adapter_config.json", weights.name]
        tokenizer.save_pretrained(tmp)
        precision = describe_precision(cfg.merge, info["dtype"], info["base_dtype"],
                                       (info["training"] or {}).get("quantization"))
        manifest = provenance(
            cfg, [Path(cfg.adapter) / "adapter_config.json", weights, Path(info["base"]) / "config.json",
                  *([info["eval"]["path"]] if info["eval"] else [])],
            base_model=info["base"], merged=cfg.merge, dtype=info["dtype"] if cfg.merge else None,
            precision=precision, tokenizer_from=tokenizer_source, files=files,
            evaluation=info["eval"]["path"] if info["eval"] else None, training_manifest=info["training"])
        card = model_card(cfg, info, precision, command or export_command(cfg))
        (tmp / "README.md").write_text(card, encoding="utf-8")
        write_json(tmp / "manifest.json", manifest)
    return manifest


def merge(adapter: str, base: str, dtype: str):
    """The base model (unquantised, in ``dtype``, on the CPU) with the adapter merged into its weights and peft's
    layers removed: a plain transformers model."""
    from tuning.generation import load_model

    model = load_model(base, adapter, dtype=dtype, device="cpu")
    try:
        return model.merge_and_unload(safe_merge=True)  # safe_merge: NaNs in a merged weight are an error
    except ValueError as err:
        raise InputError(adapter, f"cannot merge: {str(err).splitlines()[0]}") from None


def describe_precision(merged: bool, dtype: str, own_dtype: str, quantization: dict[str, Any] | None) -> str:
    """One paragraph for the model card: what precision the exported weights have (``dtype``; the base's config
    names ``own_dtype``), and why.

    >>> text = describe_precision(True, "bfloat16", "bfloat16", {"bits": 4, "bnb_4bit_quant_type": "nf4"})
    >>> print(text[:78]); print(text[79:134])
    The merged weights are bfloat16, the base model's own dtype (its config.json).
    The adapter was trained on a 4-bit (nf4) quantised base
    """
    trained_on = ""
    if quantization:
        kind = quantization.get("bnb_4bit_quant_type", "int8") if quantization.get("bits") == 4 else "int8"
        trained_on = (f"The adapter was trained on a {quantization.get('bits')}-bit ({kind}) quantised base "
                      "(QLoRA). ")
    if not merged:
        return (trained_on + "The adapter is exported as it was saved; apply it to the base model in the precision "
                "it was trained with for the answers it was trained to give.")
    text = (f"The merged weights are {dtype}, the base model's own dtype (its config.json). " if dtype == own_dtype
            else f"The merged weights are {dtype} (--dtype); the base model's own dtype is {own_dtype}. ")
    if quantization:
        text += (trained_on + "It was merged into the unquantised base, not into quantised weights: adding the "
                 "low-rank update to 4-bit weights and quantising the sum again would round most of the update away "
                 "(it is far smaller than one 4-bit step). So this model is the full-precision base plus the "
                 "adapter; its outputs differ from the quantised base plus the adapter that training saw by the "
                 "quantisation error of the base weights. ")
    text += f"Each merged weight is W + (alpha/r) B A rounded once to {dtype}: "
    if dtype == "float32":
        return text + "the merged model computes what the base plus the adapter compute, to float32 rounding."
    return text + ("the parts of the update smaller than half a step of that dtype round away (an update far smaller "
                   "than the weights is mostly lost), so answers can differ from the base plus the adapter; "
                   "`--dtype float32` keeps the update.")


def export_command(cfg: ExportConfig) -> str:
    """The ``bioselect tune export`` line that makes this export (options at their defaults left out)."""
    args = ["bioselect", "tune", "export", "--adapter", cfg.adapter, "--output", cfg.output]
    if cfg.merge:
        args += ["--merge", "true"]
    if cfg.dtype != "base":
        args += ["--dtype", cfg.dtype]
    for name in ("model", "eval"):
        if getattr(cfg, name):
            args += [f"--{name}", getattr(cfg, name)]
    return shlex.join(args)


def model_card(cfg: ExportConfig, info: dict[str, Any], precision: str, command: str) -> str:
    """``README.md`` of the export: Hugging Face model-card metadata (YAML) and what the folder holds, how it was
    made, on which data (paths and SHA-256 from the training manifest), and its evaluation when one was found."""
    import yaml

    training = info["training"] or {}
    train_config = training.get("config") or {}
    hashes = training.get("inputs") or {}
    train_files = list(train_config.get("train_files") or [])
    quantization = training.get("quantization")
    tags = ["bioselect", "lora", "biomedical", "named-entity-recognition", "text-generation"]
    tags += (["qlora"] if quantization else []) + (["merged"] if cfg.merge else [])
    meta: dict[str, Any] = {
        "base_model": info["base"],
        "library_name": "transformers" if cfg.merge else "peft",
        "pipeline_tag": "text-generation",
        "tags": tags,
    }
    if train_files:
        meta["datasets"] = train_files
        meta["dataset_sha256"] = {p: hashes.get(p) for p in train_files}
    if train_config.get("eval_file"):
        meta["eval_dataset_sha256"] = {train_config["eval_file"]: hashes.get(train_config["eval_file"])}
    name = Path(cfg.output.rstrip("/")).name
    what = (f"`{info['base']}` with a LoRA adapter merged into its weights" if cfg.merge else
            f"A LoRA adapter for `{info['base']}`")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "", f"# {name}", "",
             f"{what}, fine-tuned with bioselect (`bioselect tune train`) to answer biomedical "
             "information-extraction instructions with a JSON list of entities.", ""]
    lines += ["## Use", "", "```python"]
    if cfg.merge:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f"model = AutoModelForCausalLM.from_pretrained({name!r})",
                  f"tokenizer = AutoTokenizer.from_pretrained({name!r})"]
    else:
        lines += ["from peft import PeftModel", "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  f"base = AutoModelForCausalLM.from_pretrained({info['base']!r})",
                  f"model = PeftModel.from_pretrained(base, {name!r})",
                  f"tokenizer = AutoTokenizer.from_pretrained({name!r})"]
    lines += ["```", "", "Prompts are the user turn of the chat template saved here (instruction, blank line, input), "
              "as `bioselect tune generate` renders them; answers end with the template's end-of-turn token, the "
              "tokenizer's EOS.", "", "## Precision", "", precision, ""]
    lines += ["## Training", ""]
    if training:
        t = training.get("training") or {}
        lora = ", ".join(f"{k} {train_config[k]}" for k in ("lora_r", "lora_alpha", "lora_dropout",
                                                             "lora_target_modules") if k in train_config)
        lines += [f"- base model: `{training.get('base_model', info['base'])}`",
                  f"- LoRA: {lora}" if lora else "- LoRA: see adapter_config.json",
                  f"- quantised base: {json.dumps(quantization)}" if quantization else "- quantised base: no",
                  f"- steps: {t.get('global_step')}, epochs {t.get('epochs')}, final train loss "
                  f"{t.get('final_train_loss')}",
                  f"- learning rate {train_config.get('lr')}, batch {train_config.get('batch_size')} x "
                  f"{train_config.get('grad_accum')} accumulation, max length {train_config.get('max_length')}",
                  f"- bioselect {training.get('bioselect_version')}, commit {training.get('git_commit')}", ""]
        per_dataset = (training.get("data") or {}).get("per_dataset") or {}
        lines += ["| training file | sha256 |", "|---|---|"]
        lines += [f"| `{p}` | `{hashes.get(p)}` |" for p in train_files]
        if per_dataset:
            lines += ["", "Records per dataset: " + ", ".join(f"{k} {v}" for k, v in per_dataset.items()) + "."]
        lines.append("")
    else:
        lines += [f"No training manifest (`{TRAINING_MANIFEST}` of `bioselect tune train`) was found in the adapter "
                  "folder, so the training data is not recorded here.", ""]
    lines += ["## Evaluation", ""]
    if info["eval"]:
        lines += [f"From `{info['eval']['path']}`.", "", info["eval"]["markdown"].rstrip(), ""]
    else:
        lines += ["No evaluation was given or found beside the adapter.", ""]
    lines += ["## How this folder was made", "", "```", command, "```", "",
              "`manifest.json` holds the resolved options, the SHA-256 of the adapter and the base's config.json, "
              "the bioselect version and git commit, and the training manifest.", ""]
    return "\n".join(lines)


def _main(argv: Sequence[str] | None = None) -> int:
    cfg, _ = parse_config(ExportConfig, argv, prog="bioselect tune export", description=__doc__.split("\n\n")[0])
    m = export(cfg)
    kind = f"merged model ({m['dtype']})" if cfg.merge else "adapter"
    evaluation = f"; evaluation from {m['evaluation']}" if m["evaluation"] else ""
    print(f"wrote the {kind}, tokenizer, chat template, README.md and manifest.json to {cfg.output}{evaluation}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
