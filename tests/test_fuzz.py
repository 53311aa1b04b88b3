"""Fuzzing import, compaction and emission: whatever the bytes, nestc either works exactly or says why.

Two sources of input: a small valid CNN's serialized bytes with bit flips, truncations, insertions,
deletions and overwrites; and random valid graphs (MLPs and CNNs of random widths, activations and
layouts, some units planted dead). Each goes through :func:`nestc.api.compact`, which imports,
compacts and emits. The only exceptions allowed are :class:`~nestc.errors.NestcError` subclasses
(what the CLI prints as one line); when the model loads, the compacted file must compute what the
input computes in onnxruntime.

Runs are derandomized so CI is reproducible; setting ``NESTC_FUZZ_EXAMPLES`` starts a longer, random
campaign instead (``NESTC_FUZZ_EXAMPLES=2000 pytest tests/test_fuzz.py``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import errors_helpers as h
import numpy as np
import onnx
import onnxruntime as ort
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from nestc import api
from nestc.errors import NestcError

EXAMPLES = int(os.environ.get("NESTC_FUZZ_EXAMPLES", "60"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="NESTC_FUZZ_EXAMPLES" not in os.environ,
                database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def small_cnn() -> onnx.ModelProto:
    """Conv-BN-Relu-MaxPool-Conv-Relu-GlobalAveragePool-Flatten-Gemm-Softmax on [N, 2, 6, 6]."""
    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    inits = [init("c1_w", 4, 2, 3, 3), init("c1_b", 4), init("bn_s", 4), init("bn_b", 4), init("bn_m", 4),
             numpy_helper.from_array(np.abs(rng.standard_normal(4)).astype(np.float32) + 0.5, "bn_v"),
             init("c2_w", 5, 4, 3, 3), init("c2_b", 5), init("fc_w", 3, 5), init("fc_b", 3)]
    nodes = [helper.make_node("Conv", ["x", "c1_w", "c1_b"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], name="bn1"),
             helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
             helper.make_node("MaxPool", ["r1"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "c2_w", "c2_b"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], name="softmax", axis=1)]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])], inits)
    return h.make_model(graph)


BASE = small_cnn().SerializeToString()


# ---------------------------------------------------------------------------------------- checking
def _feeds(sess: ort.InferenceSession, batch: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {}
    for meta in sess.get_inputs():
        shape = [batch if i == 0 else (d if isinstance(d, int) and d > 0 else 1) for i, d in enumerate(meta.shape)]
        feeds[meta.name] = rng.standard_normal(shape).astype(np.float32)
    return feeds


def _session(path: Path) -> ort.InferenceSession | None:
    options = ort.SessionOptions()
    options.log_severity_level = 4
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception:  # onnxruntime rejects the (mutated) original: nothing to compare with
        return None


def compact_or_refuse(model_bytes: bytes) -> bool:
    """Compact ``model_bytes`` via the API; True when it loaded (and the output is then checked)."""
    with tempfile.TemporaryDirectory() as folder:
        source, out = Path(folder) / "in.onnx", Path(folder) / "out.onnx"
        source.write_bytes(model_bytes)
        try:
            api.compact(source, out)
        except NestcError as exc:
            assert str(source) in str(exc), f"the message does not name the file: {exc}"
            assert not out.exists(), "an output was written although compact failed"
            return False
        compacted = _session(out)
        assert compacted is not None, "nestc wrote a model onnxruntime cannot load"
        original = _session(source)
        if original is not None and [i.name for i in original.get_inputs()] == [i.name for i in
                                                                                   compacted.get_inputs()]:
            feeds = _feeds(original)
            try:
                want = original.run(None, feeds)
            except Exception:  # the mutated original fails at run time (bad shapes): nothing to compare
                return True
            got = compacted.run(None, feeds)
            for a, b in zip(want, got, strict=True):
                if np.isfinite(a).all():
                    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
        return True


# ------------------------------------------------------------------------------------ mutated bytes
@st.composite
def mutated_bytes(draw: st.DrawFn) -> bytes:
    data = bytearray(BASE)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "flip", "truncate", "insert", "delete", "overwrite"]))
        if not data:
            break
        at = draw(st.integers(0, len(data) - 1))
        if kind == "flip":
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 16))]
        else:
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at:at + len(chunk)] = chunk
    return bytes(data)


def test_the_unmutated_model_loads_and_compacts_exactly() -> None:
    assert compact_or_refuse(BASE)


@FUZZ
@given(mutated_bytes())
def test_mutated_model_bytes_never_escape_as_a_bug(data: bytes) -> None:
    compact_or_refuse(data)


# -------------------------------------------------------------------------------- random valid graphs
ACTIVATIONS = ["Relu", "Tanh", "Sigmoid", "LeakyRelu", None]


@st.composite
def random_models(draw: st.DrawFn) -> onnx.ModelProto:
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    count = iter(range(1000))

    def weight(*shape: int, dead_rows: int = 0) -> str:
        name = f"w{next(count)}"
        value = (rng.standard_normal(shape) * 0.5).astype(np.float32)
        if dead_rows:
            value[rng.choice(shape[0], size=min(dead_rows, shape[0] - 1), replace=False)] = 0.0
        inits.append(numpy_helper.from_array(value, name))
        return name

    def node(op: str, inputs: list[str], **attrs: object) -> str:
        out = f"t{next(count)}"
        nodes.append(helper.make_node(op, inputs, [out], name=f"{op.lower()}_{out}", **attrs))
        return out

    def activate(x: str) -> str:
        act = draw(st.sampled_from(ACTIVATIONS))
        return x if act is None else node(act, [x])

    dead = st.integers(0, 2)
    if draw(st.booleans()):  # MLP on [N, F]
        width = draw(st.integers(2, 10))
        value_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
        x = "x"
        for _ in range(draw(st.integers(1, 3))):
            out = draw(st.integers(2, 8))
            form = draw(st.sampled_from(["gemm", "gemm_t", "matmul"]))
            if form == "gemm_t":
                x = node("Gemm", [x, weight(out, width, dead_rows=draw(dead)), weight(out)], transB=1)
            elif form == "gemm":
                x = node("Gemm", [x, weight(width, out), weight(out)])
            else:
                x = node("Add", [node("MatMul", [x, weight(width, out)]), weight(out)])
            x, width = activate(x), out
    else:  # CNN on [N, C, S, S]
        channels, side = draw(st.integers(1, 3)), draw(st.integers(4, 8))
        value_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, side, side])
        x = "x"
        for _ in range(draw(st.integers(1, 2))):
            out, kernel = draw(st.integers(1, 6)), draw(st.sampled_from([1, 3]))
            x = node("Conv", [x, weight(out, channels, kernel, kernel, dead_rows=draw(dead)), weight(out)],
                     pads=[kernel // 2] * 4)
            if draw(st.booleans()):
                var = numpy_helper.from_array(rng.uniform(0.5, 2.0, out).astype(np.float32), f"v{next(count)}")
                inits.append(var)
                x = node("BatchNormalization", [x, weight(out), weight(out), weight(out), var.name])
            x, channels = activate(x), out
            if draw(st.booleans()) and side >= 4:
                x, side = node("MaxPool", [x], kernel_shape=[2, 2], strides=[2, 2]), side // 2
        if draw(st.booleans()):
            x, width = node("Flatten", [node("GlobalAveragePool", [x])]), channels
        else:
            x, width = node("Flatten", [x]), channels * side * side
        classes = draw(st.integers(2, 5))
        x, width = node("Gemm", [x, weight(classes, width), weight(draw(st.sampled_from([1, classes])))],
                        transB=1), classes
    if draw(st.booleans()):
        x = node("Softmax", [x], axis=1)
    value_out = helper.make_tensor_value_info(x, TensorProto.FLOAT, ["N", width])
    graph = helper.make_graph(nodes, "random", [value_in], [value_out], inits)
    model = h.make_model(graph)
    onnx.checker.check_model(model, full_check=True)
    return model


@FUZZ
@given(random_models())
def test_random_valid_graphs_load_and_compact_exactly(model: onnx.ModelProto) -> None:
    assert compact_or_refuse(model.SerializeToString()), "a valid model of supported ops was refused"


# ------------------------------------------------------------------------------- structural mutations
OPS = ["Relu", "Conv", "Gemm", "MatMul", "Add", "Mul", "Flatten", "Identity", "Softmax", "MaxPool", "Sigmoid",
       "BatchNormalization", "Reshape", "Transpose", "Concat", "GlobalAveragePool", "AveragePool", "Dropout"]


@st.composite
def mutated_protos(draw: st.DrawFn) -> bytes:
    """The CNN or a random graph with a few fields changed at the protobuf level: still parseable, often
    still checkable, and exactly the kind of file (wrong attribute, shape or type) that reaches nestc's
    own code."""
    model = draw(st.one_of(st.builds(small_cnn), random_models()))
    graph = model.graph
    names = sorted({t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} | {"x", ""})
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attribute", "input", "op", "initializer", "drop", "shape", "type", "opset",
                                     "extra_attribute"]))
        node = graph.node[draw(st.integers(0, len(graph.node) - 1))] if len(graph.node) else None
        if kind == "attribute" and node is not None and len(node.attribute):
            attr = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
            if attr.type == onnx.AttributeProto.INT:
                attr.i = draw(st.integers(-3, 8))
            elif attr.type == onnx.AttributeProto.INTS:
                attr.ints[:] = draw(st.lists(st.integers(-2, 6), max_size=6))
        elif kind == "input" and node is not None and len(node.input):
            node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(names))
        elif kind == "op" and node is not None:
            node.op_type = draw(st.sampled_from(OPS))
        elif kind == "initializer":
            index = draw(st.integers(0, len(graph.initializer) - 1))
            old = graph.initializer[index]
            shape = draw(st.lists(st.integers(0, 6), min_size=0, max_size=4))
            dtype = draw(st.sampled_from([np.float32, np.float16, np.float64, np.int64]))
            value = np.random.default_rng(len(shape)).standard_normal(shape).astype(dtype)
            graph.initializer[index].CopyFrom(numpy_helper.from_array(value, old.name))
        elif kind == "drop" and node is not None:
            graph.node.remove(node)
        elif kind == "shape":
            dims = graph.input[0].type.tensor_type.shape.dim
            del dims[:]
            for size in draw(st.lists(st.one_of(st.integers(0, 8), st.just("N")), max_size=5)):
                dim = dims.add()
                if isinstance(size, int):
                    dim.dim_value = size
                else:
                    dim.dim_param = size
        elif kind == "type":
            graph.input[0].type.tensor_type.elem_type = draw(st.sampled_from([1, 6, 7, 9, 10, 11]))
        elif kind == "opset":
            model.opset_import[0].version = draw(st.integers(1, 30))
        elif kind == "extra_attribute" and node is not None:
            node.attribute.append(helper.make_attribute(draw(st.sampled_from(["axis", "pads", "alpha", "zz"])),
                                                        draw(st.integers(-2, 4))))
    return model.SerializeToString()


@FUZZ
@given(mutated_protos())
def test_structurally_mutated_models_never_escape_as_a_bug(data: bytes) -> None:
    compact_or_refuse(data)
