"""Emission: the IR's current tensors written back into the model's own graph.

The nodes, names, opset and metadata come from the imported model; only initializers (and node
attributes that structural passes changed, such as a depthwise Conv's ``group``) are replaced. Value
infos are dropped rather than left stale: widths may have changed, and onnxruntime re-infers them.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

from nestc.frontends.precision import stored_type
from nestc.ir.network import Network, node_from_proto
from nestc.ir.registry import Node

SPARSE_FORMATS = ("dense", "coo")
_INDEX_BYTES = np.dtype(np.int64).itemsize
"""Bytes of one COO index: ONNX requires int64 indices."""


def emit_model(net: Network, sparse_format: str = "dense") -> onnx.ModelProto:
    """Build an ``onnx.ModelProto`` from the network's current structure and weights.

    Args:
        net: the network to write.
        sparse_format: ``"dense"``, or ``"coo"`` to store each trainable weight as an ONNX
            ``sparse_initializer`` where that takes fewer bytes than the dense tensor (smaller files;
            runtimes densify them at load).
    """
    if sparse_format not in SPARSE_FORMATS:
        raise ValueError(f"sparse format '{sparse_format}' unknown; use one of {', '.join(SPARSE_FORMATS)}")
    model = onnx.ModelProto()
    model.CopyFrom(net.template)
    graph = model.graph
    del graph.node[:]
    for index, (node, proto) in enumerate(zip(net.nodes, net.node_protos, strict=True)):
        graph.node.append(_node_proto(node, proto, index))
    for name in net.initializer_order:
        data_type = net.initializer_dtypes[name]
        array = _to_numpy(net.effective_weight(name), data_type)
        written = helper.tensor_dtype_to_np_dtype(stored_type(net.template, data_type)).itemsize
        if sparse_format == "coo" and net.is_trainable(name) and _coo_is_smaller(array, written):
            graph.sparse_initializer.append(_coo(array, name))
        else:
            graph.initializer.append(numpy_helper.from_array(array, name))
    _match_initializer_inputs(net, graph)
    del graph.value_info[:]
    return model


def _match_initializer_inputs(net: Network, graph: onnx.GraphProto) -> None:
    """Give initializers that are also listed as graph inputs (``keep_initializers_as_inputs``
    exports) their current shape; runtimes refuse a declared shape that the data does not have."""
    for value in graph.input:
        if not net.has_tensor(value.name) or not value.type.HasField("tensor_type"):
            continue
        shape = value.type.tensor_type.shape
        del shape.dim[:]
        for size in net.tensor(value.name).shape:
            shape.dim.add().dim_value = int(size)


def _node_proto(node: Node, proto: onnx.NodeProto, index: int) -> onnx.NodeProto:
    """The original proto when the IR node is unchanged, else a copy with its new inputs (a pass may
    point an input at a private copy of a shared shape constant) and changed attributes (only those
    are rebuilt, so untouched ones keep their exact encoding)."""
    original = node_from_proto(proto, index).attrs
    changed = {k for k in node.attrs.keys() | original.keys()
               if k not in node.attrs or k not in original or not _same(original[k], node.attrs[k])}
    if list(proto.input) == node.inputs and not changed:
        return proto
    rebuilt = onnx.NodeProto()
    rebuilt.CopyFrom(proto)
    del rebuilt.input[:]
    rebuilt.input.extend(node.inputs)
    kept = [a for a in proto.attribute if a.name not in changed]
    del rebuilt.attribute[:]
    rebuilt.attribute.extend(kept)
    for key in sorted(changed & node.attrs.keys()):
        rebuilt.attribute.append(helper.make_attribute(key, node.attrs[key]))
    return rebuilt


def _same(a: object, b: object) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return np.array_equal(np.asarray(a), np.asarray(b))
    return a == b


def _to_numpy(tensor: torch.Tensor, data_type: int) -> np.ndarray:
    array = tensor.detach().cpu().numpy()
    return array.astype(helper.tensor_dtype_to_np_dtype(data_type), copy=False)


def _coo_is_smaller(array: np.ndarray, itemsize: int) -> bool:
    """Whether COO storage takes fewer bytes than the dense tensor, with values of ``itemsize`` bytes.

    COO pays an int64 index per non-zero on top of its value, so it only saves space below a third
    of the elements non-zero in float32 and a fifth in float16 (half of them zero still makes the file
    larger). ``itemsize`` is that of the type the file stores (a
    float16 model is emitted in float32 and narrowed afterwards).
    """
    return bool(np.count_nonzero(array) * (_INDEX_BYTES + itemsize) < array.size * itemsize)


def _coo(array: np.ndarray, name: str) -> onnx.SparseTensorProto:
    flat = array.reshape(-1)
    indices = np.flatnonzero(flat).astype(np.int64)
    values = numpy_helper.from_array(flat[indices], name)
    index_tensor = numpy_helper.from_array(indices, f"{name}_indices")
    return helper.make_sparse_tensor(values, index_tensor, list(array.shape))
