"""Data-parallel training with two CPU processes over gloo, and the single-process helpers."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from nestc.training import TrainConfig, Trainer, all_reduce_mean, broadcast_object, init_from_env
from nestc.training.synthetic import mlp, separable_problem

WORLD = 2
CONFIG = {"epochs": 3, "batch_size": 32, "lr": 0.05, "device": "cpu", "quiet": True}
TIMEOUT_S = 120  # a hang guard only: the test takes ~15 s on 2 idle cores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, port: int, out: str) -> None:
    """One rank: fit, exercise the helpers, write what the parent checks."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = init_from_env()
    try:
        x, y = separable_problem(samples=512)
        model = mlp()
        trainer = Trainer(TrainConfig(**CONFIG))
        assert init_from_env() == info  # idempotent
        loss_before, _ = trainer.evaluate(model, x, y)
        result = trainer.fit(model, x, y, checkpoint=Path(out) / "ckpt.pt")
        decision = broadcast_object({"prune": [3, 1, 4]} if info.is_main else None)
        mean = all_reduce_mean(torch.tensor([float(rank)]))
        normalised = _batch_norm_mlp()
        trainer.fit(normalised, x, y, epochs=1)
        two_heads = _TwoHeads()
        trainer.fit(two_heads, x, y, epochs=1)  # DDP would wait for the other head's gradients
        torch.save({"state": model.state_dict(), "loss_before": loss_before, "result": result.train_loss,
                    "eval": trainer.evaluate(model, x, y), "decision": decision, "mean": mean.item(),
                    "info": (info.rank, info.world_size, info.is_main), "normalised": normalised.state_dict(),
                    "normalised_eval": trainer.evaluate(normalised, x, y), "two_heads": two_heads.state_dict()},
                   Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _batch_norm_mlp() -> nn.Sequential:
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(0)
        return nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))


class _TwoHeads(nn.Module):
    """A network whose second head is not trained on (``compress --output-name`` of a two-output graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.other = mlp(seed=1), mlp(seed=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def _growth_worker(rank: int, port: int, out: str) -> None:
    """One rank: gradients for growth on a probe of its own (another rank's GPU kernels could give other bits
    than rank 0's, as another probe does here), then connection growth by them."""
    from nestc.ir import Network
    from nestc.ir.classifier import ClassifierView
    from nestc.passes.base import Probe, effective_gradients, ensure_masks
    from nestc.passes.grow_connections import grow_connections
    from nestc.seeds import build_seed

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(WORLD),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    init_from_env()
    try:
        view = ClassifierView(Network(build_seed("lenet-300-100", 0.2, 0.2, 10, 0, None)))
        ensure_masks(view.net)
        generator = torch.Generator().manual_seed(rank)
        x = torch.rand(64, 1, 28, 28, generator=generator)
        probe = Probe(view, x, torch.randint(0, 10, (64,), generator=generator), batch_size=32)
        grads, tapped = effective_gradients(probe, taps=["relu1_out"])
        grow_connections(view.net, grads, 0.5)
        torch.save({"x": x, "grads": grads, "tapped": [g for _, g in tapped["relu1_out"]],
                    "masks": {name: view.net.mask(name) for name in grads}}, Path(out) / f"growth{rank}.pt")
    finally:
        dist.destroy_process_group()


def _spawn(out: Path, worker=_worker) -> None:
    context = mp.spawn(worker, args=(_free_port(), str(out)), nprocs=WORLD, join=False)
    deadline = time.monotonic() + TIMEOUT_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"distributed workers did not finish within {TIMEOUT_S} s")


def test_two_gloo_processes_train_identical_replicas_like_one_process(tmp_path):
    _spawn(tmp_path)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    assert [r["info"] for r in ranks] == [(0, 2, True), (1, 2, False)]
    for (name, a), b in zip(ranks[0]["state"].items(), ranks[1]["state"].values()):
        assert torch.equal(a, b), name
    assert [r["decision"] for r in ranks] == [{"prune": [3, 1, 4]}] * WORLD
    # each rank's last step updated the batch-norm statistics from its own batch; the fit ends with rank 0's
    for (name, a), b in zip(ranks[0]["normalised"].items(), ranks[1]["normalised"].values()):
        assert torch.equal(a, b), name
    assert ranks[0]["normalised_eval"] == ranks[1]["normalised_eval"]
    untouched = mlp(seed=2).state_dict()
    for (name, a), b in zip(ranks[0]["two_heads"].items(), ranks[1]["two_heads"].values()):
        assert torch.equal(a, b), name
        if name.startswith("other."):
            assert torch.equal(a, untouched[name.removeprefix("other.")]), name
    assert [r["mean"] for r in ranks] == [0.5, 0.5]
    assert ranks[0]["result"] == ranks[1]["result"]
    checkpoint = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert checkpoint["rng"]["cpu"].shape[0] == WORLD and checkpoint["epoch"] == 3

    x, y = separable_problem(samples=512)
    single = mlp()
    trainer = Trainer(TrainConfig(**CONFIG))
    trainer.fit(single, x, y)
    loss, accuracy = trainer.evaluate(single, x, y)
    ddp_loss, ddp_accuracy = ranks[0]["eval"]
    assert ddp_accuracy > 0.95 and abs(ddp_accuracy - accuracy) < 0.02
    assert ddp_loss < ranks[0]["loss_before"] / 4 and abs(ddp_loss - loss) < 0.1 * loss + 1e-3
    # Same global batches at each step: the replicas match the single-process weights closely.
    for (name, a), b in zip(ranks[0]["state"].items(), single.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-3), name


def test_every_rank_grows_by_rank_0s_gradients(tmp_path):
    """Growth decisions must not part between ranks: each rank's probe differs here, and every rank still
    gets rank 0's gradients (the tapped ones neuron growth bridges with too) and grows the same connections."""
    _spawn(tmp_path, _growth_worker)
    ranks = [torch.load(tmp_path / f"growth{r}.pt", weights_only=True) for r in range(WORLD)]
    assert not torch.equal(ranks[0]["x"], ranks[1]["x"]), "the ranks' own gradients differ"
    assert ranks[0]["grads"] and ranks[0]["grads"].keys() == ranks[1]["grads"].keys()
    for name, grad in ranks[0]["grads"].items():
        assert torch.equal(grad, ranks[1]["grads"][name]), name
        assert torch.equal(ranks[0]["masks"][name], ranks[1]["masks"][name]), name
    assert len(ranks[0]["tapped"]) == 2
    for a, b in zip(ranks[0]["tapped"], ranks[1]["tapped"], strict=True):
        assert torch.equal(a, b)


def test_helpers_are_no_ops_in_one_process():
    info = init_from_env()
    assert (info.rank, info.world_size, info.local_rank, info.is_main) == (0, 1, 0, True)
    t = torch.tensor([2.0, 4.0])
    assert all_reduce_mean(t) is t and t.tolist() == [2.0, 4.0]
    assert broadcast_object({"a": 1}) == {"a": 1}
    assert not dist.is_initialized()


def test_compress_under_torchrun_writes_once_and_speaks_once(tmp_path):
    """``torchrun -m nestc compress`` with two CPU processes: every rank takes the same decisions, rank 0
    alone writes the model and report and prints the run's messages."""
    import subprocess
    import sys

    from nestc import api

    api.seed("lenet-300-100", tmp_path / "seed.onnx", width_ratio=0.2, density=0.2)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "nestc", "compress", "seed.onnx", "--data", "embedded", "--limit", "300",
                          "--max-epochs", "0.5", "--device", "cpu", "-o", "out.onnx", "--report", "report.json"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.count("input normalisation") == 1, run.stdout
    assert api.inspect(tmp_path / "out.onnx").nonzero_params > 0 and (tmp_path / "report.json").is_file()
    assert not (tmp_path / "out.onnx.ckpt").exists()
