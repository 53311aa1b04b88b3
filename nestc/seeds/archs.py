"""The seed architectures of the NeST paper, as ONNX: LeNet-300-100, LeNet-5, CIFAR VGG-16 and ResNet-18.

``width_ratio`` scales every hidden width (the paper's seeds use r = 0.4 for LeNets, a 120-40 seed for
LeNet-300-100) and ``density`` keeps that share of each weight's connections (the paper keeps about
10 % for LeNets, 30 % for VGG/ResNet). Input and output widths never change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import onnx

from nestc.errors import NUMBER, OptionError, require
from nestc.seeds.builder import GraphBuilder

_VGG16: list[int | str] = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _width(base: int, ratio: float) -> int:
    return max(1, round(base * ratio))


def lenet_300_100(g: GraphBuilder, r: float, classes: int) -> str:
    """784 (the input's size) -> 300 -> 100 -> classes, ReLU between (the Caffe LeNet-300-100)."""
    x = g.flatten("input")
    x = g.relu(g.linear(x, _width(300, r)))
    x = g.relu(g.linear(x, _width(100, r)))
    return g.linear(x, classes)


def lenet_5(g: GraphBuilder, r: float, classes: int) -> str:
    """Caffe LeNet-5: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc classes (431K params at r = 1)."""
    x = g.max_pool(g.relu(g.conv("input", _width(20, r), 5)))
    x = g.max_pool(g.relu(g.conv(x, _width(50, r), 5)))
    x = g.flatten(x)
    x = g.relu(g.linear(x, _width(500, r)))
    return g.linear(x, classes)


def vgg16(g: GraphBuilder, r: float, classes: int) -> str:
    """CIFAR VGG-16 with batch norm: 13 conv-BN-ReLU layers, 5 max-pools, one classifier layer."""
    x = "input"
    for item in _VGG16:
        x = g.max_pool(x) if item == "M" else g.relu(g.batch_norm(g.conv(x, _width(int(item), r), 3, pad=1)))
    return g.linear(g.flatten(x), classes)


def resnet18(g: GraphBuilder, r: float, classes: int) -> str:
    """CIFAR ResNet-18: 3x3 stem, four stages of two basic blocks, global pooling, one classifier layer."""
    x = g.relu(g.batch_norm(g.conv("input", _width(64, r), 3, pad=1)))
    for stage, base in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            width = _width(base, r)
            y = g.relu(g.batch_norm(g.conv(x, width, 3, stride, 1)))
            y = g.batch_norm(g.conv(y, width, 3, 1, 1))
            shortcut = x if stride == 1 and g.channels[x] == width else g.batch_norm(g.conv(x, width, 1, stride))
            x = g.relu(g.add(y, shortcut))
    return g.linear(g.flatten(g.global_avg_pool(x)), classes)


ARCHITECTURES: dict[str, tuple[Callable[[GraphBuilder, float, int], str], list[int]]] = {
    "lenet-300-100": (lenet_300_100, [1, 28, 28]),
    "lenet-5": (lenet_5, [1, 28, 28]),
    "vgg16": (vgg16, [3, 32, 32]),
    "resnet18": (resnet18, [3, 32, 32]),
}


def build_seed(arch: str, width_ratio: float = 1.0, density: float = 1.0, classes: int = 10,
               seed: int = 0, input_shape: Sequence[int] | None = None) -> onnx.ModelProto:
    """Build architecture ``arch`` as an ONNX model.

    ``input_shape`` (channels, height, width) defaults to the architecture's data set's (:data:`ARCHITECTURES`):
    the same seed serves colour or larger images (a LeNet-5 for CIFAR-10), since data are never given
    channels they do not have.

    Raises:
        OptionError: for an unknown architecture, out-of-range ratio/density/classes, or an input shape
            that is not three positive sizes or too small for the architecture's layers.
    """
    if arch not in ARCHITECTURES:
        raise OptionError(f"unknown architecture '{arch}'; choose one of {', '.join(ARCHITECTURES)}")
    require(width_ratio, NUMBER, "--width-ratio", "a number in (0, 4]")
    require(density, NUMBER, "--density", "a number in (0, 1]")
    require(classes, (int,), "--classes", "an integer >= 2")
    require(seed, (int,), "--seed", "an integer in [0, 2**32)")
    if not 0 < width_ratio <= 4:
        raise OptionError(f"--width-ratio {width_ratio}: must be in (0, 4]")
    if not 0 < density <= 1:
        raise OptionError(f"--density {density}: must be in (0, 1]")
    if classes < 2:
        raise OptionError(f"--classes {classes}: must be at least 2")
    if not 0 <= seed < 2**32:
        raise OptionError(f"--seed {seed}: must be in [0, 2**32)")
    body, default_shape = ARCHITECTURES[arch]
    shape = _input_shape(default_shape if input_shape is None else input_shape)
    builder = GraphBuilder(arch, shape, seed=seed, density=density)
    return builder.build(body(builder, width_ratio, classes), classes)


MAX_INPUT_SIZE = 4096
"""Largest channel count, height or width a seed takes: a typo (32323) must not build a gigabyte model."""


def _input_shape(shape: Sequence[int]) -> list[int]:
    """``shape`` as three whole sizes in [1, MAX_INPUT_SIZE], or an OptionError."""
    values = list(shape) if isinstance(shape, Sequence) and not isinstance(shape, str) else []
    if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_INPUT_SIZE
                                   for v in values):
        shown = ",".join(map(str, values)) if values else repr(shape)
        raise OptionError(f"--input-shape {shown}: give channels, height and width, three whole numbers in "
                          f"[1, {MAX_INPUT_SIZE}], e.g. 3,32,32")
    return values
