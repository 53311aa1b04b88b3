"""Fold shape-only subgraphs into constants and make the batch dimension free.

Exporters compute Reshape targets at run time (``Shape -> Gather -> Concat -> Reshape``) or bake the
export batch into them (torch's dynamo exporter writes ``[1, 1568]``). nestc needs those targets as
plain constants (compaction rewrites them when a channel disappears) and needs any batch size to
work (training uses 128, inference 1). Folding evaluates every node whose inputs are all integer
constants with onnx's reference evaluator, at batch 1; freeing the batch then replaces the batch
entry of each affected Reshape target by ``-1`` (or ``0`` when the target already has a ``-1``).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

FOLD_BATCH = 1
"""Batch size fixed while folding; 1 is what static exporters use, so both cases look alike."""

_INT_TYPES = {TensorProto.INT64, TensorProto.INT32}


def fold_shape_subgraphs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` whose integer-only subgraphs (shape arithmetic) are initializers."""
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    original_batches = _set_input_batch(folded, FOLD_BATCH)
    shapes = _static_shapes(folded)
    graph = folded.graph
    known = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.data_type in _INT_TYPES}
    opset = {o.domain: o.version for o in folded.opset_import}
    kept: list[onnx.NodeProto] = []
    new_constants: dict[str, np.ndarray] = {}
    for node in graph.node:
        value = _try_fold(node, known, shapes, opset)
        if value is None:
            kept.append(node)
            continue
        for name, array in zip(node.output, value):
            known[name] = array
            new_constants[name] = array
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(a), name) for name, a in new_constants.items()
                             if name in used)
    _free_batch(folded, original_batches | {FOLD_BATCH}, shapes)
    return folded


def _set_input_batch(model: onnx.ModelProto, batch: int) -> set[int]:
    """Fix dimension 0 of every graph input to ``batch``; returns the static batches it replaced."""
    init_names = {t.name for t in model.graph.initializer}
    replaced: set[int] = set()
    for value in model.graph.input:
        if value.name in init_names or not value.type.tensor_type.shape.dim:
            continue
        dim = value.type.tensor_type.shape.dim[0]
        if dim.HasField("dim_value"):
            replaced.add(dim.dim_value)
        dim.Clear()
        dim.dim_value = batch
    return replaced


def _static_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    inferred = shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    for value in values:
        tensor_type = value.type.tensor_type
        if tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in tensor_type.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tensor_type.shape.dim)
    return shapes


def _try_fold(node: onnx.NodeProto, known: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
              opset: dict[str, int]) -> list[np.ndarray] | None:
    if node.domain not in ("", "ai.onnx") or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                 for a in node.attribute):
        return None
    if node.op_type == "Shape" and node.input[0] in shapes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        full = np.array(shapes[node.input[0]], dtype=np.int64)
        return [full[attrs.get("start", 0): attrs.get("end", len(full))]]
    if node.op_type == "Constant":
        value = _constant_value(node)
        return [value] if value is not None and value.dtype.kind in "iu" else None
    inputs = [i for i in node.input if i]
    if not inputs or any(i not in known for i in inputs):
        return None
    outputs = _evaluate(node, {i: known[i] for i in inputs}, opset)
    if outputs is None or any(np.asarray(o).dtype.kind not in "iub" for o in outputs):
        return None
    return [np.asarray(o) for o in outputs]


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.int64)
    return None


def _evaluate(node: onnx.NodeProto, feeds: dict[str, np.ndarray], opset: dict[str, int]) -> list | None:
    inputs = [helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for name, a in feeds.items()]
    outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output if o]
    graph = helper.make_graph([node], "fold", inputs, outputs)
    single = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opset.items()])
    try:
        return list(ReferenceEvaluator(single).run(None, feeds))
    except Exception:
        return None


def _free_batch(model: onnx.ModelProto, batches: set[int], shapes: dict[str, tuple[int, ...]]) -> None:
    """Make dimension 0 symbolic on inputs/outputs and rewrite batch entries of Reshape targets."""
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    for value in [*graph.input, *graph.output]:
        if value.name in init_names or not value.type.tensor_type.shape.dim:
            continue
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "N"
    del graph.value_info[:]
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type != "Reshape" or len(node.input) < 2 or node.input[1] not in inits:
            continue
        data_shape = shapes.get(node.input[0])
        target = numpy_helper.to_array(inits[node.input[1]]).copy()
        if data_shape is None or not data_shape or data_shape[0] != FOLD_BATCH or not target.size:
            continue
        if int(target[0]) not in batches or int(target[0]) in (0, -1):
            continue
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        target[0] = 0 if (-1 in target.tolist() and not allowzero) else -1
        if -1 in target[1:].tolist() and target[0] == -1:
            continue
        inits[node.input[1]].CopyFrom(numpy_helper.from_array(target, node.input[1]))
