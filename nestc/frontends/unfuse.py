"""onnxruntime's fused operators written back as the standard operators they were fused from.

A model saved by onnxruntime after its graph optimisations (``SessionOptions.optimized_model_filepath`` at
``ORT_ENABLE_EXTENDED``, or tools that call it) holds ``com.microsoft`` ``FusedConv`` and ``FusedGemm``: a
Conv or Gemm with its activation (and for ``FusedConv`` an added residual ``Z``) in one node. They are the
layers nestc trains and resizes, so each is split back into ``Conv``/``Gemm``, ``Add`` and the activation;
the emitted model has those standard nodes, which onnxruntime fuses again when it loads the file. The Conv or
Gemm keeps the fused node's name and weights; the nodes after it get names of their own.
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
from nestc.naming import unique_name

ORT_DOMAIN = "com.microsoft"

_PARAM_NAMES = {"Relu": (), "Tanh": (), "Sigmoid": (), "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
                "Clip": ("min", "max")}
"""The activations onnxruntime fuses (its ``GetFusedActivationAttr``) and the parameters each takes, in order."""

_GEMM_ATTRIBUTES = ("alpha", "beta", "transA", "transB")


def unfuse_onnxruntime_ops(model: onnx.ModelProto, file: Path) -> None:
    """Replace every ``com.microsoft`` FusedConv and FusedGemm of ``model``'s graph by standard nodes, in place.

    Raises:
        ModelError: a fused activation onnxruntime does not define, or one with the wrong parameter count.
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
    return {"FusedConv": _unfuse_conv, "FusedGemm": _unfuse_gemm}.get(node.op_type)


def _unfuse_conv(node: onnx.NodeProto, graph: onnx.GraphProto, taken: set[str], file: Path) -> list[onnx.NodeProto]:
    """Conv(X, W, B) [+ Z] [-> activation]: ``activation_params`` holds the activation's parameters."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
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
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    activation = _text(attributes.get("activation", b""))
    names = _PARAM_NAMES.get(activation, ())
    params = [float(attributes[f"activation_{name}"]) for name in names if f"activation_{name}" in attributes]
    gemm = helper.make_node("Gemm", list(node.input), [], name=node.name,
                            **{k: v for k, v in attributes.items() if k in _GEMM_ATTRIBUTES})
    return _chain(node, gemm, None, activation, params, graph, taken, file)


def _chain(fused: onnx.NodeProto, layer: onnx.NodeProto, residual: str | None, activation: str, params: list[float],
           graph: onnx.GraphProto, taken: set[str], file: Path) -> list[onnx.NodeProto]:
    """``layer``, then ``+ residual``, then ``activation``; the last node writes the fused node's output."""
    label = fused.name or fused.output[0]
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
        dtype = _weight_dtype(graph, layer)
        steps.append(("Clip", [_scalar(graph, taken, f"{label}_clip_{end}", value, dtype)
                               for end, value in zip(("min", "max"), params, strict=True)], {}))
    elif activation:
        steps.append((activation, [], dict(zip(_PARAM_NAMES[activation], params, strict=True))))
    nodes = [layer]
    for op_type, extra, attributes in steps:
        value = unique_name(f"{label}_{nodes[-1].op_type.lower()}_out", taken)
        taken.add(value)
        nodes[-1].output.append(value)
        name = unique_name(f"{label}_{op_type.lower()}", taken)
        taken.add(name)
        nodes.append(helper.make_node(op_type, [value, *extra], [], name=name, **attributes))
    nodes[-1].output.append(fused.output[0])
    return nodes


def _weight_dtype(graph: onnx.GraphProto, layer: onnx.NodeProto) -> np.dtype:
    """The element type of ``layer``'s stored weight (Clip's bounds must have its type), float32 if not stored."""
    weight = next((t for t in graph.initializer if len(layer.input) > 1 and t.name == layer.input[1]), None)
    return np.dtype(np.float32) if weight is None else helper.tensor_dtype_to_np_dtype(weight.data_type)


def _scalar(graph: onnx.GraphProto, taken: set[str], wanted: str, value: float, dtype: np.dtype) -> str:
    """Store ``value`` as a scalar initializer of ``dtype`` under a fresh name and return the name."""
    name = unique_name(wanted, taken)
    taken.add(name)
    graph.initializer.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
    return name


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
