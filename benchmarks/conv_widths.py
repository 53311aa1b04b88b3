"""onnxruntime's convolution latency against channel widths: what ``--round-to`` rounds compacted widths for.

A third table times fully connected layers, ``784 -> H1 -> H2 -> 10``, whose widths ``--round-to`` leaves free.

onnxruntime (x86) runs a convolution in its blocked NCHWc layout only when the input width is a multiple
of its block (16 with AVX-512, 8 with AVX2) or below it; an input below the block is read through a direct
path, and other widths fall back to a generic kernel. Each row here is one small graph,
``Conv(1 -> C, 3x3) -> Relu -> Conv(C -> OUT, KxK)`` on a 14x14 map, and a LeNet-5
(``Conv(1 -> C1, 5x5)``, max pooling, ``Conv(C1 -> C2, 5x5)``, max pooling, ``Gemm(16 C2 -> F)``, ``Gemm(F -> 10)``),
timed at batch 256 with one thread, median of interleaved runs.

Usage::

    python benchmarks/conv_widths.py
    python benchmarks/conv_widths.py --widths 8,12,16,20,24,32 --kernels 1,3 --repeats 30
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from nestc import runtime

OPSET = 17
LENETS = ((20, 50, 500), (20, 48, 500), (16, 48, 500), (12, 48, 500), (8, 48, 500), (16, 32, 100), (8, 32, 100))
"""LeNet-5 widths (C1, C2, F): the dense model's, and widths a compressed one ends at."""
MLPS = ((300, 100), (128, 64), (125, 61), (96, 32), (93, 29), (48, 16), (45, 13))
"""LeNet-300-100 hidden widths (H1, H2), multiples of 16 and not."""


def _weight(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


def _model(nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], shape: list[int]) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "widths", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def conv_pair(width: int, kernel: int, out: int, size: int) -> onnx.ModelProto:
    """``Conv(1 -> width, 3x3) -> Relu -> Conv(width -> out, kernel)``, both padded to keep the map."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1] * 4), helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Conv", ["r", "w1"], ["y"], pads=[kernel // 2] * 4)]
    return _model(nodes, [_weight(rng, "w0", width, 1, 3, 3), _weight(rng, "w1", out, width, kernel, kernel)],
                  ["N", 1, size, size])


def lenet5(c1: int, c2: int, hidden: int) -> onnx.ModelProto:
    """LeNet-5 on 28x28 inputs with the given widths."""
    rng = np.random.default_rng(0)
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"]), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("MaxPool", ["ar"], ["ap"], **pool),
             helper.make_node("Conv", ["ap", "w2", "b2"], ["c"]), helper.make_node("Relu", ["c"], ["cr"]),
             helper.make_node("MaxPool", ["cr"], ["cp"], **pool), helper.make_node("Flatten", ["cp"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["d"], transB=1), helper.make_node("Relu", ["d"], ["dr"]),
             helper.make_node("Gemm", ["dr", "w4", "b4"], ["y"], transB=1)]
    inits = [_weight(rng, "w1", c1, 1, 5, 5), _weight(rng, "b1", c1), _weight(rng, "w2", c2, c1, 5, 5),
             _weight(rng, "b2", c2), _weight(rng, "w3", hidden, 16 * c2), _weight(rng, "b3", hidden),
             _weight(rng, "w4", 10, hidden), _weight(rng, "b4", 10)]
    return _model(nodes, inits, ["N", 1, 28, 28])


def mlp(first: int, second: int) -> onnx.ModelProto:
    """``Gemm(784 -> first) -> Relu -> Gemm(first -> second) -> Relu -> Gemm(second -> 10)``."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["a"], transB=1), helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Gemm", ["ar", "w2", "b2"], ["c"], transB=1), helper.make_node("Relu", ["c"], ["cr"]),
             helper.make_node("Gemm", ["cr", "w3", "b3"], ["y"], transB=1)]
    inits = [_weight(rng, "w1", first, 784), _weight(rng, "b1", first), _weight(rng, "w2", second, first),
             _weight(rng, "b2", second), _weight(rng, "w3", 10, second), _weight(rng, "b3", 10)]
    return _model(nodes, inits, ["N", 784])


def latencies(models: dict[str, onnx.ModelProto], x: np.ndarray, repeats: int) -> dict[str, float]:
    """Median batch latency of each model in ms, one thread, runs interleaved so that load hits all alike."""
    sessions = {label: runtime.session(model, label, threads=1) for label, model in models.items()}
    return runtime.interleaved_latency_ms(sessions, x, repeats=repeats)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--widths", default="4,8,12,15,16,20,24,28,32", help="input widths C of the second conv")
    parser.add_argument("--kernels", default="1,3", help="kernel sizes K of the second conv")
    parser.add_argument("--out-width", type=int, default=8, help="output width of the second conv")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    widths = [int(w) for w in args.widths.split(",")]
    kernels = [int(k) for k in args.kernels.split(",")]
    rng = np.random.default_rng(0)
    pairs = {f"{k}x{k} {w}": conv_pair(w, k, args.out_width, 14) for k in kernels for w in widths}
    measured = latencies(pairs, rng.random((args.batch, 1, 14, 14), dtype=np.float32), args.repeats)
    print(f"| C -> {args.out_width}, 14x14, batch {args.batch} | " + " | ".join(str(w) for w in widths) + " |")
    print("|---|" + "---:|" * len(widths))
    for k in kernels:
        print(f"| {k}x{k} ms | " + " | ".join(f"{measured[f'{k}x{k} {w}']:.3f}" for w in widths) + " |")
    nets = {f"{c1}-{c2}-{f}": lenet5(c1, c2, f) for c1, c2, f in LENETS}
    measured = latencies(nets, rng.random((args.batch, 1, 28, 28), dtype=np.float32), args.repeats)
    print(f"\n| LeNet-5 widths C1-C2-F | ms at batch {args.batch} |")
    print("|---|---:|")
    for label, ms in measured.items():
        print(f"| {label} | {ms:.3f} |")
    fully_connected = {f"{a}-{b}": mlp(a, b) for a, b in MLPS}
    measured = latencies(fully_connected, rng.random((args.batch, 784), dtype=np.float32), args.repeats)
    print(f"\n| fully connected widths H1-H2 | ms at batch {args.batch} |")
    print("|---|---:|")
    for label, ms in measured.items():
        print(f"| {label} | {ms:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
