"""onnxruntime's fused operators written back as the standard operators they were fused from.

A model saved by onnxruntime after its graph optimisations (``SessionOptions.optimized_model_filepath`` at
``ORT_ENABLE_EXTENDED``, or tools that call it) holds ``com.microsoft`` ``FusedConv`` and ``FusedGemm``: a
Conv or Gemm with its activation (and for ``FusedConv`` an added residual ``Z``) in one node, and
``FusedMatMul``: a MatMul with its operands' Transposes and a constant factor. They are the layers nestc trains
and resizes, so each is split back into ``Conv``/``Gemm``/``MatMul``, ``Transpose``, ``Add``, ``Mul`` and the
activation, and ``QuickGelu`` (SiLU as EfficientNet uses it) into ``Sigmoid`` and ``Mul``;
the emitted model has those standard nodes, which onnxruntime fuses again when it loads the file. The Conv,
Gemm or MatMul keeps the fused node's name and weights; the nodes around it get names of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nestc.errors import ModelError
from nestc.frontends.graph_edit import graph_names
from nestc.naming import claim_name

ORT_DOMAIN = "com.microsoft"

_PARAM_NAMES = {"Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
                "Clip": ("min", "max")}
"""The activations onnxruntime fuses (its ``GetFusedActivationAttr``) and the parameters each takes, in order."""

_GEMM_ATTRIBUTES = ("alpha", "beta", "transA", "transB")


def unfuse_onnxruntime_ops(model: onnx.ModelProto, file: Path) -> None:
    """Replace every ``com.microsoft`` FusedConv, FusedGemm, FusedMatMul and QuickGelu of ``model``'s graph by
    standard nodes, in place.

    Raises:
        ModelError: a fused activation onnxruntime does not define, one with the wrong parameter count, or a
            FusedMatMul this module cannot write back (batch axes moved, a transposed operand of unknown rank).
    """
    graph = model.graph
    if not any(_unfuser(node) for node in graph.node):
        return
    taken = graph_names(graph) | {node.name for node in graph.node}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        unfuse = _unfuser(node)
        nodes.extend(unfuse(node, graph, taken, file) if unfuse else [node])
    del graph.node[:]
    graph.node.extend(nodes)
    if not any(node.domain == ORT_DOMAIN for node in graph.node):
        kept = [entry for entry in model.opset_import if entry.domain != ORT_DOMAIN]
        del model.opset_import[:]
        model.opset_import.extend(kept)


_Unfuse = Callable[[onnx.NodeProto, onnx.GraphProto, set[str], Path], list[onnx.NodeProto]]


def _unfuser(node: onnx.NodeProto) -> _Unfuse | None:
    if node.domain != ORT_DOMAIN:
        return None
    return {"FusedConv": _unfuse_conv, "FusedGemm": _unfuse_gemm, "FusedMatMul": _unfuse_matmul,
            "QuickGelu": _unfuse_quick_gelu}.get(node.op_type)


def _unfuse_conv(node: onnx.NodeProto, graph: onnx.GraphProto, taken: set[str], file: Path) -> list[onnx.NodeProto]:
    """Conv(X, W, B) [+ Z] [-> activation]: ``activation_params`` holds the activation's parameters."""
    attributes = _attributes(node)
    activation = _text(attributes.pop("activation", b""))
    params = [float(v) for v in attributes.pop("activation_params", [])]
    inputs = list(node.input[:3])
    while inputs and not inputs[-1]:
        inputs.pop()
    residual = node.input[3] if len(node.input) > 3 and node.input[3] else None
    return _chain(node, helper.make_node("Conv", inputs, [], name=node.name, **attributes), residual, activation,
                  params, graph, taken, file)


def _unfuse_gemm(node: onnx.NodeProto, graph: onnx.GraphProto, taken: set[str], file: Path) -> list[onnx.NodeProto]:
    """Gemm(A, B, C) [-> activation]: the activation's parameters are ``activation_alpha``, ``activation_beta``."""
    attributes = _attributes(node)
    activation = _text(attributes.get("activation", b""))
    names = _PARAM_NAMES.get(activation, ())
    params = [float(attributes[f"activation_{name}"]) for name in names if f"activation_{name}" in attributes]
    gemm = helper.make_node("Gemm", list(node.input), [], name=node.name,
                            **{k: v for k, v in attributes.items() if k in _GEMM_ATTRIBUTES})
    return _chain(node, gemm, None, activation, params, graph, taken, file)


def _unfuse_matmul(node: onnx.NodeProto, graph: onnx.GraphProto, taken: set[str], file: Path
                   ) -> list[onnx.NodeProto]:
    """alpha * A' @ B', A' and B' with their last two axes swapped when ``transA`` / ``transB``: onnxruntime writes
    a MatMul scaled by a constant (``x @ W * 0.5``, logits divided by a temperature) or fed by a Transpose so."""
    attributes = _attributes(node)
    label = _label(node)
    if attributes.get("transBatchA", 0) or attributes.get("transBatchB", 0):
        raise ModelError(f"{file}: node '{label}' ({ORT_DOMAIN}.FusedMatMul) moves batch axes (transBatchA, "
                         f"transBatchB), which nestc does not split back; give nestc the model as exported")
    operands, nodes = list(node.input[:2]), []
    for slot, flag in enumerate(("transA", "transB")):
        if not attributes.get(flag, 0):
            continue
        rank = _rank(graph, operands[slot])
        if rank is None:
            raise ModelError(f"{file}: node '{label}' ({ORT_DOMAIN}.FusedMatMul) transposes '{operands[slot]}', whose "
                             f"rank the file does not give; give nestc the model as exported")
        perm = [*range(rank - 2), rank - 1, rank - 2]
        transposed = claim_name(f"{operands[slot]}_transposed", taken)
        nodes.append(helper.make_node("Transpose", [operands[slot]], [transposed],
                                      name=claim_name(f"{label}_{flag}", taken), perm=perm))
        operands[slot] = nodes[-1].output[0]
    alpha = float(attributes.get("alpha", 1.0))
    product = node.output[0] if alpha == 1.0 else claim_name(f"{label}_product", taken)
    nodes.append(helper.make_node("MatMul", operands, [product], name=node.name))
    if alpha != 1.0:
        nodes.append(helper.make_node("Mul", [product, _scalar(graph, taken, f"{label}_alpha", alpha)],
                                      [node.output[0]], name=claim_name(f"{label}_scale", taken)))
    return nodes


def _rank(graph: onnx.GraphProto, name: str) -> int | None:
    """The rank of ``name`` as the file gives it (a stored tensor, or a declared input, output or value), or None."""
    stored = next((t for t in graph.initializer if t.name == name), None)
    if stored is not None:
        return len(stored.dims)
    declared = next((v for v in [*graph.input, *graph.value_info, *graph.output] if v.name == name), None)
    if declared is None or not declared.type.tensor_type.HasField("shape"):
        return None
    return len(declared.type.tensor_type.shape.dim)


def _unfuse_quick_gelu(node: onnx.NodeProto, graph: onnx.GraphProto, taken: set[str], file: Path
                       ) -> list[onnx.NodeProto]:
    """x * Sigmoid(alpha * x): onnxruntime writes SiLU/Swish (EfficientNet's activation) so, with alpha 1."""
    alpha = float(_attributes(node).get("alpha", 1.702))
    label, x = _label(node), node.input[0]
    nodes = []
    if alpha != 1.0:
        scale = _scalar(graph, taken, f"{label}_alpha", alpha)
        nodes.append(helper.make_node("Mul", [x, scale], [claim_name(f"{label}_scaled", taken)],
                                      name=claim_name(f"{label}_scale", taken)))
    nodes.append(helper.make_node("Sigmoid", [nodes[-1].output[0] if nodes else x],
                                  [claim_name(f"{label}_sigmoid_out", taken)],
                                  name=claim_name(f"{label}_sigmoid", taken)))
    nodes.append(helper.make_node("Mul", [x, nodes[-1].output[0]], [node.output[0]], name=claim_name(label, taken)))
    return nodes


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    """``node``'s attributes by name, as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _label(node: onnx.NodeProto) -> str:
    """What errors and new names call ``node``: its name, or its output's when it has none."""
    return node.name or node.output[0]


def _chain(fused: onnx.NodeProto, layer: onnx.NodeProto, residual: str | None, activation: str, params: list[float],
           graph: onnx.GraphProto, taken: set[str], file: Path) -> list[onnx.NodeProto]:
    """``layer``, then ``+ residual``, then ``activation``; the last node writes the fused node's output."""
    label = _label(fused)
    if activation and activation not in _PARAM_NAMES:
        raise ModelError(f"{file}: node '{label}' ({ORT_DOMAIN}.{fused.op_type}) fuses the activation "
                         f"'{activation}', which onnxruntime does not define")
    wanted = len(_PARAM_NAMES.get(activation, ()))
    if len(params) != wanted:
        raise ModelError(f"{file}: node '{label}' ({ORT_DOMAIN}.{fused.op_type}) gives {activation} {len(params)} "
                         f"parameter(s); it takes {wanted}")
    steps: list[tuple[str, list[str], dict[str, Any]]] = []
    if residual is not None:
        steps.append(("Add", [residual], {}))
    if activation == "Clip":
        steps.append(("Clip", [_scalar(graph, taken, f"{label}_clip_{end}", value)
                               for end, value in zip(("min", "max"), params, strict=True)], {}))
    elif activation:
        steps.append((activation, [], dict(zip(_PARAM_NAMES[activation], params, strict=True))))
    nodes = [layer]
    for op_type, extra, attributes in steps:
        value = claim_name(f"{label}_{nodes[-1].op_type.lower()}_out", taken)
        nodes[-1].output.append(value)
        nodes.append(helper.make_node(op_type, [value, *extra], [],
                                      name=claim_name(f"{label}_{op_type.lower()}", taken), **attributes))
    nodes[-1].output.append(fused.output[0])
    return nodes


def _float_dtype(graph: onnx.GraphProto) -> np.dtype:
    """The model's float type, that of its first floating-point weight (Clip's bounds and the Mul's scale must
    have it; nestc widens a float16 model to float32 after this, and back when it writes one); float32 if none."""
    types = (helper.tensor_dtype_to_np_dtype(t.data_type) for t in graph.initializer)
    return next((t for t in types if np.issubdtype(t, np.floating)), np.dtype(np.float32))


def _scalar(graph: onnx.GraphProto, taken: set[str], wanted: str, value: float) -> str:
    """Store ``value`` as a scalar initializer of the model's float type under a fresh name; return the name."""
    name = claim_name(wanted, taken)
    graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=_float_dtype(graph)), name))
    return name


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
