"""``load_model``: the one entry point from a user's ``.onnx`` file to a model nestc can work on.

Steps, each failing with one line that names the file:
1. read the bytes and external data safely (:mod:`nestc.frontends.files`), densify sparse initializers and
   stop listing initializers as graph inputs where IR version 3 required it;
2. inline model-local functions (torch's ``export_modules_as_functions`` writes each module as one),
   drop the nodes and MaxPool ``Indices`` outputs no graph output depends on, and split onnxruntime's
   fused Conv, Gemm, MatMul and QuickGelu nodes back into standard ones (:mod:`nestc.frontends.unfuse`);
3. refuse control flow and list every unsupported node at once, and refuse weights fed as graph inputs;
4. ``onnx.checker``;
5. bring the default-domain opset into :data:`SUPPORTED_OPSETS` with onnx's version converter;
6. train float16 and float64 models in float32 (:mod:`nestc.frontends.precision`; emitted models go
   back to the stored type);
7. give normalisation parameters an exporter merged by value their own tensors
   (:mod:`nestc.frontends.untie`);
8. fold shape-only subgraphs and free the batch dimension (:mod:`nestc.frontends.shape_folding`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from onnx import inliner, numpy_helper, shape_inference, version_converter

from nestc.errors import PATH, ModelError, UnsupportedOpError, first_line, require
from nestc.frontends.files import read_model_file
from nestc.frontends.graph_edit import default_opset
from nestc.frontends.precision import widen_to_float32
from nestc.frontends.shape_folding import fold_shape_subgraphs
from nestc.frontends.unfuse import unfuse_onnxruntime_ops
from nestc.frontends.untie import untie_normalisation_parameters
from nestc.ir.registry import handler_for

SUPPORTED_OPSETS = range(13, 25)
"""Default-domain opsets whose semantics the op handlers implement."""

CONVERSION_TARGET = 17
"""Opset that models outside the supported range are converted to."""

NCHWC_DOMAIN = "com.microsoft.nchwc"

_CONTROL_FLOW = frozenset({"If", "Loop", "Scan", "SequenceMap"})
_QUANTIZED_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv",
                            "QLinearMatMul", "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul",
                            "QGemm", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat"})
"""Ops of quantized models (the QDQ and QOperator formats of onnxruntime's quantization tools)."""
_CONVERTED_AWAY = frozenset({"Upsample"})
"""Ops of opsets before :data:`SUPPORTED_OPSETS` that onnx's version converter replaces by supported ones
(Upsample by Resize), so a model that is converted may hold them."""


def load_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load, check and normalise the model at ``path``.

    Returns:
        A checked model in a supported opset, with constant shape arithmetic folded and a free batch.

    Raises:
        ModelError: for a missing, empty, unreadable, invalid or unsupported model.
    """
    require(path, PATH, "model", "a file path")
    file = Path(path)
    model = read_model_file(file)
    _spell_default_domain_one_way(model)
    _densify_sparse_initializers(model)
    _unlist_initializer_inputs(model)
    model = _inline_local_functions(model, file)
    _drop_unused(model)
    unfuse_onnxruntime_ops(model, file)
    _refuse_unsupported(model, file)
    _refuse_fed_weights(model, file)
    _declare_output_shapes(model)
    _check(model, file)
    model = _normalise_opset(model, file)
    widen_to_float32(model)
    untie_normalisation_parameters(model)
    try:
        model = fold_shape_subgraphs(model)
    except (onnx.shape_inference.InferenceError, ValueError) as exc:
        raise ModelError(f"{file}: shape inference failed ({first_line(exc)})") from exc
    _drop_unused(model)
    inputs = graph_inputs(model)
    if not inputs:
        raise ModelError(f"{file}: the graph has no inputs to feed")
    return model


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed at run time (initializers listed as inputs excluded)."""
    init_names = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in init_names]


def _refuse_unsupported(model: onnx.ModelProto, file: Path) -> None:
    nodes = list(model.graph.node)
    flow = [n for n in nodes if n.op_type in _CONTROL_FLOW]
    if flow:
        listed = ", ".join(f"'{n.name or n.op_type}' ({n.op_type})" for n in flow)
        raise UnsupportedOpError(f"{file}: control flow is not supported: {listed}")
    missing = []
    converted = default_opset(model) < SUPPORTED_OPSETS.start
    for index, node in enumerate(nodes):
        handler = handler_for(node.op_type)
        if converted and node.op_type in _CONVERTED_AWAY and node.domain == "":
            continue
        if handler is None or node.domain not in handler.domains:
            domain = f"{node.domain}." if node.domain else ""
            missing.append(f"'{node.name or f'{node.op_type}_{index}'}' ({domain}{node.op_type})")
    if missing:
        raise UnsupportedOpError(
            f"{file}: unsupported operators in {len(missing)} node(s): {', '.join(missing)}"
            f"{_unsupported_hint(nodes, default_opset(model))}")


def _unsupported_hint(nodes: list[onnx.NodeProto], opset: int) -> str:
    """What is wrong with the file, where the missing ops say more than that nestc lacks them: ops the ONNX
    standard does not define (tf2onnx writes TensorFlow's ``Erfc`` for Keras's exact GELU as if it were one,
    and no runtime loads such a file), or a file that is another model's derivative."""
    undefined = sorted({node.op_type for node in nodes
                        if node.domain == "" and not _defined_in_onnx(node.op_type, opset)})
    if undefined:
        verb = "is not an ONNX operator" if len(undefined) == 1 else "are not ONNX operators"
        return (f"; {', '.join(undefined)} {verb} at opset {opset}: the exporter wrote an invalid file, which "
                "onnxruntime refuses as well")
    if any(node.domain == NCHWC_DOMAIN for node in nodes):
        return (f"; {NCHWC_DOMAIN} is the CPU-specific layout onnxruntime writes at ORT_ENABLE_ALL: give nestc the "
                "model as exported, or as saved at ORT_ENABLE_EXTENDED at most")
    if any(node.op_type in _QUANTIZED_OPS for node in nodes):
        return ("; the model is quantized: give nestc the float model it was quantized from, and quantize the "
                "file nestc writes")
    return ""


def _defined_in_onnx(op_type: str, opset: int) -> bool:
    try:
        onnx.defs.get_schema(op_type, opset, "")
    except onnx.defs.SchemaError:
        return False
    return True


def _refuse_fed_weights(model: onnx.ModelProto, file: Path) -> None:
    """Refuse a model whose layers all read their weights from graph inputs instead of the file.

    ``torch.onnx.export(..., export_params=False)`` writes every parameter as a graph input: there is
    nothing to train or resize, and treating each input's first axis as the batch, as nestc does,
    broke the weights' shapes (reported as a shape error onnxruntime does not make on the file). A
    model with any stored weight is left alone: a MatMul's data operand is one of its weight slots too.
    """
    fed = {value.name for value in graph_inputs(model)}
    stored = {t.name for t in model.graph.initializer} | {
        o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    found, any_stored = [], False
    for index, node in enumerate(model.graph.node):
        handler = handler_for(node.op_type)
        slots = handler.weight_inputs if handler is not None and node.domain in handler.domains else ()
        names = [node.input[slot] for slot in slots if slot < len(node.input) and node.input[slot]]
        any_stored = any_stored or any(name in stored for name in names)
        if any(name in fed for name in names):
            label = node.name or f"{node.op_type}_{index}"
            found.append(f"'{label}' ({node.op_type}) reads {', '.join(n for n in names if n in fed)}")
    if found and not any_stored:
        shown = "; ".join(found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
        raise ModelError(f"{file}: weights are graph inputs, not stored in the file ({shown}); export the model "
                         f"with its parameters (torch.onnx.export(..., export_params=True), the default)")


def _spell_default_domain_one_way(model: onnx.ModelProto) -> None:
    """Write the default domain as ``""`` in nodes, functions and opset imports.

    ONNX allows ``ai.onnx`` as its other name, and some converters mix the two (nodes in ``ai.onnx`` under
    an import of ``""``); onnx's checker and version converter refuse such files although onnxruntime
    runs them, and every later step would have to know both names. Where both are imported, the ``""``
    entry's version stands.
    """
    for node in [*model.graph.node, *(n for f in model.functions for n in f.node)]:
        if node.domain == "ai.onnx":
            node.domain = ""
    for imports in [model.opset_import, *(f.opset_import for f in model.functions)]:
        versions = {entry.domain: entry.version for entry in imports}
        if "ai.onnx" not in versions:
            continue
        versions.setdefault("", versions.pop("ai.onnx"))
        del imports[:]
        imports.extend(onnx.helper.make_opsetid(domain, version) for domain, version in versions.items())


def _inline_local_functions(model: onnx.ModelProto, file: Path) -> onnx.ModelProto:
    """Replace each call of a function the model defines by the function's nodes.

    A node calling a local function names the function as its op type, which no handler implements;
    its body is ordinary ops, whose weights the call passes in as inputs. The emitted model is the
    inlined graph (it computes the same).
    """
    if not model.functions:
        return model
    try:
        return inliner.inline_local_functions(model)
    except Exception as exc:  # onnx raises bare C++ errors for malformed function bodies
        raise ModelError(f"{file}: its local functions could not be inlined ({first_line(exc)})") from exc


def _drop_unused(model: onnx.ModelProto) -> None:
    """Remove what no graph output depends on: nodes, the initializers only they read, and MaxPool's
    optional ``Indices`` output where nothing reads it.

    Exporters leave such nodes behind (a shape computation nothing uses, a detached branch); onnxruntime
    never runs them, so they must not count as parameters or MACs, be trained, or keep a model with an
    operator nestc lacks from loading. Some converters name MaxPool's ``Indices`` on every pool; nestc
    computes only the pooled values, so a named one was refused at run time although nothing used it.
    Fed graph inputs stay, read or not: they are the file's interface. It runs again after shape folding,
    which leaves the constants of the arithmetic it replaced unread (tf2onnx's dynamic Flatten: onnxruntime
    warned about each of them on every load of the output).
    """
    graph = model.graph
    needed = {value.name for value in graph.output}
    live = []
    for node in reversed(graph.node):
        if needed.intersection(node.output):
            live.append(node)
            needed.update(name for name in node.input if name)
    for node in live:
        if node.op_type == "MaxPool" and len(node.output) > 1 and node.output[1] not in needed:
            del node.output[1:]
    if len(live) < len(graph.node):
        del graph.node[:]
        graph.node.extend(reversed(live))
    dead = [t.name for t in graph.initializer if t.name not in needed]
    if not dead:
        return
    kept = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    inputs = [value for value in graph.input if value.name not in dead]  # keep_initializers_as_inputs listed them
    del graph.input[:]
    graph.input.extend(inputs)


def _unlist_initializer_inputs(model: onnx.ModelProto) -> None:
    """Stop listing initializers as graph inputs in a file whose IR version required it.

    IR version 3 required every initializer to be a graph input as well (CNTK's exports in the ONNX model
    zoo, old converters), so there the listing says nothing about the file's interface, and a weight that
    looks fed is not one nestc may fold or resize: the MNIST model of the ONNX zoo reaches its classifier
    through ``Reshape(Parameter193)``, and that layer was neither trained nor pruned. The IR version becomes
    4, the first without the requirement; onnxruntime also folds constants only of unlisted initializers.
    Later files list them by choice (``keep_initializers_as_inputs``), and the written file keeps that.
    """
    if model.ir_version >= 4:
        return
    stored = {t.name for t in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in stored]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = 4


def _densify_sparse_initializers(model: onnx.ModelProto) -> None:
    """Turn ``sparse_initializer`` entries (``--sparse-format coo`` output) into ordinary initializers.

    Runtimes densify them at load too; nestc trains and resizes dense tensors with masks, so a model
    it wrote sparse must read back as the same dense weights.
    """
    graph = model.graph
    for sparse in graph.sparse_initializer:
        values = numpy_helper.to_array(sparse.values)
        indices = numpy_helper.to_array(sparse.indices).astype(np.int64)
        dense = np.zeros(tuple(sparse.dims), dtype=values.dtype)
        if indices.ndim == 2:  # one row of coordinates per value
            dense[tuple(indices.T)] = values
        else:  # linearised positions
            dense.reshape(-1)[indices] = values
        graph.initializer.append(numpy_helper.from_array(dense, sparse.values.name))
    del graph.sparse_initializer[:]


def _declare_output_shapes(model: onnx.ModelProto) -> None:
    """Give graph outputs that declare no shape at all the one onnx's shape inference finds.

    ``helper.make_tensor_value_info(name, elem_type, None)`` leaves the shape out; onnxruntime runs such a
    file, onnx's checker refuses it ("Field 'shape' of 'type' is required but missing"). An output whose
    shape inference cannot find stays as it is, and :func:`_check` names it.
    """
    graph = model.graph
    missing = {value.name for value in graph.output if _lacks_shape(value)}
    if not missing:
        return
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=False)
    except (shape_inference.InferenceError, ValueError, RuntimeError):
        return
    found = {value.name: value for value in [*inferred.graph.output, *inferred.graph.value_info]
             if value.name in missing and not _lacks_shape(value)}
    for value in graph.output:
        if value.name in found:
            value.type.tensor_type.shape.CopyFrom(found[value.name].type.tensor_type.shape)


def _lacks_shape(value: onnx.ValueInfoProto) -> bool:
    return value.type.HasField("tensor_type") and not value.type.tensor_type.HasField("shape")


def _check(model: onnx.ModelProto, file: Path) -> None:
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError) as exc:
        shapeless = [f"'{value.name}'" for value in [*graph_inputs(model), *model.graph.output] if _lacks_shape(value)]
        where = f" (graph inputs and outputs without a shape: {', '.join(shapeless)})" if shapeless else ""
        raise ModelError(f"{file}: fails onnx.checker: {first_line(exc)}{where}") from exc


def _normalise_opset(model: onnx.ModelProto, file: Path) -> onnx.ModelProto:
    version = default_opset(model)
    if version in SUPPORTED_OPSETS:
        return model
    known = onnx.defs.onnx_opset_version()
    if version > known:  # the converter would fail with an internal assertion; say what to do instead
        raise ModelError(f"{file}: opset {version} is newer than this onnx release knows (up to {known}); nestc "
                         f"supports opsets {SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1}: export the model "
                         f"with one of those")
    try:
        converted = version_converter.convert_version(model, CONVERSION_TARGET)
        # the converter keeps the file's IR version, older than the new opset requires (IR 6, opset 17); domains
        # onnx has no table for (com.microsoft, which onnxruntime's optimiser and tf2onnx import) ask for none
        converted.ir_version = max(converted.ir_version,
                                   onnx.helper.find_min_ir_version_for(converted.opset_import, ignore_unknown=True))
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise ModelError(f"{file}: opset {version} is outside the supported range "
                         f"{SUPPORTED_OPSETS.start}-{SUPPORTED_OPSETS.stop - 1} and onnx's version converter "
                         f"could not convert it ({first_line(exc)})") from exc
    return converted
