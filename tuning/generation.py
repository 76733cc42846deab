"""Generation for ``bioselect tune generate``: load a model (and adapter), then batched, left-padded greedy decoding.

    >>> from prompts import instruction
    >>> instruction_labels(instruction("ner", ["Chemical", "Disease"]))
    ['Chemical', 'Disease']

Loading checks everything a run needs before any generation starts, raising :class:`curation.io.InputError` (one
line, exit code 2): a model folder without config or weights, a tokenizer without a chat template, an adapter folder
without ``adapter_config.json`` or weights, an adapter made for another base model (its recorded base's
architecture, vocabulary or hidden size differ from the model's, or its weights do not fit the model's layers).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curation.io import InputError
from curation.scoring import names_to_spans, parse_answer, parse_output
from tuning.constrained import GrammarLogitsProcessor, close_truncated, ll_tokenizer

ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_weights_file(adapter: str | os.PathLike | None) -> Path | None:
    """The weights file of a PEFT adapter folder (the first of :data:`ADAPTER_WEIGHTS` there), None without one."""
    return next((Path(adapter) / n for n in ADAPTER_WEIGHTS if (Path(adapter) / n).is_file()), None) if adapter \
        else None
# config fields an adapter's base must share with the model it is loaded onto
BASE_FIELDS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers")


def instruction_labels(instruction: str, task: str = "ner") -> list[str] | None:
    """The label list a task's instruction names (the ``{labels}`` slot of ``prompts/templates/<task>.txt``: entity
    types, relation types, event types or classes), or None when the instruction does not follow the shipped
    template (:func:`prompts.instruction_labels`)."""
    from prompts import instruction_labels as labels_of

    return labels_of(task, instruction)


@dataclass
class Generated:
    """One generated answer: ``text`` (special tokens removed), ``n_new_tokens`` (generated tokens including the
    stop token), ``finish`` (``"stop"``: a stop token ended it; ``"length"``: ``max_new_tokens`` ran out; a
    constrained list is then cut back to its last complete item, see :func:`tuning.constrained.close_truncated`).
    """

    text: str
    n_new_tokens: int
    finish: str


@dataclass
class GenerationStats:
    """Time and token counts accumulated over :func:`generate` calls."""

    seconds: float = 0.0  # wall time of generation (matchers, prompt processing and decoding)
    constraint_seconds: float = 0.0  # of which building matchers and masking logits
    new_tokens: int = 0
    steps: int = 0  # decoding steps summed over batches

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.seconds if self.seconds else 0.0


def prediction_row(record: dict[str, Any], gen: Generated, labels: Sequence[str] | None) -> dict[str, Any]:
    """A prediction line: the record's ``task``, the answer, its parse/schema ``status`` (under ``labels``) and, for
    NER, its names placed in the input as ``spans``.

    NER: ``spans`` come only from the generated names (:func:`curation.scoring.names_to_spans`: the k-th listing of
    a (type, name) is the k-th occurrence); names that cannot be placed are left out and counted in ``unplaced``.
    RE, EE, TC: ``status`` is :func:`curation.scoring.parse_answer`'s, ``spans`` is empty and ``unplaced`` counts
    the mentions (heads and tails, triggers and arguments) of a valid answer that occur nowhere in the input.

    >>> row = prediction_row({"id": "s1", "input": "cancer and cancer"}, Generated(
    ...     '[{"entity": "Disease", "name": "cancer"}, {"entity": "Disease", "name": "cancer"}]', 21, "stop"),
    ...     ["Disease"])
    >>> row["spans"], row["status"], row["unplaced"]
    ([[0, 6, 'Disease'], [11, 17, 'Disease']], 'ok', 0)
    >>> row = prediction_row({"id": "s2", "task": "re", "input": "aspirin caused rash"}, Generated(
    ...     '[{"head": "aspirin", "relation": "ADE", "tail": "fever"}]', 19, "stop"), ["ADE"])
    >>> row["task"], row["status"], row["unplaced"]
    ('re', 'ok', 1)
    """
    task = record.get("task", "ner")
    if task == "ner":
        entities, status = parse_output(gen.text, labels)
        placed = names_to_spans(record["input"], entities)
        spans, unplaced = [[s.start, s.end, s.label] for s in placed if s], sum(s is None for s in placed)
    else:
        answer = parse_answer(task, gen.text, labels)
        status, spans = answer.status, []
        if task == "re":
            mentions = [m for head, _, _, tail, _ in answer.items for m in (head, tail)]
        elif task == "ee":
            mentions = [m for _, trigger, args in answer.items for m in (trigger, *(x for _, x in args))]
        else:
            mentions = []
        found = {m: names_to_spans(record["input"], [("", m)])[0] is not None for m in set(mentions)}
        unplaced = sum(not found[m] for m in mentions)
    return {"id": record["id"], "task": task, "output": gen.text, "spans": spans, "status": status,
            "unplaced": unplaced, "n_new_tokens": gen.n_new_tokens, "finish": gen.finish}


def load_tokenizer(model: str, adapter: str | None = None):
    """The tokenizer saved with the adapter when there is one, else the model's; it must carry a chat template.
    Padding is on the left (the answer continues every prompt's last token); a missing pad token becomes EOS."""
    from tuning.sft_model import load_tokenizer as load

    source = adapter if adapter and (Path(adapter) / "tokenizer_config.json").is_file() else model
    tokenizer = load(source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def stop_token_ids(tokenizer, generation_config=None) -> list[int]:
    """Token ids that end an answer: the chat template's end-of-turn token, the tokenizer's EOS and the model's
    generation-config EOS ids."""
    from tuning.sft_model import end_of_turn_token

    ids = set()
    eot = end_of_turn_token(tokenizer)
    if eot is not None:
        ids.add(tokenizer.convert_tokens_to_ids(eot))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    eos = getattr(generation_config, "eos_token_id", None)
    ids.update([eos] if isinstance(eos, int) else eos or [])
    return sorted(ids)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(path, f"cannot read the {what}: {err}") from None


def check_adapter_files(adapter: str) -> None:
    """An adapter folder must hold ``adapter_config.json`` and adapter weights."""
    folder = Path(adapter)
    if not folder.is_dir():
        raise InputError(adapter, "no such adapter folder")
    if not (folder / "adapter_config.json").is_file():
        raise InputError(adapter, "not a PEFT adapter folder (no adapter_config.json)")
    if adapter_weights_file(folder) is None:
        raise InputError(adapter, f"adapter folder has no weights ({' or '.join(ADAPTER_WEIGHTS)})")


def check_adapter(adapter: str, model_config) -> dict[str, Any]:
    """Check an adapter folder against the base model's config before loading it; return its ``adapter_config``.

    The adapter's recorded base (``base_model_name_or_path``), when it is a local folder with a ``config.json``,
    must agree with the model on :data:`BASE_FIELDS`. A base that differs only in name is accepted (paths differ
    between machines); :func:`adapter_mismatch` then checks the weights against the model's layers.
    """
    check_adapter_files(adapter)
    folder = Path(adapter)
    config = _read_json(folder / "adapter_config.json", "adapter config")
    base = config.get("base_model_name_or_path")
    if base and (Path(base) / "config.json").is_file():
        base_config = _read_json(Path(base) / "config.json", "adapter's base model config")
        for key in BASE_FIELDS:
            ours = getattr(model_config, key, None)
            if key in base_config and ours is not None and base_config[key] != ours:
                raise InputError(adapter, f"adapter was made for {base} ({key} {base_config[key]}), but the model "
                                          f"has {key} {ours}")
    return config


LORA_AXES = {"lora_A": (1, "in_features"), "lora_B": (0, "out_features"),
             "lora_embedding_A": (1, "num_embeddings"), "lora_embedding_B": (0, "embedding_dim")}
_LORA_KEY = re.compile(r"(.+)\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.weight)?$")


def adapter_mismatch(shapes: dict[str, Sequence[int]], model) -> str | None:
    """The first adapter tensor that does not fit ``model`` (any module tree, e.g. built on the meta device),
    described; None when every tensor fits.

    ``shapes`` maps peft's saved keys (``base_model.model.<module>.lora_A.weight``, or a full parameter saved with
    ``modules_to_save``) to shapes. A LoRA factor must match its module's input or output width (or an embedding's
    size); a full parameter must match the model's. Keys of other kinds are not checked.

    >>> import torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 3))
    >>> adapter_mismatch({"base_model.model.0.lora_A.weight": [2, 4], "base_model.model.0.lora_B.weight": [3, 2]},
    ...                  model) is None
    True
    >>> adapter_mismatch({"base_model.model.0.lora_A.weight": [2, 8]}, model)
    "base_model.model.0.lora_A.weight has in_features 8 but the model's 0 has 4"
    >>> adapter_mismatch({"base_model.model.1.lora_A.weight": [2, 4]}, model)
    'the adapter has weights for 1, which the model lacks'
    """
    modules = dict(model.named_modules())
    params = {name: list(p.shape) for name, p in model.named_parameters()}
    for key, shape in shapes.items():
        name = key.removeprefix("base_model.model.")
        lora = _LORA_KEY.match(name)
        if lora:
            module = modules.get(lora.group(1))
            if module is None:
                return f"the adapter has weights for {lora.group(1)}, which the model lacks"
            axis, attr = LORA_AXES[lora.group(2)]
            want = getattr(module, attr, None)
            if want is not None and len(shape) == 2 and shape[axis] != want:
                return f"{key} has {attr} {shape[axis]} but the model's {lora.group(1)} has {want}"
        elif name in params and list(shape) != params[name]:
            return f"{key} has shape {list(shape)} but the model's {name} has {params[name]}"
    return None


def adapter_shapes(adapter: str) -> dict[str, list[int]]:
    """Shapes of an adapter's saved tensors, read from the safetensors header (or a small ``.bin``)."""
    folder = Path(adapter)
    if (folder / ADAPTER_WEIGHTS[0]).is_file():
        from safetensors import safe_open

        try:
            with safe_open(folder / ADAPTER_WEIGHTS[0], framework="pt") as f:
                return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception as err:  # safetensors raises its own error types for a damaged header
            raise InputError(folder / ADAPTER_WEIGHTS[0], f"cannot read the adapter weights: {err}") from None
    import torch

    try:
        state = torch.load(folder / ADAPTER_WEIGHTS[1], map_location="cpu", weights_only=True)
    except Exception as err:  # torch.load raises many kinds of error for a damaged file
        raise InputError(folder / ADAPTER_WEIGHTS[1], f"cannot read the adapter weights: {err}") from None
    return {k: list(v.shape) for k, v in state.items()}


def _first_line(err: BaseException) -> str:
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    mismatch = next((line for line in lines if line.startswith("size mismatch")), None)
    return mismatch or (lines[0] if lines else type(err).__name__)


def resolve_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32  # "cuda" or "cuda:N"
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_model(model: str, adapter: str | None = None, dtype: str = "auto", device: str | None = None,
               quantization_config=None, saved_quantized: bool | None = None):
    """The causal LM in eval mode on ``device`` (CUDA when available), with the adapter applied when given.

    ``dtype`` ``auto`` is float32 on CPU and bfloat16 on CUDA; it is the dtype of the layers a
    ``quantization_config`` (``transformers.BitsAndBytesConfig``, :func:`tuning.quantization.bnb_config`) leaves
    unquantised. A quantised model is loaded straight onto ``device``. ``saved_quantized``: whether the checkpoint was
    saved quantised (:func:`tuning.quantization.saved_quantization`), read from its config when not given.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from curation.io import check_model_source

    check_model_source(model)
    device = device or default_device()
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as err:
        raise InputError(model, f"cannot read the model config: {_first_line(err)}") from None
    if adapter:
        check_adapter(adapter, config)
        with torch.device("meta"):  # the module tree without weights: enough to check the adapter's shapes
            skeleton = AutoModelForCausalLM.from_config(config)
        problem = adapter_mismatch(adapter_shapes(adapter), skeleton)
        if problem:
            raise InputError(adapter, f"adapter does not fit the model {model}: {problem}")
    if saved_quantized is None:
        from tuning.quantization import saved_quantization

        saved_quantized = saved_quantization(model) is not None
    quantized = quantization_config is not None or saved_quantized  # a checkpoint saved quantised loads so
    placement = {"device_map": {"": device}} if quantized else {}
    if quantization_config is not None:
        placement["quantization_config"] = quantization_config
    try:
        lm = AutoModelForCausalLM.from_pretrained(model, dtype=resolve_dtype(dtype, device), **placement)
    except (OSError, ValueError) as err:
        raise InputError(model, f"cannot load the model: {_first_line(err)}") from None
    if quantized:
        from tuning.quantization import release_mapped_checkpoint

        release_mapped_checkpoint(lm)  # the unquantised layers' views keep the whole checkpoint mapped
    if adapter:
        from peft import PeftModel

        try:
            lm = PeftModel.from_pretrained(lm, adapter)
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            raise InputError(adapter, f"adapter does not fit the model {model}: {_first_line(err)}") from None
    return (lm if quantized else lm.to(device)).eval()


def plan_batches(lengths: Sequence[int], batch_size: int, sort_by_length: bool = True) -> list[list[int]]:
    """Indices of the prompts in each batch: by token length, longest first (ties in input order), so a batch's
    prompts have similar lengths and little padding; in input order with ``sort_by_length=False``.

    >>> plan_batches([3, 9, 5, 9, 1], 2)
    [[1, 3], [2, 0], [4]]
    >>> plan_batches([3, 9, 5, 9, 1], 2, sort_by_length=False)
    [[0, 1], [2, 3], [4]]
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
    return [order[lo:lo + batch_size] for lo in range(0, len(order), batch_size)]


def padding_tokens(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> tuple[int, int]:
    """``(pad tokens, all prompt tokens)`` of left-padded ``batches``: every prompt is padded to its batch's longest.

    >>> padding_tokens([3, 9, 5, 9, 1], [[1, 3], [2, 0], [4]])  # pads 0 + 2 + 0 of 18 + 10 + 1 tokens
    (2, 29)
    >>> padding_tokens([3, 9, 5, 9, 1], [[0, 1], [2, 3], [4]])
    (10, 37)
    """
    pad = total = 0
    for batch in batches:
        longest = max((lengths[i] for i in batch), default=0)
        pad += sum(longest - lengths[i] for i in batch)
        total += longest * len(batch)
    return pad, total


def prompt_token_ids(tokenizer, prompts: Sequence[str]) -> list[list[int]]:
    """Token ids of each rendered prompt (no special tokens added: the chat template has them)."""
    return list(tokenizer(list(prompts), add_special_tokens=False)["input_ids"]) if prompts else []


def generate(model, tokenizer, prompts: Sequence[str], grammars: Sequence[str] | None = None, batch_size: int = 8,
             max_new_tokens: int = 256, stats: GenerationStats | None = None,
             batches: Sequence[Sequence[int]] | None = None,
             on_batch: Callable[[list[int], list[Generated]], None] | None = None,
             prompt_ids: Sequence[Sequence[int]] | None = None,
             repetition_penalty: float = 1.0) -> list[Generated | None]:
    """Greedy answers to rendered prompts, in order; constrained by ``grammars`` (one Lark grammar per prompt).

    Prompts are batched by token length (:func:`plan_batches`: longest first, to waste little padding), or as
    ``batches`` (lists of prompt indices; prompts in no batch get ``None``), and left-padded; in float32 a prompt's
    greedy answer does not depend on its batch (tested; lower precision can differ in rare near-ties). ``on_batch``
    is called with each finished batch's indices and answers (to save them as they come). ``stats`` (when given)
    accumulates time and token counts. ``prompt_ids`` are the prompts' token ids (:func:`prompt_token_ids`) when the
    caller has them already; each prompt is tokenized once. ``repetition_penalty`` (1: off) is transformers' CTRL
    penalty, applied before the grammar's mask, so answers stay valid.
    """
    import torch
    from transformers import GenerationConfig, LogitsProcessorList

    stats = stats if stats is not None else GenerationStats()
    stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))
    vocab_size = model.get_output_embeddings().weight.shape[0]
    gen_config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, eos_token_id=stop_ids,
                                  pad_token_id=tokenizer.pad_token_id, repetition_penalty=repetition_penalty)
    start = time.perf_counter()
    ll_tok = ll_tokenizer(tokenizer, vocab_size, stop_ids) if grammars is not None else None
    if ll_tok is not None:
        stats.constraint_seconds += time.perf_counter() - start
    token_ids = list(prompt_ids) if prompt_ids is not None else prompt_token_ids(tokenizer, prompts)
    lengths = [len(x) for x in token_ids]
    if batches is None:
        batches = plan_batches(lengths, batch_size)
    device = next(model.parameters()).device
    results: list[Generated | None] = [None] * len(prompts)
    for batch in batches:
        idx = sorted(batch, key=lambda i: -lengths[i])  # the rows' order in the batch does not depend on the plan
        enc = tokenizer.pad({"input_ids": [token_ids[i] for i in idx]}, padding=True, return_tensors="pt")
        enc = {k: v.to(device) for k, v in enc.items()}
        processors = LogitsProcessorList()
        if grammars is not None:
            proc = GrammarLogitsProcessor(ll_tok, [grammars[i] for i in idx], stop_ids)
            processors.append(proc)
        with torch.inference_mode():
            out = model.generate(**enc, generation_config=gen_config, logits_processor=processors)
        new = out[:, enc["input_ids"].shape[1]:].tolist()
        stats.steps += len(new[0]) if new else 0
        if grammars is not None:
            stats.constraint_seconds += proc.seconds
        for i, ids in zip(idx, new, strict=True):
            end = next((k for k, t in enumerate(ids) if t in stop_ids), None)
            finish = "length" if end is None else "stop"
            n = len(ids) if end is None else end + 1
            # no clean-up of tokenization spaces: it would turn the text's " ." into "." and break names
            text = tokenizer.decode(ids if end is None else ids[:end], skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False)
            if grammars is not None and finish == "length":
                text = close_truncated(text)
            results[i] = Generated(text=text, n_new_tokens=n, finish=finish)
            stats.new_tokens += n
        if on_batch is not None:
            on_batch(list(batch), [results[i] for i in batch])
    stats.seconds += time.perf_counter() - start
    return results
