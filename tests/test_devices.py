"""What running on a GPU changes, checked on any machine: process-group backends, device errors, bf16,
TF32 in comparisons, and where tensors are created (the ``meta`` device, or :mod:`simulated_gpu`'s
checks of CUDA's device rules, stand in for a GPU)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from onnx import helper
from simulated_gpu import simulated_gpu

import nestc
from nestc import runtime
from nestc.compression import _check_equivalence
from nestc.data import fit_to_input, load_dataset
from nestc.errors import OptionError
from nestc.frontends import load_model
from nestc.ir.classifier import ClassifierView
from nestc.ir.emit import emit_model
from nestc.ir.network import Network
from nestc.passes.base import Probe, effective_gradients, ensure_masks
from nestc.passes.compact import compact
from nestc.passes.grow_connections import grow_connections
from nestc.passes.grow_feature_maps import grow_feature_maps
from nestc.passes.grow_neurons import grow_neurons
from nestc.passes.partial_area import partial_area
from nestc.passes.prune_connections import prune_connections
from nestc.passes.prune_units import prune_units
from nestc.schedule.config import NestConfig
from nestc.seeds import build_seed
from nestc.training import TrainConfig, Trainer
from nestc.training.config import resolve_amp
from nestc.training.synthetic import mlp, separable_problem


class _Joined(Exception):
    """Raised in place of joining a process group, once the backend is known."""


def _run(command: str, folder: Path, config: TrainConfig, data: str = "embedded") -> None:
    nestc.seed("lenet-300-100", folder / "seed.onnx", width_ratio=0.25)
    if command == "compress":
        nestc.compress(folder / "seed.onnx", folder / "out.onnx", data, train_config=config)
    else:
        nestc.train(folder / "seed.onnx", folder / "out.onnx", data, config)


@pytest.mark.parametrize("command", ["compress", "train"])
def test_torchrun_with_device_cpu_on_a_gpu_machine_joins_over_gloo(command, tmp_path, monkeypatch):
    """nccl cannot reduce the CPU tensors that ``--device cpu`` trains with, whether or not a GPU is there."""
    backends: list[str] = []

    def join(backend: str, **_options) -> None:
        backends.append(backend)
        raise _Joined

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", lambda _device: None)
    monkeypatch.setattr(dist, "init_process_group", join)
    with pytest.raises(_Joined):
        _run(command, tmp_path, TrainConfig(device="cpu", quiet=True))
    assert backends == ["gloo"]


@pytest.mark.parametrize("command", ["compress", "train"])
def test_a_missing_gpu_is_refused_before_any_loading(command, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(OptionError, match="sees no CUDA GPU"):  # not the unknown data set, read later
        _run(command, tmp_path, TrainConfig(device="cuda", quiet=True), data="no-such-data")


def test_auto_amp_needs_native_bf16_on_the_chosen_gpu(monkeypatch):
    """Pre-Ampere GPUs emulate bf16 (``is_bf16_supported`` says yes); the current GPU is not the one asked about."""
    capabilities = {0: (7, 5), 1: (9, 0)}
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *_args, **_kwargs: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: capabilities[torch.device(device).index])
    assert resolve_amp("auto", torch.device("cuda", 0)) is False
    assert resolve_amp("auto", torch.device("cuda", 1)) is True
    assert resolve_amp("bf16", torch.device("cuda", 1)) is True
    with pytest.raises(OptionError, match=r"compute capability 8\.0"):
        resolve_amp("bf16", torch.device("cuda", 0))


def test_run_numpy_computes_without_tf32(monkeypatch):
    """TF32 convolutions (PyTorch's default on Ampere and newer) differ from onnxruntime by ~1e-3."""
    net = Network(build_seed("lenet-5", width_ratio=0.25))
    flags: list[tuple[bool, bool]] = []
    forward = Network.forward

    def spy(self, *inputs, **options):
        flags.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return forward(self, *inputs, **options)

    monkeypatch.setattr(Network, "forward", spy)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    net.run_numpy(np.zeros((2, 1, 28, 28), dtype=np.float32))
    assert flags == [(False, False)]
    assert torch.backends.cudnn.allow_tf32 is True  # restored


def test_comparisons_run_onnxruntime_without_tf32(tmp_path, monkeypatch):
    """The CUDA provider computes float32 in TF32 by default; compress's check and validate compare exactly."""
    both = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: both)
    assert runtime.providers() == both
    assert runtime.providers(exact=True) == [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"]
    asked: list[bool] = []
    monkeypatch.setattr(runtime, "providers", lambda exact=False: asked.append(exact) or ["CPUExecutionProvider"])
    nestc.seed("lenet-300-100", tmp_path / "a.onnx", width_ratio=0.25)
    nestc.validate(tmp_path / "a.onnx", tmp_path / "a.onnx", samples=4)
    net = Network(build_seed("lenet-300-100", width_ratio=0.25))
    _check_equivalence(net, emit_model(net), np.zeros((4, 1, 28, 28), dtype=np.float32), "out")
    assert asked == [True, True, True]


def test_constants_added_later_join_the_network_on_its_device():
    net = Network(build_seed("lenet-5", width_ratio=0.25)).to("meta")
    conv = next(i for i, n in enumerate(net.nodes) if n.op_type == "Conv")
    source = net.nodes[conv].inputs[0]
    proto = helper.make_node("Mul", [source, "area_mask"], ["masked"], name="mask")
    net.insert_node(conv, proto, {"area_mask": np.ones((1, 1, 28, 28), dtype=np.float32)})
    assert net.tensor("area_mask").device == torch.device("meta")


@pytest.mark.parametrize(("device", "local_rank", "named"),
                         [("cuda:0", "0", "LOCAL_RANK"), ("cuda", "1", "--nproc-per-node")])
def test_torchrun_processes_sharing_a_gpu_are_refused_before_joining(device, local_rank, named, monkeypatch):
    """nccl fails on two processes of one GPU: a fixed cuda:N, or more processes than GPUs, is named first."""
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", local_rank)
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(dist, "init_process_group", lambda *_a, **_k: pytest.fail("joined the process group"))
    with pytest.raises(OptionError, match=named):
        Trainer(TrainConfig(device=device, quiet=True))


def test_the_simulated_gpu_refuses_what_cuda_refuses():
    """The checks below are only as good as the simulation: host tensors next to GPU ones fail, scalars do not."""
    with simulated_gpu() as gpu:
        weight = torch.ones(4, 3, device="cuda")
        assert weight.device == torch.device("cuda", 0) and gpu.on_gpu(weight) and not gpu.on_gpu(torch.ones(3))
        assert gpu.on_gpu(weight * torch.tensor(2.0)) and gpu.on_gpu(torch.ones(3).to(weight.device))
        assert not gpu.on_gpu(weight.cpu())
        with pytest.raises(RuntimeError, match="one device"):
            weight + torch.ones(4, 3)
        with pytest.raises(RuntimeError, match="__setitem__"):
            weight[torch.tensor([1])] = torch.ones(1, 3)  # CUDA's index_put_ moves only 0-dim values
        with pytest.raises(TypeError, match="numpy"):
            weight.numpy()


@pytest.fixture(scope="module")
def probe_batch() -> tuple[torch.Tensor, torch.Tensor]:
    data = fit_to_input(load_dataset("embedded"), ["N", 1, 28, 28])
    return torch.from_numpy(data.x_train[:128]), torch.from_numpy(data.y_train[:128])


@pytest.mark.parametrize(("arch", "grow"), [("lenet-300-100", "neurons"), ("lenet-5", "feature maps")])
def test_growth_on_a_gpu_writes_its_host_draws_there(arch, grow, probe_batch):
    """New units are drawn on the host (the same draws on every device); their mask entries must reach the GPU."""
    x, y = probe_batch
    with simulated_gpu() as gpu:
        net = Network(build_seed(arch, width_ratio=0.25, density=0.2)).to("cuda")
        ensure_masks(net)
        probe = Probe(ClassifierView(net), x.to("cuda"), y.to("cuda"))
        grown = grow_neurons(probe, 2) if grow == "neurons" else grow_feature_maps(probe, 2, candidates=2)
        assert grown.modified
        assert all(gpu.on_gpu(t) for t in [*net.parameters(), *net.buffers()])


def test_evaluation_judges_float32_whatever_training_autocasts():
    """Steps are kept or undone by accuracy within a budget that the written float32 file is held to; under
    bf16 autocast (the default on Ampere and newer GPUs, asked for on a CPU here) evaluation must not change."""
    x, y = separable_problem(samples=256, features=16, classes=4, seed=1)
    model = mlp((16, 32, 4), seed=1)
    exact, autocast = (Trainer(TrainConfig(device="cpu", amp=amp, quiet=True)) for amp in ("off", "bf16"))
    assert autocast.amp
    assert autocast.evaluate(model, x, y) == exact.evaluate(model, x, y)
    assert torch.equal(autocast.predict_logits(model, x), exact.predict_logits(model, x))


@pytest.fixture
def one_gpu_machine(monkeypatch):
    """torch.cuda's queries and controls as on a machine with one Hopper GPU; its tensors are simulated_gpu's."""
    host_rng = torch.zeros(16, dtype=torch.uint8)
    machine = {"is_available": lambda: True, "device_count": lambda: 1, "set_device": lambda _device: None,
               "get_device_capability": lambda _device=None: (9, 0),
               "mem_get_info": lambda _device=None: (2**34, 2**34), "manual_seed": lambda _seed: None,
               "get_rng_state": lambda _device="cuda": host_rng.clone(),
               "set_rng_state": lambda _state, _device="cuda": None, "synchronize": lambda _device=None: None}
    for name, value in machine.items():
        monkeypatch.setattr(torch.cuda, name, value)


@pytest.mark.slow
def test_compress_with_every_pass_and_train_with_resume_keep_cudas_device_rules(tmp_path, one_gpu_machine,
                                                                                monkeypatch):
    """``--device cuda`` end to end: a seed's growth, every pruning pass, checkpoints, emission and validation;
    ``train`` with a checkpoint resumed; a trained model's learning-rate check, distillation and held-out
    decisions with the data in (pinned) host memory. Amp is off: autocast has no simulated form (see the bf16
    tests)."""
    nestc.seed("lenet-5", tmp_path / "seed.onnx", width_ratio=0.25, density=0.3)
    seed_run = NestConfig(max_epochs=1.5, grow="on", grow_steps=1, grow_epochs=0.25, retrain_epochs=0.25,
                          lr_check_epochs=0, unit_prune_fraction=0.1, partial_area_gamma=0.02, regrow_fraction=0.1)
    trained_run = NestConfig(max_epochs=0.5, retrain_epochs=0.25, lr_check_epochs=0.1, distill=True,
                             validation="train")
    gpu_training = TrainConfig(device="cuda", amp="off", quiet=True, epochs=0.5)
    with simulated_gpu():
        assert Trainer(gpu_training).device == torch.device("cuda", 0)
        grown = nestc.compress(tmp_path / "seed.onnx", tmp_path / "out.onnx", train_config=gpu_training,
                               config=seed_run, limit=300)
        for resume in (False, True):
            nestc.train(tmp_path / "out.onnx", tmp_path / "trained.onnx", config=replace(gpu_training, epochs=1),
                        checkpoint=tmp_path / "train.ckpt", resume=resume)
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda _device=None: (0, 2**34))  # no room: host memory
        pruned = nestc.compress(tmp_path / "trained.onnx", tmp_path / "pruned.onnx", train_config=gpu_training,
                                config=trained_run, limit=300)
    actions = [row["action"] for row in grown.report["history"]]
    assert any(a.startswith("grow") for a in actions) and any(a.startswith("prune") for a in actions), actions
    assert pruned.report["history"][0]["action"] == "original model" and pruned.report["validation"] == "train"


@pytest.mark.parametrize("name", ["Residual", "DepthwiseConcat", "SliceNet", "TokenMLP"])
def test_every_pass_on_a_gpu_network_of_the_zoo_keeps_cudas_device_rules(name, zoo_export):
    """Residual streams, depthwise convolutions, concatenations, slices and token MLPs through every pass."""
    exported = zoo_export(name, keep_bn=True)
    x = torch.randn(64, *exported.module.INPUT, generator=torch.Generator().manual_seed(0))
    with simulated_gpu() as gpu:
        net = Network(load_model(exported.path)).to("cuda")
        view = ClassifierView(net)
        classes = view(x[:2].to("cuda")).shape[1]
        probe = Probe(view, x.to("cuda"), torch.arange(64).remainder(classes).to("cuda"))
        ensure_masks(net)
        grow_connections(net, effective_gradients(probe)[0], 0.2)
        grow_neurons(probe, 2)
        grow_feature_maps(probe, 2, candidates=2, round_to=4)
        prune_connections(net, 0.3)
        prune_units(net, 0.3, probe.x)
        partial_area(probe, 0.05)
        compact(net, probe.x, round_to=4)
        assert all(gpu.on_gpu(t) for t in [*net.parameters(), *net.buffers()])
        assert np.isfinite(net.run_numpy(x[:4].numpy())[0]).all()
