"""Models stored in float16 or float64: trained in float32, written back in their own precision."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nestc
from nestc import runtime
from nestc.frontends import load_model
from nestc.frontends.precision import PRECISION_KEY, stored_precision
from nestc.schedule.config import NestConfig
from nestc.training import TrainConfig
from tests.errors_helpers import make_model, mlp_graph, save

NUMPY_TYPES = {TensorProto.FLOAT16: np.float16, TensorProto.DOUBLE: np.float64}


def _stored_as(model: onnx.ModelProto, elem_type: int) -> onnx.ModelProto:
    """``model`` with every float32 initializer, input and output converted to ``elem_type``."""
    converted = onnx.ModelProto()
    converted.CopyFrom(model)
    for tensor in converted.graph.initializer:
        if tensor.data_type == TensorProto.FLOAT:
            array = numpy_helper.to_array(tensor).astype(NUMPY_TYPES[elem_type])
            tensor.CopyFrom(numpy_helper.from_array(array, tensor.name))
    for value in (*converted.graph.input, *converted.graph.output):
        value.type.tensor_type.elem_type = elem_type
    del converted.graph.value_info[:]
    onnx.checker.check_model(converted)
    return converted


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("precision")
    nestc.seed("lenet-300-100", folder / "seed.onnx", width_ratio=0.25)
    config = TrainConfig(epochs=3, device="cpu", quiet=True)
    nestc.train(folder / "seed.onnx", folder / "trained.onnx", "embedded", config)
    return folder / "trained.onnx"


@pytest.mark.parametrize("elem_type", [TensorProto.FLOAT16, TensorProto.DOUBLE])
def test_compress_keeps_the_stored_precision(trained: Path, tmp_path: Path, elem_type: int) -> None:
    stored = save(_stored_as(onnx.load(str(trained)), elem_type), tmp_path / "stored.onnx")
    config = NestConfig(max_epochs=3, max_acc_drop=2)
    result = nestc.compress(stored, tmp_path / "out.onnx", "embedded", config, TrainConfig(device="cpu", quiet=True),
                            log=lambda _line: None)
    out = onnx.load(str(tmp_path / "out.onnx"))
    floats = {t.data_type for t in out.graph.initializer if t.data_type in (TensorProto.FLOAT, elem_type)}
    assert floats == {elem_type}
    assert {v.type.tensor_type.elem_type for v in (*out.graph.input, *out.graph.output)} == {elem_type}
    assert PRECISION_KEY not in {p.key for p in out.metadata_props}
    assert result.report["nonzero_params"]["after"] < result.report["nonzero_params"]["before"]
    assert result.report["file_bytes"]["before"] == pytest.approx(stored.stat().st_size, rel=0.05)
    before = result.report["accuracy"]["before"]
    assert before > 0.6 and result.report["accuracy"]["after"] >= before - 0.05
    # the written file runs on its own type and agrees with the float32 network it was trained as
    x = np.random.default_rng(0).standard_normal((8, 1, 28, 28))
    sess = runtime.session(out)
    got = sess.run(None, {sess.get_inputs()[0].name: x.astype(NUMPY_TYPES[elem_type])})[0]
    assert got.dtype == NUMPY_TYPES[elem_type]
    reference = nestc.api.load_network(tmp_path / "out.onnx").run_numpy(x.astype(np.float32))[0]
    tolerance = 2e-2 if elem_type == TensorProto.FLOAT16 else 1e-5
    np.testing.assert_allclose(got.astype(np.float32), reference, rtol=tolerance, atol=tolerance)


def _half_inside(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with float16 weights behind a float32 interface: Cast in, Cast out (what a float16
    conversion that keeps the I/O types writes)."""
    half = _stored_as(model, TensorProto.FLOAT16)
    graph = half.graph
    x, y = graph.input[0].name, graph.output[0].name
    for node in graph.node:
        node.input[:] = [f"{x}_half" if name == x else name for name in node.input]
        node.output[:] = [f"{y}_half" if name == y else name for name in node.output]
    graph.node.insert(0, helper.make_node("Cast", [x], [f"{x}_half"], name="to_half", to=TensorProto.FLOAT16))
    graph.node.append(helper.make_node("Cast", [f"{y}_half"], [y], name="to_float", to=TensorProto.FLOAT))
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.elem_type = TensorProto.FLOAT
    onnx.checker.check_model(half)
    return half


def test_compress_writes_a_float32_model_computing_in_float16(trained: Path, tmp_path: Path) -> None:
    """Such a model keeps its types (it mixes them), so torch computes its layers in float16 as
    onnxruntime does, each rounding its own way: the written file is held to float16's precision like
    a file stored in float16 (at float32's it was refused, exit 1, nothing written)."""
    mixed = save(_half_inside(onnx.load(str(trained))), tmp_path / "mixed.onnx")
    config = NestConfig(max_epochs=2, max_acc_drop=2)
    nestc.compress(mixed, tmp_path / "out.onnx", "embedded", config, TrainConfig(device="cpu", quiet=True),
                   log=lambda _line: None)
    out = onnx.load(str(tmp_path / "out.onnx"))
    assert {t.data_type for t in out.graph.initializer if t.data_type in NUMPY_TYPES} == {TensorProto.FLOAT16}
    assert {v.type.tensor_type.elem_type for v in (*out.graph.input, *out.graph.output)} == {TensorProto.FLOAT}


def test_widening_and_narrowing_cover_casts_and_constant_attributes(tmp_path: Path) -> None:
    """Cast targets and tensor attributes are float types too; the round trip restores each of them."""
    half = TensorProto.FLOAT16
    nodes = [helper.make_node("Cast", ["x"], ["xc"], to=half, name="cast"),
             helper.make_node("Shape", ["xc"], ["shape"], name="shape"),
             helper.make_node("ConstantOfShape", ["shape"], ["ones"], name="fill",
                              value=numpy_helper.from_array(np.ones(1, np.float16))),
             helper.make_node("Add", ["xc", "ones"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", half, ["N", 3])],
                              [helper.make_tensor_value_info("y", half, ["N", 3])])
    original = make_model(graph)
    widened = load_model(save(original, tmp_path / "half.onnx"))
    assert {p.key: p.value for p in widened.metadata_props}[PRECISION_KEY] == str(half)
    cast = next(n for n in widened.graph.node if n.op_type == "Cast")
    assert helper.get_attribute_value(cast.attribute[0]) == TensorProto.FLOAT
    narrowed = stored_precision(widened)
    assert next(n for n in narrowed.graph.node if n.op_type == "Cast").attribute[0].i == half
    fill = next(n for n in narrowed.graph.node if n.op_type == "ConstantOfShape")
    assert fill.attribute[0].t.data_type == half
    x = np.arange(6, dtype=np.float16).reshape(2, 3)
    sess = runtime.session(narrowed)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], x + 1)


def test_a_model_mixing_float_types_keeps_them(tmp_path: Path) -> None:
    """A float32 model that computes one step in float64 (``CastLike`` to a double constant) is not
    widened: only a model stored wholly in one other type is, and only that can be narrowed back."""
    model = make_model(mlp_graph())
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((), np.float64), "like64"))
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    model.graph.node.append(helper.make_node("CastLike", [relu.output[0], "like64"], ["wide"], name="wide"))
    model.graph.node.append(helper.make_node("Cast", ["wide"], ["narrow"], to=TensorProto.FLOAT, name="narrow"))
    model.graph.output.append(helper.make_tensor_value_info("narrow", TensorProto.FLOAT, ["N", 6]))
    loaded = load_model(save(model, tmp_path / "mixed.onnx"))
    assert PRECISION_KEY not in {p.key for p in loaded.metadata_props}
    assert stored_precision(loaded) is loaded
    assert {t.name: t.data_type for t in loaded.graph.initializer}["like64"] == TensorProto.DOUBLE


@pytest.mark.parametrize(("elem_type", "density"), [(TensorProto.FLOAT, 0.4), (TensorProto.FLOAT16, 0.25)])
def test_coo_output_is_never_larger_than_dense(tmp_path: Path, elem_type: int, density: float) -> None:
    """COO costs an int64 index per non-zero: at these densities (COO's break-even is a third in float32,
    a fifth in float16, judged in the stored type) the weight stays dense and the file is no larger."""
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((64, 200)) * (rng.random((64, 200)) < density)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w"], ["y"], transB=1)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 200])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])],
        [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    source = save(_stored_as(model, elem_type) if elem_type in NUMPY_TYPES else model, tmp_path / "in.onnx")
    for sparse_format in ("dense", "coo"):
        nestc.compact(source, tmp_path / f"{sparse_format}.onnx", sparse_format=sparse_format)
    written = onnx.load(str(tmp_path / "coo.onnx"))
    assert not written.graph.sparse_initializer
    assert (tmp_path / "coo.onnx").stat().st_size <= (tmp_path / "dense.onnx").stat().st_size
