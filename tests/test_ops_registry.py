"""The op table: coverage, MAC counts, batch-norm statistics and skl2onnx MLP graphs."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from nestc.ir import Network, Node, OpHandler, handler_for, registered_ops
from nestc.ir.network import WEIGHT_OPS

REQUIRED_OPS = (
    "Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu",
    "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Gelu", "Elu", "Softmax", "LogSoftmax",
    "BatchNormalization", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Flatten", "Reshape",
    "Transpose", "Concat", "Split", "Slice", "Squeeze", "Unsqueeze", "Identity", "Dropout", "Pad", "ReduceMean",
    "Constant", "Shape", "Gather", "Cast", "ArgMax",
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
    ("Gemm", [(5, 16), (16, 10), (10,)], {}, 16 * 10),
    ("Gemm", [(16, 5), (10, 16)], {"transA": 1, "transB": 1}, 16 * 10),
    ("MatMul", [(5, 16), (16, 10)], {}, 16 * 10),
    ("MatMul", [(2, 7, 16), (16, 10)], {}, 7 * 16 * 10),
])
def test_macs_per_sample(op_type: str, shapes: list[tuple[int, ...]], attrs: dict[str, object],
                         expected: int) -> None:
    assert _macs(op_type, shapes, **attrs) == expected


def test_other_ops_cost_nothing() -> None:
    assert _macs("Relu", [(4, 3)]) == 0


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
