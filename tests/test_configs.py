"""Every shipped training recipe (configs/tune_*.yaml) parses into its dataclass, and every accelerate config
(configs/accelerate/*.yaml) loads with accelerate's own config loader; each opens with the command that runs it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from curation.cli import parse_config
from tests.helpers import REPO
from tuning.train import RENAMED, TrainConfig

CONFIGS = REPO / "configs"
TUNE_RECIPES = sorted(CONFIGS.glob("tune_*.yaml"))
ACCELERATE_CONFIGS = sorted((CONFIGS / "accelerate").glob("*.yaml"))


def test_the_recipes_are_there():
    assert {p.name for p in TUNE_RECIPES} >= {"tune_smollm2_135m_cpu.yaml", "tune_qwen2.5_0.5b.yaml",
                                              "tune_qwen3_8b_lora.yaml", "tune_qwen3_8b_qlora.yaml"}
    assert {p.name for p in ACCELERATE_CONFIGS} >= {"single_gpu.yaml", "ddp.yaml", "fsdp.yaml",
                                                    "deepspeed_zero2.yaml"}


@pytest.mark.parametrize("recipe", TUNE_RECIPES, ids=lambda p: p.name)
def test_tune_recipe_parses_into_train_config(recipe: Path, capsys):
    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# ") and f"--config configs/{recipe.name}" in first
    cfg, _ = parse_config(TrainConfig, ["--config", str(recipe)], prog="test")
    assert capsys.readouterr().err == ""  # no deprecated option name (tuning.train.RENAMED) and no other warning
    raw = yaml.safe_load(recipe.read_text())
    assert set(raw) <= {f for f in TrainConfig.__dataclass_fields__} and not set(raw) & set(RENAMED)
    assert cfg.recipe()["learning_rate"] == raw.get("learning_rate", 2e-4)
    assert cfg.train_files and cfg.output_dir.startswith("runs/")
    assert cfg.load_in_4bit == ("qlora" in recipe.name)
    from tuning.sft_model import lora_config

    assert lora_config(cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_target_modules).r == cfg.lora_r


@pytest.mark.parametrize("path", ACCELERATE_CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_loads_with_accelerate(path: Path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    first = path.read_text().splitlines()[0]
    assert first.startswith("# accelerate launch --config_file configs/accelerate/" + path.name)
    cfg = load_config_from_file(str(path))
    assert isinstance(cfg, ClusterConfig) and not cfg.use_cpu
    expected = {"single_gpu": DistributedType.NO, "ddp": DistributedType.MULTI_GPU, "fsdp": DistributedType.FSDP,
                "deepspeed_zero2": DistributedType.DEEPSPEED}
    assert cfg.distributed_type == expected[path.stem]
    if path.stem == "fsdp":
        assert cfg.fsdp_config["fsdp_version"] == 2
    if path.stem == "deepspeed_zero2":
        assert cfg.deepspeed_config["zero_stage"] == 2


EXPERIMENTS = sorted([*CONFIGS.glob("demo_*.yaml"), *CONFIGS.glob("bioselecttune_*.yaml")])


@pytest.mark.parametrize("recipe", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_recipe_parses_into_experiment_config(recipe: Path, monkeypatch):
    from tests.helpers import SHARED_DATA
    from tuning.experiment import ExperimentConfig, plan

    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# bioselect tune experiment --config configs/" + recipe.name)
    if "accelerate launch" in first:  # a GPU recipe shows its launch too
        assert f"-m tuning.experiment --config configs/{recipe.name}" in first
    raw = yaml.safe_load(recipe.read_text())
    assert set(raw) <= set(ExperimentConfig.__dataclass_fields__)
    if not SHARED_DATA.exists():
        pytest.skip(f"{SHARED_DATA} not found: the recipe's corpora are checked when it parses")
    monkeypatch.chdir(REPO)
    cfg, _ = parse_config(ExperimentConfig, ["--config", str(recipe)], prog="test")
    runs = plan(cfg)
    assert cfg.output_dir.startswith("runs/") and runs and all(r.steps[-1].name == "evaluate" for r in runs
                                                                  if r.steps)


@pytest.mark.parametrize("recipe", sorted(CONFIGS.glob("sru_*.yaml")), ids=lambda p: p.name)
def test_sru_recipe_parses_into_its_config(recipe: Path):
    from mtl_baselines.sru_ner.config import TrainConfig as SRUConfig

    first = recipe.read_text().splitlines()[0]
    assert first.startswith("# bioselect mtl sru --config configs/" + recipe.name)
    assert set(yaml.safe_load(recipe.read_text())) <= set(SRUConfig.__dataclass_fields__)
    cfg, _ = parse_config(SRUConfig, ["--config", str(recipe)], prog="test")
    assert cfg.output.startswith("runs/") and cfg.corpus_paths()
    assert set(cfg.corpus_types()) | set(cfg.corpus_parts()) <= set(cfg.corpus_paths())
