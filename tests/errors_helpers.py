"""Shared pieces of the bad-input, fuzz and fault tests: running the CLI, and files that are wrong.

The CLI is run as a real subprocess (``python -m nestc``), the way CI and users see it. Every
user-caused failure must be exactly one stderr line ``nestc: error: ...`` naming the file or option,
exit code 2, no traceback and no output file. :func:`assert_clean_failure` checks all of that.

Builders write small, deliberately broken models and data files in the official formats (IDX,
CIFAR python batches, ``.npz``); they never need the network or the real data sets.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass
class Run:
    """A finished CLI call."""

    code: int
    stdout: str
    stderr: str


def nestc_env() -> dict[str, str]:
    """The environment for CLI subprocesses: data lookup confined to what a test passes explicitly."""
    env = dict(os.environ)
    env.pop("NESTC_DATA", None)
    env["PYTHONWARNINGS"] = "ignore"
    env["OMP_NUM_THREADS"] = "1"
    return env


def run_cli(*args: str | os.PathLike, cwd: str | os.PathLike | None = None, timeout: float = 180,
            env: dict[str, str] | None = None) -> Run:
    """Run ``python -m nestc ARGS`` and capture its exit code and output."""
    proc = subprocess.run([sys.executable, "-m", "nestc", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or nestc_env())
    return Run(proc.returncode, proc.stdout, proc.stderr)


_DRIVER = r"""
import json, os, sys, tempfile, traceback
from nestc.cli import main

def call(argv):
    sys.argv = ["nestc", *argv]
    try:
        main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()  # what the interpreter would print for an uncaught exception
        return 1
    return 0

results, real_stdout = [], os.dup(1)
for argv in json.load(sys.stdin):
    files = [tempfile.TemporaryFile(), tempfile.TemporaryFile()]
    saved = [os.dup(1), os.dup(2)]
    sys.stdout.flush(); sys.stderr.flush()
    os.dup2(files[0].fileno(), 1); os.dup2(files[1].fileno(), 2)
    try:
        code = call(argv)
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 1); os.dup2(saved[1], 2)
    texts = []
    for f in files:
        f.seek(0)
        texts.append(f.read().decode(errors="replace"))
    results.append({"code": code, "stdout": texts[0], "stderr": texts[1]})
os.write(real_stdout, b"\n@@results@@" + json.dumps(results).encode())
"""


def run_cli_many(argvs: list[list[str | os.PathLike]], cwd: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, timeout: float = 300) -> list[Run]:
    """Run several CLI invocations through ``nestc.cli.main`` in one fresh interpreter.

    Each call sees exactly what ``python -m nestc ARGS`` would: ``main()`` with its ``sys.argv``,
    stdout and stderr captured at the file-descriptor level (so native-library chatter counts as
    output too), exit code from ``SystemExit``, and an uncaught exception printed as a traceback
    with code 1. Sharing one interpreter saves the ~2 s torch import per case.
    """
    payload = json.dumps([[str(a) for a in argv] for argv in argvs])
    proc = subprocess.run([sys.executable, "-c", _DRIVER], input=payload, cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env or nestc_env())
    assert proc.returncode == 0, f"driver failed:\n{proc.stderr}"
    return [Run(r["code"], r["stdout"], r["stderr"]) for r in json.loads(proc.stdout.split("@@results@@")[-1])]


def assert_clean_failure(run: Run, *mentions: str, outputs: tuple[Path, ...] = (), code: int = 2) -> str:
    """One ``nestc: error:`` line naming ``mentions``, exit ``code``, no traceback, no ``outputs`` written.

    Returns the message (without the ``nestc: error:`` prefix) for the report.
    """
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    context = f"exit {run.code}\nstdout:\n{run.stdout}\nstderr:\n{run.stderr}"
    assert "Traceback" not in run.stderr + run.stdout, context
    assert run.code == code, context
    assert len(lines) == 1, context
    assert lines[0].startswith("nestc: error: "), context
    for mention in mentions:
        assert mention.lower() in lines[0].lower(), f"message lacks {mention!r}\n{context}"
    for path in outputs:
        assert not path.exists(), f"{path} was written\n{context}"
        leftovers = [p.name for p in path.parent.glob(f".{path.name}.*")] if path.parent.is_dir() else []
        assert not leftovers, f"temporary files left: {leftovers}\n{context}"
    return lines[0].removeprefix("nestc: error: ")


# ------------------------------------------------------------------------------------------- models
def _weights(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32) * 0.3


def mlp_graph(features: int = 4, hidden: int = 6, classes: int = 3, seed: int = 0,
              name: str = "mlp") -> onnx.GraphProto:
    """``x [N, features] -> Gemm -> Relu -> Gemm -> logits [N, classes]``."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(_weights(rng, hidden, features), "w1"),
             numpy_helper.from_array(_weights(rng, hidden), "b1"),
             numpy_helper.from_array(_weights(rng, classes, hidden), "w2"),
             numpy_helper.from_array(_weights(rng, classes), "b2")]
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="fc1", transB=1),
             helper.make_node("Relu", ["h"], ["r"], name="relu1"),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["logits"], name="fc2", transB=1)]
    return helper.make_graph(nodes, name, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", features])],
                             [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes])], inits)


def make_model(graph: onnx.GraphProto, opset: int = OPSET, ir_version: int = 8) -> onnx.ModelProto:
    """A model of ``graph`` importing ``opset`` of the default domain."""
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="nestc-tests")
    model.ir_version = ir_version
    return model


def small_model(**kwargs: int) -> onnx.ModelProto:
    """A valid, checked two-layer MLP."""
    return make_model(mlp_graph(**kwargs))


def save(model: onnx.ModelProto | bytes, path: Path) -> Path:
    """Write a model (or raw bytes) to ``path``; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model if isinstance(model, bytes) else model.SerializeToString())
    return path


def fails_checker() -> onnx.ModelProto:
    """A node reads a tensor that nothing produces."""
    graph = mlp_graph()
    graph.node[1].input[0] = "undefined_tensor"
    return make_model(graph)


def old_opset_model(opset: int = 7) -> onnx.ModelProto:
    """An MLP importing an old opset whose ``Gemm`` needs conversion."""
    return make_model(mlp_graph(), opset=opset, ir_version=3)


def unsupported_ops() -> onnx.ModelProto:
    """Two nodes nestc has no handler for: a standard one (TopK) and one in a custom domain."""
    graph = mlp_graph()
    k = numpy_helper.from_array(np.array([2], dtype=np.int64), "k")
    graph.initializer.append(k)
    graph.node.append(helper.make_node("TopK", ["logits", "k"], ["top_values", "top_index"], name="my_topk"))
    graph.node.append(helper.make_node("Frobnicate", ["top_values"], ["weird"], name="my_custom", domain="com.example"))
    graph.output.append(helper.make_tensor_value_info("weird", TensorProto.FLOAT, ["N", 2]))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    return model


def undefined_op() -> onnx.ModelProto:
    """A default-domain node of an op the ONNX standard does not have: tf2onnx writes Keras's exact GELU with
    TensorFlow's ``Erfc`` so."""
    graph = mlp_graph()
    graph.node.insert(1, helper.make_node("Erfc", ["h"], ["h_erfc"], name="gelu/Erfc"))
    for node in graph.node[2:]:
        node.input[:] = ["h_erfc" if name == "h" else name for name in node.input]
    return make_model(graph)


def control_flow(op: str) -> onnx.ModelProto:
    """The MLP's logits passed through a valid ``If``, ``Loop`` or ``Scan`` node named ``my_<op>``."""
    graph = mlp_graph()

    def body(inputs: list[onnx.ValueInfoProto], nodes: list[onnx.NodeProto], outputs: list[str]) -> onnx.GraphProto:
        typed = {v.name: v for v in inputs}
        outs = [helper.make_tensor_value_info(o, typed[src].type.tensor_type.elem_type, None)
                for o, src in zip(outputs, [n.input[0] for n in nodes], strict=True)]
        return helper.make_graph(nodes, f"{op}_body", inputs, outs)

    graph.initializer.extend([numpy_helper.from_array(np.array(True), "cond"),
                              numpy_helper.from_array(np.array(2, np.int64), "trips")])
    if op == "If":
        branch = helper.make_graph([helper.make_node("Identity", ["logits"], ["branch_out"])], "branch", [],
                                   [helper.make_tensor_value_info("branch_out", TensorProto.FLOAT, ["N", 3])])
        node = helper.make_node("If", ["cond"], ["chosen"], name="my_If", then_branch=branch, else_branch=branch)
    elif op == "Loop":
        inputs = [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                  helper.make_tensor_value_info("c_in", TensorProto.BOOL, []),
                  helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["N", 3])]
        nodes = [helper.make_node("Identity", ["c_in"], ["c_out"]), helper.make_node("Identity", ["v_in"], ["v_out"])]
        node = helper.make_node("Loop", ["trips", "cond", "logits"], ["chosen"], name="my_Loop",
                                body=body(inputs, nodes, ["c_out", "v_out"]))
    else:
        inputs = [helper.make_tensor_value_info("row_in", TensorProto.FLOAT, [3])]
        nodes = [helper.make_node("Identity", ["row_in"], ["row_out"])]
        node = helper.make_node("Scan", ["logits"], ["chosen"], name="my_Scan", num_scan_inputs=1,
                                body=body(inputs, nodes, ["row_out"]))
    graph.node.append(node)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("chosen", TensorProto.FLOAT, ["N", 3]))
    return make_model(graph)


def no_float_weights() -> onnx.ModelProto:
    """``x -> Relu -> y [N, 4]``: nothing to train."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    return make_model(graph)


def labels_output() -> onnx.ModelProto:
    """The MLP ending in ``ArgMax``: its one output holds labels ``int64 [N]``, not class scores."""
    graph = mlp_graph()
    graph.node.append(helper.make_node("ArgMax", ["logits"], ["label"], name="argmax", axis=1, keepdims=0))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info("label", TensorProto.INT64, ["N"]))
    return make_model(graph)


def nan_weights() -> onnx.ModelProto:
    """The MLP with one NaN in ``w1``."""
    model = small_model()
    weights = numpy_helper.to_array(model.graph.initializer[0]).copy()
    weights[0, 0] = np.nan
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights, "w1"))
    return model


def mismatched_weights() -> onnx.ModelProto:
    """The MLP with a ``w1`` of 5 inputs for its 4 features: onnx.checker passes it, running it fails."""
    graph = mlp_graph()
    graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones((6, 5), np.float32), "w1"))
    return make_model(graph)


def two_inputs() -> onnx.ModelProto:
    """``a + b`` feeds the MLP: two data tensors."""
    graph = mlp_graph()
    graph.node.insert(0, helper.make_node("Add", ["a", "b"], ["x"], name="add_inputs"))
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in ("a", "b")])
    return make_model(graph)


def two_outputs() -> onnx.ModelProto:
    """Two independent class-score heads of the same shape: which one to train is ambiguous."""
    graph = mlp_graph()
    rng = np.random.default_rng(1)
    graph.initializer.extend([numpy_helper.from_array(_weights(rng, 3, 6), "w3"),
                              numpy_helper.from_array(_weights(rng, 3), "b3")])
    graph.node.append(helper.make_node("Gemm", ["r", "w3", "b3"], ["aux_logits"], name="fc_aux", transB=1))
    graph.output.append(helper.make_tensor_value_info("aux_logits", TensorProto.FLOAT, ["N", 3]))
    return make_model(graph)


def integer_input() -> onnx.ModelProto:
    """An int64 input cast to float before the MLP."""
    graph = mlp_graph()
    graph.node.insert(0, helper.make_node("Cast", ["ids"], ["x"], name="cast_ids", to=TensorProto.FLOAT))
    graph.input[0].CopyFrom(helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4]))
    return make_model(graph)


def quantized(folder: Path) -> Path:
    """The MLP as onnxruntime's dynamic quantization writes it (int8 weights, DynamicQuantizeLinear and
    MatMulInteger), saved in ``folder``."""
    from onnxruntime.quantization import quantize_dynamic

    float_model = save(make_model(mlp_graph()), folder / "float.onnx")
    quantize_dynamic(str(float_model), str(folder / "quantized.onnx"))
    return folder / "quantized.onnx"


def fed_weights() -> onnx.ModelProto:
    """The MLP with its weights as graph inputs and none stored, as ``torch.onnx.export(..., export_params=False)``
    writes it."""
    graph = mlp_graph()
    graph.input.extend([helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in graph.initializer])
    del graph.initializer[:]
    return make_model(graph)


def shapeless_input() -> onnx.ModelProto:
    """The MLP with an input that declares no shape (``make_tensor_value_info("x", FLOAT, None)``)."""
    graph = mlp_graph()
    graph.input[0].CopyFrom(helper.make_tensor_value_info("x", TensorProto.FLOAT, None))
    return make_model(graph)


def open_cnn(channels: int | str = 1) -> onnx.ModelProto:
    """``x [N, channels, H, W] -> Conv -> Relu -> MaxPool -> MaxPool -> GlobalAveragePool -> Gemm``: height and
    width (and the channels, given a name) left open, as exporters write them with dynamic axes."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_weights(rng, 4, 1, 3, 3), "conv_w"),
             numpy_helper.from_array(_weights(rng, 3, 4), "fc_w"), numpy_helper.from_array(_weights(rng, 3), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "conv_w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("MaxPool", ["p1"], ["p2"], name="pool2", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p2"], ["g"], name="gap"),
             helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "open_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, "H", "W"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])], inits)
    return make_model(graph)


def fixed_rows() -> onnx.ModelProto:
    """``x [N, 1, 28, 28] -> Flatten -> Gemm -> Slice`` of the first 9 rows: a valid graph whose class scores
    have 9 rows whatever the batch, so they cannot be scored against a batch's labels."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_weights(rng, 10, 784), "fc_w"),
             *(numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("start", 0), ("end", 9), ("axis", 0)))]
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w"], ["scores"], name="fc", transB=1),
             helper.make_node("Slice", ["scores", "start", "end", "axis"], ["logits"], name="first_rows")]
    graph = helper.make_graph(nodes, "fixed_rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                   ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["M", 10])], inits)
    return make_model(graph)


def external_data(location: str, features: int = 4) -> onnx.ModelProto:
    """The MLP with ``w1`` stored outside the file at ``location`` (nothing is written there)."""
    model = small_model(features=features)
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.ClearField("float_data")
    tensor.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(4 * 6 * features))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    return model


def tensor_bytes() -> bytes:
    """A serialized TensorProto: valid protobuf, not a model."""
    return numpy_helper.from_array(np.arange(64, dtype=np.float32).reshape(8, 8), "t").SerializeToString()


def graph_bytes() -> bytes:
    """A serialized GraphProto: valid protobuf, not a model."""
    return mlp_graph().SerializeToString()


# --------------------------------------------------------------------------------------------- data
MNIST_NAMES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
               "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def idx_bytes(arr: np.ndarray) -> bytes:
    """``arr`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian dims, data."""
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.astype(np.uint8).tobytes()


def write_mnist(folder: Path, n_train: int = 40, n_test: int = 20, classes: int = 10, side: int = 28,
                seed: int = 0) -> Path:
    """The four gzip'd MNIST files of random images in ``folder``; labels cycle through ``classes``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
        y = (np.arange(n) % classes).astype(np.uint8)
        for name, arr in zip(MNIST_NAMES[split], (x, y), strict=True):
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
    return folder


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """An ``.npz`` of ``arrays`` (no pickles)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def image_npz(path: Path, n_train: int = 40, n_test: int = 20, shape: tuple[int, ...] = (28, 28), classes: int = 10,
              dtype: type = np.uint8, seed: int = 0) -> Path:
    """A valid labelled ``.npz`` data set of random samples of ``shape``."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("test", n_test)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (n, *shape)).astype(dtype)
        arrays[f"y_{split}"] = (np.arange(n) % classes).astype(np.int64)
    return write_npz(path, **arrays)


class Payload:
    """Pickles to ``os.system(command)``: what a malicious "data batch" would carry."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def write_cifar10_python(folder: Path, per_file: int = 4, poisoned: str | None = None,
                         marker: Path | None = None) -> Path:
    """A CIFAR-10 python folder (``cifar-10-batches-py``) of tiny batches.

    With ``poisoned`` set to a batch name, that batch's labels carry a payload that would create
    ``marker`` if it were ever unpickled by plain ``pickle``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    rng = np.random.default_rng(0)
    for name in names:
        labels: object = [int(v) for v in np.arange(per_file) % 10]
        if name == poisoned:
            labels = Payload(f"touch {marker}")
        batch = {b"batch_label": name.encode(), b"labels": labels,
                 b"data": rng.integers(0, 256, (per_file, 3072), dtype=np.uint8),
                 b"filenames": [f"{i}.png".encode() for i in range(per_file)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=4))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c"] * 10}, protocol=4))
    return folder


def write_cifar10_binary(folder: Path, per_file: int = 4) -> Path:
    """A CIFAR-10 binary folder (``cifar-10-batches-bin``): records of 1 label byte + 3072 pixel bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        labels = (np.arange(per_file) % 10).astype(np.uint8)[:, None]
        pixels = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        (folder / name).write_bytes(np.concatenate([labels, pixels], axis=1).tobytes())
    return folder


def unwritable_folder(tmp: Path) -> Path | None:
    """A folder this process cannot create files in: a read-only one under ``tmp``, else ``/sys`` (root
    ignores permission bits, but not a pseudo file system); None when neither is unwritable here."""
    folder = tmp / "read-only"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o500)
    for candidate in (folder, Path("/sys")):
        try:
            (candidate / ".nestc-probe").touch()
        except OSError:
            return candidate
        (candidate / ".nestc-probe").unlink()
    return None
