"""``tune experiment --report_to mlflow``: one MLflow run per (arm, rho, seed) of a study, holding its training
losses and its test scores.

Before a run's steps, the study opens (or, when resuming, reopens) the run's MLflow run and lends its id to the
training step through ``MLFLOW_RUN_ID``, so transformers' MLflow callback logs the training parameters and losses
into it; once the run is scored, the study adds its row of ``results.csv`` as metrics (``test_`` in front of the
scores: ``test_strict_f1``, ``test_strict_f1_lo``, ...; the training columns under their own names) and the arm,
rho, seed and study folder as tags. The run's id is kept in ``RUN_FOLDER/mlflow_run.json`` (so a killed study
started again logs into the same run) and ``RUN_FOLDER/mlflow_logged.json`` marks a run whose scores are logged
(so a study reported twice logs them once). The zero-shot run has no training: its MLflow run holds the scores.

The store is ``MLFLOW_TRACKING_URI`` (a local ``sqlite:///...`` file needs no server) and the experiment
``MLFLOW_EXPERIMENT_NAME`` (default: ``bioselect``), as for ``tune train``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

RUN_FILE = "mlflow_run.json"
LOGGED_FILE = "mlflow_logged.json"
DEFAULT_EXPERIMENT = "bioselect"
# results.csv columns that name a run rather than measure it (tags, not metrics)
NOT_METRICS = ("run", "arm", "ratio", "seed", "loss_curve", "resumed")
# training columns logged under their own names; every other number is a test score
TRAINING = ("train_records", "train_positives", "train_negatives", "steps", "epochs", "train_seconds",
            "tokens_per_s", "seconds_per_epoch", "final_train_loss")


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def _experiment_id(client: Any) -> str:
    name = experiment_name()
    found = client.get_experiment_by_name(name)
    return found.experiment_id if found is not None else client.create_experiment(name)


def run_id(study_dir: str | os.PathLike, key: str, folder: str | os.PathLike) -> str:
    """The MLflow run of the study's run ``key``: the one ``folder`` records, else a new one (named ``key``, tagged
    with the study folder, its id written to ``folder/mlflow_run.json``, temp file then rename)."""
    from curation.io import write_json

    record = Path(folder) / RUN_FILE
    if record.is_file():
        return json.loads(record.read_text(encoding="utf-8"))["run_id"]
    client = _client()
    run = client.create_run(_experiment_id(client), run_name=key,
                            tags={"bioselect.study": str(Path(study_dir).resolve()), "bioselect.run": key})
    Path(folder).mkdir(parents=True, exist_ok=True)
    write_json(record, {"run_id": run.info.run_id, "experiment": experiment_name(), "tracking_uri": _uri()})
    return run.info.run_id


def _uri() -> str:
    import mlflow

    return mlflow.get_tracking_uri()


@contextlib.contextmanager
def lend_run(run: str) -> Iterator[None]:
    """``MLFLOW_RUN_ID`` (and the experiment's name) set for the steps inside, restored after: transformers' MLflow
    callback then logs into ``run`` instead of opening one of its own."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME")}
    os.environ.update(MLFLOW_RUN_ID=run, MLFLOW_EXPERIMENT_NAME=experiment_name())
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def metrics_of(row: Mapping[str, Any]) -> dict[str, float]:
    """A ``results.csv`` row's numbers as MLflow metrics: scores with ``test_`` in front, training columns as they are.

    >>> metrics_of({"run": "lora-ifd/rho-0.5/seed-0", "arm": "lora-ifd", "ratio": 0.5, "seed": 0, "records": 301,
    ...             "strict_f1": 0.447, "strict_f1_lo": None, "steps": 180, "resumed": False})
    {'test_records': 301.0, 'test_strict_f1': 0.447, 'steps': 180.0}
    """
    out = {}
    for key, value in row.items():
        if key in NOT_METRICS or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out[key if key in TRAINING else f"test_{key}"] = float(value)
    return out


def log_results(study_dir: str | os.PathLike, rows: Sequence[Mapping[str, Any]], folders: Mapping[str, str]) -> int:
    """Log each finished run's row into its MLflow run, once (``mlflow_logged.json``); return how many were logged."""
    import time

    from mlflow.entities import Metric, RunTag

    from curation.io import write_json

    client, logged = None, 0
    for row in rows:
        folder = Path(folders[row["run"]])
        if (folder / LOGGED_FILE).is_file():
            continue
        client = client or _client()
        rid = run_id(study_dir, row["run"], folder)
        now = int(time.time() * 1000)
        client.log_batch(rid, metrics=[Metric(k, v, now, 0) for k, v in metrics_of(row).items()],
                         tags=[RunTag(f"bioselect.{k}", str(row[k])) for k in ("arm", "ratio", "seed")
                               if row.get(k) is not None])
        client.set_terminated(rid, "FINISHED")
        write_json(folder / LOGGED_FILE, {"run_id": rid})
        logged += 1
    return logged
