"""A small ONNX graph builder for nestc's seed architectures.

Seeds are written directly as ONNX (no exporter in the loop), so ``nestc seed`` is fast and its
graphs look like what ``torch.onnx.export`` produces for the same layers: Conv/Gemm with bias,
BatchNormalization, Relu, MaxPool, GlobalAveragePool, Flatten.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nestc.errors import OptionError

OPSET = 17


class GraphBuilder:
    """Append layers to a graph; each method returns the name of the tensor it produced.

    Weights use PyTorch's default initialisation (Kaiming-uniform with a = sqrt(5)), optionally sparse:
    with ``density < 1`` each weight keeps that share of its entries (chosen at random) and is scaled
    up by ``1 / sqrt(density)`` so activations keep their variance.
    """

    def __init__(self, name: str, input_shape: list[int], seed: int = 0, density: float = 1.0) -> None:
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.density = density
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.channels: dict[str, int] = {"input": input_shape[0]}
        self.sizes: dict[str, tuple[int, int]] = {"input": (input_shape[1], input_shape[2])}
        """Height and width of every image tensor: a Flatten's width follows from the input size."""
        self.input = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *input_shape])
        self._count: dict[str, int] = {}

    def _name(self, prefix: str) -> str:
        self._count[prefix] = self._count.get(prefix, 0) + 1
        return f"{prefix}{self._count[prefix]}"

    def _weight(self, name: str, shape: tuple[int, ...], fan_in: int) -> str:
        bound = 1.0 / math.sqrt(fan_in)
        weight = self.rng.uniform(-bound, bound, size=shape).astype(np.float32)
        if self.density < 1.0:
            keep = self.rng.random(shape) < self.density
            weight = np.where(keep, weight / math.sqrt(self.density), 0.0).astype(np.float32)
        return self._const(name, weight)

    def _const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(numpy_helper.from_array(value, name))
        return name

    def _node(self, op: str, inputs: list[str], prefix: str, channels: int, **attrs: Any) -> str:
        name = self._name(prefix)
        out = f"{name}_out"
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        self.channels[out] = channels
        if inputs[0] in self.sizes:
            self.sizes[out] = self.sizes[inputs[0]]
        return out

    def _window(self, x: str, out: str, kernel: int, stride: int, pad: int) -> None:
        """Record the size a kernel window leaves of ``x``; one that leaves nothing is an OptionError."""
        height, width = ((size + 2 * pad - kernel) // stride + 1 for size in self.sizes[x])
        if height < 1 or width < 1:
            h, w = self.sizes["input"]
            raise OptionError(f"--input-shape: {h}x{w} images are too small for {self.name}: its "
                              f"{kernel}x{kernel} windows leave no pixels; give larger images")
        self.sizes[out] = (height, width)

    def conv(self, x: str, out_channels: int, kernel: int, stride: int = 1, pad: int = 0) -> str:
        """A dense 2-D convolution with bias."""
        in_channels = self.channels[x]
        name = self._name("conv")
        w = self._weight(f"{name}.weight", (out_channels, in_channels, kernel, kernel), in_channels * kernel * kernel)
        bound = 1.0 / math.sqrt(in_channels * kernel * kernel)
        b = self._const(f"{name}.bias", self.rng.uniform(-bound, bound, out_channels).astype(np.float32))
        out = f"{name}_out"
        self.nodes.append(helper.make_node("Conv", [x, w, b], [out], name=name, kernel_shape=[kernel, kernel],
                                           strides=[stride, stride], pads=[pad] * 4))
        self.channels[out] = out_channels
        self._window(x, out, kernel, stride, pad)
        return out

    def batch_norm(self, x: str) -> str:
        """BatchNormalization with unit scale, zero shift and fresh statistics."""
        channels = self.channels[x]
        name = self._name("bn")
        params = [self._const(f"{name}.{p}", np.full(channels, v, dtype=np.float32))
                  for p, v in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0))]
        out = f"{name}_out"
        self.nodes.append(helper.make_node("BatchNormalization", [x, *params], [out], name=name,
                                           epsilon=1e-5, momentum=0.9))
        self.channels[out] = channels
        self.sizes[out] = self.sizes[x]
        return out

    def relu(self, x: str) -> str:
        """Rectified linear unit."""
        return self._node("Relu", [x], "relu", self.channels[x])

    def max_pool(self, x: str, kernel: int = 2, stride: int = 2) -> str:
        """Max pooling without padding."""
        out = self._node("MaxPool", [x], "pool", self.channels[x], kernel_shape=[kernel, kernel],
                         strides=[stride, stride])
        self._window(x, out, kernel, stride, 0)
        return out

    def global_avg_pool(self, x: str) -> str:
        """Global average pooling to 1x1."""
        out = self._node("GlobalAveragePool", [x], "gap", self.channels[x])
        self.sizes[out] = (1, 1)
        return out

    def flatten(self, x: str) -> str:
        """Flatten the image tensor ``x`` after the batch axis (channels x height x width columns)."""
        height, width = self.sizes[x]
        out = self._node("Flatten", [x], "flatten", self.channels[x] * height * width, axis=1)
        del self.sizes[out]
        return out

    def add(self, a: str, b: str) -> str:
        """Elementwise sum (residual join)."""
        return self._node("Add", [a, b], "add", self.channels[a])

    def linear(self, x: str, out_features: int) -> str:
        """A fully connected layer as Gemm with ``transB=1`` (the exporters' form of nn.Linear)."""
        in_features = self.channels[x]
        name = self._name("fc")
        w = self._weight(f"{name}.weight", (out_features, in_features), in_features)
        bound = 1.0 / math.sqrt(in_features)
        b = self._const(f"{name}.bias", self.rng.uniform(-bound, bound, out_features).astype(np.float32))
        out = f"{name}_out"
        self.nodes.append(helper.make_node("Gemm", [x, w, b], [out], name=name, transB=1))
        self.channels[out] = out_features
        return out

    def build(self, output: str, classes: int) -> onnx.ModelProto:
        """Finish the graph with ``output`` as its single ``[N, classes]`` output named ``logits``."""
        self.nodes.append(helper.make_node("Identity", [output], ["logits"], name="output"))
        graph = helper.make_graph(self.nodes, self.name, [self.input],
                                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])],
                                  self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nestc")
        onnx.checker.check_model(model)
        return model
