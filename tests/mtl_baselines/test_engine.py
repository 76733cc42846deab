"""The shared training engine (mtl_baselines.engine): the schedule against transformers', the loop against a plain
hand-written one (bit for bit), gradient accumulation against one large batch, checkpoints written whole and
resumed after kill -9, and every baseline under `accelerate launch --num_processes 2` on CPU (one output folder,
the files of a one-process run, each process trained on half the rows)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from curation.io import InputError
from mtl_baselines import engine
from mtl_baselines.engine import EngineArgs, linear_warmup_decay
from tests.helpers import (
    mlflow_store,
    one_torch_thread,  # noqa: F401 (autouse: the module's tests run on one torch thread)
    run_group,
)

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "tests" / "assets"



def test_schedule_is_transformers_linear_warmup():
    from transformers import get_linear_schedule_with_warmup

    for total, warmup in ((10, 2), (7, 0), (5, 5), (1, 0)):
        opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = get_linear_schedule_with_warmup(opt, warmup, total)
        for step in range(total + 1):
            assert linear_warmup_decay(step, total, warmup) == pytest.approx(sched.get_last_lr()[0], abs=1e-12)
            opt.step()
            sched.step()


# ---------------------------------------------------------------------------------------------------------------
# the loop against a hand-written reference on a tiny regression model


def _data(n: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, generator=g)
    return x, x @ torch.tensor([1.0, -2.0, 0.5, 0.0, 3.0]) + 0.1 * torch.randn(n, generator=g)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Dropout(0.1), nn.ReLU(), nn.Linear(8, 1))


def _step(m: nn.Module, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
    loss = ((m(batch["x"]).squeeze(-1) - batch["y"]) ** 2).mean()
    return loss, {"rows": float(len(batch["y"]))}


def _groups(m: nn.Module) -> list[dict]:
    return [{"params": [p for p in m.parameters() if p.ndim >= 2], "weight_decay": 0.01},
            {"params": [p for p in m.parameters() if p.ndim < 2], "weight_decay": 0.0, "lr": 3e-2,
             "constant_lr": True}]


def _reference(m: nn.Module, x, y, plan, lr: float, warmup_ratio: float) -> list[float]:
    """The loop each baseline carried before the engine: AdamW, LambdaLR, clip to 1, one batch per step."""
    opt = torch.optim.AdamW([{k: v for k, v in g.items() if k != "constant_lr"} for g in _groups(m)], lr=lr)
    total, warmup = len(plan), round(warmup_ratio * len(plan))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [lambda s: linear_warmup_decay(s, total, warmup), lambda s: 1.0])
    losses = []
    m.train()
    for idx in plan:
        loss, _ = _step(m, {"x": x[idx], "y": y[idx]}, 0)
        losses.append(loss.item())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
        opt.step()
        sched.step()
    return losses


def _plan(n: int, batch: int, epochs: int, seed: int = 0) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    orders = [torch.randperm(n, generator=g).tolist() for _ in range(epochs)]
    return [order[lo:lo + batch] for order in orders for lo in range(0, n, batch)]


def test_engine_reproduces_the_hand_written_loop_bit_for_bit(tmp_path):
    x, y = _data()
    plan = _plan(len(y), 5, 2)
    ref_model = _model()
    ref = _reference(ref_model, x, y, plan, lr=1e-2, warmup_ratio=0.2)
    m = _model()
    state = engine.fit(m, _step, plan, lambda idx: {"x": x[idx], "y": y[idx]}, _groups(m), out_dir=tmp_path,
                       lr=1e-2, warmup_ratio=0.2)
    assert [r["loss"] for r in state["history"]] == ref
    assert all(torch.equal(a, b) for a, b in zip(m.state_dict().values(), ref_model.state_dict().values()))
    assert state["steps"] == len(plan) and state["examples_per_process"] == [sum(map(len, plan))]
    assert [r["rows"] for r in state["history"]] == [float(len(p)) for p in plan]
    assert not (tmp_path / "checkpoints").exists() or not list((tmp_path / "checkpoints").glob("step-*"))


def test_gradient_accumulation_equals_one_large_batch(tmp_path):
    x, y = _data(n=16)
    plan = [list(range(0, 8)), list(range(8, 16))] * 3
    big = [a + b for a, b in zip(plan[::2], plan[1::2])]
    no_dropout = lambda: nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))  # noqa: E731
    torch.manual_seed(0)
    a = no_dropout()
    torch.manual_seed(0)
    b = no_dropout()
    collate = lambda idx: {"x": x[idx], "y": y[idx]}  # noqa: E731
    sa = engine.fit(a, _step, plan, collate, _groups(a), out_dir=tmp_path / "a", lr=1e-2,
                    engine=EngineArgs(gradient_accumulation_steps=2))
    sb = engine.fit(b, _step, big, collate, _groups(b), out_dir=tmp_path / "b", lr=1e-2)
    assert sa["steps"] == sb["steps"] == 3
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)
    assert [r["loss"] for r in sa["history"]] == pytest.approx([r["loss"] for r in sb["history"]], rel=1e-5)


def test_checkpoints_resume_and_selection_on_disk(tmp_path):
    x, y = _data()
    dev_x, dev_y = _data(n=10, seed=1)
    plan = _plan(len(y), 4, 3)  # 18 steps
    collate = lambda idx: {"x": x[idx], "y": y[idx]}  # noqa: E731
    at = {3, 6, 9, 12, 15, 18}

    def evaluate(m):
        m.eval()
        score = -((m(dev_x).squeeze(-1) - dev_y) ** 2).mean().item()
        return score, {"neg_mse": score}, {"score": score}

    torch.manual_seed(7)
    full = _model()
    whole = engine.fit(full, _step, plan, collate, _groups(full), out_dir=tmp_path / "whole", lr=1e-2,
                       evaluate=evaluate, eval_at=at)
    curve = [r["neg_mse"] for r in whole["dev_curve"]]
    assert [r["step"] for r in whole["dev_curve"]] == sorted(at)
    assert whole["best_step"] == sorted(at)[curve.index(max(curve))] and whole["best_payload"] == {"score": max(curve)}
    kept = tmp_path / "whole" / "checkpoints"
    assert [p.name for p in kept.glob("best-step-*.pt")] == [f"best-step-{whole['best_step']:08d}.pt"]
    best_state = torch.load(kept / f"best-step-{whole['best_step']:08d}.pt", weights_only=True)
    assert all(torch.equal(best_state[k], v) for k, v in full.state_dict().items())  # restored at the end

    # a run killed during step 10, with checkpoints every 4 steps, resumes from step 8 and ends where `whole` did
    def dies_at_step_10(m, batch, step):
        if step == 9:
            raise KeyboardInterrupt
        return _step(m, batch, step)

    torch.manual_seed(7)
    part = _model()
    args = EngineArgs(save_steps=4)
    with pytest.raises(KeyboardInterrupt):
        engine.fit(part, dies_at_step_10, plan, collate, _groups(part), out_dir=tmp_path / "part", lr=1e-2,
                   engine=args, evaluate=evaluate, eval_at=at)
    ckpt = tmp_path / "part" / "checkpoints"
    assert [p.name for p in ckpt.glob("step-*")] == ["step-00000008"]  # the older one removed
    (ckpt / ".tmp-step-00000012").mkdir()  # a save cut short by a kill is ignored and removed
    progress = json.loads((ckpt / "step-00000008" / "progress.json").read_text())
    assert progress["step"] == 8 and len(progress["history"]) == 8 and len(progress["dev_curve"]) == 2
    torch.manual_seed(123)  # another initialisation: the checkpoint must overwrite it
    resumed_model = _model()
    resumed = engine.fit(resumed_model, _step, plan, collate, _groups(resumed_model), out_dir=tmp_path / "part",
                         lr=1e-2, engine=args, evaluate=evaluate, eval_at=at)
    assert resumed["resumed_from"] == 8 and not (ckpt / ".tmp-step-00000012").exists()
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in whole["history"]]  # RNG restored too
    assert resumed["dev_curve"] == whole["dev_curve"] and resumed["best_step"] == whole["best_step"]
    assert all(torch.equal(a, b) for a, b in zip(resumed_model.state_dict().values(), full.state_dict().values()))
    # a checkpoint of other settings is refused, not silently continued
    assert [p.name for p in ckpt.glob("step-*")] == ["step-00000016"]
    with pytest.raises(InputError, match="other settings"):
        engine.fit(_model(), _step, plan, collate, _groups(_model()), out_dir=tmp_path / "part", lr=1e-2,
                   engine=args, settings={"lr": 1})


def test_engine_args_are_checked():
    for kw, message in (({"mixed_precision": "fp8"}, "--mixed-precision"),
                        ({"report_to": "nope"}, "--report-to: one of none"),
                        ({"gradient_accumulation_steps": 0}, "--gradient-accumulation-steps"),
                        ({"save_steps": -1}, "--save-steps"), ({"device": "cuda:1"}, "--device"),
                        ({"device": "cpu", "mixed_precision": "fp16"}, "fp16 needs a GPU")):
        with pytest.raises(InputError, match=message):
            EngineArgs(**kw)


@pytest.fixture
def fresh_accelerator_state():
    # accelerate keeps one process-wide state whose precision cannot change; its own tests reset it the same way
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield
    AcceleratorState._reset_state(True)


def test_bf16_autocast_on_cpu_trains(tmp_path, fresh_accelerator_state):
    x, y = _data()
    m = _model()
    state = engine.fit(m, _step, _plan(len(y), 6, 1), lambda idx: {"x": x[idx], "y": y[idx]}, _groups(m),
                       out_dir=tmp_path, lr=1e-2, engine=EngineArgs(device="cpu", mixed_precision="bf16"))
    assert state["steps"] == 4 and all(torch.isfinite(torch.tensor(r["loss"])) for r in state["history"])


def test_tensorboard_tracker_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    x, y = _data()
    m = _model()
    engine.fit(m, _step, _plan(len(y), 6, 1), lambda idx: {"x": x[idx], "y": y[idx]}, _groups(m), out_dir=tmp_path,
               lr=1e-2, engine=EngineArgs(report_to="tensorboard"), settings={"lr": 1e-2})
    assert list(tmp_path.rglob("events.out.tfevents.*"))


def test_uninstalled_tracker_is_refused_with_its_install_line(monkeypatch):
    import accelerate.tracking

    monkeypatch.setattr(accelerate.tracking, "get_available_trackers", lambda: [])
    with pytest.raises(InputError, match=r"mlflow is not installed \(pip install 'bioselect\[tracking\]'\)"):
        EngineArgs(report_to="mlflow")
    with pytest.raises(InputError, match="wandb is not installed"):
        EngineArgs(report_to="wandb")


def test_mlflow_gets_settings_losses_and_dev_scores_and_a_resumed_run_logs_into_the_same_run(tmp_path, monkeypatch):
    """A local SQLite store, read back through MLflow's client: the settings as parameters, every step's loss and
    learning rate, the dev evaluations; a run killed in step 10, after its checkpoint at step 8, and started again
    continues the same MLflow run (step 9 logged by both attempts)."""
    client = mlflow_store(tmp_path, monkeypatch, "engine-test")
    x, y = _data()
    dev_x, dev_y = _data(8, seed=1)
    plan = _plan(len(y), 6, 1) * 4  # 16 steps
    at = {4, 8, 12, 16}

    def collate(idx):
        return {"x": x[idx], "y": y[idx]}

    def evaluate(m):
        score = -nn.functional.mse_loss(m(dev_x).squeeze(-1), dev_y).item()
        return score, {"neg_mse": score}, None

    def dies_at_step_10(m, batch, step):
        if step == 9:
            raise KeyboardInterrupt
        return _step(m, batch, step)

    args = EngineArgs(save_steps=4, report_to="mlflow")
    torch.manual_seed(7)
    part = _model()
    with pytest.raises(KeyboardInterrupt):
        engine.fit(part, dies_at_step_10, plan, collate, _groups(part), out_dir=tmp_path / "run", lr=1e-2,
                   engine=args, evaluate=evaluate, eval_at=at, settings={"lr": 1e-2, "name": "toy"})
    import mlflow

    mlflow.end_run(status="KILLED")  # what the killed process leaves: the run open in the store, no longer active
    torch.manual_seed(7)
    part = _model()
    state = engine.fit(part, _step, plan, collate, _groups(part), out_dir=tmp_path / "run", lr=1e-2, engine=args,
                       evaluate=evaluate, eval_at=at, settings={"lr": 1e-2, "name": "toy"})
    assert state["resumed_from"] == 8

    runs = client.search_runs([client.get_experiment_by_name("engine-test").experiment_id])
    assert len(runs) == 1  # the resumed run logged into the run the first attempt opened
    run = runs[0]
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    assert run.data.params == {"lr": "0.01", "name": "toy"}
    loss = client.get_metric_history(run.info.run_id, "loss")
    steps = sorted(m.step for m in loss)
    assert steps == sorted([*range(1, 17), 9])  # 1..9 by the first attempt (killed in step 10), 9..16 resumed
    by_step = {m.step: m.value for m in loss if m.step != 9}
    assert [by_step[r["step"]] for r in state["history"] if r["step"] in by_step] == pytest.approx(
        [r["loss"] for r in state["history"] if r["step"] in by_step])
    dev = client.get_metric_history(run.info.run_id, "dev_neg_mse")
    assert sorted(m.step for m in dev) == [4, 8, 12, 16]
    assert {m.step: m.value for m in dev} == pytest.approx({r["step"]: r["neg_mse"] for r in state["dev_curve"]})
    assert len(client.get_metric_history(run.info.run_id, "lr")) == len(steps)


# ---------------------------------------------------------------------------------------------------------------
# the baselines' commands as subprocesses: accelerate launch with two CPU processes, kill -9 and resume


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true",
                         "TOKENIZERS_PARALLELISM": "false"}


def _accelerate() -> list[str]:
    return [sys.executable, "-m", "accelerate.commands.launch"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, list[str]]:
    """Each baseline's command-line options on tiny random encoders and corpora written here."""
    from tests.mtl_baselines import test_clinical_qa as qa
    from tests.mtl_baselines import test_sru_ner as sru
    from tests.mtl_baselines import test_token_mtl as tok

    root = tmp_path_factory.mktemp("engine-assets")
    token_model, corpus = root / "tok-bert", root / "tiny"
    tok.tiny_tokenizer().save_pretrained(token_model)
    tok.tiny_encoder(len(tok.VOCAB)).save_pretrained(token_model)
    corpus.mkdir()
    for name, n, seed in (("train", 40, 1), ("devel", 12, 2), ("test", 12, 3)):
        tok.write_iob(corpus / f"{name}.tsv", n, seed)
    sru_model = root / "sru-bert"
    sru.tiny_tokenizer().save_pretrained(sru_model)
    sru.tiny_encoder().save_pretrained(sru_model)
    (root / "genia").mkdir()
    (root / "genia" / "dev.jsonlines").write_text(sru._genia_lines(8))
    (root / "genia" / "test.jsonlines").write_text(sru._genia_lines(2))
    qa_model = root / "qa-bert"
    qa_tok = qa.tiny_tokenizer(qa._asset_texts())
    qa_tok.save_pretrained(qa_model)
    qa.tiny_bert(len(qa_tok)).save_pretrained(qa_model)
    return {
        "token_mtl": ["-m", "mtl_baselines.token_mtl.train", "--corpus", str(corpus), "--model", str(token_model),
                      "--variant", "uw_sym", "--epochs", "2", "--batch_size", "8", "--lr", "1e-3",
                      "--dev_evals", "2", "--grad_cosine_every", "2"],
        "sru_ner": ["-m", "mtl_baselines.sru_ner.train", "--corpora", f"a={root / 'genia'}", "--model", str(sru_model),
                    "--slot_dim", "16", "--batch_size", "4", "--dev_holdout", "0.25", "--steps", "4",
                    "--eval_every", "2"],
        "clinical_qa": ["-m", "mtl_baselines.clinical_qa.train", "--corpus", str(qa.PUBTATOR), "--model",
                        str(qa_model), "--split", "0.34,0.33,0.33", "--max_length", "48", "--doc_stride", "16",
                        "--max_question_length", "16", "--batch_size", "4", "--lr", "1e-3", "--max_steps", "4",
                        "--dev_evals", "2", "--log_every", "0"],
    }


@pytest.mark.parametrize("baseline", ["token_mtl", "sru_ner", "clinical_qa"])
def test_two_processes_write_one_folder_with_the_files_of_one(baseline, assets, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    argv = assets[baseline]
    done = subprocess.run([sys.executable, *argv, "--output", str(one), "--device", "cpu"], env=_env(), cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    # run_group: a hung launch is killed with its ranks, not left behind
    done = run_group([*_accelerate(), "--multi_gpu", "--num_processes", "2", "--main_process_port", "0", *argv,
                      "--output", str(two)], timeout=600, env=_env(), cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())
    assert not list(tmp_path.glob("two*[!o]")) and not (two / "checkpoints").exists()
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))
    assert m1["steps"] == m2["steps"] and len(m2["examples_per_process"]) == 2
    a, b = m2["examples_per_process"]
    # every batch split by rows between the two processes: together they saw what one process saw, half each
    assert a + b == m1["examples_per_process"][0] and abs(a - b) <= m1["steps"]
    h1, h2 = ((d / "history.jsonl").read_text().splitlines() for d in (one, two))
    assert len(h1) == len(h2) == m1["steps"]
    assert sum(1 for line in done.stdout.splitlines() if "wrote" in line) == 1  # only the main process reports


def test_kill_9_after_a_checkpoint_resumes_and_ends_like_an_uninterrupted_run(assets, tmp_path):
    """Pinned for determinism: CPU, one thread (OMP_NUM_THREADS=1), no mixed precision, the same seed."""
    argv = [sys.executable, *assets["token_mtl"], "--min_steps", "150", "--save_steps", "3", "--device", "cpu"]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run([*argv, "--output", str(whole)], env=_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen([*argv, "--output", str(killed)], env=_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list((killed / "checkpoints").glob("step-*")) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (killed / "metrics.json").exists(), \
        "the run ended before it could be killed after its first checkpoint"
    done = subprocess.run([*argv, "--output", str(killed)], env=_env(), cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    mw, mk = (json.loads((d / "metrics.json").read_text()) for d in (whole, killed))
    assert mw["resumed_from"] == 0 and mk["resumed_from"] >= 3 and mk["resumed_from"] % 3 == 0
    for key in ("steps", "best_step", "dev_curve", "dev", "test", "log_vars_final"):
        assert mk[key] == mw[key], key
    assert (killed / "history.jsonl").read_text() == (whole / "history.jsonl").read_text()
    assert (killed / "pred_test.jsonl").read_text() == (whole / "pred_test.jsonl").read_text()
    assert not (killed / "checkpoints").exists()


# ---------------------------------------------------------------------------------------------------------------
# layers: baselines import the shared layer, never each other, and no module imports itself back


def _imports(path: Path) -> set[str]:
    """Every ``mtl_baselines`` module a file imports, at module level or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mtl_baselines"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mtl_baselines")}
    return found


def test_baselines_import_only_the_shared_layer_and_have_no_cycles():
    root = REPO / "mtl_baselines"
    graph = {".".join(p.relative_to(REPO).with_suffix("").parts): _imports(p) for p in root.rglob("*.py")}
    graph = {k.removesuffix(".__init__"): {m for m in v if m in graph or m + ".__init__" in graph}
             for k, v in graph.items()}
    for module, deps in graph.items():
        parts = module.split(".")
        for dep in deps:
            dep_parts = dep.split(".")
            if len(parts) > 2 and len(dep_parts) > 2:
                assert parts[1] == dep_parts[1], f"{module} imports another baseline: {dep}"
    for shared in ("mtl_baselines.common", "mtl_baselines.engine"):
        assert not any(d.count(".") > 1 for d in graph[shared]), f"{shared} imports a baseline"

    def visit(node, stack):
        assert node not in stack, "import cycle: " + " -> ".join([*stack, node])
        for dep in graph.get(node, ()):
            visit(dep, [*stack, node])

    for module in graph:
        visit(module, [])
