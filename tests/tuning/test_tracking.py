"""`tune train --report_to mlflow` into a local MLflow store (SQLite, no server, no network): the run's parameters and
metrics are read back with `mlflow.tracking.MlflowClient`."""

from __future__ import annotations

import ipaddress
import socket

import pytest
import torch

from tests.helpers import mlflow_store
from tests.tuning.test_eval_generate import ner_records, write
from tuning.train import TrainConfig, train

pytest.importorskip("mlflow", reason="the tracking extra is not installed: pip install 'bioselect[tracking]'")


@pytest.fixture
def no_network(monkeypatch):
    """Refuse every connection that leaves the machine (MLflow's store here is a local SQLite file)."""
    connect = socket.socket.connect

    def local_only(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6) and not ipaddress.ip_address(address[0]).is_loopback:
            raise AssertionError(f"a connection to {address} was attempted")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")


def test_mlflow_gets_the_params_the_losses_and_the_generation_metrics(tiny_model, tmp_path, monkeypatch, no_network):
    client = mlflow_store(tmp_path, monkeypatch, "bioselect-test")
    torch.set_num_threads(1)
    data = write(tmp_path / "train.jsonl", ner_records(8, "toy"))
    dev = write(tmp_path / "dev.jsonl", ner_records(4, "dev", start=100))
    cfg = TrainConfig(model=str(tiny_model), train_files=[str(data)], output_dir=str(tmp_path / "out"), max_steps=4,
                      per_device_train_batch_size=2, max_length=256, lora_r=4, lora_alpha=8, logging_steps=2,
                      eval_steps=2, save_steps=2, learning_rate=3e-3, eval_file=str(dev), eval_generate=True,
                      eval_max_new_tokens=16, report_to="mlflow", disable_tqdm=True)
    manifest = train(cfg)

    experiment = client.get_experiment_by_name("bioselect-test")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.params["learning_rate"] == str(cfg.learning_rate)
    assert run.data.params["lora_r"] == "4" and run.data.params["eval_generate"] == "True"
    loss = client.get_metric_history(run.info.run_id, "loss")
    # logging_first_step, then every 2 steps: steps 1, 2, 4, the values of the manifest's loss curve
    curve = manifest["training"]["loss_curve"]
    assert [m.step for m in loss] == [step for step, _ in curve] == [1, 2, 4]
    assert [m.value for m in loss] == pytest.approx([value for _, value in curve])
    f1 = client.get_metric_history(run.info.run_id, "eval_strict_f1")
    assert sorted({m.step for m in f1}) == [0, 2, 4]  # eval_on_start, every eval_steps (and the final evaluation)
    assert all(0.0 <= m.value <= 1.0 for m in f1)
