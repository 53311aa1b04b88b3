"""nestc compress on models in the styles of other exporters, each trained the way its users train it.

The NeST table measures two PyTorch-exported LeNets. Users bring graphs from other tools: tf2onnx and
keras2onnx write NHWC inputs with a Transpose in front, MatMul + Add instead of Gemm, Softmax heads and
a channels-last Flatten; PyTorch's dynamo exporter folds batch normalisation into the convolutions;
old tutorials export a 32x32 LeNet-5 with Tanh and average pooling for 28x28 MNIST. Each row builds one
such model, trains it briefly (hand-built graphs with ``nestc.train``, PyTorch modules in plain
PyTorch, then exported as a user would), and runs ``nestc.compress`` with a small epoch budget. The
table shows what each run met: accuracy before and after (onnxruntime), non-zeros, parameters after
compaction, batch-256 latency, the learning rate and input fit compress chose, and the exit status.

With ``--han`` every model is also pruned by iterative magnitude pruning alone (Han et al.,
``benchmarks/han_pruning.py``) with the same data, trainer, budget and epochs, so the table shows how
much smaller nestc's result is than pruning alone reaches on each architecture.

Usage::

    python benchmarks/exporters.py                      # every model, 15,000 training images, 8 epochs
    python benchmarks/exporters.py --models torch-residual,torch-mobile,torch-inception --max-epochs 40 --han
    python benchmarks/exporters.py --models tf2onnx-lenet5,keras-mlp --limit 2000 --max-epochs 2
    python benchmarks/exporters.py --models none --files exported/*.onnx   # models exported elsewhere, as they are

``--files`` takes ONNX files made by other tools (``tests/fixtures/tf2onnx/make_fixtures.py --out`` writes
Keras models through the real tf2onnx) and compresses each as it is, on ``--data``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from machine import machine_info
from nest_table import SKLEARN_DIGITS, digits_28
from onnx import TensorProto, helper, numpy_helper

RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------------------- hand-built graphs
def _weight(rng: np.random.Generator, name: str, shape: list[int], fan_in: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32), name)


def _zeros(name: str, width: int) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(width, np.float32), name)


def _dense(x: str, name: str, rng: np.random.Generator, fan_in: int, width: int, relu: bool
           ) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto], str]:
    """Keras's Dense as tf2onnx writes it: MatMul with an [in, out] kernel, then Add."""
    out = f"{name}/BiasAdd:0"
    nodes = [helper.make_node("MatMul", [x, f"{name}/kernel"], [f"{name}/MatMul:0"]),
             helper.make_node("Add", [f"{name}/MatMul:0", f"{name}/bias"], [out])]
    if relu:
        nodes.append(helper.make_node("Relu", [out], [f"{name}/Relu:0"]))
        out = f"{name}/Relu:0"
    return nodes, [_weight(rng, f"{name}/kernel", [fan_in, width], fan_in), _zeros(f"{name}/bias", width)], out


def _softmax_classifier(path: Path, nodes: list, initializers: list, x: str, rng: np.random.Generator,
                        widths: tuple[int, ...], graph_input: onnx.ValueInfoProto) -> None:
    """Append Dense layers of ``widths`` (ReLU between them) and a Softmax head to ``x``, and save the model."""
    layers = len(widths) - 1
    for i, (fan_in, width) in enumerate(itertools.pairwise(widths)):
        more, weights, x = _dense(x, "dense" + (f"_{i}" if i else ""), rng, fan_in, width, i < layers - 1)
        nodes += more
        initializers += weights
    nodes.append(helper.make_node("Softmax", [x], ["probabilities:0"], axis=-1))
    batch = graph_input.type.tensor_type.shape.dim[0].dim_param
    output = helper.make_tensor_value_info("probabilities:0", TensorProto.FLOAT, [batch, widths[-1]])
    _save(path, nodes, initializers, [graph_input], [output], 13)


def _save(path: Path, nodes: list, initializers: list, inputs: list, outputs: list, opset: int,
          producer: str = "tf2onnx", ir_version: int | None = None) -> None:
    graph = helper.make_graph(nodes, "model", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=producer)
    if ir_version is not None:
        model.ir_version = ir_version
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def tf2onnx_lenet5(path: Path) -> None:
    """A Keras LeNet-5 as tf2onnx exports it: NHWC input, channels-last Flatten, Dense as MatMul + Add."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Transpose", ["input_1:0"], ["nchw"], perm=[0, 3, 1, 2]),
             helper.make_node("Conv", ["nchw", "conv1/kernel", "conv1/bias"], ["c1"], kernel_shape=[5, 5],
                              pads=[2, 2, 2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "conv2/kernel", "conv2/bias"], ["c2"], kernel_shape=[5, 5]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Transpose", ["p2"], ["nhwc"], perm=[0, 2, 3, 1]),
             helper.make_node("Reshape", ["nhwc", "flatten/shape"], ["flat"])]
    initializers = [_weight(rng, "conv1/kernel", [6, 1, 5, 5], 25), _zeros("conv1/bias", 6),
                    _weight(rng, "conv2/kernel", [16, 6, 5, 5], 150), _zeros("conv2/bias", 16),
                    numpy_helper.from_array(np.array([-1, 400], np.int64), "flatten/shape")]
    _softmax_classifier(path, nodes, initializers, "flat", rng, (400, 120, 84, 10),
                        helper.make_tensor_value_info("input_1:0", TensorProto.FLOAT, ["unk__6", 28, 28, 1]))


def keras_mlp(path: Path) -> None:
    """A Keras LeNet-300-100 (MatMul + Add, Softmax head) on a flat [N, 784] input."""
    _softmax_classifier(path, [], [], "flatten_input:0", np.random.default_rng(1), (784, 300, 100, 10),
                        helper.make_tensor_value_info("flatten_input:0", TensorProto.FLOAT, ["N", 784]))


def tf2onnx_bn_gap(path: Path) -> None:
    """Two strided conv + BatchNormalization blocks, global average pooling, Squeeze, Dense (NHWC input)."""
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Transpose", ["x:0"], ["nchw"], perm=[0, 3, 1, 2])]
    initializers = []
    x, width = "nchw", 1
    for i, out in enumerate((32, 64)):
        nodes += [helper.make_node("Conv", [x, f"conv{i}/kernel"], [f"c{i}"], kernel_shape=[3, 3], strides=[2, 2],
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("BatchNormalization", [f"c{i}", f"bn{i}/gamma", f"bn{i}/beta", f"bn{i}/mean",
                                                          f"bn{i}/var"], [f"n{i}"], epsilon=1e-3),
                  helper.make_node("Relu", [f"n{i}"], [f"r{i}"])]
        initializers += [_weight(rng, f"conv{i}/kernel", [out, width, 3, 3], 9 * width),
                         numpy_helper.from_array(np.ones(out, np.float32), f"bn{i}/gamma"), _zeros(f"bn{i}/beta", out),
                         _zeros(f"bn{i}/mean", out), numpy_helper.from_array(np.ones(out, np.float32), f"bn{i}/var")]
        x, width = f"r{i}", out
    nodes += [helper.make_node("GlobalAveragePool", [x], ["gap"]),
              helper.make_node("Squeeze", ["gap", "squeeze/axes"], ["pooled"])]
    initializers.append(numpy_helper.from_array(np.array([2, 3], np.int64), "squeeze/axes"))
    more, weights, x = _dense("pooled", "dense", rng, 64, 10, False)
    nodes += more
    initializers += weights
    _save(path, nodes, initializers, [helper.make_tensor_value_info("x:0", TensorProto.FLOAT, ["N", 28, 28, 1])],
          [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", 10])], 13)


def opset9_digits_mlp(path: Path) -> None:
    """An opset-9 Flatten + Gemm MLP for scikit-learn's 8x8 digits."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Flatten", ["x"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w1", "b1"], ["h"], transB=1),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)]
    initializers = [_weight(rng, "w1", [64, 64], 64), _zeros("b1", 64), _weight(rng, "w2", [10, 64], 64),
                    _zeros("b2", 10)]
    _save(path, nodes, initializers, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], 9)


def cntk_mnist(path: Path) -> None:
    """The ONNX model zoo's MNIST model as CNTK wrote it (IR version 3, opset 8): every initializer also a graph
    input, the batch fixed at 1, convolutions with ``auto_pad`` and biases as ``Add`` of ``[C, 1, 1]`` tensors,
    and the classifier's weight reached through ``Reshape(Parameter193)``."""
    rng = np.random.default_rng(4)
    tensor = numpy_helper.from_array
    initializers = [_weight(rng, "Parameter5", [8, 1, 5, 5], 25),
                    tensor(np.zeros((8, 1, 1), np.float32), "Parameter6"),
                    _weight(rng, "Parameter87", [16, 8, 5, 5], 200),
                    tensor(np.zeros((16, 1, 1), np.float32), "Parameter88"),
                    tensor(np.array([1, 256], np.int64), "Pooling160_Output_0_reshape0_shape"),
                    _weight(rng, "Parameter193", [16, 4, 4, 10], 256),
                    tensor(np.array([256, 10], np.int64), "Parameter193_reshape1_shape"),
                    tensor(np.zeros((1, 10), np.float32), "Parameter194")]
    conv = {"kernel_shape": [5, 5], "strides": [1, 1], "auto_pad": "SAME_UPPER", "group": 1, "dilations": [1, 1]}
    nodes = [helper.make_node("Conv", ["Input3", "Parameter5"], ["Convolution28_Output_0"], **conv),
             helper.make_node("Add", ["Convolution28_Output_0", "Parameter6"], ["Plus30_Output_0"]),
             helper.make_node("Relu", ["Plus30_Output_0"], ["ReLU32_Output_0"]),
             helper.make_node("MaxPool", ["ReLU32_Output_0"], ["Pooling66_Output_0"], kernel_shape=[2, 2],
                              strides=[2, 2]),
             helper.make_node("Conv", ["Pooling66_Output_0", "Parameter87"], ["Convolution110_Output_0"], **conv),
             helper.make_node("Add", ["Convolution110_Output_0", "Parameter88"], ["Plus112_Output_0"]),
             helper.make_node("Relu", ["Plus112_Output_0"], ["ReLU114_Output_0"]),
             helper.make_node("MaxPool", ["ReLU114_Output_0"], ["Pooling160_Output_0"], kernel_shape=[3, 3],
                              strides=[3, 3]),
             helper.make_node("Reshape", ["Pooling160_Output_0", "Pooling160_Output_0_reshape0_shape"],
                              ["Pooling160_Output_0_reshape0"]),
             helper.make_node("Reshape", ["Parameter193", "Parameter193_reshape1_shape"], ["Parameter193_reshape1"]),
             helper.make_node("MatMul", ["Pooling160_Output_0_reshape0", "Parameter193_reshape1"],
                              ["Times212_Output_0"]),
             helper.make_node("Add", ["Times212_Output_0", "Parameter194"], ["Plus214_Output_0"])]
    inputs = [helper.make_tensor_value_info("Input3", TensorProto.FLOAT, [1, 1, 28, 28])] + [
        helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in initializers]
    output = helper.make_tensor_value_info("Plus214_Output_0", TensorProto.FLOAT, [1, 10])
    _save(path, nodes, initializers, inputs, [output], 8, producer="CNTK", ir_version=3)


# ---------------------------------------------------------------------------- PyTorch-trained models
def _torch_modules() -> dict[str, Callable[[], object]]:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            def block(width: int) -> nn.Sequential:
                return nn.Sequential(nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                     nn.ReLU(), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(width))
            self.stem = nn.Sequential(nn.Conv2d(1, 24, 3, padding=1, bias=False), nn.BatchNorm2d(24), nn.ReLU())
            self.block1, self.block2 = block(24), block(48)
            self.down = nn.Sequential(nn.Conv2d(24, 48, 3, 2, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU())
            self.fc = nn.Linear(48, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.stem(x)
            x = F.max_pool2d(F.relu(x + self.block1(x)), 2)
            x = self.down(x)
            x = F.relu(x + self.block2(x))
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    class Mobile(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            def separable(width: int, out: int, stride: int) -> nn.Sequential:
                return nn.Sequential(nn.Conv2d(width, width, 3, stride, 1, groups=width, bias=False),
                                     nn.BatchNorm2d(width), nn.ReLU6(), nn.Conv2d(width, out, 1, bias=False),
                                     nn.BatchNorm2d(out), nn.ReLU6())
            self.features = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(),
                                          separable(16, 32, 1), separable(32, 64, 2), separable(64, 64, 1))
            self.fc = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.features(x).mean((2, 3)))

    class Inception(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(1, 16, 3, padding=1)
            self.a = nn.Conv2d(16, 16, 1)
            self.b = nn.Sequential(nn.Conv2d(16, 8, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1))
            self.c = nn.Conv2d(16, 8, 5, padding=2)
            self.fc1, self.fc2 = nn.Linear(40 * 7 * 7, 64), nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(F.relu(self.stem(x)), 2)
            x = F.max_pool2d(torch.cat([F.relu(self.a(x)), F.relu(self.b(x)), F.relu(self.c(x))], 1), 2)
            return self.fc2(F.relu(self.fc1(x.flatten(1))))

    class LeNet5Classic(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c3 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
            self.f5, self.f6, self.out = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.avg_pool2d(torch.tanh(self.c1(x)), 2)
            x = F.avg_pool2d(torch.tanh(self.c3(x)), 2)
            x = torch.tanh(self.f6(torch.tanh(self.f5(x.view(x.size(0), -1)))))
            return F.log_softmax(self.out(x), dim=1)

    class LeNet5(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c3 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
            self.f5, self.f6, self.out = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.max_pool2d(F.relu(self.c1(x)), 2)
            x = F.max_pool2d(F.relu(self.c3(x)), 2)
            return self.out(F.relu(self.f6(F.relu(self.f5(x.flatten(1))))))

    return {"residual": Residual, "mobile": Mobile, "inception": Inception, "lenet5-classic": LeNet5Classic,
            "lenet5": LeNet5}


def train_and_export(kind: str, path: Path, data: str, size: int, epochs: float, exporter: str, opset: int,
                     raw_pixels: bool = False, uint8_input: bool = False) -> None:
    """Train a PyTorch module in plain PyTorch on ``size`` x ``size`` images (padded), then export it.

    ``raw_pixels``: on 0..255 values with Adam at 1e-3, as tutorials that skip normalisation train (SGD at 0.05
    diverges there); otherwise normalised, with nestc's SGD. ``uint8_input``: the module takes uint8 pixels and
    normalises them itself (``Cast``, ``Div(255)``, ``Sub``, ``Div`` in the graph), as edge image models do."""
    import torch
    from torch.nn import functional as F

    from nestc.data import fit_to_input, load_dataset

    raw = load_dataset(data)
    pixel_scale = raw_pixels or uint8_input
    prepared = fit_to_input(raw, ["N", 1, size, size], mean=[0.0] if pixel_scale else None,
                            std=[1 / 255] if pixel_scale else None, spatial="pad", pixels=uint8_input)
    torch.manual_seed(0)
    module = _torch_modules()[kind]()
    x, y = torch.from_numpy(prepared.x_train), torch.from_numpy(raw.y_train).long()
    if uint8_input:
        mean, std = raw.mean[0], raw.std[0]

        class Pixels(torch.nn.Module):
            def forward(self, pixels: torch.Tensor) -> torch.Tensor:
                return (pixels.float() / 255 - mean) / std

        module, x = torch.nn.Sequential(Pixels(), module), x.to(torch.uint8)
    optimiser = (torch.optim.Adam(module.parameters(), 1e-3) if raw_pixels else
                 torch.optim.SGD(module.parameters(), 0.05, momentum=0.9, nesterov=True, weight_decay=5e-4))
    steps = int(epochs * len(x) / 128)
    order = torch.randperm(len(x))
    for step in range(steps):
        batch = order[(step * 128) % len(x):][:128]
        optimiser.zero_grad()
        F.cross_entropy(module(x[batch]), y[batch]).backward()
        optimiser.step()
    module.eval()
    sample = (x[:1],)
    if exporter == "dynamo":
        torch.onnx.export(module, sample, str(path), dynamo=True, input_names=["x"], output_names=["logits"])
    else:
        torch.onnx.export(module, sample, str(path), dynamo=False, input_names=["x"], output_names=["logits"],
                          dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=opset)


# ------------------------------------------------------------------------------------------- rows
@dataclass(frozen=True)
class Case:
    """One model: how it is made and trained, and the data it is compressed on."""

    name: str
    style: str
    data: str
    make: Callable[[Path, str, float], None]


def _hand_built(build: Callable[[Path], None]) -> Callable[[Path, str, float], None]:
    def make(path: Path, data: str, epochs: float) -> None:
        import nestc

        blank = path.with_suffix(".init.onnx")
        build(blank)
        nestc.train(blank, path, data, nestc.TrainConfig(epochs=epochs, quiet=True, device="cpu"))
    return make


def _pytorch(kind: str, exporter: str, size: int = 28, opset: int = 17, raw_pixels: bool = False,
             uint8_input: bool = False) -> Callable[[Path, str, float], None]:
    def make(path: Path, data: str, epochs: float) -> None:
        train_and_export(kind, path, data, size, epochs, exporter, opset, raw_pixels, uint8_input)
    return make


CASES = (
    Case("tf2onnx-lenet5", "NHWC input, Transpose, channels-last Flatten, MatMul+Add, Softmax", "fashion-mnist",
         _hand_built(tf2onnx_lenet5)),
    Case("keras-mlp", "LeNet-300-100 as MatMul+Add, Softmax", "fashion-mnist", _hand_built(keras_mlp)),
    Case("tf2onnx-bn-gap", "NHWC, conv + BatchNormalization, GlobalAveragePool, Squeeze", "fashion-mnist",
         _hand_built(tf2onnx_bn_gap)),
    Case("torch-residual", "legacy exporter, residual Adds, BN folded into Conv", "fashion-mnist",
         _pytorch("residual", "legacy")),
    Case("torch-mobile", "dynamo exporter, depthwise separable, ReLU6 as Clip, BN folded", "fashion-mnist",
         _pytorch("mobile", "dynamo")),
    Case("torch-inception", "dynamo exporter, three-branch Concat, external data", "fashion-mnist",
         _pytorch("inception", "dynamo")),
    Case("torch-lenet5-classic", "legacy opset 11, 32x32 input, Tanh, AveragePool, LogSoftmax", "fashion-mnist",
         _pytorch("lenet5-classic", "legacy", size=32, opset=11)),
    Case("torch-raw-lenet5", "legacy exporter, trained with Adam on raw 0..255 pixels, ReLU, MaxPool",
         "fashion-mnist", _pytorch("lenet5", "legacy", raw_pixels=True)),
    Case("torch-uint8-lenet5", "legacy exporter, uint8 input cast and normalised inside the graph, ReLU, MaxPool",
         "fashion-mnist", _pytorch("lenet5", "legacy", uint8_input=True)),
    Case("opset9-digits-mlp", "opset 9 Flatten + Gemm, scikit-learn digits (8x8)", "digits",
         _hand_built(opset9_digits_mlp)),
    Case("cntk-mnist", "IR 3 opset 8, weights listed as inputs, batch 1, Add of [C,1,1] biases, Reshape(weight)",
         "fashion-mnist", _hand_built(cntk_mnist)),
)


def digits_npz(folder: Path) -> str:
    """scikit-learn's digits as the .npz layout nestc reads (1,400 training, 397 test images)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    order = np.random.default_rng(0).permutation(len(x))
    path = folder / "digits.npz"
    np.savez(path, x_train=x[order[:1400]], y_train=digits.target[order[:1400]], x_test=x[order[1400:]],
             y_test=digits.target[order[1400:]])
    return str(path)


def _as_exported(source: Path) -> Callable[[Path, str, float], None]:
    def make(path: Path, data: str, epochs: float) -> None:
        shutil.copyfile(source, path)
    return make


def file_cases(files: Sequence[str], data: str) -> list[Case]:
    """A row per file exported elsewhere, compressed as it was trained there."""
    cases = []
    for name in files:
        path = Path(name)
        producer = onnx.load(str(path), load_external_data=False).producer_name or "unknown producer"
        cases.append(Case(f"{producer}:{path.stem}", f"{producer} export, {path.name}", data, _as_exported(path)))
    return cases


def batch_256_latency(model: Path, output: Path, data: str, threads: int) -> dict[str, float | None]:
    """Batch-256 onnxruntime latency of the original and the output, in interleaved rounds with ``threads``
    threads each (compress's own report uses onnxruntime's default threads: on a loaded two-core machine
    those times jump by 2x between runs). None for a file that fixes another batch size (the dynamo
    exporter writes batch 1; nestc's output takes any batch)."""
    from nestc import runtime
    from nestc.data import fit_to_input, load_dataset

    sessions = {label: runtime.session(onnx.load(str(path)), str(path), threads=threads)
                for label, path in (("before", model), ("after", output))}
    fixed = {label: sess.get_inputs()[0].shape[0] for label, sess in sessions.items()}
    usable = {label: sess for label, sess in sessions.items()
              if not isinstance(fixed[label], int) or fixed[label] == 256}
    shape = ["N", *sessions["after"].get_inputs()[0].shape[1:]]
    pixels = sessions["after"].get_inputs()[0].type == "tensor(uint8)"
    x = fit_to_input(load_dataset(data), shape, pixels=pixels).x_test[:256]
    measured = runtime.interleaved_latency_ms(usable, x, repeats=30)
    return {label: round(measured[label], 3) if label in measured else None for label in sessions}


def run_case(case: Case, folder: Path, args: argparse.Namespace) -> dict:
    """Make, train and compress one model; the row of the table."""
    import nestc

    data = digits_npz(folder) if case.data == "digits" else args.data
    if data == SKLEARN_DIGITS:  # the image models on scikit-learn's digits at 28x28, as the NeST table takes them
        data = digits_28(folder)
    model = folder / f"{case.name.replace(':', '-')}.onnx"
    started = time.perf_counter()
    case.make(model, data, args.train_epochs)
    trained = time.perf_counter() - started
    config = nestc.NestConfig(max_epochs=args.max_epochs, batch_norm=args.batch_norm, round_to=args.round_to)
    train_config = nestc.TrainConfig(device=args.device, quiet=True, seed=args.seed)
    output = model.with_suffix(".nest.onnx")
    limit = None if case.data == "digits" else args.limit
    result = nestc.compress(model, output, data, config, train_config, limit=limit, log=lambda _line: None)
    report = result.report
    latency = batch_256_latency(model, output, data, args.threads or 1)
    layers = [layer["weight_shape"] for layer in report["layers_after"]]
    # Han et al. trains at the rate compress's check chose (or --han-lr): a rate that wrecks the model fails
    # every round
    han_config = dataclasses.replace(train_config, lr=args.han_lr or report["learning_rate"])
    # Han et al. trains as compress chose to: with inserted normalisation when compress trained with it
    baseline = han_row(model, model.with_suffix(".han.onnx"), data, han_config, config, limit,
                       report["batch_norms_inserted"] > 0) if args.han else {}
    used = case.data if case.data == "digits" else args.data  # the image models take --data
    return {**baseline, "model": case.name, "style": case.style, "data": used,
            "accuracy_before": report["accuracy"]["before"], "accuracy_after": report["accuracy"]["after"],
            "nonzero_before": report["nonzero_params"]["before"], "nonzero_after": report["nonzero_params"]["after"],
            "params_after": report["params"]["after"],
            "latency_b256_before": latency["before"], "latency_b256_after": latency["after"],
            "learning_rate": report["learning_rate"], "input_fit": report["input_fit"],
            "input_std": report["input_normalisation"]["std"],
            "batch_norms_inserted": report["batch_norms_inserted"],
            "exit_code": result.exit_code, "train_s": round(trained, 1), "compress_s": report["seconds"],
            "weight_shapes_after": layers}


def han_row(model: Path, output: Path, data: str, train_config: object, config: object, limit: int | None,
            batch_norm: bool) -> dict:
    """Iterative magnitude pruning alone on the same model, data, budget and epochs; its accuracy by
    onnxruntime, as compress measures its own."""
    from han_pruning import han_pruning

    import nestc

    result = han_pruning(str(model), str(output), data, train_config, config.max_acc_drop, config.max_epochs,
                         limit=limit, batch_norm=batch_norm)
    return {"han_nonzero": nestc.inspect(output).nonzero_params, "han_accuracy": nestc.evaluate(output, data).accuracy,
            "han_met_budget": result.met_budget, "han_rounds": len(result.history)}


def print_table(rows: Sequence[dict]) -> None:
    head = ("model", "acc before", "acc after", "non-zero before", "non-zero after", "compr.", "params after",
            "b256 ms before", "b256 ms after", "lr", "input fit", "exit")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        if "error" in r:
            print(f"| {r['model']} | error: {r['error']} |")
            continue
        cells = (r["model"], f"{r['accuracy_before']:.2%}", f"{r['accuracy_after']:.2%}", f"{r['nonzero_before']:,}",
                 f"{r['nonzero_after']:,}", f"{r['nonzero_before'] / max(r['nonzero_after'], 1):.1f}x",
                 f"{r['params_after']:,}", f"{r['latency_b256_before'] or 'fixed batch'}", f"{r['latency_b256_after']}",
                 f"{r['learning_rate']:.3g}", r["input_fit"] or "-", str(r["exit_code"]))
        print("| " + " | ".join(cells) + " |")
    compared = [r for r in rows if "han_nonzero" in r]
    if compared:
        print("\n| model | nestc non-zero | nestc acc | Han et al. non-zero | Han acc | Han rounds | nestc smaller |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in compared:
            ratio = r["han_nonzero"] / max(r["nonzero_after"], 1)
            print(f"| {r['model']} | {r['nonzero_after']:,} | {r['accuracy_after']:.2%} | {r['han_nonzero']:,} | "
                  f"{r['han_accuracy']:.2%} | {r['han_rounds']} | {ratio:.2f}x |")


def nestc_default(field: str) -> object:
    """A ``NestConfig`` default, so that the options here default to what ``nestc compress`` does."""
    import nestc

    return getattr(nestc.NestConfig(), field)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--models", default=",".join(c.name for c in CASES),
                        help="comma-separated case names (none: only --files)")
    parser.add_argument("--files", nargs="*", default=[], help="ONNX files exported elsewhere, compressed as they are")
    parser.add_argument("--data", default="fashion-mnist",
                        help=f"data set of the image models ({SKLEARN_DIGITS}: scikit-learn's digits at 28x28)")
    parser.add_argument("--limit", type=int, default=15000, help="training images for compress")
    parser.add_argument("--train-epochs", type=float, default=2.0, help="training before compression")
    parser.add_argument("--max-epochs", type=float, default=8.0, help="compress's epoch budget")
    parser.add_argument("--han", action="store_true", help="also prune each model by Han et al.'s schedule")
    parser.add_argument("--han-lr", type=float, default=None,
                        help="Han et al.'s learning rate [default: the one compress's check chose]")
    parser.add_argument("--batch-norm", choices=("auto", "on", "off"), default="auto",
                        help="compress's --batch-norm; Han et al. trains with normalisation when compress did")
    parser.add_argument("--round-to", type=int, default=nestc_default("round_to"), help="compress's --round-to")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0, help="training seed of compress and Han et al. (data order, "
                        "growth); the models before compression are the same for every seed")
    parser.add_argument("--out", default=str(RESULTS / "exporters.json"))
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    chosen = [] if args.models == "none" else args.models.split(",")
    unknown = sorted(set(chosen) - {c.name for c in CASES})
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(c.name for c in CASES)}")
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for case in [*(c for c in CASES if c.name in chosen), *file_cases(args.files, args.data)]:
            print(f"--- {case.name}", file=sys.stderr)
            try:
                rows.append(run_case(case, Path(tmp), args))
            except Exception as exc:  # a failing model is a row of the table, not the end of it
                rows.append({"model": case.name, "style": case.style, "error": f"{type(exc).__name__}: {exc}"})
    print_table(rows)
    payload = {"command": " ".join(["python", "benchmarks/exporters.py", *(argv or sys.argv[1:])]),
               "date": datetime.date.today().isoformat(), "machine": machine_info(),
               "settings": {k: v for k, v in vars(args).items() if k != "out"},
               "total_seconds": round(time.perf_counter() - started, 1), "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(payload, indent=1) + "\n")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
