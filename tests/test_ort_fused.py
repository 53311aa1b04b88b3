"""Models saved by onnxruntime after its graph optimisations: fused Conv and Gemm nodes are split back.

The fused files are written by onnxruntime itself (``optimized_model_filepath``), so the test follows what
onnxruntime really fuses; each split model must compute what the original computes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nestc
from nestc.errors import ModelError, UnsupportedOpError
from nestc.frontends import load_model

_ACTIVATIONS = [("Relu", {}, []), ("Clip", {}, [0.0, 6.0]), ("LeakyRelu", {"alpha": 0.1}, []),
                ("HardSigmoid", {"alpha": 0.25, "beta": 0.4}, []), ("Tanh", {}, [])]


def _weights(rng: np.random.Generator, name: str, *shape: int) -> onnx.TensorProto:
    return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)


def _conv_net(path: Path) -> Path:
    """28x28 grey images -> five 3x3 Convs, one per activation onnxruntime fuses (the fourth without a bias), a
    SiLU, then Gemm + LeakyRelu, Gemm + Sigmoid and a last Gemm: 10 classes."""
    rng = np.random.default_rng(0)
    nodes, inits, previous, channels = [], [], "x", 1
    for i, (op, attributes, bounds) in enumerate(_ACTIVATIONS):
        inputs = [previous, f"w{i}"] + ([] if i == 3 else [f"b{i}"])
        inits.append(_weights(rng, f"w{i}", 4, channels, 3, 3))
        if i != 3:
            inits.append(_weights(rng, f"b{i}", 4))
        nodes.append(helper.make_node("Conv", inputs, [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        extra = [f"bound{i}_{k}" for k in range(len(bounds))]
        inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in zip(extra, bounds, strict=True)]
        nodes.append(helper.make_node(op, [f"c{i}", *extra], [f"a{i}"], name=f"act{i}", **attributes))
        previous, channels = f"a{i}", 4
    nodes.append(helper.make_node("Sigmoid", [previous], ["gate"], name="silu_gate"))  # SiLU: x * sigmoid(x)
    nodes.append(helper.make_node("Mul", [previous, "gate"], ["silu"], name="silu"))
    nodes.append(helper.make_node("MaxPool", ["silu"], ["p"], name="pool", kernel_shape=[4, 4], strides=[4, 4]))
    nodes.append(helper.make_node("Flatten", ["p"], ["f"], name="flat"))
    for i, (width, act, attributes) in enumerate([(16, "LeakyRelu", {"alpha": 0.2}), (12, "Sigmoid", {}),
                                                   (10, None, {})]):
        fan_in = 4 * 7 * 7 if i == 0 else (16, 12)[i - 1]
        inits += [_weights(rng, f"g{i}", width, fan_in), _weights(rng, f"gb{i}", width)]
        source = "f" if i == 0 else f"h{i - 1}"
        out = "y" if act is None else f"gemm{i}"
        nodes.append(helper.make_node("Gemm", [source, f"g{i}", f"gb{i}"], [out], name=f"fc{i}", transB=1))
        if act is not None:
            nodes.append(helper.make_node(act, [out], [f"h{i}"], name=f"fc{i}_act", **attributes))
    graph = helper.make_graph(nodes, "fused", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _optimised(model: Path, out: Path, level: ort.GraphOptimizationLevel) -> Path:
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    return out


def _run(path: Path, x: np.ndarray, optimise: bool = True) -> np.ndarray:
    """``path``'s output for ``x``; ``optimise=False`` runs the graph as written (onnxruntime would fuse a split
    model again, computing with the fused kernels whatever the split nodes said)."""
    options = ort.SessionOptions()
    if not optimise:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def test_a_model_saved_by_onnxruntime_is_split_back_and_computes_the_same(tmp_path: Path) -> None:
    original = _conv_net(tmp_path / "net.onnx")
    fused = _optimised(original, tmp_path / "net.ort.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    ops = {(n.domain, n.op_type) for n in onnx.load(fused).graph.node}
    assert {("com.microsoft", "FusedConv"), ("com.microsoft", "FusedGemm"), ("com.microsoft", "QuickGelu")} <= ops
    activations = {bytes(helper.get_attribute_value(a)).decode() for n in onnx.load(fused).graph.node
                   for a in n.attribute if a.name == "activation"}
    assert {"Relu", "Clip", "LeakyRelu", "HardSigmoid", "Tanh", "Sigmoid"} <= activations
    split = nestc.compact(fused, tmp_path / "out.onnx").after
    assert split.params == nestc.inspect(original).params
    written = onnx.load(tmp_path / "out.onnx")
    assert all(n.domain == "" for n in written.graph.node)
    assert all(entry.domain != "com.microsoft" for entry in written.opset_import)
    x = np.random.default_rng(1).random((5, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(_run(tmp_path / "out.onnx", x, optimise=False), _run(original, x, optimise=False),
                               rtol=1e-5, atol=1e-5)



def test_scaled_matmuls_saved_by_onnxruntime_compute_the_same(tmp_path: Path) -> None:
    """``x @ W * 0.5`` and logits divided by a temperature become FusedMatMul with ``alpha``; split back into
    MatMul and Mul, the net computes what it did."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w1"], ["m1"], name="fc1"),
             helper.make_node("Mul", ["m1", "half"], ["s1"], name="scale"),
             helper.make_node("Relu", ["s1"], ["h"], name="relu"),
             helper.make_node("MatMul", ["h", "w2"], ["m2"], name="fc2"),
             helper.make_node("Div", ["m2", "temperature"], ["y"], name="temperature_scaling")]
    inits = [_weights(rng, "w1", 784, 32), _weights(rng, "w2", 32, 10),
             numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array(3.0, np.float32), "temperature")]
    graph = helper.make_graph(nodes, "scaled",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    original = tmp_path / "scaled.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), original)
    fused = _optimised(original, tmp_path / "scaled.ort.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    assert [n.op_type for n in onnx.load(fused).graph.node].count("FusedMatMul") == 2, "onnxruntime fused both"
    nestc.compact(fused, tmp_path / "out.onnx")
    assert [n.op_type for n in onnx.load(tmp_path / "out.onnx").graph.node] == [
        "Flatten", "MatMul", "Mul", "Relu", "MatMul", "Mul"]
    x = rng.random((4, 1, 28, 28), dtype=np.float32)
    np.testing.assert_allclose(_run(tmp_path / "out.onnx", x, optimise=False), _run(original, x, optimise=False),
                               rtol=1e-5, atol=1e-5)


def test_a_fused_trained_model_compresses_end_to_end(tmp_path: Path) -> None:
    """A trained LeNet-5 saved by onnxruntime (FusedConv, FusedGemm) is pruned within budget, and the output
    has the standard nodes of the model as it was before onnxruntime fused them."""
    nestc.seed("lenet-5", tmp_path / "seed.onnx", width_ratio=0.25)
    trained = tmp_path / "trained.onnx"
    nestc.train(tmp_path / "seed.onnx", trained, "embedded", nestc.TrainConfig(epochs=3, quiet=True, device="cpu"))
    fused = _optimised(trained, tmp_path / "trained.ort.onnx", ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    assert any(n.domain == "com.microsoft" for n in onnx.load(fused).graph.node)
    result = nestc.compress(fused, tmp_path / "small.onnx", "embedded", nestc.NestConfig(max_epochs=2),
                            nestc.TrainConfig(quiet=True, device="cpu"))
    assert result.met_budget
    assert result.report["nonzero_params"]["after"] < result.report["nonzero_params"]["before"]
    ops = [n.op_type for n in onnx.load(tmp_path / "small.onnx").graph.node]
    assert ops == [n.op_type for n in onnx.load(trained).graph.node if n.op_type != "Identity"]  # onnxruntime drops it


@pytest.mark.parametrize(("fused", "split"), [
    (helper.make_node("FusedConv", ["x", "w", "b", "x"], ["y"], name="block", domain="com.microsoft",
                      pads=[1, 1, 1, 1], activation="Relu"), ["Conv", "Add", "Relu"]),
    (helper.make_node("QuickGelu", ["x"], ["y"], name="gelu", domain="com.microsoft"), ["Mul", "Sigmoid", "Mul"]),
    (helper.make_node("FusedMatMul", ["x", "x"], ["y"], name="gram", domain="com.microsoft", transA=1, transB=1,
                      alpha=0.25), ["Transpose", "Transpose", "MatMul", "Mul"]),
], ids=["conv-residual", "quick-gelu", "matmul-transposed"])
def test_hand_written_fused_nodes(tmp_path: Path, fused: onnx.NodeProto, split: list[str]) -> None:
    """FusedConv's fourth input ``Z`` is added before the activation (onnxruntime fuses Conv + Add + Relu so on
    some builds); QuickGelu's alpha defaults to 1.702; FusedMatMul swaps the last two axes of a transposed operand
    (here x' @ x' of each 6x6 slice, times 0.25). The reference is onnxruntime running the fused node."""
    rng = np.random.default_rng(2)
    graph = helper.make_graph([fused], "z", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 6, 6])],
                              [_weights(rng, "w", 3, 3, 3, 3), _weights(rng, "b", 3)])
    path = tmp_path / "z.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), path)
    assert [n.op_type for n in load_model(path).graph.node] == split
    nestc.compact(path, tmp_path / "out.onnx")
    x = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(_run(tmp_path / "out.onnx", x, optimise=False), _run(path, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("op_type", "attributes", "message"), [
    ("FusedConv", {"activation": "Swish"},
     r"'block' \(com\.microsoft\.FusedConv\) fuses the activation 'Swish', which"),
    ("FusedConv", {"activation": "LeakyRelu"},
     r"'block' \(com\.microsoft\.FusedConv\) gives LeakyRelu 0 parameter\(s\); it takes 1"),
    ("FusedMatMul", {"transBatchA": 1}, r"'block' \(com\.microsoft\.FusedMatMul\) moves batch axes"),
    ("FusedMatMul", {"transA": 1}, r"'block' \(com\.microsoft\.FusedMatMul\) transposes 'r', whose rank the file"),
], ids=["unknown-activation", "parameter-count", "batch-axes", "unknown-rank"])
def test_a_fused_node_nestc_cannot_split_is_named(tmp_path: Path, op_type: str, attributes: dict,
                                                  message: str) -> None:
    """One line naming the file, the node and what is wrong with it; the graph feeds the node a value whose shape
    the file does not declare (``r``), as onnxruntime's saved files do."""
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
             helper.make_node(op_type, ["r", "w"], ["y"], name="block", domain="com.microsoft", **attributes)]
    graph = helper.make_graph(nodes, "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [_weights(np.random.default_rng(0), "w", 1, 1, 3, 3)])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), path)
    with pytest.raises(ModelError, match=f"bad.onnx: node {message}") as err:
        load_model(path)
    assert "\n" not in str(err.value)


def test_the_cpu_specific_layout_is_refused_with_what_to_do(tmp_path: Path) -> None:
    """ORT_ENABLE_ALL writes convolutions in the NCHWc layout of the CPU it ran on (as onnxruntime does on AVX2
    and AVX-512 machines: ReorderInput, nchwc Conv, ReorderOutput); nestc names the level to save at instead."""
    domain = "com.microsoft.nchwc"
    nodes = [helper.make_node("ReorderInput", ["x"], ["xb"], name="reorder_in", domain=domain),
             helper.make_node("Conv", ["xb", "w"], ["yb"], name="conv_nchwc", domain=domain),
             helper.make_node("ReorderOutput", ["yb"], ["y"], name="reorder_out", domain=domain, channels=8)]
    graph = helper.make_graph(nodes, "nchwc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 4, 4])],
                              [_weights(np.random.default_rng(0), "w", 8, 8, 1, 1)])
    path = tmp_path / "packed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(domain, 1)]),
              path)
    with pytest.raises(UnsupportedOpError, match=r"'conv_nchwc' \(com\.microsoft\.nchwc\.Conv\).*; "
                                                  r"com\.microsoft\.nchwc is the CPU-specific layout .* "
                                                  r"ORT_ENABLE_EXTENDED at most"):
        load_model(path)
