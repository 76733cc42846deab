"""Where the real corpora and weights live, and skips with a clear reason when they are absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_DATA = SHARED / "data"
ASSETS = Path(__file__).resolve().parent / "assets"


def offline_model(name: str) -> Path | None:
    """The folder ``../shared/models/fetch-models`` writes for ``name``, if it is there."""
    root = Path(os.environ.get("OFFLINE_MODELS", Path.home() / ".cache" / "offline-models"))
    folder = root / name
    return folder if (folder / "config.json").is_file() else None


def fetch_command(name: str) -> str:
    """The command that brings model ``name`` into ~/.cache/offline-models (``make models`` fetches two of them)."""
    if name in ("smollm2-135m", "minilm-l6"):  # the Makefile's `models` target
        return "make models"
    return f"../shared/models/fetch-models --python .venv/bin/python {name}"


def real_file(*parts: str) -> Path:
    """A file under ../shared/data, or a skip naming what is missing."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real corpus file not found: {path}")
    return path


def free_port() -> int:
    """A TCP port on the loopback interface that is free now (for a torch.distributed rendezvous in a test)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_group(cmd: list[str], timeout: float, **kwargs):
    """``subprocess.run`` in a new process group that is killed whole on timeout, with every descendant (a
    launcher's workers included), so a hung multi-process test fails instead of leaving ranks behind."""
    import contextlib
    import signal
    import subprocess

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        import psutil

        # torchrun starts its workers in sessions of their own, out of reach of killpg: kill every descendant. Stop
        # the group first and every descendant found until none is new, so nothing forks between the listing and
        # the kill (a child started in its own session just after a listing would otherwise survive)
        os.killpg(proc.pid, signal.SIGSTOP)
        stopped: dict[int, psutil.Process] = {}
        while True:
            try:
                new = [c for c in psutil.Process(proc.pid).children(recursive=True) if c.pid not in stopped]
            except psutil.NoSuchProcess:
                new = []
            if not new:
                break
            for child in new:
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.suspend()
                stopped[child.pid] = child
        for child in stopped.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"timed out after {timeout} s: {' '.join(cmd)}\nstdout: {out[-2000:]}\n"
                             f"stderr: {err[-3000:]}") from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Autouse in the modules that import it: their tiny models run on one torch thread. On a shared 2-core machine
    two OpenMP threads stall at every barrier when the other core is busy (0.95 s vs 2-15 s per SmolLM2 forward
    under load, tests/curation/test_ifd_real.py); when idle, one thread costs < 2x."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mlflow_store(tmp_path: Path, monkeypatch, experiment: str):
    """A local MLflow store (a SQLite file under ``tmp_path``, no server) made the process's and the environment's
    tracking URI, with ``experiment`` as MLFLOW_EXPERIMENT_NAME and telemetry off; returns a client on it. Skips the
    test where the tracking extra is not installed."""
    mlflow = pytest.importorskip("mlflow", reason="the tracking extra is not installed (bioselect[tracking])")
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", experiment)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    mlflow.set_tracking_uri(uri)  # the process-wide URI (another test may have set one) is the store made here
    return MlflowClient(tracking_uri=uri)
