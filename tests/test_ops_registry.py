"""The op table: coverage, MAC counts, batch-norm statistics and skl2onnx MLP graphs."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nestc.errors import ModelError
from nestc.ir import Network, Node, OpHandler, handler_for, registered_ops
from nestc.ir.network import WEIGHT_OPS

REQUIRED_OPS = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu",
    "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Gelu", "Elu", "Softmax", "LogSoftmax",
    "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
    "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Pad", "ReduceMean",
    "Constant", "Shape", "Gather", "Cast", "ArgMax",
    # unary point-wise math and activations
    "Abs", "Neg", "Exp", "Log", "Sqrt", "Reciprocal", "Erf", "Softplus", "Softsign", "Selu", "Celu",
    "ThresholdedRelu", "Mish", "Floor", "Ceil", "Round", "Sign",
    # broadcasting element-wise ops
    "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Less", "Greater", "Expand", "CastLike", "ConstantOfShape",
    # normalisations and reductions
    "LRN", "InstanceNormalization", "LayerNormalization", "ReduceSum", "ReduceMax",
)


@pytest.mark.parametrize("op_type", REQUIRED_OPS)
def test_required_op_is_registered(op_type: str) -> None:
    handler = handler_for(op_type)
    assert handler is not None
    assert "" in handler.domains


def test_every_handler_overrides_forward() -> None:
    for op_type, handler in registered_ops().items():
        assert handler.op_type == op_type
        assert type(handler).forward is not OpHandler.forward, op_type


def test_weight_ops_count_macs() -> None:
    for op_type in WEIGHT_OPS:
        assert type(handler_for(op_type)).macs is not OpHandler.macs, op_type


def _macs(op_type: str, shapes: list[tuple[int, ...]], **attrs: object) -> int:
    """Run the handler on random tensors of ``shapes`` and count MACs from the real shapes."""
    node = Node("n", op_type, [f"i{i}" for i in range(len(shapes))], ["y"], dict(attrs))
    handler = handler_for(op_type)
    assert handler is not None
    inputs = [torch.randn(s) for s in shapes]
    outputs = handler.forward(node, inputs, training=False)
    return handler.macs(node, shapes, [tuple(o.shape) for o in outputs], inputs)


@pytest.mark.parametrize(("op_type", "shapes", "attrs", "expected"), [
    # 3 -> 8 channels, 3x3, 8x8 output: every output cell costs 3 * 9 MACs.
    ("Conv", [(2, 3, 8, 8), (8, 3, 3, 3), (8,)], {"pads": [1, 1, 1, 1]}, 8 * 8 * 8 * 3 * 9),
    # Depthwise: every output cell sees one input channel.
    ("Conv", [(2, 8, 8, 8), (8, 1, 3, 3)], {"pads": [1, 1, 1, 1], "group": 8}, 8 * 8 * 8 * 1 * 9),
    # Stride 2 and SAME padding: 4x4 output.
    ("Conv", [(1, 4, 8, 8), (6, 2, 3, 3)], {"strides": [2, 2], "auto_pad": "SAME_UPPER", "group": 2},
     6 * 4 * 4 * 2 * 9),
    ("Conv", [(1, 2, 10), (4, 2, 3)], {}, 4 * 8 * 2 * 3),
    # Transposed: every input cell is spread over C_out / group * prod(kernel) outputs.
    ("ConvTranspose", [(1, 4, 5, 5), (4, 6, 3, 3)], {"strides": [2, 2]}, 4 * 5 * 5 * 6 * 9),
    # Products count every output cell: their rows need not be samples (model_stats runs one sample).
    ("Gemm", [(1, 16), (16, 10), (10,)], {}, 16 * 10),
    ("Gemm", [(16, 1), (10, 16)], {"transA": 1, "transB": 1}, 16 * 10),
    ("Gemm", [(49, 4), (6, 4)], {"transB": 1}, 49 * 4 * 6),  # one row per position (Flatten(axis=3) before it)
    ("MatMul", [(1, 16), (16, 10)], {}, 16 * 10),
    ("MatMul", [(1, 7, 16), (16, 10)], {}, 7 * 16 * 10),
    ("MatMul", [(10, 16), (16, 1)], {}, 16 * 10),  # the weight first, the sample a column
])
def test_macs_per_sample(op_type: str, shapes: list[tuple[int, ...]], attrs: dict[str, object],
                         expected: int) -> None:
    assert _macs(op_type, shapes, **attrs) == expected


@pytest.mark.parametrize(("op_type", "shapes"), [
    ("Relu", [(4, 3)]), ("Erf", [(4, 3)]), ("Mish", [(4, 3)]), ("Max", [(4, 3), (3,), (4, 1)]),
    ("LRN", [(2, 5, 3, 3)]), ("InstanceNormalization", [(2, 5, 3, 3), (5,), (5,)]),
    ("LayerNormalization", [(2, 5, 3), (3,), (3,)]),
])
def test_other_ops_cost_nothing(op_type: str, shapes: list[tuple[int, ...]]) -> None:
    assert _macs(op_type, shapes, **({"size": 3} if op_type == "LRN" else {})) == 0


def _node_model(op_type: str, inputs: dict[str, np.ndarray], opset: int, outputs: int = 1,
                **attrs: object) -> onnx.ModelProto:
    """One ``op_type`` node whose inputs are all graph inputs (integer ones too), with inferred output types."""
    names = [f"y{i}" for i in range(outputs)]
    graph = helper.make_graph(
        [helper.make_node(op_type, list(inputs), names, **attrs)], op_type,
        [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
         for k, v in inputs.items()],
        [onnx.ValueInfoProto(name=n) for n in names])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _net_outputs(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        return [t.numpy() for t in Network(model)(*[torch.from_numpy(v) for v in inputs.values()])]


_RNG = np.random.default_rng(7)
_X4 = _RNG.standard_normal((2, 7, 3, 3)).astype(np.float32)


# Variants ONNX's backend cases leave out, checked against onnxruntime.
@pytest.mark.parametrize(("op_type", "inputs", "opset", "attrs"), [
    ("LRN", {"x": _X4 * 3}, 13, {"size": 5, "alpha": 0.01, "beta": 0.6, "bias": 2.0}),
    ("InstanceNormalization", {"x": _X4[:, :, 0], "s": _X4[0, :, 0, 0], "b": _X4[1, :, 0, 0]}, 6, {"epsilon": 0.01}),
    ("LayerNormalization", {"x": _X4[0] + 5, "s": _X4[1, 0]}, 17, {"axis": 1}),  # no bias, Y only
    ("LayerNormalization", {"x": _X4 - 2, "s": _X4[1, 0, 0], "b": _X4[0, 0, 0]}, 17, {}),
    ("ReduceMax", {"x": _X4}, 13, {"axes": [1, -1], "keepdims": 0}),  # axes as an attribute before 18
    ("ReduceMax", {"x": _X4}, 18, {}),
    ("ReduceSum", {"x": _X4}, 11, {"axes": [-2]}),  # axes as an attribute before 13
    ("ReduceSum", {"x": _X4, "axes": np.array([0, 2], np.int64)}, 13, {"keepdims": 0}),
    ("ReduceSum", {"x": (_X4 * 100).astype(np.int32)}, 13, {"keepdims": 0}),  # stays int32
    ("ReduceSum", {"x": _X4}, 13, {"noop_with_empty_axes": 1}),
    ("Expand", {"x": _X4[:, :, :1, 0], "shape": np.array([4], np.int64)}, 13, {}),  # shorter target
    ("Expand", {"x": _X4[0, :, :1, :1], "shape": np.array([2, 1, 3, 1], np.int64)}, 13, {}),
    ("Pow", {"x": np.abs(_X4), "y": _X4[0, :, :, :1]}, 15, {}),
    ("Mean", {"a": _X4, "b": _X4[0, 0], "c": _X4[:, :, :1, :1]}, 13, {}),
    ("Where", {"c": _X4[0] > 0, "x": _X4, "y": _X4[:, :1]}, 16, {}),
    ("CastLike", {"x": _X4, "like": np.array([1.5], np.float64)}, 15, {}),
])
def test_node_matches_onnxruntime(op_type: str, inputs: dict[str, np.ndarray], opset: int,
                                  attrs: dict[str, object]) -> None:
    model = _node_model(op_type, inputs, opset, **attrs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, inputs)
    (got,) = _net_outputs(model, inputs)
    assert got.dtype == want.dtype and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("size", "rank"), [(2, 4), (4, 4), (7, 3)])
def test_lrn_window_follows_onnx(size: int, rank: int) -> None:
    """The spec's window, literally: channels ``c - floor((size-1)/2)`` to ``c + ceil((size-1)/2)``.

    onnxruntime refuses even sizes, and torch's ``local_response_norm`` puts an even window's extra
    channel before ``c`` where ONNX puts it after (and both want 4-D inputs).
    """
    x = _X4[..., 0] * 3 if rank == 3 else _X4 * 3
    alpha, beta, bias = 0.5, 0.75, 1.5
    (got,) = _net_outputs(_node_model("LRN", {"x": x}, 13, size=size, alpha=alpha, beta=beta, bias=bias), {"x": x})
    want = np.empty_like(x)
    for c in range(x.shape[1]):
        low, high = max(0, c - (size - 1) // 2), min(x.shape[1] - 1, c + math.ceil((size - 1) / 2))
        want[:, c] = x[:, c] / (bias + alpha / size * (x[:, low: high + 1] ** 2).sum(1)) ** beta
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    if size % 2 == 0:
        torch_lrn = torch.nn.functional.local_response_norm(torch.from_numpy(x), size, alpha, beta, bias)
        assert not np.allclose(got, torch_lrn.numpy())


def test_layer_norm_statistics_outputs() -> None:
    x = {"x": _X4 * 2 + 1, "s": np.ones((3, 3), np.float32)}
    y, mean, inv_std = _net_outputs(_node_model("LayerNormalization", x, 17, outputs=3, axis=2, epsilon=0.1), x)
    np.testing.assert_allclose(mean, x["x"].mean(axis=(2, 3), keepdims=True), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inv_std, 1 / np.sqrt(x["x"].var(axis=(2, 3), keepdims=True) + 0.1), rtol=1e-5)
    np.testing.assert_allclose(y, (x["x"] - mean) * inv_std, rtol=1e-5, atol=1e-5)


_BIG = np.array([0, 1, 2**63 - 1, 2**63, 2**64 - 1, 5], dtype=np.uint64)


# torch has no ordering kernels for wide unsigned types: order must survive the int64 detour.
@pytest.mark.parametrize(("op_type", "inputs", "reference"), [
    ("Max", {"a": _BIG, "b": _BIG[::-1].copy()}, np.maximum),
    ("Min", {"a": _BIG, "b": _BIG[::-1].copy()}, np.minimum),
    ("Less", {"a": _BIG, "b": _BIG[::-1].copy()}, np.less),
    ("Greater", {"a": _BIG, "b": _BIG[::-1].copy()}, np.greater),
    ("Equal", {"a": _BIG, "b": _BIG[::-1].copy()}, np.equal),
    ("Max", {"a": _BIG.astype(np.uint32), "b": _BIG[::-1].astype(np.uint32)}, np.maximum),
    ("Less", {"a": _BIG.astype(np.uint16), "b": _BIG[::-1].astype(np.uint16)}, np.less),
    ("ReduceMax", {"a": _BIG.reshape(2, 3)}, lambda a: a.max(axis=(0, 1), keepdims=True)),
    ("Abs", {"a": _BIG.astype(np.uint32)}, np.abs),
    ("Sign", {"a": _BIG.astype(np.uint16)}, np.sign),
    ("Sign", {"a": np.array([-3, 0, 4], np.int8)}, np.sign),
])
def test_unsigned_and_integer_ops_match_numpy(op_type: str, inputs: dict[str, np.ndarray], reference) -> None:
    (got,) = _net_outputs(_node_model(op_type, inputs, 18), inputs)
    want = reference(*inputs.values())
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_layer_norm_rejects_unknown_stash_type() -> None:
    x = {"x": _X4, "s": np.ones(3, np.float32)}
    with pytest.raises(ModelError, match="stash_type"):
        _net_outputs(_node_model("LayerNormalization", x, 17, stash_type=TensorProto.INT32), x)


def _bn_model(momentum: float) -> onnx.ModelProto:
    channels = 3
    inits = [numpy_helper.from_array(np.full(channels, v, np.float32), name)
             for name, v in (("scale", 1.0), ("bias", 0.0), ("mean", 0.0), ("var", 1.0))]
    node = helper.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"],
                            momentum=momentum, epsilon=1e-5)
    graph = helper.make_graph([node], "bn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 3, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 3, 4, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])


def test_batchnorm_training_updates_running_stats() -> None:
    net = Network(_bn_model(momentum=0.9))
    assert not net.is_trainable("mean") and net.is_trainable("scale")
    x = torch.randn(8, 3, 4, 4) * 2 + 5
    net.eval()
    net(x)
    assert torch.equal(net.tensor("mean"), torch.zeros(3))  # eval leaves the statistics alone

    net.train()
    (y,) = net(x)
    batch_mean = x.mean(dim=(0, 2, 3))
    batch_var = x.var(dim=(0, 2, 3), unbiased=False)  # ONNX folds in the biased batch variance
    torch.testing.assert_close(net.tensor("mean"), 0.1 * batch_mean)
    torch.testing.assert_close(net.tensor("var"), 0.9 + 0.1 * batch_var)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)  # batch statistics
    assert any(b is net.tensor("mean") for b in net.buffers())  # updated in place, still the buffer
    y.square().mean().backward()
    assert net.tensor("scale").grad is not None



def test_batchnorm_statistics_of_bf16_activations_are_float32() -> None:
    """Under bf16 autocast a convolution hands BatchNormalization bf16 activations; the running statistics
    must still be computed in float32 (bf16's 8-bit mantissa rounds a mean of 100 to steps of 0.5)."""
    net = Network(_bn_model(momentum=0.0))  # the running statistics become the batch's own
    x = torch.randn(64, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 3 + 100
    net.train()
    net(x.bfloat16())
    reference = x.bfloat16().double()
    torch.testing.assert_close(net.tensor("mean").double(), reference.mean(dim=(0, 2, 3)), atol=1e-4, rtol=0)
    torch.testing.assert_close(net.tensor("var").double(), reference.var(dim=(0, 2, 3), unbiased=False),
                               atol=1e-3, rtol=1e-5)

def _digits(kind: str = "multiclass") -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = (x / 16).astype(np.float32)
    targets = {"multiclass": y, "binary": y > 4, "multilabel": np.stack([y > 4, y % 2 == 1], axis=1)}
    return x, targets[kind].astype(np.int64)


def _fit(model: object, x: np.ndarray, y: np.ndarray) -> object:
    with warnings.catch_warnings():  # a few iterations only: it will not converge
        warnings.simplefilter("ignore")
        return model.fit(x, y)  # type: ignore[attr-defined]


# multiclass: Softmax/ArgMax/ZipMap/ArrayFeatureExtractor; binary: Sigmoid/Sub/Concat;
# multilabel: Binarizer (skl2onnx cannot ZipMap multi-label outputs).
@pytest.mark.parametrize(("kind", "zipmap"), [("multiclass", True), ("multiclass", False), ("binary", True),
                                              ("multilabel", False)])
def test_skl2onnx_mlp_classifier_matches_onnxruntime(kind: str, zipmap: bool) -> None:
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    x, y = _digits(kind)
    model = _fit(MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0), x, y)
    x = x[:200]
    onx = to_onnx(model, x[:1], options=None if zipmap else {"zipmap": False})
    assert any(n.op_type == "ZipMap" and n.domain == "ai.onnx.ml" for n in onx.graph.node) == zipmap
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    want_label, want_proba = session.run(None, {"X": x})
    if zipmap:  # onnxruntime returns one {class: probability} dict per row
        want_proba = np.array([[row[c] for c in sorted(row)] for row in want_proba], dtype=np.float32)

    label, proba = Network(onx).run_numpy(x)
    np.testing.assert_allclose(proba, want_proba, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(label, want_label)


@pytest.mark.parametrize(("scaler", "op"), [("standard", "Scaler"), ("minmax", "Mul")])
def test_skl2onnx_pipeline_with_a_scaler_matches_onnxruntime(scaler: str, op: str) -> None:
    """A scaler in front of the MLP (the usual scikit-learn pipeline): skl2onnx writes a StandardScaler as an
    ai.onnx.ml Scaler, a MinMaxScaler as Mul and Add."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import MinMaxScaler, StandardScaler

    x, y = _digits()
    x = x * 16 + 3  # raw pixel counts with an offset, so that the scaling matters
    first = StandardScaler() if scaler == "standard" else MinMaxScaler()
    model = _fit(make_pipeline(first, MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0)), x, y)
    onx = to_onnx(model, x[:1], options={MLPClassifier: {"zipmap": False}})
    assert any(n.op_type == op for n in onx.graph.node)
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    want_label, want_proba = session.run(None, {"X": x[:200]})
    label, proba = Network(onx).run_numpy(x[:200])
    np.testing.assert_allclose(proba, want_proba, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(label, want_label)


def test_skl2onnx_mlp_regressor_matches_onnxruntime() -> None:
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPRegressor

    x, _ = _digits()
    x = x[:200]
    model = _fit(MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0), x,
                 x @ np.linspace(-1, 1, x.shape[1], dtype=np.float32))
    onx = to_onnx(model, x[:1])
    session = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    (want,) = session.run(None, {"X": x})
    (got,) = Network(onx).run_numpy(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
