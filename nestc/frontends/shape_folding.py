"""Fold shape-only subgraphs into constants and make the batch dimension free.

Exporters compute Reshape targets at run time (``Shape -> Gather -> Concat -> Reshape``) or bake the
export batch into them (torch's dynamo exporter writes ``[1, 1568]``). nestc needs those targets as
plain constants (compaction rewrites them when a channel disappears) and needs any batch size to
work (training uses 128, inference 1). Folding evaluates every node whose inputs are all integer
constants (or float fills, see :func:`_try_fold`) with onnx's reference evaluator, at batch 1 and again
at batch 3; freeing the batch then replaces the batch entry of each affected Reshape target by ``-1``
(spelling out the target's other ``-1``, or ``0`` where that cannot be done). Values that differ between
the two batches and are read by anything but such a Reshape target stay computed at run time.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference
from onnx.reference import ReferenceEvaluator

from nestc.frontends.graph_edit import default_opset, graph_names, own_initializer
from nestc.naming import claim_name

FOLD_BATCH = 1
"""Batch size fixed while folding; 1 is what static exporters use, so both cases look alike."""
CHECK_BATCH = 3
"""Second batch size folded at, to tell values that follow the batch from constants."""

_INT_TYPES = {TensorProto.INT64, TensorProto.INT32}


def fold_shape_subgraphs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Return a copy of ``model`` whose integer-only subgraphs (shape arithmetic) are initializers.

    Values that depend on the batch (they differ when folded at a second batch size) stay computed at
    run time unless only Reshape targets read them, whose batch entry :func:`_free_batch_entries` frees: an
    ``Expand`` to ``Shape(x)`` (a class token broadcast over the batch) must follow the batch.
    """
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    _fold_weight_views(folded)
    other_batch = onnx.ModelProto()
    other_batch.CopyFrom(folded)
    _set_input_batch(other_batch, CHECK_BATCH)
    other_values, _ = _folded_values(other_batch)
    original_batches = _set_input_batch(folded, FOLD_BATCH)
    values, folded_nodes = _folded_values(folded)
    graph = folded.graph
    batch_dependent = {name for name, value in values.items()
                       if name not in other_values or not np.array_equal(value, other_values[name])}
    batch_first = {name for name in batch_dependent if _only_batch_entry_differs(values[name], other_values.get(name))}
    live = _run_time_nodes(graph, folded_nodes, batch_dependent, batch_first)
    kept = [n for i, n in enumerate(graph.node) if i not in folded_nodes or i in live]
    computed = {o for n in kept for o in n.output}
    new_constants = {name: value for name, value in values.items() if name not in computed}
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    del graph.node[:]
    graph.node.extend(kept)
    graph.initializer.extend(numpy_helper.from_array(np.asarray(a), name) for name, a in new_constants.items()
                             if name in used)
    # shape inference sees through the folded constants where it could not through the shape
    # arithmetic (a channel shuffle's Reshape -> Transpose -> Reshape built from Shape and Div)
    shapes = _static_shapes(folded)
    _explicit_splits(folded, shapes)
    _one_sample_constants(folded, original_batches - {FOLD_BATCH}, shapes)
    _free_batch_entries(folded, original_batches | {FOLD_BATCH}, shapes, batch_first)
    _free_io_batch(folded, _batch_names(model))
    return folded


def _folded_values(model: onnx.ModelProto) -> tuple[dict[str, np.ndarray], set[int]]:
    """Every value integer-only nodes (and fills, see :func:`_try_fold`) compute at the model's input
    shapes, and those nodes (by index)."""
    shapes, types = _inferred(model)
    known = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type in _INT_TYPES}
    opset = {o.domain: o.version for o in model.opset_import}
    values: dict[str, np.ndarray] = {}
    folded: set[int] = set()
    for index, node in enumerate(model.graph.node):
        value = _try_fold(node, known, shapes, types, opset)
        if value is None:
            continue
        folded.add(index)
        for name, array in zip(node.output, value):
            known[name] = array
            values[name] = array
    return values, folded


def _only_batch_entry_differs(at_fold: np.ndarray, at_check: np.ndarray | None) -> bool:
    """A shape vector whose only batch-dependent entry is the first, and that entry is the batch."""
    return (at_check is not None and at_fold.ndim == 1 and at_fold.shape == at_check.shape and at_fold.size > 0
            and int(at_fold[0]) == FOLD_BATCH and int(at_check[0]) == CHECK_BATCH
            and np.array_equal(at_fold[1:], at_check[1:]))


def _run_time_nodes(graph: onnx.GraphProto, folded: set[int], batch_dependent: set[str],
                    batch_first: set[str]) -> set[int]:
    """Folded nodes (by index) that must stay in the graph: they compute a batch-dependent value that
    a run-time node reads, or feed such a node. A Reshape target whose only batch-dependent entry is
    the batch itself (``batch_first``) stays folded: :func:`_free_batch_entries` rewrites that entry."""
    producer = {o: index for index, node in enumerate(graph.node) if index in folded for o in node.output}
    live: set[int] = set()
    pending = [(node, index) for index, node in enumerate(graph.node) if index not in folded]
    while pending:
        node, index = pending.pop()
        for slot, name in enumerate(node.input):
            source = producer.get(name)
            if source is None or source in live or name not in batch_dependent:
                continue
            if node.op_type == "Reshape" and slot == 1 and index not in live and name in batch_first:
                continue
            live.add(source)
            pending.append((graph.node[source], source))
    return live


_VIEW_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Flatten"})


def _fold_weight_views(model: onnx.ModelProto) -> None:
    """Store weights that only reach their layer through a layout op as plain initializers.

    Two exporter habits hide a layer's weights behind a node, leaving it with no constant weight
    that nestc could train as a parameter or resize:

    * without constant folding (torch's legacy exporter, ``do_constant_folding=False``) a Linear's
      weight is transposed at run time: ``Transpose(W) -> MatMul``. The transposed data replaces
      ``W`` when nothing else reads it (one tensor in, one out: the parameter count is unchanged);
    * torch's legacy exporter deduplicates equal parameters (two freshly initialised BatchNorms share
      one all-ones scale) and restores each by ``Identity(shared) -> bn2.weight``. Each ``Identity``
      becomes its own copy again, as the parameters were in the framework.

    Initializers a file also lists as graph inputs (``keep_initializers_as_inputs``) are weights like the
    others: a folded one's listing moves to the tensor that replaces it.
    """
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    listed = {i.name for i in graph.input if i.name in inits}
    fed = {i.name for i in graph.input if i.name not in inits} | {o.name for o in graph.output}
    opset = {o.domain: o.version for o in model.opset_import}
    kept: list[onnx.NodeProto] = []
    operands: set[str] = set()
    replaced: dict[str, str] = {}  # new initializer -> the one it was made from
    for node in graph.node:
        source = node.input[0] if node.input else ""
        if (node.op_type not in _VIEW_OPS or node.domain != "" or source not in inits
                or source in fed or node.output[0] in fed or any(i and i not in inits for i in node.input[1:])):
            kept.append(node)
            continue
        if node.op_type == "Identity":
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[source])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            inits[copy.name] = graph.initializer[-1]
            operands.add(source)
            replaced[copy.name] = source
            continue
        folded = _evaluate(node, {i: numpy_helper.to_array(inits[i]) for i in node.input if i}, opset)
        if folded is None or _uses(graph, source) != 1:
            kept.append(node)
            continue
        operands.update(node.input)
        graph.initializer.append(numpy_helper.from_array(np.asarray(folded[0]), node.output[0]))
        inits[node.output[0]] = graph.initializer[-1]
        replaced[node.output[0]] = source
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in kept for i in n.input} | fed
    for tensor in [t for t in graph.initializer if t.name in operands - used]:
        graph.initializer.remove(tensor)
    _move_listings(graph, listed, replaced)


def _move_listings(graph: onnx.GraphProto, listed: set[str], replaced: dict[str, str]) -> None:
    """List each new initializer made from a listed one as a graph input, and drop listings of removed ones."""
    stored = {t.name: t for t in graph.initializer}
    kept = [value for value in graph.input if value.name not in listed or value.name in stored]
    kept.extend(helper.make_tensor_value_info(name, stored[name].data_type, list(stored[name].dims))
                for name, source in replaced.items() if source in listed)
    del graph.input[:]
    graph.input.extend(kept)


def _uses(graph: onnx.GraphProto, name: str) -> int:
    return sum(i == name for n in graph.node for i in n.input)


def _explicit_splits(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> None:
    """Give ``Split(num_outputs=k)`` explicit sizes (opset 18+; torch's ``chunk`` exports this way).

    Equal chunks cannot express the unequal widths that removing a channel from one chunk makes;
    explicit sizes can, and compaction rewrites them. Splits along the batch axis stay as they are.
    """
    graph = model.graph
    names = graph_names(graph)
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type != "Split" or "num_outputs" not in attrs or (len(node.input) > 1 and node.input[1]):
            continue
        shape = shapes.get(node.input[0])
        if shape is None:
            continue
        axis = int(attrs.get("axis", 0)) % len(shape)
        count = int(attrs["num_outputs"])
        if axis == 0 or count != len(node.output):
            continue
        chunk = -(-shape[axis] // count)
        sizes = [chunk] * (count - 1) + [shape[axis] - chunk * (count - 1)]
        name = claim_name(f"{node.output[0]}_sizes", names)
        graph.initializer.append(numpy_helper.from_array(np.array(sizes, dtype=np.int64), name))
        del node.input[1:]
        node.input.append(name)
        kept = [a for a in node.attribute if a.name != "num_outputs"]
        del node.attribute[:]
        node.attribute.extend(kept)


_BROADCASTING_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Equal", "Less",
                               "Greater", "Where"})


def _one_sample_constants(model: onnx.ModelProto, export_batches: set[int], shapes: dict[str, tuple[int, ...]]
                          ) -> None:
    """Cut constants that repeat one sample over a fixed export batch down to that sample.

    Exported at a batch of 2, torch's dynamo exporter folds ``torch.zeros_like(x)`` (``ones_like``,
    ``full_like``) into a constant of shape ``[2, ...]``, which fails to meet ``x`` at any other batch. When
    only broadcasting element-wise ops read it, each against values whose first axis is the batch, and
    its samples are all equal, its first sample broadcast over the batch computes the same at the export
    batch and at every other.
    """
    graph = model.graph
    outputs = {value.name for value in graph.output}
    constants = {tensor.name for tensor in graph.initializer}
    for tensor in graph.initializer:
        if not tensor.dims or tensor.dims[0] not in export_batches or tensor.name in outputs:
            continue
        readers = [node for node in graph.node if tensor.name in node.input]
        rank = len(tensor.dims)
        if not readers or not all(
                node.op_type in _BROADCASTING_OPS and node.domain == ""
                and all(_led_by_batch(name, rank, shapes, constants) for name in node.input
                        if name and name != tensor.name) for node in readers):
            continue
        array = numpy_helper.to_array(tensor)
        if (array == array[:1]).all():
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array[:1]), tensor.name))


def _led_by_batch(name: str, rank: int, shapes: dict[str, tuple[int, ...]], constants: set[str]) -> bool:
    """A value computed at run time, of ``rank`` axes, whose first axis is the batch (at the folding batch)."""
    shape = shapes.get(name)
    return name not in constants and shape is not None and len(shape) == rank and shape[0] == FOLD_BATCH


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
    """Fixed shapes of the model's values at its input shapes (see :func:`_inferred`)."""
    return _inferred(model)[0]


def _inferred(model: onnx.ModelProto) -> tuple[dict[str, tuple[int, ...]], dict[str, int]]:
    """Fixed shapes and element types of the model's values at its input shapes, as onnx's shape inference
    finds them.

    The file's own ``value_info`` and output shapes are left out: they hold the shapes at the batch the
    model was exported with (torch's dynamo exporter declares every value of an export at batch 2 with
    batch 2), not at the batch folded at, and some converters write wrong ones. Inference kept them
    where they disagreed, and Reshape targets were then rewritten for the wrong batch.
    """
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.value_info[:]
    for value in probe.graph.output:
        value.type.tensor_type.ClearField("shape")
    inferred = shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    types: dict[str, int] = {}
    values = list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
    for value in values:
        tensor_type = value.type.tensor_type
        if tensor_type.elem_type:
            types[value.name] = tensor_type.elem_type
        if tensor_type.HasField("shape") and all(d.HasField("dim_value") for d in tensor_type.shape.dim):
            shapes[value.name] = tuple(d.dim_value for d in tensor_type.shape.dim)
    for tensor in model.graph.initializer:  # Shape(W) of a weight: how a computed bias learns its width
        shapes.setdefault(tensor.name, tuple(tensor.dims))
        types.setdefault(tensor.name, tensor.data_type)
    return shapes, types


FILL_LIMIT = 1 << 16
"""Largest float value (elements) folded into an initializer; larger fills stay computed at run time."""


def _try_fold(node: onnx.NodeProto, known: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]],
              types: dict[str, int], opset: dict[str, int]) -> list[np.ndarray] | None:
    """The node's outputs when its inputs are known and they are integers (shape arithmetic) or fills.

    A fill is a float value of one repeated number, made from constants and shapes: torch's dynamo
    exporter without its optimiser gives a Conv without bias ``Expand(CastLike(0, x), Shape(W)[:1])``.
    Folded, it is a constant bias the layer's units can be removed from; computed, it froze them. Float
    values made from other floats (weights) stay as the file computes them.
    """
    if node.domain != "" or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                                 for a in node.attribute):
        return None
    if node.op_type == "Shape" and node.input[0] in shapes:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        full = np.array(shapes[node.input[0]], dtype=np.int64)
        return [full[attrs.get("start", 0): attrs.get("end", len(full))]]
    if node.op_type == "Constant":
        value = _constant_value(node)
        # every numeric Constant becomes an initializer: weights exported as Constant nodes are then
        # trainable, and constants live with the network's other tensors on its device
        return [value] if value is not None and value.dtype.kind in "biuf" else None
    outputs: list[np.ndarray] | None
    if node.op_type == "CastLike" and len(node.input) == 2 and node.input[0] in known and node.input[1] in types:
        target = helper.tensor_dtype_to_np_dtype(types[node.input[1]])  # the second input gives only a type
        inputs, outputs = [node.input[0]], [known[node.input[0]].astype(target)]
    else:
        inputs = [i for i in node.input if i]
        if not inputs or any(i not in known for i in inputs):
            return None
        outputs = _evaluate(node, {i: known[i] for i in inputs}, opset)
        if outputs is None:
            return None
    arrays = [np.asarray(o) for o in outputs]
    if all(a.dtype.kind in "iub" for a in arrays):
        return arrays
    fills = all(_is_fill(known[i]) for i in inputs if known[i].dtype.kind not in "iub")
    return arrays if fills and all(_is_fill(a) and a.size <= FILL_LIMIT for a in arrays) else None


def _is_fill(array: np.ndarray) -> bool:
    """A numeric array of one repeated value (empty arrays included)."""
    return array.dtype.kind in "biuf" and (array.size == 0 or bool((array == array.flat[0]).all()))


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    for attr in node.attribute:
        if attr.name == "value":
            return numpy_helper.to_array(attr.t)
        if attr.name in ("value_int", "value_ints"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.int64)
        if attr.name in ("value_float", "value_floats"):
            return np.asarray(helper.get_attribute_value(attr), dtype=np.float32)
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


def _batch_names(model: onnx.ModelProto) -> dict[str, str]:
    """The names inputs and outputs already give a free batch (``dynamic_axes={"x": {0: "batch"}}``)."""
    names = {}
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_param") and dims[0].dim_param:
            names[value.name] = dims[0].dim_param
    return names


def _free_io_batch(model: onnx.ModelProto, names: dict[str, str]) -> None:
    """Make dimension 0 symbolic on inputs/outputs, keeping the ``names`` they had, else ``N``."""
    graph = model.graph
    init_names = {t.name for t in graph.initializer}
    for value in [*graph.input, *graph.output]:
        if value.name in init_names or not value.type.tensor_type.shape.dim:
            continue
        dim = value.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = names.get(value.name, "N")
    del graph.value_info[:]


def _free_batch_entries(model: onnx.ModelProto, batches: set[int], shapes: dict[str, tuple[int, ...]],
                          batch_first: set[str]) -> None:
    """Rewrite the batch entries of Reshape targets and Resize sizes (``shapes``: the values' shapes at
    ``FOLD_BATCH``).

    Shapes are inferred again after every round that rewrote a constant, until one rewrites none: an export at
    a static batch above 1 states that batch in every target, so a Reshape after another one (a GroupNorm's
    ``[2, 12, 28, 28]`` before the classifier's ``[2, 48]``) only shows a tensor led by the folding batch once
    the earlier target is freed. Each constant is rewritten at most once, so the rounds end.
    """
    while True:
        graph = model.graph
        inits = {t.name: t for t in graph.initializer}
        taken = graph_names(graph)
        rewrote = False
        for node in graph.node:
            if node.op_type == "Reshape":
                rewrote |= _free_reshape_target(model, node, batches, shapes, batch_first, inits, taken)
            elif node.op_type == "Resize":
                rewrote |= _free_resize_sizes(model, node, batches, shapes, inits, taken)
        if not rewrote:
            return
        shapes = _static_shapes(model)


def _free_reshape_target(model: onnx.ModelProto, node: onnx.NodeProto, batches: set[int],
                         shapes: dict[str, tuple[int, ...]], batch_first: set[str],
                         inits: dict[str, onnx.TensorProto], taken: set[str]) -> bool:
    """Free the batch entry of a Reshape's constant target; whether it did.

    A target's first entry is taken for the batch when the batch leads the reshaped tensor too, or when
    the target was folded from the input's shape and only that entry followed the batch (``batch_first``):
    onnx's version converter turns an opset-11 ``Softmax(axis=2)`` of ``[N, C, H, W]`` into ``Flatten`` to
    ``[N * C, H * W]``, ``Softmax`` and ``Reshape`` to ``Shape(x)``.
    """
    if len(node.input) < 2 or node.input[1] not in inits:
        return False
    data_shape = shapes.get(node.input[0])
    target = numpy_helper.to_array(inits[node.input[1]]).copy()
    if not target.size or int(target[0]) not in batches or int(target[0]) in (0, -1):
        return False
    batch_leads = data_shape is not None and len(data_shape) > 0 and data_shape[0] == FOLD_BATCH
    if -1 not in target[1:].tolist():
        if not batch_leads and node.input[1] not in batch_first:
            return False
        target[0] = -1
    elif not batch_leads or data_shape is None:
        return False
    else:
        # The batch becomes the inferred axis; the other -1 is spelled out from one sample's size
        # ([1, -1] -> [-1, 288]). "0" (copy the input's batch) would also do, but means a
        # literal zero under allowzero=1, which torch's dynamo exporter sets.
        allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
        rest = _sample_entries(target[1:].tolist(), data_shape, allowzero)
        if rest is not None:
            target = np.array([-1, *rest], dtype=target.dtype)
        elif allowzero:
            return False
        else:
            target[0] = 0
    _set_initializer(model.graph, node, 1, target, inits, taken)
    return True


def _free_resize_sizes(model: onnx.ModelProto, node: onnx.NodeProto, batches: set[int],
                       shapes: dict[str, tuple[int, ...]], inits: dict[str, onnx.TensorProto], taken: set[str]
                       ) -> bool:
    """Take the batch out of a Resize's constant ``sizes``; whether it did.

    torch's dynamo exporter writes ``F.interpolate(size=...)`` as sizes ``[1, C, H, W]``, which would resize
    every batch back to the export batch. From opset 18 the ``axes`` attribute leaves the batch out; before
    it, constant scales take the sizes' place where they give the same output sizes and coordinates (the
    ratios are exact in float32: 2, 0.5, 1.5); otherwise the node is left as it is.
    """
    data_shape = shapes.get(node.input[0])
    if len(node.input) < 4 or node.input[3] not in inits or not data_shape or data_shape[0] != FOLD_BATCH:
        return False
    attrs = {a.name: a for a in node.attribute}
    rank = len(data_shape)
    axes = [int(a) % rank for a in attrs["axes"].ints] if "axes" in attrs else list(range(rank))
    sizes = numpy_helper.to_array(inits[node.input[3]])
    policy = attrs["keep_aspect_ratio_policy"].s if "keep_aspect_ratio_policy" in attrs else b"stretch"
    if 0 not in axes or int(sizes[axes.index(0)]) not in batches or policy != b"stretch" or len(sizes) != len(axes):
        return False
    keep = [k for k, axis in enumerate(axes) if axis != 0]
    if default_opset(model) >= 18:
        if "axes" in attrs:
            node.attribute.remove(attrs["axes"])
        node.attribute.append(helper.make_attribute("axes", [axes[k] for k in keep]))
        roi = node.input[1] if len(node.input) > 1 else ""
        if roi in inits and numpy_helper.to_array(inits[roi]).size:
            bounds = numpy_helper.to_array(inits[roi])
            _set_initializer(model.graph, node, 1, bounds[keep + [k + len(axes) for k in keep]], inits, taken)
        _set_initializer(model.graph, node, 3, sizes[keep], inits, taken)
        return True
    ratios = np.array([1.0] + [sizes[k] / data_shape[axes[k]] for k in keep], dtype=np.float32)
    extents = [data_shape[axis] for axis in axes]
    if not all(float(r) * n == int(float(r) * n) == s and float(r) == s / n  # exact: same sizes, same scale
               for r, n, s in zip(ratios[1:], extents[1:], sizes[1:], strict=True)):
        return False
    scales = claim_name(f"{node.input[3]}_scales", taken)
    model.graph.initializer.append(numpy_helper.from_array(ratios, scales))
    inits[scales] = model.graph.initializer[-1]
    node.input[2] = scales
    del node.input[3]
    return True


def _sample_entries(rest: list[int], data_shape: tuple[int, ...], allowzero: bool) -> list[int] | None:
    """The entries after the batch of a Reshape target with its ``-1`` worked out from one sample of
    ``data_shape`` (None when they do not divide it).

    Not from the target's output shape at the folding batch: an export at batch 2 writes ``[2, -1]``,
    which at batch 1 makes rows of half a sample (``[2, 200]`` where a sample has 400 values).
    """
    entries = [data_shape[i] if value == 0 and not allowzero and i < len(data_shape) else value
               for i, value in enumerate(rest, start=1)]
    known = math.prod(value for value in entries if value != -1)
    sample = math.prod(data_shape[1:])
    if entries.count(-1) != 1 or known <= 0 or sample % known:
        return None
    return [sample // known if value == -1 else value for value in entries]


def _set_initializer(graph: onnx.GraphProto, node: onnx.NodeProto, slot: int, value: np.ndarray,
                     inits: dict[str, onnx.TensorProto], taken: set[str]) -> None:
    """Write ``value`` as input ``slot`` of ``node``; a constant other nodes share is copied first
    (exporters reuse one ``[1, -1]`` tensor for every Reshape, and each may need its own value).
    ``taken`` holds every name in the graph and gains the copy's."""
    name = node.input[slot]
    if _uses(graph, name) > 1:
        tensor = own_initializer(graph, node, slot, numpy_helper.from_array(value, name), taken)
        inits[tensor.name] = tensor
        return
    inits[name].CopyFrom(numpy_helper.from_array(value, name))
